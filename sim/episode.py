"""One recorded closed-loop episode: the unit that storage writes, metrics read and the
tokenizers turn into token streams. The in-memory and on-disk forms hold the same fields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.cameras import CameraSpec
from sim.route import ROUTE_FIELDS
from sim.scenarios import HIGHWAY_GOAL_LABELS
from sim.interface import (
    ACTION_FIELDS,
    ACTOR_FIELDS,
    DT,
    EGO_FIELDS,
    EVENT_FIELDS,
    MAX_ACTORS,
    POSE_FIELDS,
    REWARD_FIELDS,
    Goal,
)

OUTCOMES = ("route_complete", "collision", "off_road", "route_deviation", "timeout", "sim_error")
"""``sim_error``: the simulator failed during the episode (it raised, hung past the step
watchdog or returned a non-finite state); ``Episode.error`` says how."""


@dataclass(frozen=True)
class Episode:
    """T actions taken from states s_0..s_T.

    Per-step arrays are indexed by the step t at which the action was chosen; ``events`` and
    ``reward_terms`` at t describe what the step t -> t+1 caused.
    """

    scenario: str
    density: str
    seed: int
    goal: Goal
    outcome: str  # one of OUTCOMES
    route_length: float  # metres
    policy: str  # what drove: "expert", "random", a checkpoint path, ...
    cameras: tuple[CameraSpec, ...]
    ego: np.ndarray  # (T+1, len(EGO_FIELDS)) float64, states s_0..s_T
    actors: np.ndarray  # (T+1, MAX_ACTORS, len(ACTOR_FIELDS)) float64
    actions: np.ndarray  # (T, 2) float32, executed [accel m/s^2, steer rad]
    expert_actions: np.ndarray  # (T, 2) float32, expert at s_t; NaN where not queried
    events: np.ndarray  # (T, len(EVENT_FIELDS)) float32 0/1
    reward_terms: np.ndarray  # (T, len(REWARD_FIELDS)) float32
    frames: np.ndarray | None = None  # (T, N_cams, H, W, 3) uint8 at s_t, or None
    dt: float = DT
    expert_plans: np.ndarray | None = None
    """(T, P, 2) float32: the expert's own next P actions from s_t (``env.expert_plan``; NaN
    past the end of that continuation), the action-chunk labels of a state a policy visited;
    None when not recorded (an expert-driven episode needs none: its recorded expert actions
    are that plan)."""
    goal_labels: np.ndarray | None = None
    """(T, G, 2) float32: the expert's action at s_t under each highway goal
    ``sim.scenarios.HIGHWAY_GOAL_LABELS`` (``env.goal_labels``; NaN where that goal is not
    possible), or None when not recorded."""
    expert_futures: np.ndarray | None = None
    """(T, P, 4) float32 ``POSE_FIELDS``: the ego's poses after each of the expert's next P
    actions from s_t (``env.expert_continuation``; NaN past its end), where the expert would
    have driven from a state a policy visited: the labels of a plan-head policy (``sim.plan``);
    None when not recorded (where the expert drove, the recorded trajectory is that future)."""
    error: str = ""
    """Why the simulator ended the episode when ``outcome`` is ``sim_error`` ('' otherwise)."""
    goal_futures: np.ndarray | None = None
    """(T, G, P, 4) float32 ``POSE_FIELDS``: the ego's poses in the expert's next P steps from s_t
    had the passenger asked for each highway goal ``HIGHWAY_GOAL_LABELS`` (``env.goal_futures``;
    NaN for the episode's own goal, impossible goals, unrecorded states and past the end): the
    plan labels of goal relabelling; None when not recorded."""

    heard_at: int = 0
    """The step at which the passenger finished saying ``goal``: 0 when it was said before the
    drive, t > 0 when it came during the drive (``run_episode(talk=...)``), replacing the
    command heard before; the states before t were driven under that earlier command."""

    route: np.ndarray | None = None
    """(T+1, len(ROUTE_FIELDS)) float32: ``obs["route"]`` at s_0..s_T (``sim.route``: the distance to
    the next junction and the route's point ahead in the lane frame), or None when the backend
    did not report it (episodes recorded before it existed)."""

    unheard_ego: np.ndarray | None = None
    """(K+1, len(EGO_FIELDS)) float64: the ego's states from s_heard_at on had the passenger said
    nothing then (``DriveTalk.counterfactual_s``: the same policy and traffic from the same
    moment, without the words), row 0 being s_heard_at itself; None when not driven. Evaluation
    only: not stored with the episode."""

    def __post_init__(self) -> None:
        t = self.actions.shape[0]
        expect = {
            "ego": (t + 1, len(EGO_FIELDS)),
            "actors": (t + 1, MAX_ACTORS, len(ACTOR_FIELDS)),
            "actions": (t, len(ACTION_FIELDS)),
            "expert_actions": (t, len(ACTION_FIELDS)),
            "events": (t, len(EVENT_FIELDS)),
            "reward_terms": (t, len(REWARD_FIELDS)),
        }
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"episode field {name!r} has shape {got}, expected {shape}")
        if self.unheard_ego is not None:
            u = self.unheard_ego
            if u.ndim != 2 or u.shape[0] < 1 or u.shape[1] != len(EGO_FIELDS) or self.heard_at <= 0:
                raise ValueError(f"episode field 'unheard_ego' has shape {u.shape} (heard_at {self.heard_at}), "
                                 f"expected (K+1, {len(EGO_FIELDS)}) for a command heard during the drive")
        if self.expert_plans is not None:
            plans = self.expert_plans
            if plans.ndim != 3 or plans.shape[0] != t or plans.shape[1] < 1 or plans.shape[2] != len(ACTION_FIELDS):
                raise ValueError(f"episode field 'expert_plans' has shape {plans.shape}, expected ({t}, P, "
                                 f"{len(ACTION_FIELDS)})")
        if self.expert_futures is not None:
            f = self.expert_futures
            if f.ndim != 3 or f.shape[0] != t or f.shape[1] < 1 or f.shape[2] != len(POSE_FIELDS):
                raise ValueError(f"episode field 'expert_futures' has shape {f.shape}, expected ({t}, P, "
                                 f"{len(POSE_FIELDS)})")
        if self.goal_futures is not None:
            f = self.goal_futures
            if f.ndim != 4 or f.shape[0] != t or f.shape[1] != len(HIGHWAY_GOAL_LABELS) or f.shape[3] != len(POSE_FIELDS):
                raise ValueError(f"episode field 'goal_futures' has shape {f.shape}, expected ({t}, "
                                 f"{len(HIGHWAY_GOAL_LABELS)}, P, {len(POSE_FIELDS)})")
        if self.goal_labels is not None:
            g = self.goal_labels
            if g.ndim != 3 or g.shape[0] != t or g.shape[1] != len(HIGHWAY_GOAL_LABELS) or g.shape[2] != len(ACTION_FIELDS):
                raise ValueError(f"episode field 'goal_labels' has shape {g.shape}, expected ({t}, "
                                 f"{len(HIGHWAY_GOAL_LABELS)}, {len(ACTION_FIELDS)})")
        if self.route is not None and self.route.shape != (t + 1, len(ROUTE_FIELDS)):
            raise ValueError(f"episode field 'route' has shape {self.route.shape}, expected ({t + 1}, {len(ROUTE_FIELDS)})")
        if not 0 <= self.heard_at <= t:
            raise ValueError(f"episode heard_at {self.heard_at} is outside its steps 0..{t}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"episode outcome {self.outcome!r} not in {OUTCOMES}")
        if bool(self.error) != (self.outcome == "sim_error"):
            raise ValueError(f"episode error {self.error!r} does not match outcome {self.outcome!r} "
                             "(a sim_error episode says why; no other has an error)")
        if self.frames is not None:
            cams = len(self.cameras)
            if self.frames.ndim != 5 or self.frames.shape[:2] != (t, cams) or self.frames.shape[-1] != 3:
                raise ValueError(
                    f"episode frames have shape {self.frames.shape}, expected ({t}, {cams}, H, W, 3)"
                )
            if self.frames.dtype != np.uint8:
                raise ValueError(f"episode frames must be uint8, got {self.frames.dtype}")

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    def meta(self) -> dict:
        """The per-episode fields as JSON-able values."""
        return {
            "scenario": self.scenario,
            "density": self.density,
            "seed": int(self.seed),
            "goal": self.goal.to_dict(),
            "outcome": self.outcome,
            "route_length": float(self.route_length),
            "policy": self.policy,
            "cameras": [c.to_dict() for c in self.cameras],
            "dt": float(self.dt),
            "num_steps": self.num_steps,
            **({"error": self.error} if self.error else {}),
            **({"heard_at": int(self.heard_at)} if self.heard_at else {}),
        }
