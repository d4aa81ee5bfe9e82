"""The driving constitution on constructed trajectories: each rule decides when it should, in
priority order, and names itself."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.metrics import NUPLAN_COMFORT
from methods.constitution import (
    RULE_NAMES,
    Constitution,
    ConstitutionConfig,
    Trajectory,
)
from sim.interface import (
    ACTOR,
    ACTOR_FIELDS,
    DT,
    EGO,
    EGO_FIELDS,
    EVENT,
    EVENT_FIELDS,
    MAX_ACTORS,
    REWARD,
    REWARD_FIELDS,
    Goal,
)

KEEP = Goal(kind="lane_speed", label="keep_lane", command="keep your lane", target_lane=1, target_speed=25.0)
LEFT = Goal(kind="lane_speed", label="lane_left", command="change to the left lane", target_lane=0, target_speed=25.0)
SLOW = Goal(kind="lane_speed", label="slow_down", command="slow down", target_lane=-1, target_speed=20.0)
T = 20


def drive(speeds=None, lane=1, offsets=None, lanes=None, limit=30.0, events=None, actors=None) -> Trajectory:
    """A straight-road continuation of T steps: speed profile, lateral offsets, lane ids."""
    v = np.full(T + 1, 22.0) if speeds is None else np.asarray(speeds, float)
    ego = np.zeros((T + 1, len(EGO_FIELDS)))
    ego[:, EGO["speed"]] = v
    ego[:, EGO["x"]] = np.concatenate([[0.0], np.cumsum(v[1:] * DT)])
    ego[:, EGO["lane_id"]] = lane if lanes is None else lanes
    ego[:, EGO["lane_offset"]] = 0.0 if offsets is None else offsets
    ego[:, EGO["y"]] = -4.0 * ego[:, EGO["lane_id"]] + ego[:, EGO["lane_offset"]]
    ego[:, EGO["speed_limit"]] = limit
    history = ego[:1].repeat(2, 0)
    history[:, EGO["x"]] -= np.array([2, 1]) * v[0] * DT
    terms = np.zeros((T, len(REWARD_FIELDS)))
    terms[:, REWARD["progress_m"]] = v[1:] * DT
    ev = np.zeros((T, len(EVENT_FIELDS)))
    for name, steps in (events or {}).items():
        ev[steps, EVENT[name]] = 1.0
    act = np.zeros((T + 1, MAX_ACTORS, len(ACTOR_FIELDS))) if actors is None else actors
    return Trajectory(ego=ego, actors=act, events=ev, reward_terms=terms, history=history)


def judge(a: Trajectory, b: Trajectory, goal: Goal = KEEP, **config):
    c = Constitution(ConstitutionConfig(**config))
    return c.compare(c.costs(a, goal), c.costs(b, goal), goal)


def test_identical_trajectories_tie():
    v = judge(drive(), drive())
    assert v.winner == -1 and v.rule == ""


def test_collision_decides_first_even_against_discomfort():
    crash = drive(events={"collision_vehicle": [10]})
    jerky = drive(speeds=22.0 + 1.5 * (np.arange(T + 1) % 2))  # +-15 m/s^2 every step: very uncomfortable
    v = judge(crash, jerky)
    assert (v.winner, v.rule) == (1, "no_collision")


def test_low_time_to_collision_decides():
    actors = np.zeros((T + 1, MAX_ACTORS, len(ACTOR_FIELDS)))
    t = np.arange(T + 1) * DT
    actors[:, 0, [ACTOR["present"], ACTOR["length"], ACTOR["width"]]] = (1.0, 5.0, 2.0)
    actors[:, 0, ACTOR["y"]] = -4.0
    actors[:, 0, ACTOR["speed"]] = 10.0
    actors[:, 0, ACTOR["x"]] = 20.0 + 10.0 * t  # a slow leader 20 m ahead in our lane
    closing = drive(actors=actors)  # 22 m/s toward it: TTC ~1 s
    braking = drive(speeds=np.linspace(22.0, 10.0, T + 1), actors=actors)
    v = judge(closing, braking)
    assert (v.winner, v.rule) == (1, "ttc")


def test_off_road_decides_before_lane_keeping():
    off = drive(events={"off_road": [5, 6, 7]})
    invading = drive(events={"lane_invasion": list(range(10))})
    assert judge(off, invading).rule == "on_road" and judge(off, invading).winner == 1


def test_lane_invasion_forbidden_when_keeping_allowed_during_commanded_change():
    offsets = np.linspace(0.0, 2.0, T + 1)  # drifting left toward lane 0, still on lane 1
    drifting = drive(offsets=offsets, events={"lane_invasion": list(range(10, T))})
    staying = drive()
    v = judge(drifting, staying, KEEP)
    assert (v.winner, v.rule) == (1, "in_lane")
    # The same drift is the commanded lane change: no in_lane cost; it is closer to the target.
    v = judge(drifting, staying, LEFT)
    assert (v.winner, v.rule) == (0, "command")


def test_speeding_decides():
    fast = drive(speeds=np.full(T + 1, 33.0))
    legal = drive(speeds=np.full(T + 1, 29.0))
    v = judge(fast, legal)
    assert (v.winner, v.rule) == (1, "speed_limit")


def test_speed_command_decides_and_margin_makes_ties():
    slowing = drive(speeds=np.linspace(25.0, 21.0, T + 1))
    cruising = drive(speeds=np.full(T + 1, 25.0))
    assert judge(slowing, cruising, SLOW).rule == "command" and judge(slowing, cruising, SLOW).winner == 0
    # 0.2 m/s apart in the end: inside the 0.5 m/s command margin, so the next rules decide.
    a, b = drive(speeds=np.full(T + 1, 23.0)), drive(speeds=np.full(T + 1, 23.2))
    assert judge(a, b, SLOW).rule != "command"


def test_comfort_uses_the_nuplan_bounds():
    jerk = NUPLAN_COMFORT["jerk_long_abs_max"]
    accel = np.zeros(T)
    accel[5:] = 2.0 * jerk * DT  # a step in acceleration: jerk 2x the bound for one sample
    harsh = drive(speeds=22.0 + np.concatenate([[0.0], np.cumsum(accel * DT)]))
    smooth = drive(speeds=22.0 + np.concatenate([[0.0], np.cumsum(np.minimum(np.arange(T) * 0.05, 0.8) * DT)]))
    v = judge(harsh, smooth)
    assert (v.winner, v.rule) == (1, "comfort")


def test_progress_breaks_the_remaining_ties():
    v = judge(drive(speeds=np.full(T + 1, 20.0)), drive(speeds=np.full(T + 1, 24.0)))
    assert (v.winner, v.rule) == (1, "progress")


def test_best_and_violations():
    c = Constitution()
    cands = [drive(events={"collision_vehicle": [3]}), drive(speeds=np.full(T + 1, 24.0)), drive(events={"off_road": [2]})]
    costs = [c.costs(t, KEEP) for t in cands]
    assert c.best(costs, KEEP) == 1
    assert c.violations(costs[0]) == ["no_collision"] and c.violations(costs[1]) == []
    assert len(costs[0]) == len(RULE_NAMES) and RULE_NAMES[0] == "no_collision" and RULE_NAMES[-1] == "progress"


def test_bad_config_and_arrays():
    with pytest.raises(ValueError, match="ttc_min_s"):
        ConstitutionConfig(ttc_min_s=-1.0)
    with pytest.raises(ValueError, match="lane_width"):
        ConstitutionConfig(lane_width=0.0)
    t = drive()
    with pytest.raises(ValueError, match="disagree"):
        Trajectory(ego=t.ego[:-1], actors=t.actors, events=t.events, reward_terms=t.reward_terms, history=t.history)
