"""Checks beside the network on open road: the merge check, the following check and the road edge.

The merge check: begin a lane change only into a gap the expert would take.

In dense traffic a cloned plan policy's collisions are lane changes begun into a car in the
target lane (docs/drive_like_expert.md): the expert decides a change by MOBIL's safety
criterion (``sim.highway_expert._lane_change_safe``), a threshold on two gaps that a network
trained on a few hundred episodes reads only approximately. This is the same criterion from the
observation alone, applied beside the network like the junction's yield check
(``sim.yield_check``):

* **When**: the plan being executed ends more than half a lane to one side (a lane change) and
  the car is not yet committed to it (less than ``committed`` m toward the new lane).
* **The gap**: the nearest observed actor behind and ahead in the target lane (actors' positions
  in the current lane's frame, lanes ``lane_width`` apart; no lane ids, nothing a backend does
  not report).
* **Safe**: the new follower, following us by IDM toward its desired speed (estimated as the
  larger of its speed and the lane's speed limit), would brake no harder than ``b_safe``
  (MOBIL's criterion, the expert's 2 m/s^2), and we would brake behind the new leader (more
  than the jam distance ahead) no harder than ``b_safe`` or than behind the current one (the
  expert's own condition; our desired speed taken as our speed).
* **Otherwise**: the plan keeps its speed profile and stays in the lane (its lateral offsets
  become the lane centre's); the next plan asks again.

``PolicyConfig.merge_brake`` (m/s^2; 0 = off) turns it on for a plan policy. Both checks act on
open road only (no junction within ``sim.route.JUNCTION_HORIZON`` m): a turn's plan also ends far
to one side, and crossing traffic is the yield check's (``sim.yield_check``).

The following check: never close on the car ahead faster than braking can undo. A cloned plan
brakes as the expert usually does (up to about 3 m/s^2) also where the expert's car-following law
would brake harder, e.g. behind a slower car that cut in or brakes itself (dense traffic's
rear-end collisions). Each step, the nearest observed actor ahead within half a lane of our
lateral position is the leader. Keeping ``margin`` m of bumper gap (``room`` beyond it) takes
``dv^2 / (2 room)`` of braking, ``dv`` the closing speed on the leader's speed ``lookahead`` s
later (its braking, from its speed one step ago, carried on that long; a leader assumed to brake
to a stop made the check brake at the limit in a third of dense episodes, dev). When that
exceeds ``trigger`` m/s^2 the car brakes at it (up to the actuator's limit), unless the plan
already brakes harder; no room left at all: the hardest brake.
``PolicyConfig.follow_brake`` (the trigger; 0 = off) turns it on.

The road edge (``keep_on_road``): a plan's lateral offsets are kept between the centres of the
outermost same-direction lanes the backend reports (``obs["lanes"]``), on open road only. The
expert never plans off the road; a network that mishears "keep your lane" as a lane change can,
from the outermost lane. ``PolicyConfig.road_edge`` (0 / 1; 1 by default) turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.driver_models import PARAMS, ExpertParams, acc_model, idm
from sim.interface import ACTION_LOW, ACTOR, EGO
from sim.plan import plan_frame, to_frame


@dataclass(frozen=True)
class MergeParams:
    b_safe: float = 2.0
    """m/s^2: the most braking a lane change may impose on the new follower, or on us behind the
    new leader (the expert's MOBIL ``b_safe``); 0 turns the check off."""
    lane_width: float = 4.0
    """m between lane centres (highway-env's; CARLA's highways: about 3.5)."""
    committed: float = 1.0
    """m toward the new lane after which a change under way is no longer checked (turning back
    from there is the riskier move; the expert commits at 0.5 m)."""


def _lane_frame(ego: np.ndarray, actors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The present actors' rows, their positions and the ego's in the current lane's frame (x
    along the lane, y to its left): (rows (M,), local (M, 2), ego (2,))."""
    ego, actors = np.asarray(ego, dtype=np.float64), np.asarray(actors, dtype=np.float64)
    rows = np.flatnonzero(actors[:, ACTOR["present"]] > 0.5)
    frame = plan_frame(ego)
    return rows, to_frame(frame, actors[rows][:, [ACTOR["x"], ACTOR["y"]]]), to_frame(frame, ego[[EGO["x"], EGO["y"]]])


def lane_change_side(plan: np.ndarray, lane_offset: float, params: MergeParams = MergeParams()) -> int:
    """+1 / -1 when the plan (K, 2) [speed term, lateral offset in the lane frame] ends more
    than half a lane to the left / right and the car is not yet ``committed`` toward it; 0 else."""
    y = float(np.asarray(plan)[-1, 1])
    if abs(y) <= params.lane_width / 2:
        return 0
    side = 1 if y > 0 else -1
    return 0 if side * lane_offset > params.committed else side


def merge_safe(ego: np.ndarray, actors: np.ndarray, side: int, params: MergeParams = MergeParams(),
               p: ExpertParams = PARAMS) -> bool:
    """Whether a lane change toward ``side`` (+1 left, -1 right) is safe now by MOBIL's criterion
    (module docstring), from the ego row and the observed actors (N, ACTOR_FIELDS)."""
    rows, local, me = _lane_frame(ego, actors)
    if not len(rows):
        return True
    in_target = np.abs(local[:, 1] - side * params.lane_width) < params.lane_width / 2
    dx = local[:, 0] - me[0]
    v, speeds = float(ego[EGO["speed"]]), np.asarray(actors, dtype=np.float64)[rows, ACTOR["speed"]]
    behind, ahead = np.flatnonzero(in_target & (dx <= 0)), np.flatnonzero(in_target & (dx > 0))
    if len(behind):
        f = behind[np.argmax(dx[behind])]
        v_f = float(speeds[f])
        v0_f = max(v_f, float(ego[EGO["speed_limit"]]))
        if idm(v_f, v0_f, -float(dx[f]), v_f - v, p) < -params.b_safe:
            return False
    if not len(ahead):
        return True
    lead = ahead[np.argmin(dx[ahead])]
    if dx[lead] <= p.s0:
        return False
    # as the expert: no harder braking behind the new leader than behind the current one, or b_safe
    current = np.flatnonzero((np.abs(local[:, 1]) < params.lane_width / 2) & (dx > 0))
    now = (acc_model(v, v, None, 0.0, p) if not len(current) else
           acc_model(v, v, float(dx[current].min()), v - float(speeds[current[np.argmin(dx[current])]]), p))
    return acc_model(v, v, float(dx[lead]), v - float(speeds[lead]), p) >= min(now, -params.b_safe)


def hold_lane(plan: np.ndarray) -> np.ndarray:
    """The plan with its speed profile and the lane centre for every waypoint."""
    held = np.array(plan, dtype=np.float64, copy=True)
    held[:, 1] = 0.0
    return held


def keep_on_road(plan: np.ndarray, lanes, lane_width: float = MergeParams.lane_width) -> np.ndarray:
    """The plan (K, 2) [speed term, lateral offset in the lane frame] with its lateral offsets
    between the centres of the outermost lanes: ``lanes`` (2,) same-direction lanes beside the
    ego's to the left and right (``obs["lanes"]``), ``lane_width`` m apart. Unchanged where a side
    is not known (NaN)."""
    kept = np.array(plan, dtype=np.float64, copy=True)
    left, right = (float(n) for n in np.asarray(lanes, dtype=np.float64).reshape(2))
    high = left * lane_width if np.isfinite(left) else np.inf
    low = -right * lane_width if np.isfinite(right) else -np.inf
    kept[:, 1] = np.clip(kept[:, 1], low, high)
    return kept


@dataclass(frozen=True)
class FollowParams:
    trigger: float = 3.0
    """m/s^2 of needed braking above which the check brakes (the expert's comfortable 3); 0 = off."""
    margin: float = 2.0
    """m of bumper gap to keep."""
    lane_width: float = 4.0
    """m; actors within half of it of our lateral position are in our path."""
    car_length: float = 5.0
    """m between a leader's centre and ours at bumper contact (highway-env's cars)."""
    lookahead: float = 0.5
    """s; a braking leader is judged by its speed this much later, at its current braking."""


def follow_brake(ego: np.ndarray, actors: np.ndarray, accels: np.ndarray | None = None,
                 params: FollowParams = FollowParams()) -> float | None:
    """The braking (a negative acceleration, m/s^2) the following check asks for now, or None
    when keeping ``margin`` behind the leader needs no more than ``trigger`` (module docstring).
    ``accels``: each actor's acceleration (m/s^2, rows of ``actors``; None: all 0)."""
    if params.trigger <= 0:
        return None
    rows, local, me = _lane_frame(ego, actors)
    ahead = np.flatnonzero((np.abs(local[:, 1] - me[1]) < params.lane_width / 2) & (local[:, 0] > me[0]))
    if not len(ahead):
        return None
    lead = ahead[np.argmin(local[ahead, 0])]
    row = rows[lead]
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    v_lead = max(float(np.asarray(actors)[row, ACTOR["speed"]]), 0.0)
    lead_accel = 0.0 if accels is None else float(np.asarray(accels)[row])
    room = float(local[lead, 0] - me[0]) - params.car_length - params.margin
    if room <= 0.1:
        return float(ACTION_LOW[0]) if v > v_lead else None
    # the leader's speed a moment ahead, when it brakes: it may brake on, the check re-reads it every step
    v_soon = max(0.0, v_lead + min(lead_accel, 0.0) * params.lookahead)
    if v <= v_soon:
        return None
    need = (v - v_soon) ** 2 / (2.0 * room)
    if need <= params.trigger:
        return None
    return max(-need, float(ACTION_LOW[0]))
