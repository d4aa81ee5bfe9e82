"""The driving constitution: written rules that rank candidate trajectories automatically.

As in Constitutional AI, no human labels the preference pairs: each candidate continuation
from a shared state gets a COST per rule (lower is better, 0 = the rule holds) and two
candidates are compared LEXICOGRAPHICALLY in the order below: the first rule whose costs differ
by more than that rule's margin decides, and is named as the reason. Costs within the margin
count as equal and the comparison moves on; if no rule separates them the pair is a tie (no
preference pair is made).

Rules, in priority order (costs are computed on the continuation s_0..s_T; s_0 is shared):

1. ``no_collision``: 1 if the continuation collides (collision_vehicle/static event), else 0.
2. ``ttc``: ``max(0, ttc_min_s - min TTC)`` in seconds over s_1..s_c (up to the first collision),
   TTC from ``benchmarks.metrics.time_to_collision`` (constant-velocity boxes, capped at its
   horizon).
3. ``on_road``: seconds spent off the road.
4. ``in_lane``: seconds with a lane-marking invasion that is not part of a permitted lane
   change. Permitted: while the ego's lateral position (in lane units) lies between its lane at
   s_0 and the commanded target lane (lane commands), or between its lanes at s_0 and s_T (speed
   commands, which may overtake; an overtake must be completed within the horizon). Keep-lane
   commands and turns permit none.
5. ``speed_limit``: integral of ``max(0, v - limit - speed_tolerance)`` over time (metres driven
   faster than allowed).
6. ``command``: distance from the passenger's command at s_T: lane commands, lanes between the
   ego's lateral position and the target lane's centre; speed commands, m/s outside the
   ``sim.scenarios.SPEED_TOLERANCE`` band around the target speed; turns, 1 if the route was
   left (``route_deviation``). The margin is per goal kind (lanes vs m/s).
7. ``comfort``: fraction of samples outside the nuPlan comfort bounds
   (``benchmarks.metrics.comfort_mask`` / ``NUPLAN_COMFORT``) over s_1..s_T, with the two states
   before the branch prepended so the jerk of switching to the continuation counts.
8. ``progress``: minus the metres gained along the route (reward term ``progress_m``).

Rules 1-7 can be VIOLATED (cost > 0); ``progress`` only ranks. The thresholds and margins live
in ``ConstitutionConfig``; the rules themselves in the explicit ``RULES`` registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace

import numpy as np

from benchmarks.metrics import (
    COLLISIONS,
    TTC_HORIZON,
    comfort_mask,
    kinematics,
    time_to_collision,
)
from sim.scenarios import SPEED_TOLERANCE
from sim.interface import DT, EGO, EVENT, REWARD, Goal


@dataclass(frozen=True)
class ConstitutionConfig:
    """Thresholds and decision margins of the rules (see the module docstring)."""

    ttc_min_s: float = 1.5
    """Time to collision below this many seconds violates ``ttc``."""
    speed_tolerance: float = 0.5
    """m/s above the lane's speed limit tolerated (the simulator's own ``speeding`` event)."""
    lane_width: float = 4.0
    """m, lane width used to express lateral positions in lanes (highway-env's lanes)."""
    margin_collision: float = 0.5
    """Collision costs are 0/1: any difference decides."""
    margin_ttc: float = 0.25
    """s of TTC shortfall that counts as a difference."""
    margin_on_road: float = 0.05
    """s off-road (one 0.1 s step decides)."""
    margin_in_lane: float = 0.15
    """s of unpermitted lane invasion (two steps decide)."""
    margin_speed_limit: float = 0.2
    """m driven over the limit."""
    margin_command_lanes: float = 0.25
    """Lanes from the target lane (lane commands): 1 m at 4 m lanes."""
    margin_command_speed: float = 0.5
    """m/s outside the target-speed band (speed commands)."""
    margin_command_turn: float = 0.5
    """Route deviation is 0/1 (turn commands)."""
    margin_comfort: float = 0.04
    """Fraction of uncomfortable samples (about one sample of a 2-3 s continuation)."""
    margin_progress: float = 1.0
    """m of route progress."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ConstitutionConfig.{f.name} must be a finite number >= 0, got {value!r}")
        if self.lane_width <= 0:
            raise ValueError(f"ConstitutionConfig.lane_width must be > 0, got {self.lane_width}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Trajectory:
    """One continuation of T steps from a branch state s_0 (what the constitution judges)."""

    ego: np.ndarray  # (T+1, len(EGO_FIELDS)) states s_0..s_T
    actors: np.ndarray  # (T+1, MAX_ACTORS, len(ACTOR_FIELDS))
    events: np.ndarray  # (T, len(EVENT_FIELDS)) caused by step t -> t+1
    reward_terms: np.ndarray  # (T, len(REWARD_FIELDS))
    history: np.ndarray  # (k, len(EGO_FIELDS)), k <= 2: the states just before s_0 (oldest first)
    outcome: str = ""  # the env's outcome if the continuation ended the episode
    dt: float = DT

    def __post_init__(self) -> None:
        t = self.events.shape[0]
        if self.ego.shape[0] != t + 1 or self.actors.shape[0] != t + 1 or self.reward_terms.shape[0] != t:
            raise ValueError(f"trajectory arrays disagree on T: ego {self.ego.shape}, actors "
                             f"{self.actors.shape}, events {self.events.shape}, reward_terms {self.reward_terms.shape}")

    @property
    def num_steps(self) -> int:
        return int(self.events.shape[0])


def _collision(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    return float(np.any(tr.events[:, [EVENT[n] for n in COLLISIONS]] > 0.5))


def _ttc(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    if tr.num_steps == 0:
        return 0.0
    ttc = time_to_collision(SimpleNamespace(ego=tr.ego, actors=tr.actors))[1:]
    crash = np.flatnonzero(np.any(tr.events[:, [EVENT[n] for n in COLLISIONS]] > 0.5, axis=1))
    if len(crash):
        ttc = ttc[: crash[0] + 1]
    return max(0.0, c.ttc_min_s - float(min(np.min(ttc), TTC_HORIZON)))


def _on_road(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    return float(np.sum(tr.events[:, EVENT["off_road"]] > 0.5)) * tr.dt


def lateral_lanes(ego: np.ndarray, lane_width: float) -> np.ndarray:
    """Lateral position in lane units (lane 0 = leftmost; offsets positive to the left)."""
    ego = np.atleast_2d(ego)
    return ego[:, EGO["lane_id"]] - ego[:, EGO["lane_offset"]] / lane_width


def _in_lane(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    if tr.num_steps == 0:
        return 0.0
    invading = tr.events[:, EVENT["lane_invasion"]] > 0.5
    lane0 = float(tr.ego[0, EGO["lane_id"]])
    if goal.kind == "lane_speed" and goal.target_lane >= 0:
        ends = (lane0, float(goal.target_lane))
    elif goal.kind == "lane_speed":  # speed command: a completed overtake is allowed
        ends = (lane0, float(tr.ego[-1, EGO["lane_id"]]))
    else:
        ends = (lane0, lane0)
    p = lateral_lanes(tr.ego[1:], c.lane_width)
    permitted = (p >= min(ends)) & (p <= max(ends)) & (ends[0] != ends[1])
    return float(np.sum(invading & ~permitted)) * tr.dt


def _speed_limit(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    v, limit = tr.ego[1:, EGO["speed"]], tr.ego[1:, EGO["speed_limit"]]
    over = np.where(limit > 0, np.maximum(0.0, v - limit - c.speed_tolerance), 0.0)
    return float(np.sum(over)) * tr.dt


def _command(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    end = tr.ego[-1]
    if goal.kind == "turn":
        return float(tr.outcome == "route_deviation")
    if goal.target_lane >= 0:
        return float(abs(lateral_lanes(end, c.lane_width)[0] - goal.target_lane))
    return max(0.0, abs(float(end[EGO["speed"]]) - goal.target_speed) - SPEED_TOLERANCE)


def _comfort(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    track = np.concatenate([tr.history[-2:], tr.ego])
    mask = comfort_mask(kinematics(SimpleNamespace(ego=track, dt=tr.dt)))
    mask = mask[-tr.num_steps:] if tr.num_steps else mask[:0]  # samples s_1..s_T
    return float(1.0 - np.mean(mask)) if len(mask) else 0.0


def _progress(tr: Trajectory, goal: Goal, c: ConstitutionConfig) -> float:
    return -float(np.sum(tr.reward_terms[:, REWARD["progress_m"]]))


def _command_margin(goal: Goal, c: ConstitutionConfig) -> float:
    if goal.kind == "turn":
        return c.margin_command_turn
    return c.margin_command_lanes if goal.target_lane >= 0 else c.margin_command_speed


@dataclass(frozen=True)
class Rule:
    name: str
    doc: str
    cost: Callable[[Trajectory, Goal, ConstitutionConfig], float]
    margin: Callable[[Goal, ConstitutionConfig], float]
    violable: bool = True
    """False for ranking-only rules (progress): their cost is never a violation."""


def _fixed(field_name: str) -> Callable[[Goal, ConstitutionConfig], float]:
    return lambda goal, c: float(getattr(c, field_name))


RULES: tuple[Rule, ...] = (
    Rule("no_collision", "never collide", _collision, _fixed("margin_collision")),
    Rule("ttc", "keep time-to-collision above ttc_min_s", _ttc, _fixed("margin_ttc")),
    Rule("on_road", "stay on the road", _on_road, _fixed("margin_on_road")),
    Rule("in_lane", "stay in lane except during a permitted lane change", _in_lane, _fixed("margin_in_lane")),
    Rule("speed_limit", "respect the speed limit", _speed_limit, _fixed("margin_speed_limit")),
    Rule("command", "follow the passenger's command", _command, _command_margin),
    Rule("comfort", "stay within the nuPlan comfort bounds", _comfort, _fixed("margin_comfort")),
    Rule("progress", "make progress along the route", _progress, _fixed("margin_progress"), violable=False),
)
"""The constitution, highest priority first."""
RULE_NAMES = tuple(r.name for r in RULES)
RULE_INDEX = {name: i for i, name in enumerate(RULE_NAMES)}


@dataclass(frozen=True)
class Verdict:
    """Outcome of comparing two trajectories."""

    winner: int  # 0: the first is preferred, 1: the second, -1: a tie (no rule separates them)
    rule: str  # the deciding rule's name ("" on a tie)
    gap: float  # |cost difference| on the deciding rule (0 on a tie)


class Constitution:
    def __init__(self, config: ConstitutionConfig = ConstitutionConfig(), rules: Sequence[Rule] = RULES) -> None:
        self.config, self.rules = config, tuple(rules)

    def costs(self, tr: Trajectory, goal: Goal) -> np.ndarray:
        """(len(rules),) float64 cost of each rule, lower is better."""
        return np.array([r.cost(tr, goal, self.config) for r in self.rules], dtype=np.float64)

    def margins(self, goal: Goal) -> np.ndarray:
        return np.array([r.margin(goal, self.config) for r in self.rules], dtype=np.float64)

    def violations(self, costs: np.ndarray) -> list[str]:
        """Names of the violated rules (cost > 0 on a violable rule)."""
        return [r.name for r, v in zip(self.rules, costs) if r.violable and v > 1e-9]

    def compare(self, costs_a: np.ndarray, costs_b: np.ndarray, goal: Goal) -> Verdict:
        """Lexicographic comparison with per-rule margins; names the deciding rule."""
        for rule, a, b, m in zip(self.rules, costs_a, costs_b, self.margins(goal)):
            if abs(a - b) > m + 1e-12:
                return Verdict(winner=0 if a < b else 1, rule=rule.name, gap=float(abs(a - b)))
        return Verdict(winner=-1, rule="", gap=0.0)

    def best(self, all_costs: Sequence[np.ndarray], goal: Goal) -> int:
        """Index of a best candidate: the one no other candidate beats, wins ties by count of
        wins, then by the exact lexicographic cost order (deterministic)."""
        n = len(all_costs)
        if n == 0:
            raise ValueError("best() needs at least one candidate")
        beaten = np.zeros(n, dtype=int)
        wins = np.zeros(n, dtype=int)
        for i in range(n):
            for j in range(i + 1, n):
                v = self.compare(all_costs[i], all_costs[j], goal)
                if v.winner == 0:
                    wins[i], beaten[j] = wins[i] + 1, beaten[j] + 1
                elif v.winner == 1:
                    wins[j], beaten[i] = wins[j] + 1, beaten[i] + 1
        return min(range(n), key=lambda i: (beaten[i], -wins[i], tuple(all_costs[i]), i))
