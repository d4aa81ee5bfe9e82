"""Plans and the tracker that drives them: the policy says where to be, a controller gets there.

A plan is the ego's next ``K`` positions, at times ``plan_times(K) = PLAN_DT * (1..K)`` seconds
after the moment it was made, in the LANE FRAME of that moment: origin on the centre line of the
ego's current lane, level with the ego; x along the lane's heading there, y to its left
(``plan_frame``; on a straight lane this is the Frenet frame). Each waypoint is two numbers::

    plan[k] = [x_k / t_k - v_0,   y_k]

* ``x_k / t_k - v_0``: the mean speed along the lane to waypoint k minus the ego's speed when
  the plan was made (m/s). 0 when holding speed, ``a t_k / 2`` under a constant acceleration
  ``a``, negative through a turn (the chord is shorter than the arc).
* ``y_k``: the waypoint's offset from the lane's centre line (m, positive left): 0 is "keep the
  lane centre", about +-4 m "be in the next lane".

Both are 0 for "keep speed, keep the lane", so the companded (mu-law) bins of the action
tokenizer are finest where driving spends its time, and the waypoints come back exactly:
``(x_k, y_k) = (t_k (v_0 + plan[k, 0]), plan[k, 1])``. The frame is where the expert's
decisions live (target lane, speed): a plan needs no correction term for the ego's own small
drift or heading error, since the tracker removes those geometrically. In an ego frame the
policy had to predict that correction itself and a drifting car got plans of "straight on".
The frame comes from the ego's ``lane_offset`` and ``lane_heading_error`` (every backend
reports them), and a plan carries no absolute position.

Why plans and not raw controls: the drivers that reach their expert by imitation (LBC,
TransFuser, TCP, PlanT, nuPlan's planners) predict a short trajectory and let a controller
track it. A tracker closes the loop on the ego's own motion at 10 Hz, so a small error in a
predicted plan costs a small deviation, not a drift the policy must notice and undo; and the
label of a state is where the expert went from there, which is smooth where its per-step
controls are not.

``PlanTracker`` turns a plan into ``[accel m/s^2, steer rad]``: pure pursuit on the waypoint
polyline for steering (inverted through the kinematic bicycle of ``VehicleGeometry``) and a
speed reference read off the waypoint spacing for acceleration. It reads only poses and speeds
(odometry: where the ego is relative to the frame the plan was made in), so any backend
(highway-env, CARLA) reuses it; only ``VehicleGeometry`` is per vehicle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.interface import ACTION_HIGH, ACTION_LOW, DT, EGO, POSE_FIELDS, wrap_angle

PLAN_DT = 0.5
"""Seconds between two plan waypoints (5 simulator steps at 10 Hz)."""
PLAN_FIELDS = ("speed_gain", "lateral")
"""Per waypoint: mean forward speed to it minus the start speed (m/s); lateral offset (m, + left)."""
PLAN_LOW = np.array([-12.0, -20.0], dtype=np.float32)
PLAN_HIGH = np.array([8.0, 20.0], dtype=np.float32)
"""Bounds of the plan tokenizer: 2 s of -6..+4 m/s^2 gives -6..+4 m/s of speed gain (turns
lower it further); 20 m covers a lane change and the junction's turns within 2 s."""


def plan_times(k: int) -> np.ndarray:
    """(k,) seconds after the plan's moment of each waypoint."""
    if k < 1:
        raise ValueError(f"a plan needs >= 1 waypoint, got {k}")
    return PLAN_DT * np.arange(1, k + 1, dtype=np.float64)


def plan_steps(k: int) -> np.ndarray:
    """(k,) simulator steps after the plan's moment of each waypoint."""
    return np.rint(plan_times(k) / DT).astype(np.int64)


def pose_of(ego: np.ndarray) -> np.ndarray:
    """(..., len(EGO_FIELDS)) ego rows -> (..., 4) poses [x, y, yaw, speed]."""
    ego = np.asarray(ego, dtype=np.float64)
    return ego[..., [EGO[name] for name in POSE_FIELDS]]


def plan_frame(ego: np.ndarray) -> np.ndarray:
    """(len(EGO_FIELDS),) ego row -> (3,) the lane frame [x, y, heading] in world coordinates:
    the point of the current lane's centre line level with the ego, and the lane's heading."""
    ego = np.asarray(ego, dtype=np.float64)
    heading = ego[EGO["yaw"]] - ego[EGO["lane_heading_error"]]
    offset = ego[EGO["lane_offset"]]
    return np.array([ego[EGO["x"]] + offset * np.sin(heading), ego[EGO["y"]] - offset * np.cos(heading), heading])


def to_frame(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points (..., 2) -> the frame of ``pose`` [x, y, yaw, ...] (x forward, y left)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    d = np.asarray(points, dtype=np.float64) - pose[:2]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def from_frame(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) in the frame of ``pose`` -> world."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    p = np.asarray(points, dtype=np.float64)
    return np.stack([pose[0] + c * p[..., 0] - s * p[..., 1], pose[1] + s * p[..., 0] + c * p[..., 1]], axis=-1)


def path_error(pose: np.ndarray, path: np.ndarray) -> tuple[float, float]:
    """How far the ego at ``pose`` [x, y, yaw, ...] is from the world polyline ``path`` (N >= 2, 2)
    that starts level with it (``obs["route_path"]``): (its offset from the line of the first
    segment in m, + to the segment's left; its heading minus the segment's, wrapped to
    [-pi, pi) rad). A polyline with no first segment (repeated points): ValueError."""
    pose, path = np.asarray(pose, dtype=np.float64), np.asarray(path, dtype=np.float64)
    d = path[1] - path[0]
    if not float(np.hypot(*d)) > 1e-9:
        raise ValueError("path_error needs a path whose first two points differ")
    heading = float(np.arctan2(d[1], d[0]))
    offset = float(to_frame(np.array([path[0, 0], path[0, 1], heading]), pose[:2])[1])
    return offset, float(wrap_angle(pose[2] - heading))


def plan_from_poses(frame: np.ndarray, speed: float, future: np.ndarray) -> np.ndarray:
    """The plan made in ``frame`` (3,) [x, y, heading] at speed ``speed`` that passes through
    the poses ``future`` (K, >= 2) reached at ``plan_times(K)``: (K, 2) float64; rows of
    ``future`` with NaN stay NaN."""
    frame = np.asarray(frame, dtype=np.float64)
    future = np.asarray(future, dtype=np.float64)
    times = plan_times(len(future))
    local = to_frame(frame, future[:, :2])
    return np.stack([local[:, 0] / times - speed, local[:, 1]], axis=-1)


def waypoints(plan: np.ndarray, start_speed: float) -> np.ndarray:
    """(K, 2) plan -> (K, 2) waypoints (x, y) in the plan's frame."""
    plan = np.asarray(plan, dtype=np.float64)
    times = plan_times(len(plan))
    return np.stack([times * (start_speed + plan[:, 0]), plan[:, 1]], axis=-1)


def plan_trajectory(plan: np.ndarray, frame: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plan as a timed world trajectory: (times (K+1,) s after it was made, points (K+1, 2)),
    starting at the ego's position ``start`` [x, y, ...] when it was made."""
    plan = np.asarray(plan, dtype=np.float64)
    times = np.concatenate([[0.0], plan_times(len(plan))])
    points = np.vstack([np.asarray(start, dtype=np.float64)[:2], from_frame(frame, waypoints(plan, float(start[3])))])
    return times, points


def _position_at(t: np.ndarray, pts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(len(times), 2) points of the timed trajectory (t, pts), linearly interpolated (held at
    its ends)."""
    return np.stack([np.interp(times, t, pts[:, 0]), np.interp(times, t, pts[:, 1])], axis=-1)


def continue_plan(plan: np.ndarray, frame: np.ndarray, start: np.ndarray, age: float, new_frame: np.ndarray,
                  speed: float) -> np.ndarray:
    """An older plan (made ``age`` s ago in ``frame`` when the ego was at ``start``) as a plan
    made now in ``new_frame`` at ``speed``: where it puts the ego at ``age + plan_times(K)``,
    past its horizon extended at its last segment's velocity. (K, 2)."""
    k = len(plan)
    t, pts = plan_trajectory(plan, frame, start)
    local = age + plan_times(k)
    velocity = (pts[-1] - pts[-2]) / (t[-1] - t[-2])
    xy = _position_at(t, pts, local)
    beyond = local > t[-1]
    xy[beyond] = pts[-1] + (local[beyond] - t[-1])[:, None] * velocity
    return plan_from_poses(new_frame, speed, xy)


def blend_plans(plans: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], frame: np.ndarray,
                pose: np.ndarray, decay: float) -> np.ndarray:
    """Temporal ensembling of plans (ACT's, for trajectories): ``plans`` = [(plan (K, 2), its
    frame, the ego's pose then, its age in seconds)], newest first with age 0. Each waypoint
    time ``t`` of a new plan made now in ``frame`` at ``pose`` is the weighted mean of where
    every plan puts the ego at ``t`` (older plans: at ``t + age``, while within their horizon),
    weights ``exp(-decay * age / DT)``. A model that hesitates between two modes from one step
    to the next (change lane or not, brake or not) then moves the reference a little each step
    instead of jumping between them. Returns the blended (K, 2) plan."""
    newest = np.asarray(plans[0][0], dtype=np.float64)
    k = len(newest)
    times = plan_times(k)
    total = np.zeros((k, 2))
    weight = np.zeros(k)
    for plan, plan_frame_, start, age in plans:
        t, pts = plan_trajectory(plan, plan_frame_, start)
        local = times + age
        ok = local <= t[-1] + 1e-9
        w = np.exp(-decay * age / DT)
        xy = _position_at(t, pts, local)
        total[ok] += w * xy[ok]
        weight[ok] += w
    return plan_from_poses(frame, float(pose[3]), total / weight[:, None])


@dataclass(frozen=True)
class VehicleGeometry:
    """The kinematic bicycle of one vehicle: ``tan(beta) = (rear_to_ref / wheelbase) tan(steer)``
    and the reference point's path curvature ``kappa = sin(beta) / rear_to_ref`` (rear axle
    reference, ``rear_to_ref = 0``: ``kappa = tan(steer) / wheelbase``). highway-env's vehicles
    are 5 m bicycles referenced at their centre."""

    wheelbase: float = 5.0
    """Front to rear axle, m."""
    rear_to_ref: float = 2.5
    """Rear axle to the point whose pose is reported, m."""

    def __post_init__(self) -> None:
        if not (self.wheelbase > 0 and 0 <= self.rear_to_ref <= self.wheelbase):
            raise ValueError(f"VehicleGeometry needs wheelbase > 0 and 0 <= rear_to_ref <= wheelbase, got {self}")

    def steer_through(self, point: np.ndarray) -> float:
        """The wheel angle whose steady circle takes the reference point through ``point`` (ego
        frame). The reference point moves along ``heading + beta`` (its slip angle), so the circle
        is tangent to that direction, not to the heading: ``sin(beta) / rear_to_ref =
        2 sin(alpha - beta) / d`` with ``alpha`` the point's bearing and ``d`` its distance,
        solved for beta by bisection (the left side grows with beta, the right side falls).
        Ignoring the slip cut the junction's tight turns off the road."""
        x, y = float(point[0]), float(point[1])
        d = math.hypot(x, y)
        if d < 1e-6:
            return 0.0
        alpha = math.atan2(y, x)
        if self.rear_to_ref == 0:
            return math.atan(self.wheelbase * 2.0 * math.sin(alpha) / d)
        beta_max = math.atan(self.rear_to_ref / self.wheelbase * math.tan(float(ACTION_HIGH[1])))
        lo, hi = -beta_max, beta_max
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if math.sin(mid) / self.rear_to_ref - 2.0 * math.sin(alpha - mid) / d > 0:
                hi = mid
            else:
                lo = mid
        beta = 0.5 * (lo + hi)
        return math.atan(self.wheelbase / self.rear_to_ref * math.tan(beta))

    def curvature(self, steer: float) -> float:
        """1/m: the reference point's path curvature at wheel angle ``steer``."""
        if self.rear_to_ref == 0:
            return float(np.tan(steer) / self.wheelbase)
        return float(np.sin(np.arctan(self.rear_to_ref / self.wheelbase * np.tan(steer))) / self.rear_to_ref)

    def steer_for(self, kappa: float) -> float:
        """The wheel angle of path curvature ``kappa`` (``curvature``'s inverse; curvatures
        beyond the bicycle's reach give the largest angle)."""
        if self.rear_to_ref == 0:
            return float(np.arctan(self.wheelbase * kappa))
        beta = np.arcsin(np.clip(kappa * self.rear_to_ref, -1.0, 1.0))
        return float(np.arctan(self.wheelbase / self.rear_to_ref * np.tan(beta)))

    def step(self, pose: np.ndarray, action: np.ndarray, dt: float = DT) -> np.ndarray:
        """One explicit-Euler step of the bicycle: pose [x, y, yaw, speed] under [accel, steer]
        (speed never below 0). highway-env integrates its vehicles the same way."""
        x, y, yaw, v = (float(p) for p in pose)
        accel, steer = float(action[0]), float(action[1])
        beta = np.arctan(self.rear_to_ref / self.wheelbase * np.tan(steer))
        if self.rear_to_ref == 0:
            yaw_rate = v * np.tan(steer) / self.wheelbase
        else:
            yaw_rate = v * np.sin(beta) / self.rear_to_ref
        return np.array([x + v * np.cos(yaw + beta) * dt, y + v * np.sin(yaw + beta) * dt,
                         yaw + yaw_rate * dt, max(0.0, v + accel * dt)])


ANTICIPATE_TOLERANCE = 0.2
"""m/s; how far past the plan's lowest (highest) speed a release may end under
``TrackerParams.anticipate`` (the plan's own speeds move by about this much from one re-plan to the
next)."""
ANTICIPATE_MAX_BRAKE = 3.5
"""m/s^2; ``TrackerParams.anticipate`` never caps a brake the plan asks harder than this (the top of
ISO 15622's comfortable range for adaptive cruise control)."""


@dataclass(frozen=True)
class TrackerParams:
    lookahead_time: float = 0.6
    """Pure pursuit looks ``max(lookahead_min, speed * lookahead_time)`` metres ahead."""
    lookahead_min: float = 3.0
    """m; the shortest look-ahead (low speeds)."""
    speed_time: float = 0.5
    """s; acceleration = (v_ref(now + speed_time) - speed) / speed_time, so a plan of constant
    acceleration a is executed as exactly a, and a speed error closes over this time."""
    steer_time: float = 0.0
    """s; time constant of a first-order lag on the wheel angle toward pure pursuit's
    (``steer = last + dt / (steer_time + dt) * (target - last)``, ``last`` = the wheel angle the
    vehicle reports); 0 = none. A predicted plan wobbles a few centimetres from one step to the
    next, and at 25 m/s every 0.001 rad of wheel is ~0.1 m/s^2 of lateral acceleration."""
    min_speed: float = 0.5
    """m/s; below this the ego is taken as standing and the wheel is held straight."""
    max_jerk_long: float = 0.0
    """m/s^3; comfort limit on the change of the acceleration command from the ego's current
    acceleration (``accel_now``), 0 = none. Braking harder than ``brake_exempt`` is never
    delayed by it: the limit smooths throttle and brake release, not the decision to brake."""
    brake_exempt: float = 0.0
    """m/s^2; a command below ``-brake_exempt`` that brakes harder than now is applied at once
    (0: every brake; 3.5, the top of ISO 15622's comfortable range for adaptive cruise control,
    exempts only hard ones, which cost goal success and off-road on validation seeds)."""
    max_jerk_lat: float = 0.0
    """m/s^3; comfort limit on the change of lateral acceleration ``v^2 kappa`` per step, applied
    to the wheel angle through the bicycle's curvature (``steer_now``), 0 = none."""
    anticipate: bool = False
    """With ``max_jerk_long``: brake (or push) no harder than the jerk-limited release can undo by
    the plan's lowest (highest) speed ahead (``PlanTracker._anticipate``). Without it a plan that
    brakes until its target speed and then stops braking is executed with a release that sheds
    ``a^2 / (2 max_jerk_long)`` more speed (2.6 m/s from 2.8 m/s^2 at 1.5 m/s^3), and a one-step
    brake wish costs a full release."""
    geometry: VehicleGeometry = VehicleGeometry()

    def __post_init__(self) -> None:
        if (min(self.lookahead_time, self.lookahead_min, self.speed_time) <= 0
                or min(self.min_speed, self.steer_time, self.max_jerk_long, self.max_jerk_lat, self.brake_exempt) < 0):
            raise ValueError(f"TrackerParams must be positive, got {self}")


class PlanTracker:
    """Plan -> [accel, steer] at every simulator step, for a plan made ``age`` seconds ago.

    Stateless: ``control`` depends only on its arguments (the plan, its frame, the ego's pose
    when it was made and now, the wheel angle now), so re-planning every step and executing one
    plan for several steps use the same code."""

    def __init__(self, params: TrackerParams = TrackerParams()) -> None:
        self.params = params
        self._last: tuple[bytes, tuple] | None = None  # _plan_geometry of the last plan asked for

    def _plan_geometry(self, plan, frame, start) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """What ``control`` reads from a plan alone: (v0, the speed reference's times and speeds,
        the plan's points in world coordinates from where it began). A plan is executed for
        several steps, so the last one's is kept (keyed by the arrays' bytes: still a function
        of the arguments)."""
        plan, frame, start = (np.asarray(a, dtype=np.float64) for a in (plan, frame, start))
        key = plan.tobytes() + frame.tobytes() + start.tobytes() + str(plan.shape).encode()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if plan.ndim != 2 or plan.shape[1] != len(PLAN_FIELDS) or not np.all(np.isfinite(plan)):
            raise ValueError(f"plan must be a finite (K, {len(PLAN_FIELDS)}) array, got shape {plan.shape}")
        v0 = float(start[3])
        times = plan_times(len(plan))
        pts = np.vstack([to_frame(frame, start[:2]), waypoints(plan, v0)])  # from where the plan began
        # speed reference: mean speed of each segment at its middle, anchored at v0 at t = 0
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1) / np.diff(np.concatenate([[0.0], times]))
        mids = np.concatenate([[0.0], (np.concatenate([[0.0], times[:-1]]) + times) / 2.0])
        geometry = (v0, mids, np.concatenate([[v0], seg]), from_frame(frame, pts))
        self._last = (key, geometry)
        return geometry

    def control(self, plan: np.ndarray, frame: np.ndarray, start: np.ndarray, pose: np.ndarray,
                age: float = 0.0, steer_now: float | None = None, accel_now: float | None = None) -> np.ndarray:
        """``plan`` (K, 2) made ``age`` seconds ago in ``frame`` [x, y, heading] (``plan_frame``)
        when the ego was at ``start`` [x, y, yaw, speed]; the ego is now at ``pose`` with its
        wheel at ``steer_now`` rad (used by ``TrackerParams.steer_time`` and ``max_jerk_lat``)
        and its acceleration ``accel_now`` m/s^2 (used by ``max_jerk_long``); None: no lag or
        limit on that axis. Returns float32 [accel m/s^2, steer rad] within the limits."""
        p = self.params
        v0, mids, speeds, world = self._plan_geometry(plan, frame, start)
        pose = np.asarray(pose, dtype=np.float64)
        v = float(pose[3])

        def speed_at(t: float) -> float:  # the plan's speed t s after its moment
            return float(np.interp(t, mids, speeds))

        accel = (speed_at(age + p.speed_time) - v) / p.speed_time
        steer = 0.0
        if v >= p.min_speed:
            local = to_frame(pose, world)
            steer = self.geometry_steer(local, max(p.lookahead_min, v * p.lookahead_time))
        if p.steer_time > 0 and steer_now is not None:
            steer = float(steer_now) + DT / (p.steer_time + DT) * (steer - float(steer_now))
        if p.max_jerk_long > 0 and accel_now is not None:
            if p.anticipate:
                accel = self._anticipate(accel, v, np.concatenate([[speed_at(age)], speeds[mids > age]]))
            accel = self._limit_accel(accel, float(accel_now))
        # a plan never drives backwards (its speeds are >= 0): never brake past standstill. Without
        # this, releasing a hard stop at the jerk limit kept braking at 0 m/s and reversed the car.
        accel = max(accel, -v / DT)
        if p.max_jerk_lat > 0 and steer_now is not None and v >= p.min_speed:
            steer = self._limit_steer(steer, float(steer_now), v)
        action = np.array([accel, steer], dtype=np.float32)
        return np.clip(action, ACTION_LOW, ACTION_HIGH)

    def _anticipate(self, accel: float, v: float, ahead: np.ndarray) -> float:
        """``accel`` capped so that, released at ``max_jerk_long`` (j), it ends at the plan's speed.

        A brake of ``a`` released at j sheds ``a^2 / (2 j)`` of speed on the way out. So to come down
        to the lowest speed the plan reaches from now on (``ahead``: its speeds from now to its end)
        without passing it, a brake may be at most ``sqrt(2 j (v - lowest + ANTICIPATE_TOLERANCE))``.
        Followed along, that bound lets go at exactly j as the speed comes down, and a one-step brake
        wish whose plan returns to the current speed is executed as a touch of the brake, not as
        a full brake and a slow release. The same bounds the throttle by the highest speed ahead.
        A brake the plan asks harder than ``ANTICIPATE_MAX_BRAKE`` is never capped (the following
        and yield checks brake on their own after the tracker)."""
        j = self.params.max_jerk_long
        if accel < 0 and accel >= -ANTICIPATE_MAX_BRAKE:
            return max(accel, -float(np.sqrt(2 * j * max(0.0, v - float(ahead.min()) + ANTICIPATE_TOLERANCE))))
        if accel > 0:
            return min(accel, float(np.sqrt(2 * j * max(0.0, float(ahead.max()) - v + ANTICIPATE_TOLERANCE))))
        return accel

    def _limit_accel(self, accel: float, accel_now: float) -> float:
        """The command moved toward ``accel`` by at most ``max_jerk_long * DT`` from
        ``accel_now``, except a brake (below ``-brake_exempt``) harder than now, taken at once."""
        p = self.params
        step = p.max_jerk_long * DT
        if accel < -p.brake_exempt and accel < accel_now:
            return accel
        return min(max(float(accel), accel_now - step), accel_now + step)

    def _limit_steer(self, steer: float, steer_now: float, speed: float) -> float:
        """The wheel angle whose path curvature is within ``max_jerk_lat * DT / speed^2`` of the
        current wheel's: lateral acceleration ``speed^2 kappa`` moves by at most
        ``max_jerk_lat * DT`` per step."""
        geometry = self.params.geometry
        band = self.params.max_jerk_lat * DT / (speed * speed)
        now = geometry.curvature(steer_now)
        return geometry.steer_for(float(np.clip(geometry.curvature(steer), now - band, now + band)))

    def steer_along(self, pose: np.ndarray, path: np.ndarray) -> float:
        """Pure pursuit on a world polyline ``path`` (N, 2) from the ego at ``pose`` [x, y, yaw,
        speed], with the tracker's look-ahead; 0 below ``min_speed`` (as ``control``)."""
        p = self.params
        pose = np.asarray(pose, dtype=np.float64)
        if pose[3] < p.min_speed:
            return 0.0
        steer = self.geometry_steer(to_frame(pose, path), max(p.lookahead_min, pose[3] * p.lookahead_time))
        return float(np.clip(steer, ACTION_LOW[1], ACTION_HIGH[1]))

    def geometry_steer(self, local: np.ndarray, lookahead: float) -> float:
        """Pure pursuit: the wheel angle whose arc from the ego (origin, heading +x) passes
        through the point of the polyline ``local`` (N, 2) at distance ``lookahead`` (past the
        polyline's end: extended along its last segment)."""
        target = _point_at_distance(local, lookahead)
        if target is None:
            return 0.0
        return self.params.geometry.steer_through(target)


def _point_at_distance(poly: np.ndarray, r: float) -> np.ndarray | None:
    """The last point of the polyline at distance ``r`` from the origin, searching segments
    from the one the origin is closest to onward; extended past the end along the last
    segment. None when the polyline has no length."""
    start = int(np.argmin(np.linalg.norm(poly, axis=1)))
    for i in range(start, len(poly) - 1):
        a, b = poly[i], poly[i + 1]
        if math.hypot(b[0], b[1]) >= r:
            d = b - a
            # solve |a + s d| = r for s in [0, 1], the larger root
            qa, qb, qc = float(d @ d), 2.0 * float(a @ d), float(a @ a) - r * r
            if qa < 1e-12:
                continue
            disc = max(qb * qb - 4 * qa * qc, 0.0)
            s = (-qb + np.sqrt(disc)) / (2 * qa)
            if 0.0 <= s <= 1.0:
                return a + s * d
    # past the end: extend the last segment with length
    for i in range(len(poly) - 1, 0, -1):
        d = poly[i] - poly[i - 1]
        n = float(np.linalg.norm(d))
        if n > 1e-6:
            end, u = poly[-1], d / n
            qb, qc = 2.0 * float(end @ u), float(end @ end) - r * r
            s = (-qb + np.sqrt(max(qb * qb - 4 * qc, 0.0))) / 2.0
            return end + max(s, 0.0) * u
    return None


def clean_steps(actions: np.ndarray, expert_actions: np.ndarray) -> np.ndarray:
    """(T,) bool: the step executed the expert's own label (no policy action, no DART noise)."""
    return np.all(np.abs(np.asarray(actions, np.float64) - np.asarray(expert_actions, np.float64)) <= 1e-6, axis=-1)


def plan_labels(ego: np.ndarray, actions: np.ndarray, expert_actions: np.ndarray,
                futures: np.ndarray | None, k: int) -> np.ndarray:
    """(T, k, 2) the expert's plan from every state s_t of an episode, NaN where unknown.

    Waypoint j of s_t is where the expert was ``plan_steps(k)[j]`` steps later, read from:
    * ``futures`` (T, P, 4) (``Episode.expert_futures``, its continuation simulated from s_t)
      where recorded and finite; else
    * the recorded trajectory ``ego`` (T+1, E), when every action from s_t up to that waypoint
      was the expert's clean one (``clean_steps``): the recorded future IS the expert's. After
      a DART burst or a policy's action it is not, and the waypoint stays NaN (masked)."""
    ego = np.asarray(ego, dtype=np.float64)
    t_steps = len(actions)
    steps = plan_steps(k)
    poses = pose_of(ego)
    future = np.full((t_steps, k, len(POSE_FIELDS)), np.nan)
    dirty = np.concatenate([[0], np.cumsum(~clean_steps(actions, expert_actions))])  # dirty steps in [0, t)
    t = np.arange(t_steps)
    for j, n in enumerate(steps):
        ok = (t + n <= t_steps) & (dirty[np.minimum(t + n, t_steps)] == dirty[t])
        future[ok, j] = poses[t[ok] + n]
    if futures is not None:
        futures = np.asarray(futures, dtype=np.float64)
        if futures.shape[1] < steps[-1]:
            raise ValueError(f"expert futures of {futures.shape[1]} steps are shorter than a {k}-waypoint plan "
                             f"({steps[-1]} steps); record with plan_horizon >= {steps[-1]}")
        recorded = futures[:, steps - 1]
        have = np.isfinite(recorded).all(-1)
        future[have] = recorded[have]
    out = np.full((t_steps, k, len(PLAN_FIELDS)), np.nan)
    for i in range(t_steps):
        out[i] = plan_from_poses(plan_frame(ego[i]), poses[i, 3], future[i])
    return out


def goal_plan_labels(ego: np.ndarray, goal_futures: np.ndarray, k: int) -> np.ndarray:
    """(T, G, k, 2) the expert's plan from every state s_t under every highway goal, from
    ``goal_futures`` (T, G, P, 4) (``Episode.goal_futures``); NaN where not recorded."""
    ego = np.asarray(ego, dtype=np.float64)
    futures = np.asarray(goal_futures, dtype=np.float64)
    steps = plan_steps(k)
    if futures.shape[2] < steps[-1]:
        raise ValueError(f"goal futures of {futures.shape[2]} steps are shorter than a {k}-waypoint plan "
                         f"({steps[-1]} steps); record with plan_horizon >= {steps[-1]}")
    picked = futures[:, :, steps - 1]  # (T, G, k, 4)
    out = np.full((*picked.shape[:3], len(PLAN_FIELDS)), np.nan)
    poses = pose_of(ego)
    for i in range(len(picked)):
        if np.isfinite(picked[i]).any():
            frame = plan_frame(ego[i])
            for g in range(picked.shape[1]):
                out[i, g] = plan_from_poses(frame, poses[i, 3], picked[i, g])
    return out
