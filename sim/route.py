"""Where the route goes, as the ego sees it: the observation the expert's junction decisions read.

The expert at the junction knows its route (which exit) and where the junction begins; a policy
that sees only its lane and the nearest actors has to guess both from the command and its
progress. Every backend reports, with each observation, ``obs["route"]`` = ``ROUTE_FIELDS``:

* ``junction_distance``: metres along the route from the ego to the next junction's entry,
  clipped to ``[0, JUNCTION_HORIZON]``; 0 inside the junction, ``JUNCTION_HORIZON`` when none is
  that close (the highway: always);
* ``route_x``, ``route_y``: the route's centre-line point the ego reaches in ``ROUTE_AHEAD_TIME``
  seconds at its current speed (at least ``ROUTE_MIN_AHEAD`` metres further along the route), in
  the ego's lane frame (``sim.plan.plan_frame``: x along the current lane, y to its left): where
  a 2 s plan should end if the ego kept its speed. On a straight road it is ``(ahead, 0)``;
  approaching a left turn ``route_y`` grows positive, a right turn negative. No absolute
  position. (A fixed 20 m point made a slow car steer for a corner it was still far from.)

``route_features`` computes them from a route polyline in the world frame (the embedded
backend samples its route's lanes; CARLA's ``sim.carla_route.Route`` is one already), so every
backend defines them the same way.
"""

from __future__ import annotations

import numpy as np

from sim.interface import EGO
from sim.plan import plan_frame, to_frame

ROUTE_FIELDS = ("junction_distance", "route_x", "route_y")
ROUTE_AHEAD_TIME = 2.0
"""s: the route point ``route_x, route_y`` is ``speed * ROUTE_AHEAD_TIME`` metres along the route,
the horizon of a plan (``PolicyConfig.horizon`` 4 x 0.5 s)."""
ROUTE_MIN_AHEAD = 5.0
"""m: the route point's least distance ahead (a standing car still sees where the route goes)."""
ROUTE_AHEAD = 20.0
"""m: how far ahead a backend's polyline must reach at least (the embedded highway's lane ahead
is ``2 * ROUTE_AHEAD``; points past a polyline's end continue along its last segment)."""
JUNCTION_HORIZON = 50.0
"""m: ``junction_distance`` is clipped here (beyond it the junction does not change what to do)."""


def route_features(points: np.ndarray, junction: np.ndarray | None, along: float, ego: np.ndarray) -> np.ndarray:
    """(len(ROUTE_FIELDS),) float32 for the ego row ``ego`` at ``along`` metres along the route
    polyline ``points`` ((N >= 2, 2) world frame) whose points lie in a junction where
    ``junction`` ((N,) bool; None: no junction). Past the polyline's ends the route continues
    straight along its end segments."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ValueError(f"a route needs a (N >= 2, 2) polyline, got shape {points.shape}")
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    distance = JUNCTION_HORIZON
    if junction is not None:
        junction = np.asarray(junction, dtype=bool)
        inside = np.flatnonzero(junction)
        if len(inside):
            # the junction the ego is in or approaches: the first junction run not yet left behind
            runs = np.split(inside, np.flatnonzero(np.diff(inside) > 1) + 1)
            for run in runs:
                start, end = cum[run[0]], cum[min(run[-1] + 1, len(cum) - 1)]
                if along <= end:
                    distance = float(np.clip(start - along, 0.0, JUNCTION_HORIZON))
                    break
    ego = np.asarray(ego, dtype=np.float64)
    ahead = max(ROUTE_MIN_AHEAD, float(ego[EGO["speed"]]) * ROUTE_AHEAD_TIME)
    target = points_along(points, [along + ahead])[0]
    local = to_frame(plan_frame(ego), target)
    return np.array([distance, local[0], local[1]], dtype=np.float32)


ROUTE_PATH_POINTS = 17
ROUTE_PATH_SPACING = 2.5
"""``obs["route_path"]``: the route's centre line ahead of the ego, ``ROUTE_PATH_POINTS`` world
points every ``ROUTE_PATH_SPACING`` m from the ego's position along it (0 to 40 m): where the car
will drive if it follows its route, through the junction. The yield check (``sim.yield_check``)
reads it; the policy's tokens do not."""


ACTOR_PATH_POINTS = 16
ACTOR_PATH_SPACING = 2.5
"""``obs["actor_paths"]``: (``MAX_ACTORS``, ``ACTOR_PATH_POINTS``, 2) world points, one row per row of
``obs["actors"]``: the centre line of the lane that actor drives in, every ``ACTOR_PATH_SPACING`` m
from its position along it (0 to 37.5 m), through a junction along the branch its turn signal
shows (straight on when it shows none). What a driver reads from the road's layout and another
car's indicator, and what the yield check can predict it along (``sim.yield_check``,
``PolicyConfig.yield_paths``) instead of straight along its heading. All zeros: no path known
(padding rows, or a backend or lane that gives none); then the check falls back to straight lines."""


def route_path(points: np.ndarray, along: float) -> np.ndarray:
    """(ROUTE_PATH_POINTS, 2) float32 world points of the route polyline ``points`` ((N >= 2, 2)
    world frame) every ``ROUTE_PATH_SPACING`` m from ``along`` metres along it (extended straight
    past its end)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ValueError(f"a route needs a (N >= 2, 2) polyline, got shape {points.shape}")
    return points_along(points, along + ROUTE_PATH_SPACING * np.arange(ROUTE_PATH_POINTS)).astype(np.float32)


def points_along(points: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """(len(distances), 2) points of the polyline ``points`` (N >= 2, 2) at those distances along
    it (m), extended straight along its first / last segment before / past its ends."""
    points = np.asarray(points, dtype=np.float64)
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    i = np.clip(np.searchsorted(cum, distances, side="right") - 1, 0, len(points) - 2)
    seg = cum[i + 1] - cum[i]
    t = np.where(seg > 1e-9, (distances - cum[i]) / np.maximum(seg, 1e-9), 0.0)
    return points[i] + t[:, None] * (points[i + 1] - points[i])
