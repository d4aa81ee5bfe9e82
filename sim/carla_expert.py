"""The CARLA backend's expert, a pure function of what the backend observes: follow the goal's
route (``sim.carla_route.Route``) with the same car-following law as the embedded expert
(``sim.driver_models.acc_model``: IDM blended with the ACC heuristic) against the nearest
vehicle on the route ahead, slow for the route's curvature, and steer the kinematic bicycle
through a point on the route ahead (``sim.plan.VehicleGeometry.steer_through``).

``expert_plan`` rolls the same expert out on the bicycle (other vehicles at constant
velocity), because CARLA has no snapshot / restore to simulate a continuation on.

Two decisions, with the embedded expert's laws and parameters (``sim.driver_models.PARAMS``):

* **Yielding** (``conflict_point``): a vehicle that is not on our route and whose straight,
  constant-speed path passes within ``conflict_radius`` of a point of our route ahead, within
  ``conflict_time_gap`` of when we would be there (we assume we go now, accelerating at
  ``a_max`` toward the limit), in the next ``conflict_horizon`` seconds, makes that point a
  stop line: we brake for it as for a stopped car there. Only other traffic's path is a
  straight-line guess (CARLA tells us where cars are, not where they will turn).
* **Lane changes** (``choose_route``): while we are not yet in the goal's lane, we move over
  only when the change is safe in MOBIL's sense: the new follower would brake no harder than
  ``b_safe`` behind us, and the new leader is not closer than we would need to stay behind it
  without braking harder than ``b_safe``; otherwise we follow the lane we are in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.carla_route import Route
from sim.driver_models import PARAMS, ExpertParams, acc_model
from sim.interface import ACTION_HIGH, ACTION_LOW, DT
from sim.plan import VehicleGeometry


@dataclass(frozen=True)
class Vehicle:
    """Another vehicle as the backend reports it, in our world frame."""

    x: float
    y: float
    yaw: float
    speed: float


def route_leader(route: Route, ego_along: float, others: list[Vehicle], lane_half_width: float = 2.25,
                 horizon: float = 80.0) -> tuple[float | None, float]:
    """(centre distance along the route, speed) of the nearest vehicle on the route ahead of
    ``ego_along`` metres, within ``horizon``; (None, 0) when the road ahead is free."""
    best: tuple[float | None, float] = (None, 0.0)
    for v in others:
        along, lateral = route.locate((v.x, v.y))
        gap = along - ego_along
        if abs(lateral) <= lane_half_width and 0.0 < gap <= horizon and (best[0] is None or gap < best[0]):
            best = (gap, v.speed)
    return best


def _curve_accel(route: Route, along: float, v: float, ahead: float, p: ExpertParams) -> float:
    """The acceleration that brings the car to every curve ahead (within ``ahead`` metres) no
    faster than ``sqrt(lat_acc_max / curvature)``; +inf when no curve asks for braking."""
    cum = route.cumulative
    idx = np.flatnonzero((cum >= along) & (cum <= along + ahead))
    if len(idx) < 3:
        return np.inf
    heading = np.unwrap(route.headings[idx])
    kappa = np.abs(np.gradient(heading, cum[idx]))
    v_curve = np.sqrt(p.lat_acc_max / np.maximum(kappa, 1e-6))
    dist = np.maximum(cum[idx] - along, 0.5)
    need = (v_curve**2 - v**2) / (2.0 * dist)
    return float(np.min(need))


def conflict_point(route: Route, along: float, v: float, others: list[Vehicle], speed_limit: float,
                   p: ExpertParams = PARAMS, lane_half_width: float = 2.25, look_ahead: float = 40.0) -> float | None:
    """Metres along the route to the nearest point ahead (within ``look_ahead``) that another
    vehicle off our route would reach within ``conflict_time_gap`` of us (see the module
    docstring); None when there is none."""
    times = np.arange(0.0, p.conflict_horizon + 1e-9, 0.25)
    v_max = max(0.9 * speed_limit, v)
    t_cap = max(v_max - v, 0.0) / p.a_max
    tt = np.minimum(times, t_cap)
    ours_s = along + v * tt + 0.5 * p.a_max * tt**2 + v_max * (times - tt)
    cum = route.cumulative
    if route.junction is None or not route.junction.any():
        return None  # conflicts are crossing traffic at junctions; on a road, lanes keep cars apart
    if route.junction[min(int(np.searchsorted(cum, along)), len(cum) - 1)]:
        return None  # inside the junction already: clear it rather than stop in it
    near_junction = np.convolve(route.junction.astype(float), np.ones(11), mode="same") > 0  # +- 5 points
    inside = (ours_s > along + 1.0) & (ours_s <= min(along + look_ahead, cum[-1]))
    idx = np.clip(np.searchsorted(cum, ours_s), 0, len(cum) - 1)
    inside &= near_junction[idx]
    if not inside.any():
        return None
    idx = idx[inside]
    ours = route.points[idx]
    ours_t, ours_at = times[inside], ours_s[inside]
    best = None
    for o in others:
        o_along, o_lat = route.locate((o.x, o.y))
        if abs(o_lat) <= lane_half_width and along - 10.0 <= o_along <= cum[-1]:
            continue  # on our route: a leader or a follower, not crossing traffic
        here = route.points[min(int(np.searchsorted(cum, along)), len(cum) - 1)]
        if np.hypot(o.x - here[0], o.y - here[1]) > 80.0:
            continue
        theirs = np.stack([o.x + o.speed * np.cos(o.yaw) * times, o.y + o.speed * np.sin(o.yaw) * times], axis=-1)
        dist = np.linalg.norm(ours[:, None, :] - theirs[None, :, :], axis=-1)
        close = (dist < p.conflict_radius) & (np.abs(ours_t[:, None] - times[None, :]) <= p.conflict_time_gap)
        hit = np.flatnonzero(close.any(axis=1))
        if len(hit) and (best is None or ours_at[hit[0]] < best):
            best = float(ours_at[hit[0]])
    return best


def _lane_change_safe(target: Route, pose: np.ndarray, others: list[Vehicle], speed_limit: float,
                      p: ExpertParams = PARAMS, lane_half_width: float = 2.25) -> bool:
    """MOBIL's safety criterion for moving into ``target``'s lane now (module docstring)."""
    x, y, _, v = (float(c) for c in pose)
    along, _ = target.locate((x, y))
    follower = leader = None
    for o in others:
        o_along, o_lat = target.locate((o.x, o.y))
        if abs(o_lat) > lane_half_width:
            continue
        d = o_along - along
        if d <= 0 and (follower is None or d > follower[0]):
            follower = (d, o.speed)
        if d > 0 and (leader is None or d < leader[0]):
            leader = (d, o.speed)
    if follower is not None:
        gap, v_f = -follower[0], follower[1]
        if gap < p.car_length + 1.0 or acc_model(v_f, max(v_f, 0.9 * speed_limit), gap, v_f - v, p) < -p.b_safe:
            return False
    if leader is not None:
        gap, v_l = leader
        if gap < p.car_length + 1.0 or acc_model(v, 0.9 * speed_limit, gap, v - v_l, p) < -p.b_safe:
            return False
    return True


def choose_route(goal_route: Route, lane_route: Route | None, pose: np.ndarray, others: list[Vehicle],
                 speed_limit: float, p: ExpertParams = PARAMS, lane_half_width: float = 1.75) -> Route:
    """The route to drive now: the goal's, once we are in its lane or moving there is safe;
    else ``lane_route`` (the lane we are in). Once more than ``commit_offset`` into the move,
    the change is finished whatever comes (turning back is worse)."""
    if lane_route is None:
        return goal_route
    _, lateral = goal_route.locate((float(pose[0]), float(pose[1])))
    if abs(lateral) <= 2 * lane_half_width - p.commit_offset:
        return goal_route
    return goal_route if _lane_change_safe(goal_route, pose, others, speed_limit, p) else lane_route


def expert_action(route: Route, pose: np.ndarray, others: list[Vehicle], speed_limit: float,
                  geometry: VehicleGeometry = VehicleGeometry(), p: ExpertParams = PARAMS,
                  lane_route: Route | None = None) -> np.ndarray:
    """[accel m/s^2, steer rad (+ = left)] for the ego at ``pose`` = [x, y, yaw, speed] (our
    world frame), clipped to the action limits. ``lane_route``: the lane the car is in, when
    ``route`` is a lane change's (see ``choose_route``)."""
    x, y, yaw, v = (float(c) for c in pose)
    route = choose_route(route, lane_route, pose, others, speed_limit, p)
    along, _ = route.locate((x, y))
    gap, v_leader = route_leader(route, along, others)
    accel = min(acc_model(v, 0.9 * speed_limit, gap, v - v_leader, p),
                _curve_accel(route, along, v, max(30.0, 3.0 * v), p))
    stop = conflict_point(route, along, v, others, speed_limit, p)
    if stop is not None:
        accel = min(accel, acc_model(v, 0.9 * speed_limit, stop - along, v, p))  # a stopped car at the conflict
    # pursue the route point max(5 m, 0.8 s) ahead (past the route's end: straight on from it)
    target_along = along + max(5.0, 0.8 * v)
    cum = route.cumulative
    if target_along >= cum[-1]:
        beyond = target_along - cum[-1]
        tx = route.points[-1, 0] + beyond * np.cos(route.headings[-1])
        ty = route.points[-1, 1] + beyond * np.sin(route.headings[-1])
    else:
        i = int(np.searchsorted(cum, target_along))
        tx, ty = route.points[i]
    dx, dy = tx - x, ty - y
    local = np.array([np.cos(yaw) * dx + np.sin(yaw) * dy, -np.sin(yaw) * dx + np.cos(yaw) * dy])
    steer = geometry.steer_through(local)
    accel = max(accel, -max(v, 0.0) / DT)  # brake to a stop, never into reverse
    return np.clip(np.array([accel, steer], dtype=np.float32), ACTION_LOW, ACTION_HIGH)


def expert_plan(route: Route, pose: np.ndarray, others: list[Vehicle], speed_limit: float, horizon: int,
                geometry: VehicleGeometry = VehicleGeometry(), p: ExpertParams = PARAMS,
                dt: float = DT, lane_route: Route | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The expert's next ``horizon`` actions from ``pose`` and the poses they reach ((H, 2),
    (H, 4) [x, y, yaw, speed]), rolled out on the kinematic bicycle with the other vehicles
    moving straight at constant speed."""
    pose = np.asarray(pose, dtype=np.float64)
    actions, poses = [], []
    for h in range(horizon):
        moved = [Vehicle(o.x + o.speed * np.cos(o.yaw) * dt * h, o.y + o.speed * np.sin(o.yaw) * dt * h, o.yaw,
                         o.speed) for o in others]
        action = expert_action(route, pose, moved, speed_limit, geometry, p, lane_route=lane_route)
        pose = geometry.step(pose, action, dt)
        actions.append(action)
        poses.append(pose)
    return np.array(actions, dtype=np.float32), np.array(poses, dtype=np.float32)
