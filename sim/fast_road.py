"""Faster highway-env roads with the same traffic: the simulator's two hot spots in NumPy.

A profile of a DAgger rollout on the medium highway (the main job's) puts most of its time in
highway-env's traffic, simulated for the expert's labels (its plan under every goal from each
labelled state): about a quarter in ``Road.neighbour_vehicles`` (every IDM / MOBIL decision
projects every other vehicle onto a lane, one at a time, in Python) and a sixth in the
pairwise collision checks of ``Road.step`` (every pair of vehicles, every step, though nearly
all are far apart). ``install(road)`` replaces both on one road:

* **neighbour search**: the same projection (``StraightLane.local_coordinates``: each
  coordinate is ``dx * ux + dy * uy``, two products and one sum, which is what ``np.dot`` of
  two 2-vectors computes; the tests check the values bit for bit), the same on-lane test
  (``AbstractLane.on_lane`` with highway-env's 1 m margin) and the same tie-breaking (among
  vehicles at equal distance ahead the last in road order leads; behind, the first follows).
  During ``road.act()`` no vehicle moves, so each lane's table (who is on it, where) is built
  once per ``act`` and shared by every search on that lane.
* **collision checks**: the pairs
  whose distance fails highway-env's own spherical pre-check (``RoadObject._is_colliding``:
  ``|p_j - p_i| > (diag_i + diag_j) / 2 + v_i dt``), computed for all pairs at once, are
  skipped: for them ``handle_collisions`` does nothing. The rest are checked by highway-env,
  in its order. A vehicle class that overrides either method gets all its pairs checked.

Only a plain ``Road`` (the highway's) gets them; lanes other than ``StraightLane`` and roads that
also search connected lane segments (``neighbour_vehicles_connected_lanes``) take highway-env's
own search. The
replacements are instance attributes, so ``copy.deepcopy(road)`` (snapshots, the expert's
look-ahead) carries them to the copy, bound to the copy. ``VLA_FAST_ROAD=off`` keeps
highway-env's own code (``vla bench sim`` times both; ``tests/test_fast_road.py`` checks that
episodes are the same either way).
"""

from __future__ import annotations

import os
import types

import numpy as np
from highway_env.road.lane import StraightLane
from highway_env.road.road import Road
from highway_env.vehicle.objects import Landmark, RoadObject

SWITCH_ENV = "VLA_FAST_ROAD"
"""Environment variable: ``on`` (the default) or ``off`` (leave highway-env's road alone)."""
SWITCH_VALUES = ("on", "off")
ON_LANE_MARGIN = 1.0
"""highway-env's margin (m) beyond half the lane width within which a vehicle counts as on it."""


def enabled() -> bool:
    value = os.environ.get(SWITCH_ENV, "") or SWITCH_VALUES[0]
    if value not in SWITCH_VALUES:
        raise ValueError(f"{SWITCH_ENV} must be one of {', '.join(SWITCH_VALUES)}, got {value!r}")
    return value == "on"


def install(road) -> None:
    """Give ``road`` the NumPy neighbour search and the pre-filtered collision checks, unless
    ``VLA_FAST_ROAD=off``; only a plain highway-env ``Road`` (the highway's). The junction's
    ``RegulatedRoad`` keeps highway-env's code: with its handful of cars the NumPy search gained
    nothing (``vla bench sim --scenario intersection``: 0.83-1.04x over four runs, 2026-12-06)."""
    if not enabled() or type(road) is not Road:
        return
    road.neighbour_vehicles = types.MethodType(neighbour_vehicles, road)
    road.act = types.MethodType(_act, road)
    road._act_positions = None
    road.step = types.MethodType(_step, road)


def _act(road) -> None:
    """``Road.act`` with the positions read once for every neighbour search it makes."""
    road._act_positions = {}  # filled on the first search; nothing moves until act returns
    try:
        type(road).act(road)
    finally:
        road._act_positions = None


def _project(xy: np.ndarray, lane) -> tuple[np.ndarray, np.ndarray]:
    """Longitudinal coordinates on ``lane`` (a StraightLane) of the positions ``xy`` (N, 2), and
    whether each is on the lane: ``local_coordinates`` and ``on_lane(margin=1)`` for all at once."""
    start, (ux, uy), (nx, ny) = lane.start, lane.direction, lane.direction_lateral
    dx, dy = xy[:, 0] - start[0], xy[:, 1] - start[1]
    s_v = dx * ux + dy * uy
    lat = dx * nx + dy * ny
    on = ((np.abs(lat) <= lane.width / 2 + ON_LANE_MARGIN)
          & (-lane.VEHICLE_LENGTH <= s_v) & (s_v < lane.length + lane.VEHICLE_LENGTH))
    return s_v, on


def _on_lane(road, vehicle, lane_index, lane) -> tuple[list, np.ndarray]:
    """The vehicles and objects (not ``vehicle``, not landmarks) on ``lane``, in road order, and
    their longitudinal coordinates. Inside ``act`` the lane's table is built once and shared."""
    cache = road.__dict__.get("_act_positions")
    if cache is None:
        others = [v for v in road.vehicles + road.objects if v is not vehicle and not isinstance(v, Landmark)]
        if not others:
            return [], np.zeros(0)
        s_v, on = _project(np.array([v.position for v in others], dtype=np.float64), lane)
        keep = np.flatnonzero(on)
        return [others[i] for i in keep], s_v[keep]
    if not cache:
        pool = [v for v in road.vehicles + road.objects if not isinstance(v, Landmark)]
        cache.update(pool=pool, index={id(v): i for i, v in enumerate(pool)}, lanes={},
                     xy=np.array([v.position for v in pool], dtype=np.float64).reshape(-1, 2))
    table = cache["lanes"].get(lane_index)
    if table is None:
        s_v, on = _project(cache["xy"], lane)
        keep = np.flatnonzero(on)
        table = cache["lanes"][lane_index] = (keep, s_v[keep])
    keep, s_on = table
    mine = cache["index"].get(id(vehicle))
    if mine is not None:
        other = keep != mine
        keep, s_on = keep[other], s_on[other]
    pool = cache["pool"]
    return [pool[i] for i in keep], s_on


def neighbour_vehicles(road, vehicle, lane_index=None):
    """``(leader, follower)`` of ``vehicle`` on ``lane_index`` (default: its own lane), as
    highway-env's ``Road.neighbour_vehicles``; either may be None."""
    lane_index = lane_index or vehicle.lane_index
    if not lane_index:
        return None, None
    lane = road.network.get_lane(lane_index)
    if type(lane) is not StraightLane or road.neighbour_vehicles_connected_lanes:
        return type(road).neighbour_vehicles(road, vehicle, lane_index)
    others, s_v = _on_lane(road, vehicle, lane_index, lane)
    if not others:
        return None, None
    start, (ux, uy) = lane.start, lane.direction
    s = float((vehicle.position[0] - start[0]) * ux + (vehicle.position[1] - start[1]) * uy)
    ahead = np.flatnonzero(s_v >= s)
    behind = np.flatnonzero(s_v < s)
    leader = follower = None
    if ahead.size:
        nearest = s_v[ahead].min()
        leader = others[ahead[s_v[ahead] == nearest][-1]]  # ties: the last one, as highway-env's <=
    if behind.size:
        nearest = s_v[behind].max()
        follower = others[behind[s_v[behind] == nearest][0]]  # ties: the first one, as its strict >
    return leader, follower


def _plain_checks(vehicle) -> bool:
    """Whether ``vehicle`` checks collisions with highway-env's own ``RoadObject`` methods."""
    cls = type(vehicle)
    return cls.handle_collisions is RoadObject.handle_collisions and cls._is_colliding is RoadObject._is_colliding


PRECHECK_SLACK = 1e-6
"""m added to the reach of the skipping pre-check in ``_step``. This sum of squares and
highway-env's ``np.linalg.norm`` (a BLAS dot product, which fuses a multiply-add on some CPUs) can
differ in the last bit, so a pair exactly at the reach could be skipped where highway-env would
check it. With the slack a pair is skipped only when it is clearly out of reach; every other pair
goes through highway-env's own check, so its result is highway-env's on any CPU."""


def _step(road, dt: float) -> None:
    """``Road.step``: move every vehicle, then check each pair (i < j) in highway-env's order,
    skipping the pairs its own spherical pre-check rejects."""
    vehicles = road.vehicles
    for vehicle in vehicles:
        vehicle.step(dt)
    n = len(vehicles)
    if n > 1:
        xy = np.array([v.position for v in vehicles], dtype=np.float64).reshape(-1, 2)
        diagonal = np.array([v.diagonal for v in vehicles], dtype=np.float64)
        speed = np.array([v.speed for v in vehicles], dtype=np.float64)
        dx = xy[None, :, 0] - xy[:, None, 0]  # [i, j]: p_j - p_i, as RoadObject._is_colliding
        dy = xy[None, :, 1] - xy[:, None, 1]
        distance = np.sqrt(dx * dx + dy * dy)
        reach = (diagonal[:, None] + diagonal[None, :]) / 2 + speed[:, None] * dt
        near = distance <= reach + PRECHECK_SLACK  # the pairs this lets through, highway-env checks itself
    for i, vehicle in enumerate(vehicles):
        if i + 1 < n:
            if _plain_checks(vehicle):
                candidates = np.flatnonzero(near[i, i + 1:]) + i + 1
            else:
                candidates = range(i + 1, n)
            for j in candidates:
                vehicle.handle_collisions(vehicles[j], dt)
        for other in road.objects:
            vehicle.handle_collisions(other, dt)
