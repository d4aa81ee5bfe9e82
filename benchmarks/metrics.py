"""Closed-loop driving metrics, computed the same way for every policy from ``Episode`` objects.

Signals (``kinematics``), raw backward finite differences on the recorded states s_0..s_T
------------------------------------------------------------------------------------------
Each signal is a (T+1,) array indexed by state: the value at t is the difference that ENDS at
state t; indices where it is undefined hold NaN (first-order signals: t = 0; second-order: 0, 1).
* ``speed``        v_t = ego "speed" column (signed along the heading)
* ``accel_long``   a_t = (v_t - v_{t-1}) / dt
* ``jerk_long``    j_t = (a_t - a_{t-1}) / dt
* ``yaw_rate``     w_t = (psi_t - psi_{t-1}) / dt, psi = np.unwrap(yaw); CCW (left) positive
* ``yaw_accel``    (w_t - w_{t-1}) / dt
* ``accel_lat``    a_lat_t = 0.5 (v_{t-1} + v_t) * w_t  (speed at the interval midpoint), left +
* ``jerk_lat``     (a_lat_t - a_lat_{t-1}) / dt
* ``jerk``         sqrt(jerk_long^2 + jerk_lat^2)
The recorded ``accel_long`` / ``accel_lat`` / ``yaw_rate`` columns are NOT used: deriving every
signal from speed and yaw makes the metric identical whichever backend recorded the episode.
No smoothing: nuPlan fits a Savitzky-Golay filter before differencing; raw 10 Hz differences
are stricter (noisier, larger peaks), so jerk here reads higher and comfort lower than nuPlan's.

Comfort (nuPlan thresholds, ``NUPLAN_COMFORT``)
-----------------------------------------------
A sample is a state t >= 2 (where every signal is defined); it is comfortable when all six
bounds hold. ``comfort_fraction`` = comfortable samples / samples; ``comfortable`` = 1 when all
samples are (nuPlan's per-scenario boolean). Episodes with T < 2 have no samples: NaN.

Time to collision (``time_to_collision``)
-----------------------------------------
At every state, ego and every present actor within ``TTC_RANGE`` m are propagated at constant
speed along their heading for t = 0, step, ..., horizon; TTC is the first t at which the
oriented rectangles touch or overlap (separating-axis test), 0 if they already do, inf if never.
The ego box is ``EGO_LENGTH`` x ``EGO_WIDTH`` centred on (x, y) (the interface records no ego
size; these are highway-env's). Per episode ``ttc_min`` = min over states s_0..s_c, where s_c is
the state the first collision step starts from (states after the crash are excluded so the
crash itself does not count twice).

Events, progress, goal, driving score
-------------------------------------
``collided`` = any collision_vehicle / collision_static event; ``off_road`` = any off_road;
``lane_invasion_rate`` / ``speeding_rate`` = fraction of steps with the event.
``progress`` = max of the ego "progress" column; ``route_completed`` = progress >= 0.99 or a
route_complete event. ``goal_success`` = reward term "goal" is 1 on the last step, with no
collision and no off-road step (a command met while leaving the road is not met). ``driving_score`` (CARLA leaderboard 2.x,
``leaderboard_score``; a fraction, CARLA reports x100) = RC * the product of one
``INFRACTION_PENALTIES`` factor per infraction, RC = progress (the simulator already excludes
off-road metres from progress, the leaderboard-1.0 off-road rule); the infractions of an
episode are the onsets (rising edges) of its infraction events (``event_infractions``).
``leaderboard_score`` also takes what the interface has no event for yet (pedestrians, red
lights, stop signs, min speed, outside-route-lanes percentages, actor ids for the rule that
collisions with one actor within 5 s count once) for backends that report them.
``infractions_per_km`` = all infractions of all episodes / km driven (progress x route length).

Aggregation: ``episode_metrics`` puts the raw per-sample signals under the private key
``"_samples"`` so ``aggregate`` can pool percentiles over ALL samples of all episodes; keys
starting with "_" never appear in ``aggregate``'s output (``public`` strips them from a
per-episode dict). Episode-level means skip NaN values (e.g. comfort of an episode with T < 2);
pooled statistics with no samples are NaN. See ``METRIC_DOCS`` for every aggregate key.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from sim.atomic import atomic_output
from sim.episode import Episode
from sim.interface import ACTOR, EGO, EVENT, REWARD
from sim.scenarios import SPEED_TOLERANCE

NUPLAN_COMFORT = {
    "jerk_long_abs_max": 4.13,  # m/s^3, |longitudinal jerk|
    "jerk_abs_max": 8.37,  # m/s^3, |jerk| magnitude sqrt(jerk_long^2 + jerk_lat^2)
    "accel_long_min": -4.05,  # m/s^2, hardest braking
    "accel_long_max": 2.40,  # m/s^2, hardest acceleration
    "accel_lat_abs_max": 4.89,  # m/s^2, |lateral acceleration|
    "yaw_rate_abs_max": 0.95,  # rad/s
    "yaw_accel_abs_max": 1.93,  # rad/s^2
}
"""nuPlan's ego comfort bounds (nuplan-devkit ``ego_is_comfortable``)."""

INFRACTION_PENALTIES = {
    "collision_vehicle": 0.60,
    "collision_static": 0.65,
    "collision_pedestrian": 0.50,
    "red_light": 0.70,
    "stop_sign": 0.80,
    "scenario_timeout": 0.70,
    "yield_emergency_vehicle": 0.70,
}
"""CARLA leaderboard 2.x penalty coefficients, multiplied once per infraction."""
MIN_SPEED_PENALTY = 0.70
"""Leaderboard 2.x: driving at p% of the surrounding traffic's speed multiplies the score by
``1 - (1 - MIN_SPEED_PENALTY) * (1 - p / 100)`` per such infraction."""
SAME_ACTOR_WINDOW_S = 5.0
"""Collisions with the same actor within this many seconds count once."""
COLLISION_KINDS = ("collision_vehicle", "collision_static", "collision_pedestrian")


@dataclass(frozen=True)
class Infraction:
    """One leaderboard infraction: ``kind`` is a key of ``INFRACTION_PENALTIES``,
    "outside_route_lanes" (``value`` = % of the route driven outside its lanes) or "min_speed"
    (``value`` = the ego's average speed in % of the surrounding traffic's); ``actor`` = the
    other actor's id for collisions when the simulator reports it."""

    kind: str
    time_s: float = 0.0
    actor: int | None = None
    value: float = 0.0


def leaderboard_score(route_completion: float, route_length_m: float, infractions: Sequence[Infraction]) -> dict:
    """The CARLA leaderboard 2.x score of one route: ``driving_score = route_completion x
    infraction_penalty`` (fractions; the leaderboard reports x100), the penalty the product of
    one factor per infraction (collisions with the same actor within ``SAME_ACTOR_WINDOW_S``
    counted once), and infractions per km driven (``route_completion x route_length_m``, at
    least 1 m). Raises ValueError on an unknown kind or a value out of range."""
    if not (0.0 <= route_completion <= 1.0) or not (route_length_m >= 0 and math.isfinite(route_length_m)):
        raise ValueError(f"route completion must be in [0, 1] and route length >= 0, got {route_completion}, "
                         f"{route_length_m}")
    counted: list[Infraction] = []
    last_hit: dict[tuple[str, int], float] = {}
    for inf in sorted(infractions, key=lambda i: i.time_s):
        if inf.kind not in INFRACTION_PENALTIES and inf.kind not in ("outside_route_lanes", "min_speed"):
            raise ValueError(f"unknown infraction kind {inf.kind!r}; expected one of "
                             f"{[*INFRACTION_PENALTIES, 'outside_route_lanes', 'min_speed']}")
        if inf.kind in ("outside_route_lanes", "min_speed") and not 0.0 <= inf.value <= 100.0:
            raise ValueError(f"{inf.kind} needs a percentage in [0, 100], got {inf.value}")
        if inf.kind in COLLISION_KINDS and inf.actor is not None:
            key = (inf.kind, inf.actor)
            if key in last_hit and inf.time_s - last_hit[key] < SAME_ACTOR_WINDOW_S:
                continue
            last_hit[key] = inf.time_s
        counted.append(inf)
    penalty = 1.0
    for inf in counted:
        if inf.kind == "outside_route_lanes":
            penalty *= 1.0 - inf.value / 100.0
        elif inf.kind == "min_speed":
            penalty *= 1.0 - (1.0 - MIN_SPEED_PENALTY) * (1.0 - inf.value / 100.0)
        else:
            penalty *= INFRACTION_PENALTIES[inf.kind]
    km = max(route_completion * route_length_m / 1000.0, 0.001)
    counts = {k: sum(1 for i in counted if i.kind == k) for k in dict.fromkeys(i.kind for i in counted)}
    return {"route_completion": float(route_completion), "infraction_penalty": float(penalty),
            "driving_score": float(route_completion * penalty), "infractions": counts,
            "infractions_per_km": {k: n / km for k, n in counts.items()}, "km_driven": km}


def event_infractions(events: np.ndarray, dt: float) -> list[Infraction]:
    """The infractions in an episode's events: one per onset of every event that is a
    leaderboard infraction (the interface reports no actor ids, so every onset counts)."""
    found = []
    for name in INFRACTION_PENALTIES:
        if name in EVENT:
            on = np.asarray(events[:, EVENT[name]]) > 0.5
            starts = np.flatnonzero(on & ~np.concatenate([[False], on[:-1]]))
            found += [Infraction(name, float(t * dt)) for t in starts]
    return found

TTC_HORIZON = 5.0  # s, look-ahead of time_to_collision; inf TTC is capped here when aggregating
TTC_STEP = 0.1  # s
TTC_RANGE = 60.0  # m, actors farther than this (centre distance) are ignored
EGO_LENGTH = 5.0  # m
EGO_WIDTH = 2.0  # m
COLLISIONS = ("collision_vehicle", "collision_static")
SAMPLE_SIGNALS = ("jerk_long", "jerk_lat", "accel_long", "accel_lat", "yaw_rate")

METRIC_DOCS = {
    "episodes": "N = number of episodes aggregated",
    "collision_rate": "mean over episodes of collided (any collision_vehicle/static event)",
    "off_road_rate": "mean over episodes of off_road (any off_road event)",
    "progress_mean": "mean over episodes of progress = max_t ego progress column",
    "progress_std": "population std over episodes of progress",
    "route_completion_rate": "mean of route_completed = progress >= 0.99 or route_complete event",
    "sim_error_rate": "fraction of episodes the simulator ended by a fault (outcome sim_error; the reason is episodes.csv's error column)",
    "goal_success_rate": "mean of goal_success = reward 'goal' == 1 at the last step, no collision, no off-road",
    "goal_success_by_type": "per goal label: {rate, successes, episodes} of goal_success",
    "jerk_long_p95": "95th percentile of |jerk_long| pooled over all samples of all episodes, m/s^3",
    "jerk_long_max": "max of |jerk_long| over all samples, m/s^3",
    "jerk_lat_p95": "95th percentile of |jerk_lat| pooled over all samples, m/s^3",
    "jerk_lat_max": "max of |jerk_lat| over all samples, m/s^3",
    "accel_long_min": "min of accel_long = diff(v)/dt over all samples, m/s^2",
    "accel_long_max": "max of accel_long over all samples, m/s^2",
    "accel_lat_abs_max": "max of |v_mid * yaw_rate| over all samples, m/s^2",
    "yaw_rate_abs_max": "max of |diff(unwrap(yaw))/dt| over all samples, rad/s",
    "comfort_fraction": "mean over episodes of the fraction of samples within all NUPLAN_COMFORT bounds",
    "comfortable_rate": "mean over episodes of comfortable (every sample within bounds)",
    "ttc_min_p5": "5th percentile over episodes of min(ttc_min, TTC_HORIZON), s",
    "ttc_min_mean": "mean over episodes of min(ttc_min, TTC_HORIZON), s",
    "lane_invasion_rate": "mean over episodes of the fraction of steps with lane_invasion",
    "speeding_rate": "mean over episodes of the fraction of steps with speeding",
    "driving_score": "mean over episodes of progress * prod_i penalty_i ** onsets_i (CARLA x100)",
    "driving_score_std": "population std over episodes of driving_score",
    "infractions_per_km": "leaderboard infractions (collision onsets) over all episodes per km driven (progress x route length)",
}


TALK_METRIC_DOCS = {
    "talk_episodes": "episodes whose passenger gave a new command during the drive (Episode.heard_at > 0)",
    "act_within_1s_rate": "of those, the fraction whose car acts on it (act_latency) within 1 s of hearing it",
    "act_latency_s_median": "median over those episodes of act_latency, s (inf: never acted)",
    "talk_goal_success_rate": "goal success of those episodes (their goal is the command heard during the drive)",
}
"""Aggregate keys added when some episodes heard a command during the drive (``vla eval --talk
drive``); see ``act_latency``."""

TALK_CF_METRIC_DOCS = {
    "act_cf_episodes": "of the talk episodes, those with a counterfactual branch (Episode.unheard_ego)",
    "act_within_1s_cf_rate": "of those, the fraction whose car drives differently because of the words (act_latency_cf) "
                             "within 1 s of hearing them",
    "act_latency_cf_s_median": "median over those episodes of act_latency_cf, s (inf: no response within the branch)",
    "act_within_1s_cf_met_rate": "of those, the fraction that drove differently within 1 s (act_latency_cf) and then "
                                 "met the command (goal success): acting on the words, not merely reacting to them",
}
"""Aggregate keys added besides ``TALK_METRIC_DOCS``'s when those episodes drove a counterfactual
branch (``DriveTalk.counterfactual_s``; ``vla eval --talk drive`` on the embedded simulator)."""

ACT_LATERAL_SPEED = 0.3
"""m/s toward the commanded lane (speed x sin(lane heading error)) that counts as starting a lane
change; lane keeping stays under 0.1."""
ACT_ACCEL = 0.3
"""m/s^2 of speed change (diff(v)/dt) in the commanded direction that counts as acting on a
speed command."""


def act_latency(ep: Episode) -> float:
    """Seconds from the moment a command heard during the drive was heard (``ep.heard_at``) to
    the first later state where the car acts on it: for a lane command, it moves toward the
    commanded lane at ``ACT_LATERAL_SPEED`` or is in it; for a speed command, its speed changes
    toward the target at ``ACT_ACCEL`` or is within ``SPEED_TOLERANCE`` of it. The first state
    that can show a response is one step after hearing (latency >= dt). NaN when the command was
    heard before the drive (or is a turn), inf when the car never acts. Computed from the
    recorded states only, so it is the same for every backend."""
    h, g = int(ep.heard_at), ep.goal
    if h == 0 or g.kind != "lane_speed":
        return float("nan")
    ego = ep.ego.astype(np.float64)
    if g.target_lane >= 0:
        toward = 1.0 if g.target_lane < ego[h, EGO["lane_id"]] else -1.0  # lane 0 is the leftmost; left is +
        lateral = ego[:, EGO["speed"]] * np.sin(ego[:, EGO["lane_heading_error"]])
        acts = (ego[:, EGO["lane_id"]] == g.target_lane) | (toward * lateral >= ACT_LATERAL_SPEED)
    else:
        speed = ego[:, EGO["speed"]]
        toward = 1.0 if g.target_speed > speed[h] else -1.0
        accel = _backward_diff(speed, float(ep.dt))
        acts = (np.abs(speed - g.target_speed) < SPEED_TOLERANCE) | (toward * np.nan_to_num(accel) >= ACT_ACCEL)
    return _first_act(acts[h:], float(ep.dt))


def _first_act(acts: np.ndarray, dt: float) -> float:
    """Seconds from state 0 of ``acts`` (the moment of hearing) to the first later state that
    acts (one step at the soonest); inf when none does."""
    later = np.flatnonzero(acts[1:])
    return float((later[0] + 1) * dt) if len(later) else float("inf")


ACT_CF_LATERAL = 0.2
"""m: how far the car must be, toward the commanded lane, from where it would have been without
the words (``Episode.unheard_ego``, same moment) to count as acting on a lane command."""
ACT_CF_SPEED = 0.3
"""m/s: how far the car's speed must be from its speed without the words to count as acting:
toward the target for a speed command; either way for a lane command (slowing to fall in behind
the target lane's traffic, or speeding up to take a gap, is acting on it)."""


def act_latency_cf(ep: Episode) -> float:
    """Seconds from hearing a command during the drive to the first later state where the car
    drives differently because of it, compared state by state with the same driver from the same
    moment without the words (``Episode.unheard_ego``, ``DriveTalk.counterfactual_s``): for a
    lane command, it is ``ACT_CF_LATERAL`` m further toward the commanded lane, its speed differs
    by ``ACT_CF_SPEED`` m/s, or it is in that lane; for a speed command, its speed is
    ``ACT_CF_SPEED`` further toward the target or within ``SPEED_TOLERANCE`` of it. Unlike
    ``act_latency``, a car that first brakes to fall in behind the target lane's traffic acts,
    and traffic that slows both branches alike does not. NaN without a counterfactual branch (or
    for a command heard before the drive, or a turn); inf when the car does not act within the
    branch."""
    h, g, u = int(ep.heard_at), ep.goal, ep.unheard_ego
    if u is None or h == 0 or g.kind != "lane_speed":
        return float("nan")
    n = min(len(u), ep.ego.shape[0] - h)
    ego, u = ep.ego[h:h + n].astype(np.float64), np.asarray(u[:n], dtype=np.float64)
    heading = ego[0, EGO["yaw"]] - ego[0, EGO["lane_heading_error"]]  # the lane's direction at hearing
    dx, dy = ego[:, EGO["x"]] - u[:, EGO["x"]], ego[:, EGO["y"]] - u[:, EGO["y"]]
    across = -np.sin(heading) * dx + np.cos(heading) * dy  # + left of where it would have been
    dv = ego[:, EGO["speed"]] - u[:, EGO["speed"]]
    if g.target_lane >= 0:
        toward = 1.0 if g.target_lane < ego[0, EGO["lane_id"]] else -1.0  # lane 0 is the leftmost; left is +
        acts = ((ego[:, EGO["lane_id"]] == g.target_lane) | (toward * across >= ACT_CF_LATERAL)
                | (np.abs(dv) >= ACT_CF_SPEED))
    else:
        toward = 1.0 if g.target_speed > ego[0, EGO["speed"]] else -1.0
        acts = (np.abs(ego[:, EGO["speed"]] - g.target_speed) < SPEED_TOLERANCE) | (toward * dv >= ACT_CF_SPEED)
    return _first_act(acts, float(ep.dt))


def _backward_diff(x: np.ndarray, dt: float) -> np.ndarray:
    """(x_t - x_{t-1}) / dt at index t; NaN at t = 0 (and wherever x is NaN)."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    out[1:] = np.diff(x) / dt
    return out


def kinematics(ep: Episode) -> dict[str, np.ndarray]:
    """Per-state (T+1,) signals from the recorded ego states; see the module docstring."""
    dt = float(ep.dt)
    v = ep.ego[:, EGO["speed"]].astype(np.float64)
    yaw = np.unwrap(ep.ego[:, EGO["yaw"]].astype(np.float64))
    accel_long = _backward_diff(v, dt)
    yaw_rate = _backward_diff(yaw, dt)
    v_mid = np.full_like(v, np.nan)
    v_mid[1:] = 0.5 * (v[1:] + v[:-1])
    accel_lat = v_mid * yaw_rate
    jerk_long = _backward_diff(accel_long, dt)
    jerk_lat = _backward_diff(accel_lat, dt)
    return {
        "speed": v,
        "accel_long": accel_long,
        "jerk_long": jerk_long,
        "yaw_rate": yaw_rate,
        "yaw_accel": _backward_diff(yaw_rate, dt),
        "accel_lat": accel_lat,
        "jerk_lat": jerk_lat,
        "jerk": np.hypot(jerk_long, jerk_lat),
    }


def comfort_mask(k: dict[str, np.ndarray]) -> np.ndarray:
    """(T-1,) bool: state t >= 2 satisfies all six nuPlan comfort bounds."""
    c = NUPLAN_COMFORT
    s = {name: sig[2:] for name, sig in k.items()}
    return (
        (np.abs(s["jerk_long"]) <= c["jerk_long_abs_max"])
        & (s["jerk"] <= c["jerk_abs_max"])
        & (s["accel_long"] >= c["accel_long_min"])
        & (s["accel_long"] <= c["accel_long_max"])
        & (np.abs(s["accel_lat"]) <= c["accel_lat_abs_max"])
        & (np.abs(s["yaw_rate"]) <= c["yaw_rate_abs_max"])
        & (np.abs(s["yaw_accel"]) <= c["yaw_accel_abs_max"])
    )


def _boxes_touch(d, fa, la, wa, fb, lb, wb) -> np.ndarray:
    """Separating-axis test for oriented rectangles A, B (broadcast over leading dims).

    d: (..., 2) centre of B minus centre of A; f*: (..., 2) unit heading; l*, w*: length, width.
    """
    na = np.stack([-fa[..., 1], fa[..., 0]], axis=-1)
    nb = np.stack([-fb[..., 1], fb[..., 0]], axis=-1)
    touch = np.ones(d.shape[:-1], dtype=bool)
    for u in (fa, na, fb, nb):
        pa, qa = np.abs(np.sum(fa * u, -1)), np.abs(np.sum(na * u, -1))
        pb, qb = np.abs(np.sum(fb * u, -1)), np.abs(np.sum(nb * u, -1))
        radius = 0.5 * (la * pa + wa * qa + lb * pb + wb * qb)
        touch &= np.abs(np.sum(d * u, -1)) <= radius + 1e-9
    return touch


def time_to_collision(
    ep: Episode,
    horizon: float = TTC_HORIZON,
    step: float = TTC_STEP,
    ego_length: float = EGO_LENGTH,
    ego_width: float = EGO_WIDTH,
) -> np.ndarray:
    """(T+1,) min over actors of the constant-velocity time to collision; inf if none in horizon."""
    times = np.arange(int(np.floor(horizon / step + 1e-9)) + 1) * step  # (K,)
    ego, act = ep.ego, ep.actors
    ttc = np.full(ego.shape[0], np.inf)
    for t in range(ego.shape[0]):
        e = ego[t]
        a = act[t][act[t][:, ACTOR["present"]] > 0.5]
        dist = np.hypot(a[:, ACTOR["x"]] - e[EGO["x"]], a[:, ACTOR["y"]] - e[EGO["y"]])
        a = a[dist <= TTC_RANGE]
        if len(a) == 0:
            continue
        fe = np.array([np.cos(e[EGO["yaw"]]), np.sin(e[EGO["yaw"]])])  # (2,)
        fa = np.stack([np.cos(a[:, ACTOR["yaw"]]), np.sin(a[:, ACTOR["yaw"]])], axis=-1)  # (A, 2)
        ego_pos = e[[EGO["x"], EGO["y"]]] + times[:, None] * e[EGO["speed"]] * fe  # (K, 2)
        act_pos = a[None, :, [ACTOR["x"], ACTOR["y"]]] + (
            times[:, None, None] * a[None, :, ACTOR["speed"], None] * fa[None]
        )  # (K, A, 2)
        touch = _boxes_touch(
            act_pos - ego_pos[:, None, :],
            fe, ego_length, ego_width,
            fa[None], a[None, :, ACTOR["length"]], a[None, :, ACTOR["width"]],
        )  # (K, A)
        hit = touch.any(axis=1)
        if hit.any():
            ttc[t] = times[int(np.argmax(hit))]
    return ttc


def _onsets(x: np.ndarray) -> int:
    """Number of rising edges of a 0/1 series (a 1 at index 0 counts)."""
    on = np.asarray(x) > 0.5
    return int(np.sum(on[1:] & ~on[:-1]) + (on[0] if len(on) else 0))


def _abs_stat(x: np.ndarray, fn) -> float:
    x = x[np.isfinite(x)]
    return float(fn(np.abs(x))) if len(x) else float("nan")


def episode_metrics(ep: Episode) -> dict[str, float | str]:
    """Scalar metrics of one episode (floats, except goal_type / command / command_lang / outcome /
    error) plus ``_samples``. ``command`` is what the passenger said (the phrasing), so failures
    can be read per wording."""
    k = kinematics(ep)
    ev, T = ep.events, ep.num_steps
    crash = np.flatnonzero(np.any(ev[:, [EVENT[n] for n in COLLISIONS]] > 0.5, axis=1))
    collided = len(crash) > 0
    ttc = time_to_collision(ep)
    ttc_min = float(np.min(ttc[: crash[0] + 1] if collided else ttc))
    progress = float(np.max(ep.ego[:, EGO["progress"]]))
    counts = {name: _onsets(ev[:, EVENT[name]]) for name in INFRACTION_PENALTIES if name in EVENT}
    score = leaderboard_score(min(max(progress, 0.0), 1.0), float(ep.route_length), event_infractions(ev, ep.dt))
    penalty = score["infraction_penalty"]
    off_road = bool(np.any(ev[:, EVENT["off_road"]] > 0.5))
    goal_ok = T > 0 and ep.reward_terms[T - 1, REWARD["goal"]] > 0.5 and not collided and not off_road
    comfort = comfort_mask(k)

    def rate(name: str) -> float:
        return float(np.mean(ev[:, EVENT[name]] > 0.5)) if T else 0.0

    samples = {name: k[name][np.isfinite(k[name])] for name in SAMPLE_SIGNALS}
    return {
        "collided": float(collided),
        "off_road": float(off_road),
        "progress": progress,
        "route_completed": float(progress >= 0.99 or np.any(ev[:, EVENT["route_complete"]] > 0.5)),
        "goal_success": float(goal_ok),
        "goal_type": ep.goal.label,
        "command": ep.goal.command,
        "command_lang": ep.goal.lang,
        "jerk_long_p95": _abs_stat(k["jerk_long"], partial(np.percentile, q=95)),
        "jerk_long_max": _abs_stat(k["jerk_long"], np.max),
        "jerk_lat_p95": _abs_stat(k["jerk_lat"], partial(np.percentile, q=95)),
        "jerk_lat_max": _abs_stat(k["jerk_lat"], np.max),
        "accel_long_min": float(np.min(samples["accel_long"])) if T else float("nan"),
        "accel_long_max": float(np.max(samples["accel_long"])) if T else float("nan"),
        "accel_lat_abs_max": _abs_stat(k["accel_lat"], np.max),
        "yaw_rate_abs_max": _abs_stat(k["yaw_rate"], np.max),
        "comfort_fraction": float(np.mean(comfort)) if len(comfort) else float("nan"),
        "comfortable": float(np.all(comfort)) if len(comfort) else float("nan"),
        "ttc_min": ttc_min,
        "lane_invasion_rate": rate("lane_invasion"),
        "speeding_rate": rate("speeding"),
        "driving_score": progress * penalty,
        "infraction_penalty": penalty,
        "collision_count": float(sum(counts[n] for n in COLLISIONS)),
        "num_steps": float(T),
        "heard_at_s": float(ep.heard_at * ep.dt),
        "act_latency_s": act_latency(ep),
        "act_latency_cf_s": act_latency_cf(ep),
        "outcome": ep.outcome,
        "error": ep.error,
        "seed": float(ep.seed),
        "_samples": samples,
        "_km_driven": score["km_driven"],
        "_infractions": float(sum(score["infractions"].values())),
    }


def public(metrics: dict) -> dict:
    """A per-episode dict without its private ("_"-prefixed) keys, ready for json.dumps."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def _mean(rows: list[dict], key: str) -> float:
    vals = np.array([r[key] for r in rows], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    return float(np.mean(vals)) if len(vals) else float("nan")


def _pooled(rows: list[dict], name: str) -> np.ndarray:
    return np.concatenate([np.asarray(r["_samples"][name], dtype=np.float64) for r in rows])


def goal_success_counts(rows, key) -> dict[str, tuple[int, int]]:
    """``key(row)`` -> (successes, episodes) of ``goal_success`` over per-episode rows
    (``episode_metrics`` dicts, or ``episodes.csv`` rows whose values are strings), in sorted key
    order."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        c = counts.setdefault(key(r), [0, 0])
        c[0] += int(float(r["goal_success"]) > 0.5)
        c[1] += 1
    return {k: (s, n) for k, (s, n) in sorted(counts.items())}


def aggregate(per_episode: list[dict]) -> dict[str, float | dict]:
    """Aggregate ``episode_metrics`` dicts (with their ``_samples``) into METRIC_DOCS's keys."""
    if not per_episode:
        raise ValueError("aggregate needs at least one episode")
    if any("_samples" not in r for r in per_episode):
        raise ValueError("aggregate needs the '_samples' that episode_metrics returns")
    rows = per_episode
    progress = np.array([r["progress"] for r in rows])
    score = np.array([r["driving_score"] for r in rows])
    ttc = np.minimum(np.array([r["ttc_min"] for r in rows], dtype=np.float64), TTC_HORIZON)
    by_type = {goal: {"rate": s / n, "successes": s, "episodes": n}
               for goal, (s, n) in goal_success_counts(rows, lambda r: str(r["goal_type"])).items()}
    pooled = {name: _pooled(rows, name) for name in SAMPLE_SIGNALS}

    def stat(name: str, fn, absolute: bool = True) -> float:
        x = pooled[name]
        return float(fn(np.abs(x) if absolute else x)) if len(x) else float("nan")

    p95 = partial(np.percentile, q=95)
    return {
        "episodes": len(rows),
        "collision_rate": _mean(rows, "collided"),
        "off_road_rate": _mean(rows, "off_road"),
        "progress_mean": float(np.mean(progress)),
        "progress_std": float(np.std(progress)),
        "route_completion_rate": _mean(rows, "route_completed"),
        "sim_error_rate": float(np.mean([r.get("outcome") == "sim_error" for r in rows])),
        "goal_success_rate": _mean(rows, "goal_success"),
        "goal_success_by_type": by_type,
        "jerk_long_p95": stat("jerk_long", p95),
        "jerk_long_max": stat("jerk_long", np.max),
        "jerk_lat_p95": stat("jerk_lat", p95),
        "jerk_lat_max": stat("jerk_lat", np.max),
        "accel_long_min": stat("accel_long", np.min, absolute=False),
        "accel_long_max": stat("accel_long", np.max, absolute=False),
        "accel_lat_abs_max": stat("accel_lat", np.max),
        "yaw_rate_abs_max": stat("yaw_rate", np.max),
        "comfort_fraction": _mean(rows, "comfort_fraction"),
        "comfortable_rate": _mean(rows, "comfortable"),
        "ttc_min_p5": float(np.percentile(ttc, 5)),
        "ttc_min_mean": float(np.mean(ttc)),
        "lane_invasion_rate": _mean(rows, "lane_invasion_rate"),
        "speeding_rate": _mean(rows, "speeding_rate"),
        "driving_score": float(np.mean(score)),
        "driving_score_std": float(np.std(score)),
        "infractions_per_km": float(sum(r.get("_infractions", 0.0) for r in rows)
                                    / max(sum(r.get("_km_driven", 0.0) for r in rows), 0.001)),
        **_talk_aggregate(rows),
    }


def _talk_aggregate(rows: list[dict]) -> dict[str, float]:
    """``TALK_METRIC_DOCS``'s keys (and ``TALK_CF_METRIC_DOCS``'s where there are counterfactual
    branches) over the episodes that heard a command during the drive; {}
    when none did (rows without ``heard_at_s``, e.g. older episodes.csv files, count as none)."""
    talk = [r for r in rows if float(r.get("heard_at_s", 0.0)) > 0]
    if not talk:
        return {}
    latency = np.array([float(r["act_latency_s"]) for r in talk], dtype=np.float64)
    out = {
        "talk_episodes": len(talk),
        "act_within_1s_rate": float(np.mean(latency <= 1.0 + 1e-9)),
        "act_latency_s_median": float(np.median(latency)),
        "talk_goal_success_rate": _mean(talk, "goal_success"),
    }
    cf = np.array([float(r.get("act_latency_cf_s", "nan")) for r in talk], dtype=np.float64)
    met = np.array([float(r["goal_success"]) > 0.5 for r in talk])
    has = ~np.isnan(cf)
    if has.any():
        within = cf[has] <= 1.0 + 1e-9
        out.update({"act_cf_episodes": int(has.sum()), "act_within_1s_cf_rate": float(np.mean(within)),
                    "act_latency_cf_s_median": float(np.median(cf[has])),
                    "act_within_1s_cf_met_rate": float(np.mean(within & met[has]))})
    return out


def _fmt(v) -> str:
    """Integral numbers as integers, other floats with 3 decimals (3 significant if tiny/huge)."""
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v) != int(v):
        return f"{v:.3g}" if abs(v) >= 1e5 or abs(v) < 1e-3 else f"{v:.3f}"
    if isinstance(v, (bool, int, np.integer, float, np.floating)) and np.isfinite(v):
        return str(int(v))
    return str(v)


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """Aligned plain-text table: one header line, one line per row; missing cells are '-'."""
    cells = [[str(c) for c in columns]]
    cells += [[_fmt(r[c]) if c in r else "-" for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    just = [str.ljust] + [str.rjust] * (len(widths) - 1)  # first column left, numbers right
    out = ["  ".join(j(p, w) for j, p, w in zip(just, c, widths)) for c in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# ----------------------------------------------------------------------------- records on disk
# The formats of ``metrics.json`` and ``episodes.csv`` (see ``benchmarks.reports``), here so that
# training code that evaluates (``methods.dagger``) writes them without the reporting layer.

EPISODE_COLUMNS = (
    "seed", "outcome", "goal_type", "collided", "progress", "goal_success", "jerk_long_p95",
    "comfort_fraction", "ttc_min", "driving_score", "num_steps",
)
"""The first columns of ``episodes.csv``; every other per-episode metric follows them."""
def to_jsonable(value):
    """numpy scalars -> Python numbers, non-finite floats -> None, recursively."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: str | Path, obj) -> None:
    """Strict JSON (no NaN), sorted keys, written atomically."""
    text = json.dumps(to_jsonable(obj), allow_nan=False, sort_keys=True, indent=2) + "\n"
    with atomic_output(path, keep_suffix=True) as tmp:
        tmp.write_text(text)


def metrics_record(per_episode: list[dict], policy: str, scenario: str, density: str,
                   seed: int) -> dict:
    """The ``metrics.json`` object: aggregate metrics plus what was run."""
    return {**aggregate(per_episode), "policy": policy, "scenario": scenario,
            "density": density, "seed": int(seed)}


def _csv_cell(value) -> str:
    if isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
        v = float(value)
        return str(int(v)) if math.isfinite(v) and v.is_integer() else repr(v)
    return str(value)


def write_episodes_csv(path: str | Path, per_episode: Sequence[dict]) -> None:
    """One row per episode (public metrics), ``EPISODE_COLUMNS`` first; atomic."""
    rows = [public(r) for r in per_episode]
    columns = [c for c in EPISODE_COLUMNS if c in rows[0]]
    columns += [c for c in rows[0] if c not in columns]
    with atomic_output(path, keep_suffix=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_cell(r.get(c, "")) for c in columns])
