"""The yield check: before a junction, hold the line while crossing traffic would meet our path.

A cloned plan policy averages the expert's threshold decision at the junction ("go" or "stop at
the line for the car coming from the right", made late and executed at up to -6 m/s^2) into a
-0.5 to -1.5 m/s^2 drift into the crossing, and most of its junction collisions are of that kind
(docs/drive_like_expert.md). Learned planners that drive closed loop in traffic keep a rule
beside the network for exactly this (TransFuser's and InterFuser's safety brakes, the creep and
stop rules of nuPlan's hybrid planners); this is ours, built on the same test as the expert's
own yield decision (``sim.highway_expert._conflict``) but from the observation alone:

* **Where**: only on the approach, while ``0 < junction_distance <= zone`` metres
  (``obs["route"]``, ``sim.route``): once inside the junction stopping would block it.
* **Our path**: the plan being executed (world points, from now on), extended along its last
  segment, driven as if we went now: accelerating at ``a_go`` toward ``v_go`` (the expert
  assumes the same: the question is whether going is safe, not whether the plan goes).
* **Their paths**: every observed actor (``obs["actors"]``: position, heading, speed) along
  its heading at constant speed, or, when it slowed since the last step (same ``id``), braking
  at that rate until it stands: a car yielding to us is no conflict; with ``max_turn`` > 0, one
  whose heading changed since the last step on an arc at that yaw rate until it has turned
  ``max_turn`` (an oncoming car turning across our lane). Actors heading within ``same_direction_deg`` of us are
  leaders or followers, which the plan itself follows; they are left out. No lanes, no
  "is yielding" flags: nothing a backend does not report.
* **Conflict**: some point of our path within ``radius`` m of some point of theirs at times
  no more than ``time_gap`` s apart, within ``horizon`` s.
* **Yield**: brake to stop ``stop_back`` m before the junction's entry (``-v^2 / 2d``, never
  harder than ``max_brake``, never past standstill); where that stop is no longer possible the
  car is committed and the check stays out of the way. The plan's steering is untouched, and a
  plan that brakes harder than the check keeps its brake.

Two additions on by default since 2026-12-06 (docs/drive_like_expert.md, "Lane paths and the
junction hold"): the junction hold (``junction_hold``, ``hold_speed``), which waits at or inside
the junction where the check above no longer holds the car, when going on would meet crossing
traffic and standing would not; and lane paths (``paths``, ``obs["actor_paths"]``), which
predict each actor along its lane and signalled turn instead of straight along its heading.
Three opt-in additions, off by default (none lowered junction collisions on dev without costing
as many timeouts, docs/drive_like_expert.md): arcs for turning actors (``max_turn``), the
junction brake (``junction_brake``, ``brake_ttc``), which watches what is in front of us inside
the junction, and the route follower (``route_leader``, ``follow_accel``, ``follow_ahead``), the
expert's car-following of whatever is on its route, crossing cars in our lane included.

Backend-agnostic (the embedded highway-env and CARLA report the same fields), applied by
``vla.policy.VLAPolicy`` on a plan policy's tracker command; ``PolicyConfig.yield_zone`` (30 m by
default, 0 = off) turns it on and off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.driver_models import PARAMS, ExpertParams, acc_model
from sim.interface import ACTOR, DT, EGO, wrap_angle
from sim.route import points_along


@dataclass(frozen=True)
class YieldParams:
    zone: float = 30.0
    """m before the junction's entry (along the route) within which the check runs; 0 = never."""
    horizon: float = 4.0
    """s of our path and theirs that are compared (the expert: 5 s, with lane-following predictions;
    from straight-line predictions 5 s held the car at the line into more timeouts, dev)."""
    radius: float = 3.5
    """m; two centre points closer than this are the same spot (the expert's ``conflict_radius``)."""
    time_gap: float = 1.0
    """s; how close in time two vehicles may use one spot (the expert: 1.5 s; with 1.5 s the car
    waited for gaps medium traffic rarely has and timed out, dev)."""
    a_go: float = 2.0
    """m/s^2; how our path is timed: 'if we went now', accelerating at this..."""
    v_go: float = 8.0
    """m/s; ...up to this speed (or the current speed, if higher)."""
    same_direction_deg: float = 30.0
    """Actors heading within this many degrees of us are leaders or followers, not crossing traffic."""
    stop_back: float = 3.0
    """m before the junction's entry where the ego's reference point stops (about a half car length)."""
    max_brake: float = 6.0
    """m/s^2; the hardest brake the check asks for; a stop that needs more is not attempted."""
    actor_range: float = 60.0
    """m; actors farther than this are not considered."""
    moving: float = 1.0
    """m/s; actors slower than this are standing obstacles, which the plan itself drives around or
    stops for, not crossing traffic to wait for (one standing in the junction held the car at its
    line until the episode ended, on dev episodes)."""
    go_zone: float = 0.0
    """m before the junction's entry (and inside it) within which the go rule (``go_accel``)
    takes a car slower than its crossing speed up to it when the crossing is clear; 0 = never."""
    go_jerk: float = 0.0
    """m/s^3; how fast our acceleration reaches ``a_go`` when we go (the tracker's throttle limit
    when the go rule is on), for the timing of our path; 0 = at once."""
    go_release: float = 0.0
    """m/s^3; with ``go_jerk`` > 0, how fast a car that is braking when the go rule launches it
    releases the brake (its acceleration rises at this rate up to 0, then at ``go_jerk``); 0 = at
    ``go_jerk`` too. See ``launch_accel``."""
    go_lat_acc: float = 3.0
    """m/s^2; the crossing speed is ``v_go``, lower where the route bends: at most
    sqrt(go_lat_acc / curvature) (the expert's curve speed)."""
    clear_ahead: float = 12.0
    """m of our path that must be free of any actor (standing ones too) before the go rule starts the car."""
    clear_width: float = 2.5
    """m; an actor's long axis this close to our path's centre line is on it (half our width, half
    theirs and 0.5 m)."""
    brake_ttc: float = 0.0
    """s; the junction brake (``junction_brake``): within ``zone`` m before a junction's entry and
    inside it, brake for any actor we would touch within this many seconds at our present
    speed along our path; 0 = off."""
    follow_ahead: float = 0.0
    """m of our route ahead within which the route follower (``route_leader``, ``follow_accel``)
    follows the nearest actor on it by the expert's car-following law; 0 = off."""
    follow_width: float = 2.5
    """m; an actor whose centre is this close to our route's centre line is on it (the expert's
    half a lane plus 0.5 m)."""
    hold_speed: float = 0.0
    """m/s; the junction hold (``junction_hold``): at or inside a junction, below this speed, where
    the yield check no longer holds the car (inside, or at the line still moving), brake to a
    stand when going now would meet crossing traffic and standing would not; 0 = off."""
    curve_brake: float = 0.0
    """m/s^2; the curve cap (``curve_accel``): within ``zone`` m before a junction's entry and inside
    it, no faster than the speed from which braking at this rate reaches the route's curve speed
    (``curve_speed``) at the entry; 0 = off."""
    max_turn: float = 0.0
    """rad; with per-actor yaw rates (``crossing_conflict(yaw_rates=...)``), a turning actor is
    predicted on an arc, its heading changing at its observed rate until it has turned this much
    (a junction's turn is about pi/2); 0 = straight lines along the heading."""

    def __post_init__(self) -> None:
        values = (self.zone, self.horizon, self.radius, self.time_gap, self.a_go, self.v_go,
                  self.same_direction_deg, self.stop_back, self.max_brake, self.actor_range, self.moving,
                  self.go_zone, self.go_jerk, self.go_release, self.go_lat_acc, self.clear_ahead, self.clear_width,
                  self.max_turn, self.brake_ttc, self.follow_ahead, self.follow_width, self.hold_speed, self.curve_brake)
        if not all(np.isfinite(values)) or min(values) < 0 or min(self.horizon, self.a_go, self.max_brake) <= 0:
            raise ValueError(f"YieldParams must be finite and >= 0 (horizon, a_go, max_brake > 0), got {self}")


def ego_path(ego: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) world polyline from the ego's position through ``points`` (the plan's points still
    ahead, (M, 2) world), degenerate steps dropped; a plan that stands still (or none) gives the
    ego's heading."""
    ego = np.asarray(ego, dtype=np.float64)
    here = ego[[EGO["x"], EGO["y"]]]
    path = [here]
    for p in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if np.hypot(*(p - path[-1])) > 0.05:
            path.append(p)
    if len(path) < 2:
        yaw = float(ego[EGO["yaw"]])
        path.append(here + np.array([np.cos(yaw), np.sin(yaw)]))
    return np.array(path)


def launch_accel(accel_now: float, elapsed: np.ndarray | float, params: YieldParams = YieldParams()) -> np.ndarray:
    """The go rule's throttle ``elapsed`` s after a launch from ``accel_now`` (m/s^2): rising at
    ``go_release`` m/s^3 while it is below 0 (a brake being released; at ``go_jerk`` when
    ``go_release`` is 0), then at ``go_jerk`` up to ``a_go``; ``a_go`` at once when ``go_jerk`` is 0.

    Why a separate release: a car the go rule launches is often still braking for the line (the
    cloned plan stops there). Ramped at the tracker's 1.5 m/s^3 from -3 m/s^2, the brake takes 2 s
    to let go; on dev traces the car slowed from 3 to 0.4 m/s inside the gap it was launched into,
    and the next car closed it (``benchmarks.junction_trace``, dev seed 7000035)."""
    p = params
    t = np.asarray(elapsed, dtype=np.float64)
    if p.go_jerk <= 0:
        return np.full_like(t, p.a_go)
    a0 = min(float(accel_now), p.a_go)
    release = p.go_release if p.go_release > 0 else p.go_jerk
    if a0 >= 0.0:
        return np.minimum(p.a_go, a0 + p.go_jerk * t)
    t0 = -a0 / release  # when the brake is off
    return np.minimum(p.a_go, np.where(t < t0, a0 + release * t, p.go_jerk * (t - t0)))


def go_distances(v: float, accel_now: float, times: np.ndarray, params: YieldParams = YieldParams()) -> np.ndarray:
    """Metres we cover by each of ``times`` (s) if we go now: accelerating at ``a_go`` up to
    ``max(v_go, v)``, reached from ``accel_now`` as ``launch_accel`` ramps it when ``go_jerk`` > 0
    (the go rule's throttle is ramped like the tracker's; timing our path as if it jumped to
    ``a_go`` would find gaps the car then arrives at late), at once when 0."""
    p = params
    v_go = max(p.v_go, v)
    if p.go_jerk <= 0:
        t_cap = np.minimum(times, (v_go - v) / p.a_go)
        return v * t_cap + 0.5 * p.a_go * t_cap**2 + v_go * (times - t_cap)
    dt = 0.05
    grid = np.arange(0.0, float(np.max(times)) + dt + 1e-9, dt)
    accel = launch_accel(max(accel_now, -p.max_brake), grid, p)
    speed, dist = np.empty_like(grid), np.empty_like(grid)
    speed[0], dist[0] = v, 0.0
    for i in range(1, len(grid)):
        speed[i] = min(max(speed[i - 1] + accel[i - 1] * dt, 0.0), v_go)
        dist[i] = dist[i - 1] + 0.5 * (speed[i - 1] + speed[i]) * dt
    return np.interp(times, grid, dist)


def _predict(actors: np.ndarray, keep: np.ndarray, times: np.ndarray, p: YieldParams,
             accels: np.ndarray | None, yaw_rates: np.ndarray | None,
             paths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where the ``keep`` rows of ``actors`` are at ``times`` (s from now), (A, T, 2) world, and
    their headings, (A, T): along their heading at constant speed, or braking at their
    ``accels`` until they stand; on an arc at their ``yaw_rates`` up to ``max_turn`` when that is > 0;
    along their lane's path (``paths``, one (P, 2) world polyline per actor row,
    ``sim.route.ACTOR_PATH_POINTS``; an all-zero row: none) where one is given, at the same pace."""
    a = actors[keep]
    speed = np.maximum(a[:, ACTOR["speed"], None], 0.0)
    brake = np.zeros_like(speed) if accels is None else np.minimum(np.asarray(accels, dtype=np.float64)[keep, None], 0.0)
    t_stop = np.where(brake < 0, speed / np.maximum(-brake, 1e-9), np.inf)
    t_moving = np.minimum(times[None, :], t_stop)
    step = speed * t_moving + 0.5 * brake * t_moving**2  # (A, T): constant speed, or braking to a stand
    heading = np.repeat(a[:, ACTOR["yaw"], None], len(times), axis=1)  # (A, T)
    if paths is not None:
        where, heading = _straight_or_arc(a, keep, times, p, yaw_rates, step, heading)
        for k, row in enumerate(np.flatnonzero(keep)):
            path = np.asarray(paths[row], dtype=np.float64)
            if np.any(path != 0.0) and np.all(np.isfinite(path)):
                where[k] = points_along(path, step[k])
                ahead = points_along(path, step[k] + 0.5) - where[k]
                heading[k] = np.arctan2(ahead[:, 1], ahead[:, 0])
        return where, heading
    return _straight_or_arc(a, keep, times, p, yaw_rates, step, heading)


def _straight_or_arc(a: np.ndarray, keep: np.ndarray, times: np.ndarray, p: YieldParams, yaw_rates: np.ndarray | None,
                     step: np.ndarray, heading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_predict`` without paths: the kept actors ``a`` after ``step`` (A, T) metres along their
    heading, or on their arcs."""
    if yaw_rates is None or p.max_turn <= 0:
        return np.stack([a[:, ACTOR["x"], None] + np.cos(heading) * step,
                         a[:, ACTOR["y"], None] + np.sin(heading) * step], axis=-1), heading
    rate = np.asarray(yaw_rates, dtype=np.float64)[keep, None]
    heading = heading + np.clip(rate * (times[None, :] - times[0]), -p.max_turn, p.max_turn)
    # each piece of the way (between two times) along the heading midway through it: an arc, piecewise
    mid = np.concatenate([heading[:, :1], 0.5 * (heading[:, 1:] + heading[:, :-1])], axis=1)
    piece = np.diff(step, axis=1, prepend=0.0)
    return np.stack([a[:, ACTOR["x"], None] + np.cumsum(np.cos(mid) * piece, axis=1),
                     a[:, ACTOR["y"], None] + np.cumsum(np.sin(mid) * piece, axis=1)], axis=-1), heading


def crossing_conflict(ego: np.ndarray, actors: np.ndarray, path: np.ndarray, params: YieldParams = YieldParams(),
                      accels: np.ndarray | None = None, yaw_rates: np.ndarray | None = None,
                      stand: bool = False, paths: np.ndarray | None = None) -> bool:
    """Would an observed actor not heading our way use a spot of ``path`` (world polyline from
    the ego, ``ego_path``) within ``time_gap`` of us, if we went now? (module docstring)
    ``accels`` (one per actor row, m/s^2, e.g. from its speed a step ago; None: all 0): an actor
    that is braking is predicted to keep braking until it stands (a car yielding to us).
    ``yaw_rates`` (one per actor row, rad/s, e.g. from its heading a step ago; None: all 0), with
    ``max_turn`` > 0: a turning actor keeps turning at that rate until it has turned ``max_turn``.
    ``stand``: time our path as if we braked now at ``max_brake`` and then stood, instead of going.
    ``paths`` (``obs["actor_paths"]``, one row per actor row; None: straight lines): each actor is
    predicted along its lane's path where it has one."""
    p = params
    ego = np.asarray(ego, dtype=np.float64)
    actors = np.asarray(actors, dtype=np.float64).reshape(-1, len(ACTOR))
    v = max(float(ego[EGO["speed"]]), 0.0)
    times = np.arange(0.0, p.horizon + 1e-9, 0.25)
    if stand:
        t_stop = np.minimum(times, v / p.max_brake)
        ours = points_along(path, v * t_stop - 0.5 * p.max_brake * t_stop**2)
    else:
        ours = points_along(path, go_distances(v, float(ego[EGO["accel_long"]]), times, p))
    here = ego[[EGO["x"], EGO["y"]]]
    yaw = actors[:, ACTOR["yaw"]]
    dyaw = np.abs(wrap_angle(yaw - ego[EGO["yaw"]]))
    near = np.hypot(actors[:, ACTOR["x"]] - here[0], actors[:, ACTOR["y"]] - here[1]) <= p.actor_range
    keep = ((actors[:, ACTOR["present"]] > 0.5) & (dyaw >= np.radians(p.same_direction_deg)) & near
            & (actors[:, ACTOR["speed"]] >= p.moving))
    if paths is not None:
        paths = np.asarray(paths, dtype=np.float64)
        if paths.ndim != 3 or paths.shape[0] != len(actors) or paths.shape[1] < 2 or paths.shape[2] != 2:
            raise ValueError(f"obs['actor_paths'] must be (one row per actor row = {len(actors)}, >= 2 points, 2), "
                             f"got shape {paths.shape}")
    if not keep.any():
        return False
    theirs, _ = _predict(actors, keep, times, p, accels, yaw_rates, paths)  # (A, T, 2)
    dist = np.linalg.norm(ours[None, :, None, :] - theirs[:, None, :, :], axis=-1)  # (A, T ours, T theirs)
    close_in_time = np.abs(times[:, None] - times[None, :]) <= p.time_gap
    return bool(np.any((dist < p.radius) & close_in_time[None]))


def yield_accel(ego: np.ndarray, actors: np.ndarray, junction_distance: float, path: np.ndarray,
                params: YieldParams = YieldParams(), accels: np.ndarray | None = None,
                yaw_rates: np.ndarray | None = None, conflict: bool | None = None) -> float | None:
    """The acceleration (m/s^2, <= 0) that holds the ego at the junction's line now, or None when
    the check does not apply (not on the approach, no conflict, or too late to stop).
    ``conflict``: ``crossing_conflict`` already computed for this state and path (then
    ``accels`` and ``yaw_rates`` are not read); None: computed here."""
    p = params
    if not (0.0 < junction_distance <= p.zone):
        return None
    if not (crossing_conflict(ego, actors, path, p, accels, yaw_rates) if conflict is None else conflict):
        return None
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    room = junction_distance - p.stop_back
    if room > 0.3:
        need = v * v / (2.0 * room)
        if need > p.max_brake:
            return None  # committed: it cannot stop before the line any more
        accel = -need
    elif v > 1.0:
        return None  # at the line and still moving: stopping now would stand in the junction
    else:
        accel = -p.max_brake
    return max(accel, -v / DT)  # never past standstill


def junction_hold(ego: np.ndarray, actors: np.ndarray, junction_distance: float, path: np.ndarray,
                  params: YieldParams = YieldParams(), accels: np.ndarray | None = None,
                  yaw_rates: np.ndarray | None = None, conflict: bool | None = None,
                  paths: np.ndarray | None = None) -> float | None:
    """The acceleration (m/s^2, < 0) that stops a slow car at or inside a junction where going on
    would meet crossing traffic and standing would not; None when the hold does not apply (off,
    not within ``zone`` m of the entry or inside, at ``hold_speed`` or faster, going is clear, or
    standing is no safer than going).

    The yield check holds a car only before the line; past it (and at it still moving) the car
    counts as committed, and the go rule drives it on at ``a_go``. But a car that crept in and
    stopped (behind a car on its path, or at the plan's crawl) is not committed: on dev junction
    episodes most collisions were of a car standing or crawling just inside the junction that
    then went into a car crossing from the side. Where standing where we would stop is
    clear of that traffic, wait there; where it is not (we stand in the crossing), going on to
    clear it is no worse, and the hold stays out of the way. ``conflict``: ``crossing_conflict``
    (going) already computed for this state and path; None: computed here."""
    p = params
    if p.hold_speed <= 0 or not (0.0 <= junction_distance <= p.zone):
        return None
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    if v >= p.hold_speed:
        return None
    if not (crossing_conflict(ego, actors, path, p, accels, yaw_rates, paths=paths) if conflict is None else conflict):
        return None
    if crossing_conflict(ego, actors, path, p, accels, yaw_rates, stand=True, paths=paths):
        return None
    return max(-p.max_brake, -v / DT)  # never past standstill


def path_block(ego: np.ndarray, actors: np.ndarray, path: np.ndarray, params: YieldParams = YieldParams()) -> float | None:
    """Metres along ``path`` (from the ego's centre) to the first point of its first
    ``clear_ahead`` m that a present actor (moving or not, any heading) covers, or None when
    they are free. An actor covers a point within ``clear_width`` m of its long axis (its centre
    and the two points half a width in from its ends: a car crossing at an angle reaches across
    our lane with its nose, not its centre)."""
    p = params
    actors = np.asarray(actors, dtype=np.float64).reshape(-1, len(ACTOR))
    a = actors[actors[:, ACTOR["present"]] > 0.5]
    if not len(a):
        return None
    along = np.arange(0.0, p.clear_ahead + 1e-9, 0.5)
    ours = points_along(path, along)
    reach = np.maximum(a[:, ACTOR["length"]] - a[:, ACTOR["width"]], 0.0) / 2.0
    axis = np.stack([np.cos(a[:, ACTOR["yaw"]]), np.sin(a[:, ACTOR["yaw"]])], axis=-1)
    centre = a[:, [ACTOR["x"], ACTOR["y"]]]
    body = np.concatenate([centre, centre + reach[:, None] * axis, centre - reach[:, None] * axis])
    covered = np.min(np.linalg.norm(ours[:, None, :] - body[None, :, :], axis=-1), axis=1) < p.clear_width
    return float(along[np.argmax(covered)]) if covered.any() else None


def block_brake(ego: np.ndarray, distance: float, params: YieldParams = YieldParams()) -> float:
    """The acceleration (<= 0) that stops the ego's centre ``stop_back`` + 0.5 m short of a point
    ``distance`` m ahead on its path (no harder than ``max_brake``, never past standstill)."""
    p = params
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    room = distance - p.stop_back - 0.5
    accel = -v * v / (2.0 * room) if room > 0.3 else -p.max_brake
    return max(accel, -p.max_brake, -v / DT)


def junction_brake(ego: np.ndarray, actors: np.ndarray, junction_distance: float, path: np.ndarray,
                   params: YieldParams = YieldParams(), accels: np.ndarray | None = None,
                   yaw_rates: np.ndarray | None = None) -> float | None:
    """The acceleration (m/s^2, < 0) that stops us short of the first actor we would touch within
    ``brake_ttc`` s if we kept our present speed along ``path``, or None (off, not near a junction,
    standing, or nothing in the way).

    The yield check decides before the line whether to go; inside the junction nothing watched
    what is in front of us: dev traces of junction collisions show our car at 2.5-5 m/s driving
    into a car standing across the exit, one turning across our bonnet, or one stopping beside
    us while the plan still accelerates (the plan's car following is for leaders in our lane).
    So, like the emergency brakes of learned drivers (TransFuser's, InterFuser's), every present
    actor whose centre is at most 1 m behind ours, moving or not, any heading, is predicted as the yield check
    predicts it (``accels``, ``yaw_rates``) and both bodies are compared at equal times: our long
    axis and theirs, three points each, closer than ``clear_width`` m is a touch. The brake
    stops us 0.5 m before the spot, never harder than ``max_brake``, never past standstill.
    Opt-in: on dev it traded collisions for timeouts, and a car braked to a stand in the
    crossing was hit there (docs/drive_like_expert.md, "Turning cars on arcs")."""
    p = params
    if p.brake_ttc <= 0 or not (0.0 <= junction_distance <= p.zone):
        return None
    ego = np.asarray(ego, dtype=np.float64)
    v = max(float(ego[EGO["speed"]]), 0.0)
    if v < 0.1:
        return None
    actors = np.asarray(actors, dtype=np.float64).reshape(-1, len(ACTOR))
    here, yaw = ego[[EGO["x"], EGO["y"]]], float(ego[EGO["yaw"]])
    rel = actors[:, [ACTOR["x"], ACTOR["y"]]] - here
    ahead = rel @ np.array([np.cos(yaw), np.sin(yaw)]) > -1.0
    keep = (actors[:, ACTOR["present"]] > 0.5) & ahead & (np.hypot(*rel.T) <= p.actor_range)
    if not keep.any():
        return None
    times = np.arange(0.0, p.brake_ttc + 1e-9, 0.1)
    ours = points_along(path, v * times)  # (T, 2)
    forward = points_along(path, v * times + 0.5) - ours
    forward /= np.maximum(np.linalg.norm(forward, axis=-1, keepdims=True), 1e-9)
    our_body = ours[:, None, :] + np.array([-1.5, 0.0, 1.5])[None, :, None] * forward[:, None, :]  # (T, 3, 2)
    theirs, heading = _predict(actors, keep, times, p, accels, yaw_rates)  # (A, T, 2), (A, T)
    a = actors[keep]
    reach = np.maximum(a[:, ACTOR["length"]] - a[:, ACTOR["width"]], 0.0) / 2.0
    axis = np.stack([np.cos(heading), np.sin(heading)], axis=-1)  # (A, T, 2)
    their_body = theirs[:, :, None, :] + (np.array([-1.0, 0.0, 1.0])[None, None, :, None]
                                           * reach[:, None, None, None] * axis[:, :, None, :])  # (A, T, 3, 2)
    gap = np.linalg.norm(our_body[None, :, :, None, :] - their_body[:, :, None, :, :], axis=-1).min(axis=(2, 3))  # (A, T)
    touch = (gap < p.clear_width).any(axis=0)
    if not touch.any():
        return None
    room = v * float(times[np.argmax(touch)]) - 0.5
    accel = -v * v / (2.0 * room) if room > 0.1 else -p.max_brake
    return max(accel, -p.max_brake, -v / DT)


def route_leader(ego: np.ndarray, actors: np.ndarray, path: np.ndarray,
                 params: YieldParams = YieldParams()) -> tuple[float, float] | None:
    """The nearest present actor on our route ahead, as the expert finds its leader through a
    junction (``sim.highway_expert._route_leader``) but from the observation: its centre within
    ``follow_width`` m of ``path`` (world polyline from the ego, ``ego_path``) at a point up to
    ``follow_ahead`` m along it. Returns (metres along the path to it, closing speed: our speed
    minus its velocity along our heading), or None. Crossing traffic inside our lane counts, and
    closes at about our speed: the expert brakes for it, and so does ``follow_accel``."""
    p = params
    if p.follow_ahead <= 0:
        return None
    ego = np.asarray(ego, dtype=np.float64)
    actors = np.asarray(actors, dtype=np.float64).reshape(-1, len(ACTOR))
    a = actors[actors[:, ACTOR["present"]] > 0.5]
    if not len(a):
        return None
    along = np.arange(0.5, p.follow_ahead + 1e-9, 0.5)  # ahead of our centre, as the expert's leader is
    ours = points_along(path, along)
    dist = np.linalg.norm(ours[None, :, :] - a[:, None, [ACTOR["x"], ACTOR["y"]]], axis=-1)  # (A, K)
    nearest = np.argmin(dist, axis=1)
    on = dist[np.arange(len(a)), nearest] <= p.follow_width
    if not on.any():
        return None
    first = int(np.argmin(np.where(on, along[nearest], np.inf)))
    yaw = float(ego[EGO["yaw"]])
    heading = np.array([np.cos(yaw), np.sin(yaw)])
    theirs = a[first, ACTOR["speed"]] * np.array([np.cos(a[first, ACTOR["yaw"]]), np.sin(a[first, ACTOR["yaw"]])])
    closing = max(float(ego[EGO["speed"]]), 0.0) - float(theirs @ heading)
    return float(along[nearest[first]]), closing


def follow_accel(ego: np.ndarray, leader: tuple[float, float], v_desired: float,
                 driver: ExpertParams = PARAMS) -> float:
    """The expert's car-following acceleration (``sim.driver_models.acc_model``: IDM blended with
    the constant-acceleration heuristic) behind ``leader`` (``route_leader``'s (distance, closing
    speed)) toward ``v_desired`` m/s: an upper bound on ours, as the expert's own law is on its.
    Never past standstill: IDM asks a car standing inside its jam distance for a negative
    acceleration, which would drive it backward."""
    gap, closing = leader
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    return max(acc_model(v, v_desired, gap, closing, driver), -v / DT)


def curve_speed(path: np.ndarray, params: YieldParams = YieldParams(), ahead: float = 25.0) -> float:
    """m/s: sqrt(go_lat_acc / the sharpest curvature of the first ``ahead`` m of ``path``), the
    curvature from the heading change between 2.5 m steps; inf where they run straight."""
    pts = points_along(path, np.arange(0.0, ahead + 1e-9, 2.5))
    heading = np.unwrap(np.arctan2(*np.diff(pts, axis=0).T[::-1]))
    kappa = float(np.max(np.abs(np.diff(heading)))) / 2.5 if len(heading) > 1 else 0.0
    return float(np.sqrt(params.go_lat_acc / kappa)) if kappa > 1e-6 else float("inf")


def crossing_speed(path: np.ndarray, params: YieldParams = YieldParams(), ahead: float = 25.0) -> float:
    """m/s: ``v_go``, or less where the first ``ahead`` m of ``path`` bend (``curve_speed``)."""
    return min(params.v_go, curve_speed(path, params, ahead))


def curve_accel(ego: np.ndarray, junction_distance: float, route_points: np.ndarray,
                params: YieldParams = YieldParams()) -> float | None:
    """The acceleration (m/s^2, < 0) that slows a car too fast for the junction's bend, or None
    when the cap does not apply (off, not within ``zone`` m of the entry or inside, or not too fast).

    The expert drives through a junction no faster than its curve speed and starts braking for it
    on the approach (``sim.highway_expert._intersection``: at most sqrt(v_curve^2 + 2 * 2 m/s^2 *
    distance to the entry)); a cloned plan sometimes carries 8 m/s into a left turn whose curve
    speed is 5 and runs wide off the road (dev traces). Here: ``curve_speed`` of
    ``route_points`` (``obs["route_path"]``, the route's centre line ahead; not the path from the
    ego, whose first step kinks when the car is off the line), allowed
    sqrt(v_curve^2 + 2 * ``curve_brake`` * distance to the entry). Faster than that: before the
    entry, the braking that reaches v_curve at the entry; inside (or within 2 m of it), v_curve
    within a second; never harder than ``max_brake``."""
    p = params
    if p.curve_brake <= 0 or not (0.0 <= junction_distance <= p.zone):
        return None
    v = max(float(np.asarray(ego)[EGO["speed"]]), 0.0)
    v_curve = curve_speed(np.asarray(route_points, dtype=np.float64), p)
    if v <= np.sqrt(v_curve**2 + 2.0 * p.curve_brake * junction_distance):
        return None
    accel = (v_curve - v) / 1.0 if junction_distance < 2.0 else (v_curve**2 - v * v) / (2.0 * junction_distance)
    return max(accel, -p.max_brake)


def go_accel(ego: np.ndarray, actors: np.ndarray, junction_distance: float, path: np.ndarray,
             params: YieldParams = YieldParams(), accels: np.ndarray | None = None,
             yaw_rates: np.ndarray | None = None, verdicts: tuple[float | None, bool] | None = None) -> float | None:
    """The acceleration (``a_go``, m/s^2) that takes a car standing or creeping at a junction up
    to its crossing speed when going is clear, or None when the rule does not apply.

    The other half of the yield check. A cloned plan policy stands at the line long after the
    expert would have gone, and crawls through the junction when it goes: standing, the
    expert's data mostly says "stay", and the plan averages the moment it says "go" away (BC's
    inertia problem; dev traces: the expert's conflict test clears and it accelerates at 3
    m/s^2 while the policy creeps at 0.2 m/s^2 until the episode times out). So within
    ``go_zone`` m of the entry, below ``crossing_speed``, with no actor (standing ones too) on the
    first ``clear_ahead`` m of our path, accelerate at least at ``a_go``: before the entry only
    when no crossing actor would meet our path if we went now (``crossing_conflict``, which
    times our path at exactly this pace); inside the junction always (committed: stopping
    there blocks the crossing, clearing it is what the test assumed).

    ``verdicts``: ``(path_block(...), crossing_conflict(...))`` already computed for this state
    and path (a caller that also runs the yield check; then ``accels`` and ``yaw_rates`` are not
    read); None: computed here."""
    p = params
    if p.go_zone <= 0 or not (0.0 <= junction_distance <= p.go_zone):
        return None
    if float(np.asarray(ego)[EGO["speed"]]) >= crossing_speed(path, p):
        return None
    block, conflict = verdicts if verdicts is not None else (path_block(ego, actors, path, p), None)
    if block is not None:
        return None
    if junction_distance > 0.0 and (crossing_conflict(ego, actors, path, p, accels, yaw_rates)
                                    if conflict is None else conflict):
        return None
    return p.a_go
