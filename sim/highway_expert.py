"""The expert: what to do in ANY state, whatever policy drove there.

A pure function of the simulator state and the episode goal (no hidden state, no writes), so
querying it never changes the simulation and DAgger labels depend only on the state visited.

* Longitudinal: the Intelligent Driver Model (Treiber et al. 2000),
  ``a = a_max * (1 - (v / v0)^delta - (s* / gap)^2)``,
  ``s* = s0 + v T + v dv / (2 sqrt(a_max b))``, blended with the constant-acceleration
  heuristic as in the ACC model (see ``acc_model``), against the leader on the current lane
  and, during a lane change, the target lane too (the minimum of both). MOBIL's checks use
  plain IDM, as MOBIL is defined on it.
* Lane choice (highway): move one lane toward the goal lane when MOBIL's safety criterion
  holds (the new follower would brake no harder than ``b_safe``, nor would we); stay otherwise.
  Speed commands leave the lane free: while held below the desired speed, MOBIL's incentive
  criterion (politeness 0) overtakes.
  A change already under way (over ``commit_offset`` metres toward the new lane) continues
  unless it became twice as unsafe, which keeps the choice from flickering.
* Intersection: follow the goal's route; slow for curvature so lateral acceleration stays under
  ``lat_acc_max``; while still before the stop line, stop at it when a vehicle that is not
  already yielding to us is predicted within ``conflict_radius`` of our path in the next
  ``conflict_horizon`` seconds.
* Steering: a cascaded lateral-position -> heading -> steering controller toward the target
  lane's centre, inverted through the kinematic bicycle model.

It runs in highway-env's own (left-handed) frame and converts the steering sign on return.
"""

from __future__ import annotations

import numpy as np
from highway_env.utils import wrap_to_pi

from sim.driver_models import PARAMS, ExpertParams, acc_model, idm  # noqa: F401 (re-exported)
from sim.interface import ACTION_HIGH, ACTION_LOW, DT, Goal


def _leader_gap(road, ego, lane_index) -> tuple[float | None, float]:
    front, _ = road.neighbour_vehicles(ego, lane_index)
    if front is None:
        return None, 0.0
    lane = road.network.get_lane(lane_index)
    gap = lane.local_coordinates(front.position)[0] - lane.local_coordinates(ego.position)[0]
    dv = float(np.dot(ego.velocity - front.velocity, ego.direction))
    return float(gap), dv


def _follower_braking(road, ego, lane_index, p: ExpertParams) -> float:
    """Acceleration the new follower would get with the ego in front of it (MOBIL safety)."""
    _, follower = road.neighbour_vehicles(ego, lane_index)
    if follower is None:
        return 0.0
    lane = road.network.get_lane(lane_index)
    gap = lane.local_coordinates(ego.position)[0] - lane.local_coordinates(follower.position)[0]
    dv = float(np.dot(follower.velocity - ego.velocity, follower.direction))
    v0 = getattr(follower, "target_speed", follower.speed)
    return idm(follower.speed, v0, gap, dv, p)


def _lane_change_safe(road, ego, lane_index, v0: float, b_safe: float, p: ExpertParams) -> bool:
    """MOBIL's safety criterion for the new follower, plus: the new leader must not make us
    brake harder than ``b_safe`` or than we already brake in the current lane."""
    if _follower_braking(road, ego, lane_index, p) < -b_safe:
        return False
    gap, dv = _leader_gap(road, ego, lane_index)
    if gap is None:
        return True
    if gap <= p.s0:
        return False
    cur_gap, cur_dv = _leader_gap(road, ego, ego.lane_index)
    tolerated = min(acc_model(ego.speed, v0, cur_gap, cur_dv, p), -b_safe)
    return acc_model(ego.speed, v0, gap, dv, p) >= tolerated


def steering_toward(lane, ego, p: ExpertParams = PARAMS) -> float:
    """Front-wheel angle (highway-env sign) that brings the ego onto ``lane``'s centre line.

    Lateral error -> approach speed (``lat / tau_lateral``, at most ``lat_speed_max``) ->
    heading reference (plus the lane's heading ``v tau_heading / 2`` ahead) -> yaw rate
    (``error / tau_heading``, at most ``steer_lat_acc_max / v``) -> wheel angle. The gains are
    low and both stages saturate, so a lane change takes about 3 s with a lateral acceleration
    near 1-2 m/s^2 instead of a one-step steering spike. That matters beyond comfort: the
    labels a cloned policy learns from (and DAgger's labels in drifted states) are then a
    smooth, bounded function of the state; with tau 0.6 / 0.2 s the expert asked for 0.3-0.8
    rad in one step and DAgger's aggregate taught the policy to swerve off the road."""
    s, lat = lane.local_coordinates(ego.position)
    v = max(abs(ego.speed), 0.5)
    future_heading = lane.heading_at(s + v * p.tau_heading / 2.0)
    lateral_speed = float(np.clip(-lat / p.tau_lateral, -p.lat_speed_max, p.lat_speed_max))
    heading_ref = future_heading + np.clip(np.arcsin(np.clip(lateral_speed / v, -1, 1)), -np.pi / 4, np.pi / 4)
    yaw_rate_max = p.steer_lat_acc_max / v
    heading_rate = float(np.clip(wrap_to_pi(heading_ref - ego.heading) / p.tau_heading, -yaw_rate_max, yaw_rate_max))
    slip = np.arcsin(np.clip(p.wheelbase_half / v * heading_rate, -1, 1))
    return float(np.arctan(2.0 * np.tan(slip)))


def _incentive_lane(road, ego, v0: float, p: ExpertParams):
    """MOBIL's incentive criterion (politeness 0): the side lane where we could accelerate at
    least ``mobil_gain`` more than in our lane, if any and safe."""
    gap, dv = _leader_gap(road, ego, ego.lane_index)
    best, best_acc = None, idm(ego.speed, v0, gap, dv, p) + p.mobil_gain
    for side in road.network.side_lanes(ego.lane_index):
        gap_s, dv_s = _leader_gap(road, ego, side)
        acc = idm(ego.speed, v0, gap_s, dv_s, p)
        if acc > best_acc and _lane_change_safe(road, ego, side, v0, p.b_safe, p):
            best, best_acc = side, acc
    return best


def _highway(road, ego, goal: Goal, p: ExpertParams) -> tuple[float, float]:
    net = road.network
    current = ego.lane_index
    v0 = min(goal.target_speed, ego.lane.speed_limit or goal.target_speed)
    _, lat = ego.lane.local_coordinates(ego.position)
    target, merge_accel = current, None
    if goal.target_lane < 0:
        # Free lane choice by MOBIL's advice, only while held below the desired speed (a
        # driver told to slow down has no reason to change lanes; such unprompted changes are
        # intent the policy cannot see). Once past the middle the new lane is the closest
        # one, so a change under way completes without remembering it.
        if ego.speed < v0 - p.overtake_margin or abs(lat) > p.commit_offset:
            target = _incentive_lane(road, ego, v0, p) or current
    elif current[2] != goal.target_lane:
        step = 1 if goal.target_lane > current[2] else -1
        candidate = (current[0], current[1], current[2] + step)
        committed = lat * step > p.commit_offset  # hw lateral grows toward higher lane ids
        b_safe = 2.0 * p.b_safe if committed else p.b_safe
        if _lane_change_safe(road, ego, candidate, v0, b_safe, p):
            target = candidate
        else:
            # Prepare to merge: fall in behind the target lane's leader so a gap opens.
            gap_c, dv_c = _leader_gap(road, ego, candidate)
            if gap_c is not None and gap_c > 0:
                merge_accel = max(acc_model(ego.speed, v0, gap_c, dv_c, p), -p.b_comf)
    gap, dv = _leader_gap(road, ego, current)
    accel = acc_model(ego.speed, v0, gap, dv, p)
    if merge_accel is not None:
        accel = min(accel, merge_accel)
    if target != current:
        gap_t, dv_t = _leader_gap(road, ego, target)
        accel = min(accel, acc_model(ego.speed, v0, gap_t, dv_t, p))
    return accel, steering_toward(net.get_lane(target), ego, p)


def _route_state(net, ego, route) -> tuple[int, float]:
    """Index of the route lane the ego is on (the furthest that contains it) and s on it."""
    best = (0, net.get_lane(route[0]).local_coordinates(ego.position)[0])
    for i, index in enumerate(route):
        lane = net.get_lane(index)
        s, lat = lane.local_coordinates(ego.position)
        if abs(lat) <= lane.width and -0.5 <= s <= lane.length + 0.5:
            best = (i, s)
    return best


def _route_points(net, route, lengths, s_first: float, distances: np.ndarray) -> np.ndarray:
    """World points at the given distances along the route from s_first on its first lane."""
    points = []
    for d in distances:
        s, i = s_first + float(d), 0
        while i < len(route) - 1 and s > lengths[i]:
            s, i = s - lengths[i], i + 1
        points.append(net.get_lane(route[i]).position(min(s, lengths[i]), 0.0))
    return np.array(points)


def _cruise_speed(net, route, p: ExpertParams) -> float:
    """Speed through the junction: 90% of the limit, lower on a curve so that the lateral
    acceleration stays under ``lat_acc_max``."""
    turn = net.get_lane(route[1])
    v = 0.9 * float(turn.speed_limit or 10.0)
    if hasattr(turn, "radius"):
        v = min(v, float(np.sqrt(p.lat_acc_max * turn.radius)))
    return v


def _conflict(road, ego, route, i: int, s: float, p: ExpertParams) -> bool:
    """Would a vehicle that is not yielding to us reach a point of our path within
    ``conflict_time_gap`` seconds of us, in the next ``conflict_horizon`` seconds?

    Our path assumes we go now: accelerating at ``a_max`` from the current speed up to the
    lane's limit. Vehicles from our own approach are leaders or followers, not conflicts."""
    net = road.network
    times = np.arange(0.0, p.conflict_horizon + 1e-9, 0.25)
    v_max = _cruise_speed(net, route, p)
    t_cap = max(v_max - ego.speed, 0.0) / p.a_max
    tt = np.minimum(times, t_cap)
    distances = ego.speed * tt + 0.5 * p.a_max * tt**2 + v_max * (times - tt)
    lengths = [net.get_lane(r).length for r in route]
    ours = _route_points(net, route[i:], lengths[i:], s, distances)
    close_in_time = np.abs(times[:, None] - times[None, :]) <= p.conflict_time_gap
    for v in road.vehicles:
        if v is ego or getattr(v, "is_yielding", False) or v.lane_index[0] in (route[0][0], route[0][1]):
            continue
        if not hasattr(v, "predict_trajectory_constant_speed") or np.hypot(*(v.position - ego.position)) > 60.0:
            continue
        theirs, _ = v.predict_trajectory_constant_speed(times)
        dist = np.linalg.norm(ours[:, None, :] - np.array(theirs)[None, :, :], axis=-1)
        if np.any((dist < p.conflict_radius) & close_in_time):
            return True
    return False


def _route_leader(road, ego, route, i: int, s: float) -> tuple[float | None, float]:
    """Nearest vehicle ahead on the rest of the route: (centre distance, closing speed)."""
    net, best = road.network, None
    for v in road.vehicles:
        if v is ego:
            continue
        offset = -s
        for index in route[i:]:
            lane = net.get_lane(index)
            sv, lat = lane.local_coordinates(v.position)
            if abs(lat) <= lane.width / 2 + 0.5 and 0.0 <= sv <= lane.length and offset + sv > 0.0:
                if best is None or offset + sv < best[0]:
                    best = (offset + sv, float(np.dot(ego.velocity - v.velocity, ego.direction)))
                break
            offset += lane.length
    return best if best is not None else (None, 0.0)


def _intersection(road, ego, route, p: ExpertParams) -> tuple[float, float]:
    net = road.network
    i, s = _route_state(net, ego, route)
    lane = net.get_lane(route[i])
    steer_lane = lane
    if i < len(route) - 1 and s > lane.length - 1.0:
        steer_lane = net.get_lane(route[i + 1])
    v0 = float(lane.speed_limit or 10.0) * 0.9
    if i <= 1:
        v_curve = _cruise_speed(net, route, p)
        dist = (lane.length - s) if i == 0 else 0.0
        v0 = min(v0, float(np.sqrt(v_curve**2 + 2.0 * 2.0 * max(dist, 0.0))))
    gap, dv = _route_leader(road, ego, route, i, s)
    accel = acc_model(ego.speed, v0, gap, dv, p)
    if i == 0 and lane.length - s < 30.0 and _conflict(road, ego, route, i, s, p):
        stop_gap = lane.length - s + 6.0  # stop with the front bumper ~1.5 m before the line
        accel = min(accel, acc_model(ego.speed, v0, stop_gap, ego.speed, p))
    return accel, steering_toward(steer_lane, ego, p)


def expert_action(road, ego, goal: Goal, route=None, p: ExpertParams = PARAMS) -> np.ndarray:
    """[accel m/s^2, steer rad (positive left)] for the current state, clipped to the limits."""
    if route is None:
        accel, steer_hw = _highway(road, ego, goal, p)
    else:
        accel, steer_hw = _intersection(road, ego, route, p)
    accel = max(accel, -max(ego.speed, 0.0) / DT)  # brake to a stop, never into reverse
    action = np.array([accel, -steer_hw], dtype=np.float32)
    return np.clip(action, ACTION_LOW, ACTION_HIGH)
