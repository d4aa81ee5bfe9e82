"""Closed-loop episodes: a driving policy against an env, recorded as an ``Episode``.

A driving policy is anything with ``reset()`` and ``select_action(obs) -> [accel, steer]``
(the transformer policy adds ``predict_action_chunk`` and ``compute_loss`` on top). The
baselines here are what every learned policy is compared with: ``expert``, ``random`` and
``constant`` (hold speed, wheel straight).
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from sim.episode import Episode
from sim.interface import ACTION_HIGH, ACTION_LOW, DT
from sim.scenarios import DRIVE_COMMANDS

TALK_SEED = 0x7A1C
"""Mixed into an episode's seed for what the passenger says during the drive (``DriveTalk``)."""
CHITCHAT = "what a nice day"
"""What the passenger says when it is not a command and the env words nothing (canonical)."""


@dataclass(frozen=True)
class DriveTalk:
    """The passenger speaks again during the drive: one new command (``env.speak``: one of
    ``labels`` the expert can meet from there), finished at a time drawn uniformly in
    [``earliest_s``, ``latest_s``] after the start, from the episode's seed alone, so every
    policy hears it at the same moment of the same episode. The command heard at the start
    stays the episode's first."""

    earliest_s: float = 3.0
    latest_s: float = 6.0
    labels: tuple[str, ...] = DRIVE_COMMANDS
    chitchat: bool = False
    """Say chit-chat instead ("play some music": the env's ``rephrase`` of label ``none``, else
    ``CHITCHAT``): the goal stays the first command's, and a policy should drive on as before."""
    counterfactual_s: float = 0.0
    """> 0: when a command is said, first drive this many seconds from that moment as if nothing
    had been said (a copy of the policy, on the env's ``snapshot``; the env is then restored, so
    the episode itself is unchanged) and record the ego's states as ``Episode.unheard_ego``: what
    ``benchmarks.metrics.act_latency_cf`` compares the car's response with. Needs a backend with
    ``snapshot`` / ``restore`` (the embedded simulator)."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.counterfactual_s) and self.counterfactual_s >= 0):
            raise ValueError(f"counterfactual_s must be a finite time >= 0 in s, got {self.counterfactual_s}")
        if not 0.0 < self.earliest_s <= self.latest_s:
            raise ValueError(f"talk times must satisfy 0 < earliest_s <= latest_s, got {self.earliest_s}, "
                             f"{self.latest_s}")
        unknown = sorted(set(self.labels) - set(DRIVE_COMMANDS))
        if not self.labels or unknown:
            raise ValueError(f"talk labels must be a non-empty subset of {list(DRIVE_COMMANDS)}, got "
                             f"{list(self.labels)}")

    def draw(self, seed: int) -> tuple[int, np.random.Generator]:
        """(the step at which the command has been heard, the generator that picks and words it)."""
        rng = np.random.default_rng([int(seed), TALK_SEED])
        return max(1, int(round(rng.uniform(self.earliest_s, self.latest_s) / DT))), rng


TALK_COUNTERFACTUAL_S = 3.0
"""Seconds of the branch driven without the words (``DriveTalk.counterfactual_s``) in ``vla eval
--talk drive`` on the embedded simulator and ``vla bench speech``: ``act_within_1s_cf_rate``
compares the car with it, so 3 s leaves room for latencies past the 1 s target."""


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


@dataclass(frozen=True)
class DartNoise:
    """Perturbed execution with clean labels (DART, Laskey et al. 2017; ChauffeurNet's
    trajectory perturbations): while an episode runs, bursts of a constant offset are added to
    the EXECUTED action, and every state keeps the expert's clean action as its label. The car
    drifts during a burst and the expert's recovery from there is recorded: the off-course
    states a cloned policy will meet, without a learner in the loop.

    A burst starts at a step with probability ``burst_prob`` (not during another), lasts
    ``burst_steps`` steps (uniform, both ends included) and adds one offset drawn per burst
    from N(0, ``accel_std``) and N(0, ``steer_std``). Everything is drawn from the episode's
    generator, so an episode is reproducible from its seed. A step is clean when the action
    executed equals the expert's label (``Episode.actions == Episode.expert_actions``).

    Those bursts last under a second: they move the car across its lane but change its speed by
    about 0.5 m/s, so a cloned policy never sees the expert recover from a speed far off its
    target (a car that braked to 15 m/s under "slow down", whose target is 20). ``speed_prob``
    > 0 adds a second, independent process of SPEED bursts: a longitudinal offset drawn from
    N(0, ``speed_std``) held for ``speed_steps`` steps (2-5 s by default), which the expert's
    own controller fights, so the car ends up 2-5 m/s off its target speed before the burst
    ends and the expert's recovery is recorded. (At 1.5 m/s^2 and 1.5-4 s the expert's
    controller held the speed within about 2 m/s: the share of recorded states under 17.5 m/s
    rose only from 9.2% to 10.5% on the medium highway.) Off by default (episodes recorded without
    it are unchanged: the process draws nothing from the generator when off). Tried against the
    slow-down misses on 3 seeds x 50 held-out episodes: slow down gained in medium traffic, but
    goal success fell (-0.033), off-road and lateral jerk rose, and dense slow down did not gain,
    so no recipe uses it (docs/drive_like_expert.md, "Speed bursts")."""

    burst_prob: float = 0.04
    """Chance per step that a burst starts."""
    burst_steps: tuple[int, int] = (3, 8)
    """Shortest and longest burst, in 10 Hz steps."""
    accel_std: float = 1.0
    """m/s^2; std of a burst's acceleration offset."""
    steer_std: float = 0.02
    """rad; std of a burst's steering offset (0.02 rad at 25 m/s: ~2.5 m/s^2 lateral)."""
    speed_prob: float = 0.0
    """Chance per step that a speed burst starts (not during another speed burst); 0 = none."""
    speed_steps: tuple[int, int] = (20, 50)
    """Shortest and longest speed burst, in 10 Hz steps."""
    speed_std: float = 2.5
    """m/s^2; std of a speed burst's acceleration offset."""

    def __post_init__(self) -> None:
        lo, hi = self.burst_steps
        slo, shi = self.speed_steps
        if not (0.0 <= self.burst_prob <= 1.0 and 1 <= lo <= hi and self.accel_std >= 0 and self.steer_std >= 0
                and 0.0 <= self.speed_prob <= 1.0 and 1 <= slo <= shi and self.speed_std >= 0):
            raise ValueError(f"DartNoise needs burst_prob and speed_prob in [0, 1], 1 <= steps[0] <= steps[1] "
                             f"and stds >= 0, got {self}")


class _Bursts:
    """The running state of ``DartNoise`` within one episode."""

    def __init__(self, noise: DartNoise, rng: np.random.Generator) -> None:
        self.noise, self.rng, self.left, self.offset = noise, rng, 0, np.zeros(2)
        self.speed_left, self.speed_offset = 0, 0.0

    def __call__(self) -> np.ndarray:
        n = self.noise
        if self.left == 0 and self.rng.random() < n.burst_prob:
            self.left = int(self.rng.integers(n.burst_steps[0], n.burst_steps[1] + 1))
            self.offset = self.rng.normal(0.0, [n.accel_std, n.steer_std])
        out = np.zeros(2)
        if self.left > 0:
            self.left -= 1
            out = out + self.offset
        if n.speed_prob > 0:  # drawn only when on: episodes recorded without speed bursts stay as they were
            if self.speed_left == 0 and self.rng.random() < n.speed_prob:
                self.speed_left = int(self.rng.integers(n.speed_steps[0], n.speed_steps[1] + 1))
                self.speed_offset = float(self.rng.normal(0.0, n.speed_std))
            if self.speed_left > 0:
                self.speed_left -= 1
                out[0] += self.speed_offset
        return out


BASELINES: dict[str, Callable[..., DrivingPolicy]] = {
    "expert": lambda env, seed: ExpertPolicy(env),
    "random": lambda env, seed: RandomPolicy(seed),
    "constant": lambda env, seed: ConstantPolicy(),
}


STEP_TIMEOUT = 120.0
"""Seconds one simulator step may take before the watchdog ends the episode as ``sim_error``
(an embedded step takes milliseconds; a CARLA tick that hangs is the case this catches)."""


class SimulatorFault(RuntimeError):
    """The simulator failed during a step (hung, or returned a non-finite state)."""


@contextmanager
def _watchdog(seconds: float | None):
    """Raise ``SimulatorFault`` in this thread if the block runs longer than ``seconds`` (a
    SIGALRM timer: main thread on POSIX only; elsewhere the block runs unguarded)."""
    seconds = STEP_TIMEOUT if seconds is None else seconds
    if not seconds or seconds <= 0 or not hasattr(signal, "setitimer") \
            or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise SimulatorFault(f"the simulator step took longer than {seconds:g} s (watchdog)")

    pending = signal.getitimer(signal.ITIMER_REAL)
    if 0 < pending[0] <= seconds:  # someone else's alarm (e.g. a test timeout) comes first: leave it be
        yield
        return
    previous = signal.signal(signal.SIGALRM, fire)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending[0] > 0:  # give the outer alarm back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(pending[0] - (time.monotonic() - start), 1e-3), pending[1])


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
    goal_futures: bool = False,
    noise: DartNoise | None = None,
    plan_every: int = 1,
    step_timeout: float | None = None,
    talk: DriveTalk | None = None,
) -> Episode:
    """Run one episode to its end and return it.

    A simulator fault during a step (``env.step`` raises, takes longer than ``step_timeout``
    seconds, default ``STEP_TIMEOUT``, or returns a non-finite state) ends the episode with
    outcome ``sim_error`` and the reason in ``Episode.error``, keeping every step before it, so
    an evaluation or a DAgger session goes on with the next episode. A fault of the policy (a
    non-finite action) raises: that is a bug to see, not a simulator to survive.

    ``query_expert``: label every visited state with ``env.expert_action()`` (DAgger).
    ``beta``: probability of executing the expert's action instead of the policy's at each
    step (DAgger's mixture; needs ``query_expert``), drawn from ``rng``.
    ``plan_horizon`` P > 1: also record the expert's own continuation from every visited
    state: its next P actions and the poses they reach (``env.expert_continuation``,
    ``Episode.expert_plans`` / ``expert_futures``), the action-chunk and plan labels of a
    policy's rollout. Skipped when the expert drives alone (its recorded trajectory is that
    continuation wherever it executed its own actions).
    ``plan_every`` m: simulate that continuation at every m-th state only (the others get NaN
    rows, i.e. no plan label; their expert action is still queried): the continuation costs P
    simulator steps per state.
    ``noise``: DART bursts added to the executed action (``DartNoise``), drawn from ``rng``;
    the labels stay the expert's clean actions (needs ``query_expert``).
    ``goal_labels``: also record the expert's action under every highway goal at every state
    (``env.goal_labels``, ``Episode.goal_labels``; nothing at the intersection).
    ``goal_futures`` (needs ``goal_labels`` and ``plan_horizon`` P > 1): also the poses of the
    expert's P-step continuation under every other highway goal at every ``plan_every``-th
    state (``env.goal_futures``, ``Episode.goal_futures``: the plan labels of goal
    relabelling; recorded when the expert drives too; P simulator steps per goal and state).
    ``talk``: the passenger gives a new command during the drive (``DriveTalk``; highway): the
    env's goal changes at the drawn step, a policy with ``hear`` hears the new words then, and
    ``Episode.goal`` / ``heard_at`` record it (no new command when none qualifies); or, with
    ``DriveTalk(chitchat=True)``, the policy hears chit-chat then and nothing else changes.
    """
    if goal_futures and not (goal_labels and plan_horizon > 1):
        raise ValueError("goal_futures needs goal_labels and plan_horizon > 1")
    if plan_horizon > 1 and not query_expert:
        raise ValueError("plan_horizon needs query_expert (plans are expert labels)")
    if plan_every < 1:
        raise ValueError(f"plan_every must be >= 1, got {plan_every}")
    if noise is not None and not query_expert:
        raise ValueError("DART noise needs query_expert (its labels are the expert's clean actions)")
    if talk is not None and not hasattr(env, "speak"):
        raise ValueError(f"the {type(env).__name__} backend cannot take a command during the drive (no speak())")
    if talk is not None and talk.counterfactual_s > 0 and not hasattr(env, "snapshot"):
        raise ValueError(f"the {type(env).__name__} backend cannot drive a counterfactual branch (no snapshot()); "
                         "use counterfactual_s=0")
    record_plans = plan_horizon > 1 and not isinstance(policy, ExpertPolicy)
    obs, _ = env.reset(seed=seed)
    policy.reset()
    if hasattr(policy, "hear"):  # the passenger says the command once, at the start (in a voice drawn for seed)
        policy.hear(env.goal.command, env.goal.lang, seed=seed)
    rng = rng or np.random.default_rng(seed)
    bursts = _Bursts(noise, rng) if noise is not None else None
    ego, actors = [env.ego_state()], [env.actors()]
    actions, experts, events, terms, frames, plans, futures, per_goal = [], [], [], [], [], [], [], []
    routes: list | None = [obs["route"]] if "route" in obs else None  # the backend's route features, per state
    record_goals = goal_labels and query_expert and env.goal_labels() is not None
    record_goal_futures = record_goals and goal_futures
    goal_futures = []
    outcome, error = "timeout", ""
    talk_step, talk_rng = talk.draw(seed) if talk is not None else (-1, None)
    heard_at, unheard = 0, None
    while True:
        if len(actions) == talk_step and talk.chitchat:
            if hasattr(policy, "hear"):
                rephrase = getattr(env, "rephrase", None)
                chat = rephrase(replace(env.goal, label="none"), talk_rng) if rephrase is not None else None
                policy.hear(*((chat.command, chat.lang) if chat is not None else (CHITCHAT, "en")), seed=seed)
        elif len(actions) == talk_step:
            before = env.snapshot() if talk.counterfactual_s > 0 else None
            said = env.speak(talk_rng, talk.labels)
            if said is not None:
                goal, obs = said
                heard_at = talk_step
                if before is not None:
                    unheard = _unheard_branch(env, policy, before, max(1, int(round(talk.counterfactual_s / DT))))
                if hasattr(policy, "hear"):
                    policy.hear(goal.command, goal.lang, seed=seed)
        if record_frames and "cameras" in obs:
            frames.append(obs["cameras"])
        if record_plans and len(actions) % plan_every == 0:
            plan, future = env.expert_continuation(plan_horizon)
            plans.append(plan)
            futures.append(future)
            expert = plan[0]
        elif record_plans:
            expert = env.expert_action()
            plans.append(np.full((plan_horizon, 2), np.nan, np.float32))
            plans[-1][0] = expert
            futures.append(np.full((plan_horizon, 4), np.nan, np.float32))
        else:
            expert = env.expert_action() if query_expert else np.full(2, np.nan, np.float32)
        if record_goals:
            per_goal.append(env.goal_labels())
        if record_goal_futures:
            goal_futures.append(env.goal_futures(plan_horizon) if len(actions) % plan_every == 0 else
                                np.full((len(per_goal[-1]), plan_horizon, 4), np.nan, np.float32))
        action = np.asarray(policy.select_action(obs), dtype=np.float32)
        if query_expert and beta > 0.0 and rng.random() < beta:
            action = expert
        if bursts is not None:
            action = action + bursts()
        if not np.all(np.isfinite(action)):
            raise ValueError(f"policy {getattr(policy, 'name', type(policy).__name__)} returned a non-finite "
                             f"action {action.tolist()} at step {len(actions)} (seed {seed})")
        try:
            with _watchdog(step_timeout):
                obs, _, terminated, truncated, info = env.step(action)
                ego_row, actor_rows = env.ego_state(), env.actors()
            if not (np.all(np.isfinite(ego_row)) and np.all(np.isfinite(actor_rows))):
                raise SimulatorFault("the simulator returned a non-finite state")
        except Exception as e:  # the simulator failed: end this episode, keep every step before
            error = str(e) if isinstance(e, SimulatorFault) else f"{type(e).__name__} in step: {e}"
            outcome = "sim_error"
            for rows in (frames, plans, futures, per_goal, goal_futures):
                del rows[len(actions):]
            break
        actions.append(np.clip(action, ACTION_LOW, ACTION_HIGH))
        experts.append(expert)
        events.append(info["events"])
        terms.append(info["reward_terms"])
        ego.append(ego_row)
        actors.append(actor_rows)
        if routes is not None:
            routes.append(obs["route"])
        if terminated or truncated:
            outcome = info.get("outcome", "timeout")
            break
    return Episode(
        scenario=env.scenario,
        density=env.density,
        seed=int(seed),
        goal=env.goal,
        outcome=outcome,
        error=error,
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
        expert_futures=np.array(futures, dtype=np.float32).reshape(-1, plan_horizon, 4) if record_plans else None,
        goal_labels=np.array(per_goal, dtype=np.float32).reshape(len(actions), -1, 2) if record_goals else None,
        goal_futures=(np.array(goal_futures, dtype=np.float32).reshape(len(actions), -1, plan_horizon, 4)
                      if record_goal_futures else None),
        route=None if routes is None else np.array(routes, dtype=np.float32).reshape(len(actions) + 1, -1),
        heard_at=heard_at,
        unheard_ego=unheard,
    )


def _unheard_branch(env, policy, before, steps: int) -> np.ndarray:
    """(<= steps + 1, len(EGO_FIELDS)) the ego's states from the snapshot ``before`` (the moment a
    command was said, taken before saying it) for ``steps`` steps, driven by a copy of ``policy``
    that never heard it; shorter when that branch ends first. The env is returned to the state
    it was in when called, so the episode goes on as if this had not run."""
    after = env.snapshot()
    try:
        obs = env.restore(before)
        shadow = copy.deepcopy(policy, {id(env): env})  # a policy that reads the env reads this one
        rows = [env.ego_state()]
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(np.asarray(shadow.select_action(obs), dtype=np.float32))
            rows.append(env.ego_state())
            if terminated or truncated:
                break
    finally:
        env.restore(after)
    return np.stack(rows).astype(np.float64)
