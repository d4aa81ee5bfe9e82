"""Closed-loop episodes: a driving policy against an env, recorded as an ``Episode``.

A driving policy is anything with ``reset()`` and ``select_action(obs) -> [accel, steer]``
(the transformer policy adds ``predict_action_chunk`` and ``compute_loss`` on top). The
baselines here are what every learned policy is compared with: ``expert``, ``random`` and
``constant`` (hold speed, wheel straight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from sim.episode import Episode
from sim.interface import ACTION_HIGH, ACTION_LOW


class DrivingPolicy(Protocol):
    name: str

    def reset(self) -> None: ...

    def select_action(self, obs: dict) -> np.ndarray: ...


class ExpertPolicy:
    """Drives with the env's expert (needs the env, since it reads the simulator state)."""

    name = "expert"

    def __init__(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def select_action(self, obs: dict) -> np.ndarray:
        return self.env.expert_action()


class RandomPolicy:
    """Uniform random actions within the limits, seeded per episode."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._seed)
        self._seed += 1

    def select_action(self, obs: dict) -> np.ndarray:
        return self._rng.uniform(ACTION_LOW, ACTION_HIGH).astype(np.float32)


class ConstantPolicy:
    """The same action every step (default: hold speed, wheel straight)."""

    name = "constant"

    def __init__(self, action=(0.0, 0.0)) -> None:
        self.action = np.asarray(action, dtype=np.float32)

    def reset(self) -> None:
        pass

    def select_action(self, obs: dict) -> np.ndarray:
        return self.action


BASELINES: dict[str, Callable[..., DrivingPolicy]] = {
    "expert": lambda env, seed: ExpertPolicy(env),
    "random": lambda env, seed: RandomPolicy(seed),
    "constant": lambda env, seed: ConstantPolicy(),
}


def run_episode(
    env,
    policy: DrivingPolicy,
    seed: int,
    query_expert: bool = True,
    record_frames: bool = True,
    beta: float = 0.0,
    rng: np.random.Generator | None = None,
    plan_horizon: int = 0,
    goal_labels: bool = False,
) -> Episode:
    """Run one episode to its end and return it.

    ``query_expert``: label every visited state with ``env.expert_action()`` (DAgger).
    ``beta``: probability of executing the expert's action instead of the policy's at each
    step (DAgger's mixture; needs ``query_expert``), drawn from ``rng``.
    ``plan_horizon`` P > 1: also record the expert's own next P actions from every visited
    state (``env.expert_plan``, ``Episode.expert_plans``), the action-chunk labels of a policy's
    rollout. Skipped when the expert drives alone (its recorded actions are that plan).
    ``goal_labels``: also record the expert's action under every highway goal at every state
    (``env.goal_labels``, ``Episode.goal_labels``; nothing at the intersection).
    """
    if plan_horizon > 1 and not query_expert:
        raise ValueError("plan_horizon needs query_expert (plans are expert labels)")
    record_plans = plan_horizon > 1 and not isinstance(policy, ExpertPolicy)
    obs, _ = env.reset(seed=seed)
    policy.reset()
    if hasattr(policy, "hear"):  # the passenger says the command once, at the start
        policy.hear(env.goal.command, env.goal.lang)
    rng = rng or np.random.default_rng(seed)
    ego, actors = [env.ego_state()], [env.actors()]
    actions, experts, events, terms, frames, plans, per_goal = [], [], [], [], [], [], []
    record_goals = goal_labels and query_expert and env.goal_labels() is not None
    outcome = "timeout"
    while True:
        if record_frames and "cameras" in obs:
            frames.append(obs["cameras"])
        if record_plans:
            plans.append(env.expert_plan(plan_horizon))
            expert = plans[-1][0]
        else:
            expert = env.expert_action() if query_expert else np.full(2, np.nan, np.float32)
        if record_goals:
            per_goal.append(env.goal_labels())
        action = np.asarray(policy.select_action(obs), dtype=np.float32)
        if query_expert and beta > 0.0 and rng.random() < beta:
            action = expert
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(np.clip(action, ACTION_LOW, ACTION_HIGH))
        experts.append(expert)
        events.append(info["events"])
        terms.append(info["reward_terms"])
        ego.append(env.ego_state())
        actors.append(env.actors())
        if terminated or truncated:
            outcome = info.get("outcome", "timeout")
            break
    return Episode(
        scenario=env.scenario,
        density=env.density,
        seed=int(seed),
        goal=env.goal,
        outcome=outcome,
        route_length=float(env.route_length),
        policy=getattr(policy, "name", type(policy).__name__),
        cameras=env.cameras if (record_frames and frames) else (),
        ego=np.array(ego),
        actors=np.array(actors),
        actions=np.array(actions, dtype=np.float32),
        expert_actions=np.array(experts, dtype=np.float32),
        events=np.array(events, dtype=np.float32),
        reward_terms=np.array(terms, dtype=np.float32),
        frames=np.array(frames, dtype=np.uint8) if (record_frames and frames) else None,
        expert_plans=np.array(plans, dtype=np.float32).reshape(-1, plan_horizon, 2) if record_plans else None,
        goal_labels=np.array(per_goal, dtype=np.float32).reshape(len(actions), -1, 2) if record_goals else None,
    )
