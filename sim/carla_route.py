"""Routes, progress and off-road on a CARLA map, without CARLA's ``agents`` package (the pip
wheel has no ``GlobalRoutePlanner``): the second piece of the CARLA backend.

``plan_route(carla_map, start_xy, goal_label, length)`` walks the map's lane graph
(``Waypoint.next``) from the driving lane at ``start_xy`` and returns a ``Route`` in OUR world
frame (``sim.carla_frames``: CARLA's y negated, which is also OpenDRIVE's own frame):

* ``keep_lane`` / ``speed_up`` / ``slow_down``: the current lane;
* ``lane_left`` / ``lane_right``: the neighbouring driving lane of the same direction from the
  start (the car is one lane off the route at first; progress projects onto it);
* ``turn_left`` / ``turn_right`` / ``turn_straight``: at the first branching of the lane graph
  (a junction) the branch whose heading change through the junction is the largest to the
  left (> 30 degrees), the largest to the right (< -30 degrees) or the smallest in size
  (within 30 degrees); elsewhere the straightest branch.

It works on any ``carla.Map``: the server's (``world.get_map()``) or one built on the client
from an OpenDRIVE file (``carla.Map(name, xodr_text)``), which is how the tests run it without
a server. A goal the map does not allow (no lane to the left, no right turn at the junction)
raises ``ValueError`` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.interface import wrap_angle

HIGHWAY_KEEP = ("keep_lane", "speed_up", "slow_down")
LANE_CHANGES = {"lane_left": "get_left_lane", "lane_right": "get_right_lane"}
TURNS = ("turn_left", "turn_right", "turn_straight")
TURN_THRESHOLD = math.radians(30.0)
"""Heading change through a junction that separates a turn from going straight."""


def _xy_yaw(wp) -> tuple[float, float, float]:
    """A CARLA waypoint's centre and heading in our world frame."""
    t = wp.transform
    return t.location.x, -t.location.y, wrap_angle(-math.radians(t.rotation.yaw))


@dataclass(frozen=True)
class Route:
    points: np.ndarray
    """(N, 2) lane-centre points in our world frame, ``step`` metres apart."""
    headings: np.ndarray
    """(N,) lane heading at each point, our frame (rad, counter-clockwise from +x)."""
    lanes: tuple[tuple[int, int, int], ...]
    """(road_id, section_id, lane_id) of each point: which lane of the map it is on."""
    junction: np.ndarray | None = None
    """(N,) bool, True where the point is inside a junction (None: unknown, treated as none)."""

    @property
    def cumulative(self) -> np.ndarray:
        """(N,) metres along the route at each point."""
        seg = np.hypot(*np.diff(self.points, axis=0).T) if len(self.points) > 1 else np.zeros(0)
        return np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def length(self) -> float:
        return float(self.cumulative[-1])

    def locate(self, xy: tuple[float, float]) -> tuple[float, float]:
        """(metres along the route, signed lateral offset from it, + = left) of a point, by
        projection onto the nearest segment of the polyline (extended straight before its start
        and past its end, so ``along`` < 0 or > ``length`` there)."""
        p = np.asarray(xy, dtype=np.float64)
        a, b = self.points[:-1], self.points[1:]
        ab = b - a
        lo, hi = np.zeros(len(ab)), np.ones(len(ab))
        lo[0], hi[-1] = -np.inf, np.inf  # before the start / past the end: along the end segments' lines
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), lo, hi)
        foot = a + t[:, None] * ab
        i = int(np.argmin(np.hypot(*(p - foot).T)))
        along = float(self.cumulative[i] + t[i] * np.hypot(*ab[i]))
        cross = ab[i, 0] * (p[1] - a[i, 1]) - ab[i, 1] * (p[0] - a[i, 0])
        return along, float(np.sign(cross) * np.hypot(*(p - foot[i])))


def _driving_waypoint(carla_map, xy: tuple[float, float], project: bool = True):
    import carla

    return carla_map.get_waypoint(carla.Location(float(xy[0]), -float(xy[1]), 0.0), project_to_road=project,
                                  lane_type=carla.LaneType.Driving)


def is_off_road(carla_map, xy: tuple[float, float]) -> bool:
    """True when the point (our world frame) is on no driving lane of the map."""
    return _driving_waypoint(carla_map, xy, project=False) is None


def _through_junction(wp, step: float, limit: float = 200.0):
    """The first waypoint after the junction that ``wp`` is in (or ``wp`` itself outside one)."""
    walked = 0.0
    while wp.is_junction and walked < limit:
        nxt = wp.next(step)
        if not nxt:
            break
        wp, walked = nxt[0], walked + step
    return wp


def _choose(branches: list, heading: float, label: str, step: float):
    """The branch of a lane-graph fork that ``label`` asks for (see the module docstring)."""
    turns = [(wrap_angle(_xy_yaw(_through_junction(b, step))[2] - heading), b) for b in branches]
    if label == "turn_left":
        best = max(turns, key=lambda t: t[0])
        ok = best[0] > TURN_THRESHOLD
    elif label == "turn_right":
        best = min(turns, key=lambda t: t[0])
        ok = best[0] < -TURN_THRESHOLD
    else:
        best = min(turns, key=lambda t: abs(t[0]))
        ok = label != "turn_straight" or abs(best[0]) <= TURN_THRESHOLD
    if not ok:
        found = ", ".join(f"{math.degrees(d):+.0f} deg" for d, _ in turns)
        raise ValueError(f"goal {label}: no such branch at the junction (heading changes: {found})")
    return best[1]


def plan_route(carla_map, start_xy: tuple[float, float], goal_label: str, length: float,
               step: float = 1.0) -> Route:
    """The route of ``goal_label`` from ``start_xy`` (our world frame), up to ``length`` metres
    (less where the lane graph ends)."""
    if goal_label not in (*HIGHWAY_KEEP, *LANE_CHANGES, *TURNS):
        raise ValueError(f"unknown goal {goal_label!r}; expected one of "
                         f"{[*HIGHWAY_KEEP, *LANE_CHANGES, *TURNS]}")
    if not (length > 0 and step > 0 and math.isfinite(length) and math.isfinite(step)):
        raise ValueError(f"route length and step must be positive, got {length}, {step}")
    wp = _driving_waypoint(carla_map, start_xy)
    gap = math.inf if wp is None else math.hypot(_xy_yaw(wp)[0] - start_xy[0], _xy_yaw(wp)[1] - start_xy[1])
    if wp is None or gap > wp.lane_width:
        raise ValueError(f"no driving lane near {tuple(start_xy)} (the nearest lane centre is {gap:.1f} m away)")
    if goal_label in LANE_CHANGES:
        import carla

        side = getattr(wp, LANE_CHANGES[goal_label])()
        if side is None or side.lane_type != carla.LaneType.Driving or side.lane_id * wp.lane_id <= 0:
            raise ValueError(f"goal {goal_label}: no driving lane of the same direction there "
                             f"(road {wp.road_id}, lane {wp.lane_id})")
        wp = side
    points, lanes, walked, turned = [_xy_yaw(wp)], [(wp.road_id, wp.section_id, wp.lane_id)], 0.0, False
    junction = [bool(wp.is_junction)]
    while walked < length:
        nxt = wp.next(step)
        if not nxt:
            break
        if len(nxt) > 1:
            label = goal_label if goal_label in TURNS and not turned else "keep_lane"
            wp, turned = _choose(nxt, points[-1][2], label, step), turned or label in TURNS
        else:
            wp = nxt[0]
        points.append(_xy_yaw(wp))
        lanes.append((wp.road_id, wp.section_id, wp.lane_id))
        junction.append(bool(wp.is_junction))
        walked += step
    if goal_label in TURNS and not turned:
        raise ValueError(f"goal {goal_label}: no junction within {length:.0f} m of {tuple(start_xy)}")
    arr = np.array(points)
    return Route(points=arr[:, :2], headings=arr[:, 2], lanes=tuple(lanes), junction=np.array(junction))


def actor_path(carla_map, xy: tuple[float, float], signal: int, points: int, spacing: float) -> np.ndarray:
    """(points, 2) the centre line ahead of the driving lane at ``xy`` (our world frame), every
    ``spacing`` m from the point nearest ``xy``, through a fork along the branch the actor's turn
    signal shows (``signal`` > 0: left, < 0: right, 0: the straightest), extended straight where
    the lane graph ends: ``obs["actor_paths"]`` for one actor (``sim.route.ACTOR_PATH_POINTS``).
    All zeros when ``xy`` is on no driving lane."""
    out = np.zeros((points, 2))
    wp = _driving_waypoint(carla_map, xy, project=False)
    if wp is None:
        return out
    for k in range(points):
        x, y, heading = _xy_yaw(wp)
        out[k] = (x, y)
        nxt = wp.next(spacing)
        if not nxt:  # the map ends: straight on along the last heading
            steps = spacing * np.arange(1, points - k)[:, None]
            out[k + 1:] = out[k] + steps * np.array([math.cos(heading), math.sin(heading)])
            break
        if len(nxt) == 1:
            wp = nxt[0]
            continue
        turns = [(wrap_angle(_xy_yaw(_through_junction(b, spacing))[2] - heading), b) for b in nxt]
        if signal > 0:
            wp = max(turns, key=lambda t: t[0])[1]
        elif signal < 0:
            wp = min(turns, key=lambda t: t[0])[1]
        else:
            wp = min(turns, key=lambda t: abs(t[0]))[1]
    return out
