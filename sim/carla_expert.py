"""The CARLA backend's expert, a pure function of what the backend observes: follow the goal's
route (``sim.carla_route.Route``) with the same car-following law as the embedded expert
(``sim.driver_models.acc_model``: IDM blended with the ACC heuristic) against the nearest
vehicle on the route ahead, slow for the route's curvature, and steer the kinematic bicycle
through a point on the route ahead (``sim.plan.VehicleGeometry.steer_through``).

``expert_plan`` rolls the same expert out on the bicycle (other vehicles at constant
velocity), because CARLA has no snapshot / restore to simulate a continuation on.

Not yet (left for the backend that uses it): junction yielding to crossing traffic and
MOBIL-style safety checks before a lane change; the route itself puts the car in the target
lane.
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


def expert_action(route: Route, pose: np.ndarray, others: list[Vehicle], speed_limit: float,
                  geometry: VehicleGeometry = VehicleGeometry(), p: ExpertParams = PARAMS) -> np.ndarray:
    """[accel m/s^2, steer rad (+ = left)] for the ego at ``pose`` = [x, y, yaw, speed] (our
    world frame), clipped to the action limits."""
    x, y, yaw, v = (float(c) for c in pose)
    along, _ = route.locate((x, y))
    gap, v_leader = route_leader(route, along, others)
    accel = min(acc_model(v, 0.9 * speed_limit, gap, v - v_leader, p),
                _curve_accel(route, along, v, max(30.0, 3.0 * v), p))
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
    return np.clip(np.array([accel, steer], dtype=np.float32), ACTION_LOW, ACTION_HIGH)


def expert_plan(route: Route, pose: np.ndarray, others: list[Vehicle], speed_limit: float, horizon: int,
                geometry: VehicleGeometry = VehicleGeometry(), p: ExpertParams = PARAMS,
                dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    """The expert's next ``horizon`` actions from ``pose`` and the poses they reach ((H, 2),
    (H, 4) [x, y, yaw, speed]), rolled out on the kinematic bicycle with the other vehicles
    moving straight at constant speed."""
    pose = np.asarray(pose, dtype=np.float64)
    actions, poses = [], []
    for h in range(horizon):
        moved = [Vehicle(o.x + o.speed * np.cos(o.yaw) * dt * h, o.y + o.speed * np.sin(o.yaw) * dt * h, o.yaw,
                         o.speed) for o in others]
        action = expert_action(route, pose, moved, speed_limit, geometry, p)
        pose = geometry.step(pose, action, dt)
        actions.append(action)
        poses.append(pose)
    return np.array(actions, dtype=np.float32), np.array(poses, dtype=np.float32)
