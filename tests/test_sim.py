"""The simulator contract, the expert, determinism and bad inputs (embedded backend)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.cameras import CameraSpec, default_rig
from sim.highway import EmbeddedDrivingEnv
from sim.interface import (
    ACTION_HIGH,
    ACTION_LOW,
    ACTOR_FIELDS,
    EGO,
    EGO_FIELDS,
    EVENT_FIELDS,
    MAX_ACTORS,
    REWARD,
    REWARD_FIELDS,
    Goal,
)
from sim.rollout import ConstantPolicy, ExpertPolicy, RandomPolicy, run_episode
from sim.scenarios import SCENARIOS, check_scenario


@pytest.fixture(scope="module")
def highway():
    return EmbeddedDrivingEnv("highway", "light")


@pytest.fixture(scope="module")
def intersection():
    return EmbeddedDrivingEnv("intersection", "light")


def test_observation_matches_space_with_cameras():
    rig = default_rig(width=32, height=24)
    env = EmbeddedDrivingEnv("highway", "light", cameras=rig)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["cameras"].shape == (6, 24, 32, 3) and obs["cameras"].dtype == np.uint8
    assert obs["cameras"].std() > 0  # not a blank image
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert env.observation_space.contains(obs)
    assert info["events"].shape == (len(EVENT_FIELDS),)
    assert info["reward_terms"].shape == (len(REWARD_FIELDS),)
    assert math.isfinite(reward) and not terminated and not truncated
    assert env.action_space.contains(np.zeros(2, np.float32))


def test_ego_state_units_and_frame(highway):
    highway.reset(seed=0)
    e0 = highway.ego_state()
    assert e0.shape == (len(EGO_FIELDS),) and np.all(np.isfinite(e0))
    assert abs(e0[EGO["yaw"]]) < 1e-6 and e0[EGO["speed"]] > 20  # along +x at highway speed
    for _ in range(10):
        highway.step(np.array([1.0, 0.0]))
    e1 = highway.ego_state()
    assert e1[EGO["x"]] - e0[EGO["x"]] == pytest.approx(sum(e0[EGO["speed"]] + 0.1 * k for k in range(1, 11)) * 0.1, rel=0.02)
    assert e1[EGO["accel_long"]] == pytest.approx(1.0, abs=1e-6)
    # A left (positive) steer turns counter-clockwise: yaw and y grow, yaw rate positive.
    for _ in range(5):
        highway.step(np.array([0.0, 0.05]))
    e2 = highway.ego_state()
    assert e2[EGO["yaw"]] > e1[EGO["yaw"]] and e2[EGO["y"]] > e1[EGO["y"]]
    assert e2[EGO["yaw_rate"]] > 0 and e2[EGO["accel_lat"]] > 0 and e2[EGO["steer"]] == pytest.approx(0.05)
    actors = highway.actors()
    assert actors.shape == (MAX_ACTORS, len(ACTOR_FIELDS))


def test_goal_lane_semantics_on_highway(highway):
    """Lane 0 is the leftmost; the expert reaches a commanded lane on the left."""
    for seed in range(40):
        highway.reset(seed=seed)
        if highway.goal.label == "lane_left":
            break
    else:
        pytest.fail("no lane_left goal in 40 seeds")
    ep = run_episode(highway, ExpertPolicy(highway), seed, record_frames=False)
    start, end = ep.ego[0], ep.ego[-1]
    assert ep.goal.target_lane == int(start[EGO["lane_id"]]) - 1
    assert int(end[EGO["lane_id"]]) == ep.goal.target_lane
    assert end[EGO["y"]] > start[EGO["y"]] + 3.0  # moved about one lane width to the left
    assert ep.reward_terms[-1, REWARD_FIELDS.index("goal")] == 1.0


@pytest.mark.parametrize("turn,sign", [("left", 1.0), ("right", -1.0)])
def test_turn_semantics_at_intersection(intersection, turn, sign):
    for seed in range(60):
        intersection.reset(seed=seed)
        if intersection.goal.turn == turn:
            break
    ep = run_episode(intersection, ExpertPolicy(intersection), seed, record_frames=False)
    dyaw = math.remainder(ep.ego[-1, EGO["yaw"]] - ep.ego[0, EGO["yaw"]], math.tau)
    if ep.outcome == "route_complete":
        assert dyaw == pytest.approx(sign * math.pi / 2, abs=0.25)
    else:  # traffic may block the junction; then it must at least not have turned the other way
        assert sign * dyaw > -0.2


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_expert_does_not_change_the_simulation(scenario):
    """Same actions with and without expert queries -> identical trajectories."""
    env = EmbeddedDrivingEnv(scenario, "medium")
    a = run_episode(env, ConstantPolicy((0.3, 0.0)), seed=5, query_expert=False, record_frames=False)
    b = run_episode(env, ConstantPolicy((0.3, 0.0)), seed=5, query_expert=True, record_frames=False)
    assert a.num_steps == b.num_steps
    np.testing.assert_array_equal(a.ego, b.ego)
    np.testing.assert_array_equal(a.actors, b.actors)
    assert np.all(np.isfinite(b.expert_actions)) and np.all(np.isnan(a.expert_actions))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_seed_same_episode(scenario):
    env = EmbeddedDrivingEnv(scenario, "medium")
    a = run_episode(env, ExpertPolicy(env), seed=11, record_frames=False)
    env2 = EmbeddedDrivingEnv(scenario, "medium")
    b = run_episode(env2, ExpertPolicy(env2), seed=11, record_frames=False)
    assert a.goal == b.goal and a.outcome == b.outcome
    np.testing.assert_array_equal(a.ego, b.ego)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_expert_answers_for_states_it_did_not_drive_to(highway):
    """After a random policy drifts the car, the expert steers it back toward its lane."""
    highway.reset(seed=2)
    for _ in range(6):
        highway.step(np.array([0.0, -0.08]))  # drift right
    e = highway.ego_state()
    act = highway.expert_action()
    assert np.all(act >= ACTION_LOW) and np.all(act <= ACTION_HIGH)
    assert e[EGO["lane_heading_error"]] < 0 and act[1] > 0  # heading right -> steer left


def test_expert_beats_random_and_random_fails(highway):
    expert = run_episode(highway, ExpertPolicy(highway), seed=1, record_frames=False)
    rand = run_episode(highway, RandomPolicy(seed=1), seed=1, record_frames=False)
    assert expert.outcome == "route_complete"
    assert rand.outcome in ("off_road", "collision")
    assert rand.ego[-1, EGO["progress"]] < expert.ego[-1, EGO["progress"]]


def test_off_road_terminates_and_stops_progress(highway):
    highway.reset(seed=4)
    done, info = False, {}
    for _ in range(200):
        _, _, done, trunc, info = highway.step(np.array([0.0, 0.3]))
        if done or trunc:
            break
    assert done and info["outcome"] == "off_road"
    assert info["reward_terms"][REWARD_FIELDS.index("progress_m")] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown scenario 'mars'"):
        check_scenario("mars", "light")
    with pytest.raises(ValueError, match="unknown density 'jam'"):
        EmbeddedDrivingEnv("highway", "jam")
    with pytest.raises(ValueError, match="zero norm"):
        CameraSpec("c", (0, 0, 1), (0, 0, 0, 0))
    for fov in (0.0, 180.0, -5.0):
        with pytest.raises(ValueError, match="fov_deg"):
            CameraSpec("c", (0, 0, 1), (1, 0, 0, 0), fov_deg=fov)
    env = EmbeddedDrivingEnv("highway", "light")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="2 finite numbers"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="turn goal"):
        Goal(kind="turn", label="x", command="x", turn="up")


def test_expert_plan_is_what_the_expert_would_do_and_leaves_the_env_alone():
    """The plan from s_t equals the expert's own next actions when it drives from s_t, and
    asking for it changes nothing (same observation, same continuation)."""
    env = EmbeddedDrivingEnv("highway", "dense")
    env.reset(seed=4)
    for _ in range(5):
        env.step(np.array([0.5, 0.04], np.float32))  # a policy drifted the car
    before = env.ego_state()
    plan = env.expert_plan(4)
    np.testing.assert_array_equal(env.ego_state(), before)
    assert plan.shape == (4, 2) and np.all(np.isfinite(plan))
    executed = []
    for _ in range(4):
        executed.append(env.expert_action())
        env.step(executed[-1])
    np.testing.assert_array_equal(plan, np.array(executed, np.float32))
    with pytest.raises(ValueError, match="horizon"):
        env.expert_plan(0)


def test_rollouts_record_plans_only_where_a_policy_drove():
    env = EmbeddedDrivingEnv("highway", "light")
    ep = run_episode(env, ConstantPolicy((0.0, 0.01)), seed=3, record_frames=False, plan_horizon=3)
    assert ep.expert_plans.shape == (ep.num_steps, 3, 2)
    np.testing.assert_array_equal(ep.expert_plans[:, 0], ep.expert_actions)
    # the plan's later steps answer the expert's own states, not the ones the policy drove to
    assert not np.allclose(ep.expert_plans[:-1, 1], ep.expert_actions[1:])
    expert = run_episode(env, ExpertPolicy(env), seed=3, record_frames=False, plan_horizon=3)
    assert expert.expert_plans is None
    with pytest.raises(ValueError, match="query_expert"):
        run_episode(env, ConstantPolicy(), seed=3, query_expert=False, plan_horizon=3)


def test_goal_labels_are_the_expert_under_each_goal():
    from sim.scenarios import HIGHWAY_GOAL_LABELS, highway_goal_labels

    env = EmbeddedDrivingEnv("highway", "dense")
    env.reset(seed=3)
    labels = env.goal_labels()
    own = HIGHWAY_GOAL_LABELS.index(env.goal.label)
    np.testing.assert_array_equal(labels[own], env.expert_action())
    possible = highway_goal_labels(env._start_lane)
    for i, label in enumerate(HIGHWAY_GOAL_LABELS):
        assert np.all(np.isfinite(labels[i])) == (label in possible)
    # lane commands disagree on steering once the ego is between lanes
    if "lane_left" in possible and "lane_right" in possible:
        assert labels[HIGHWAY_GOAL_LABELS.index("lane_left"), 1] > labels[HIGHWAY_GOAL_LABELS.index("lane_right"), 1]
    intersection = EmbeddedDrivingEnv("intersection", "light")
    intersection.reset(seed=1)
    assert intersection.goal_labels() is None


@pytest.mark.parametrize("scenario", ["highway", "intersection"])
def test_feasible_goals_are_ones_the_expert_reaches(scenario):
    """goals="feasible" issues a command the expert meets when it drives the episode, leaves
    the episode as reset made it, and is deterministic per seed; "any" may issue one it misses."""
    feasible = EmbeddedDrivingEnv(scenario, "medium", goals="feasible")
    any_goal = EmbeddedDrivingEnv(scenario, "medium", goals="any")
    for seed in range(3):
        obs, _ = feasible.reset(seed=seed)
        again, _ = feasible.reset(seed=seed)
        np.testing.assert_array_equal(obs["state"], again["state"])
        assert feasible.goal_feasible is True
        ep = run_episode(feasible, ExpertPolicy(feasible), seed=seed, record_frames=False)
        assert ep.outcome in ("route_complete", "timeout") and ep.reward_terms[-1, REWARD["goal"]] == 1.0
        any_goal.reset(seed=seed)
        assert any_goal.goal_feasible is None
        np.testing.assert_array_equal(any_goal.ego_state(), ep.ego[0])  # same start, only the goal differs
    with pytest.raises(ValueError, match="goals"):
        EmbeddedDrivingEnv(scenario, "medium", goals="possible")


def test_speed_up_is_issued_only_where_traffic_allows():
    """In medium traffic moving below 30 m/s a blanket speed_up is rarely reachable: the expert
    misses it in most episodes when it is forced on them, and every issued one is met."""
    from sim.scenarios import highway_goal_for

    env = EmbeddedDrivingEnv("highway", "medium", goals="any")
    missed = 0
    for seed in range(8000, 8004):
        env.reset(seed=seed)
        env.goal = highway_goal_for("speed_up", env._start_lane)
        missed += not env._expert_reaches_goal()
    assert missed >= 3


def test_goal_futures_are_the_expert_under_each_other_goal():
    """goal_futures: the expert's exact continuation under each other goal, NaN for the own
    goal; the env is left alone."""
    from sim.scenarios import HIGHWAY_GOAL_LABELS, highway_goal_for

    env = EmbeddedDrivingEnv("highway", "medium", goals="any")
    env.reset(seed=5)
    for _ in range(10):
        env.step(env.expert_action())
    before, own = env.ego_state(), HIGHWAY_GOAL_LABELS.index(env.goal.label)
    futures = env.goal_futures(20)
    np.testing.assert_array_equal(env.ego_state(), before)
    assert futures.shape == (len(HIGHWAY_GOAL_LABELS), 20, 4) and np.isnan(futures[own]).all()
    checked = 0
    for i, label in enumerate(HIGHWAY_GOAL_LABELS):
        if np.isfinite(futures[i]).all():
            snap = env.snapshot()
            env.goal = highway_goal_for(label, env._start_lane)
            exact = env.expert_continuation(20)[1]
            env.restore(snap)
            np.testing.assert_allclose(futures[i], exact, rtol=1e-6)
            checked += 1
    assert checked >= 2
    left, right = (HIGHWAY_GOAL_LABELS.index(n) for n in ("lane_left", "lane_right"))
    if np.isfinite(futures[left]).all() and np.isfinite(futures[right]).all():
        assert futures[left, -1, 1] > futures[right, -1, 1] + 1.0  # world y grows to the left
    with pytest.raises(ValueError, match="horizon"):
        env.goal_futures(0)
    intersection = EmbeddedDrivingEnv("intersection", "light")
    intersection.reset(seed=1)
    assert intersection.goal_futures(20) is None


def test_traffic_wrecks_at_the_junction_are_towed_after_three_seconds():
    from sim.highway import WRECK_CLEAR_STEPS

    env = EmbeddedDrivingEnv("intersection", "medium")
    env.reset(seed=3)
    wreck = next(v for v in env._core.road.vehicles if v is not env._core.vehicle)
    wreck.crashed = True
    for _ in range(WRECK_CLEAR_STEPS):
        assert any(v is wreck for v in env._core.road.vehicles)
        env.step(env.expert_action())
    env.step(env.expert_action())
    assert not any(v is wreck for v in env._core.road.vehicles)


def test_junction_traffic_stops_short_and_never_reverses():
    """IDM asks a car standing closer than its minimum gap for a negative acceleration; highway-env's
    own IDMVehicle then backs up (its MIN_SPEED is -40 m/s). The junction's traffic must wait."""
    from highway_env.road.road import Road, RoadNetwork
    from highway_env.vehicle.behavior import IDMVehicle
    from highway_env.vehicle.objects import Obstacle

    from sim.highway_core import TrafficIDM

    def standing_behind_a_wall(kind):
        net = RoadNetwork.straight_road_network(1, length=500)
        road = Road(net, np_random=np.random.default_rng(0))
        lane = net.get_lane(("0", "1", 0))
        car = kind(road, lane.position(96.0, 0.0), heading=lane.heading_at(96.0), speed=0.0)
        road.vehicles.append(car)
        road.objects.append(Obstacle(road, lane.position(100.0, 0.0)))
        xs, vs = [], []
        for _ in range(30):
            road.act()
            road.step(0.1)
            xs.append(float(car.position[0]))
            vs.append(float(car.speed))
        return np.array(xs), np.array(vs)

    x_hw, v_hw = standing_behind_a_wall(IDMVehicle)
    assert v_hw.min() < -0.1 and x_hw[-1] < 96.0 - 0.1  # the behaviour this class exists to stop
    x, v = standing_behind_a_wall(TrafficIDM)
    assert v.min() >= 0.0
    assert np.all(np.diff(x) >= -1e-9) and x[-1] >= 96.0 - 1e-9


def test_braking_stops_our_car_and_never_drives_it_backward():
    env = EmbeddedDrivingEnv("highway", "light", goals="any")
    obs, _ = env.reset(seed=2)
    x0 = speed = None
    for _ in range(80):  # from about 20-25 m/s, 6 m/s^2 stops the car within 5 s
        obs, *_ = env.step(np.array([-6.0, 0.0]))
        speed = float(obs["ego"][EGO["speed"]])
        assert speed >= 0.0
        if speed == 0.0 and x0 is None:
            x0 = float(obs["ego"][EGO["x"]])
    assert x0 is not None and abs(float(obs["ego"][EGO["x"]]) - x0) < 1e-6


def test_a_goal_bias_tells_its_command_first_and_leaves_other_draws_alone():
    """goal_bias: with chance p an episode is told the biased command first (when possible from
    the start lane; under "feasible" only if the expert reaches it); without one, or with p = 0,
    every seed draws the goal and start it always drew. Bad biases are refused by name."""
    from sim.backends import make_env
    from sim.scenarios import biased_label, parse_goal_bias

    plain = EmbeddedDrivingEnv("highway", "medium", goals="any")
    zero = EmbeddedDrivingEnv("highway", "medium", goals="any", goal_bias=parse_goal_bias("slow_down=0"))
    always = EmbeddedDrivingEnv("highway", "medium", goals="any", goal_bias=(("slow_down", 1.0),))
    labels = []
    for seed in range(12):
        obs, info = plain.reset(seed=seed)
        obs0, info0 = zero.reset(seed=seed)
        assert info0["goal"] == info["goal"]
        np.testing.assert_array_equal(obs0["state"], obs["state"])
        biased, _ = always.reset(seed=seed)
        assert always.goal.label == "slow_down"
        np.testing.assert_array_equal(biased["ego"], obs["ego"])  # the same start, another command
        labels.append(info["goal"].label)
    assert labels.count("slow_down") < len(labels)  # so the bias changed some commands
    feasible = EmbeddedDrivingEnv("highway", "medium", goals="feasible", goal_bias=(("slow_down", 1.0),))
    for seed in range(2):
        feasible.reset(seed=seed)
        assert feasible.goal_feasible is True and feasible.goal.label == "slow_down"
    assert parse_goal_bias("") == () and parse_goal_bias(" slow_down=0.4, lane_left=0.2 ") == (
        ("slow_down", 0.4), ("lane_left", 0.2))
    assert [biased_label((("slow_down", 0.4), ("lane_left", 0.2)), u) for u in (0.1, 0.5, 0.7)] == [
        "slow_down", "lane_left", None]
    for bad, match in (("slow=0.5", "LABEL=P"), ("slow_down", "LABEL=P"), ("slow_down=x", "not a probability"),
                       ("slow_down=1.5", r"\[0, 1\]"), ("slow_down=0.6,lane_left=0.6", "more than 1"),
                       ("slow_down=0.1,slow_down=0.2", "twice")):
        with pytest.raises(ValueError, match=match):
            parse_goal_bias(bad)
    with pytest.raises(ValueError, match="more than 1"):
        EmbeddedDrivingEnv("highway", "medium", goal_bias=(("slow_down", 0.7), ("keep_lane", 0.7)))
    with pytest.raises(ValueError, match="highway commands"):
        EmbeddedDrivingEnv("intersection", "medium", goal_bias=(("slow_down", 1.0),))
    with pytest.raises(ValueError, match="embedded simulator"):
        make_env("carla", "highway", "medium", goal_bias=(("slow_down", 1.0),))


def test_a_start_speed_range_starts_our_car_there_and_leaves_the_rest_of_the_draw_alone():
    """start_speed (lo, hi): our car starts at a speed drawn from [lo, hi] on a stream of its own, so
    a seed keeps its traffic and start lane (and its goal under "any"); a seed draws the same speed
    every time; bad ranges, other scenarios and other backends are refused by name."""
    from sim.backends import make_env

    plain = EmbeddedDrivingEnv("highway", "medium", goals="any")
    ranged = EmbeddedDrivingEnv("highway", "medium", goals="any", start_speed=(12.0, 32.0))
    speeds = []
    for seed in range(6):
        obs, info = plain.reset(seed=seed)
        got, got_info = ranged.reset(seed=seed)
        assert obs["ego"][EGO["speed"]] == pytest.approx(25.0)
        speeds.append(float(got["ego"][EGO["speed"]]))
        assert 12.0 <= speeds[-1] <= 32.0
        assert got_info["goal"] == info["goal"]
        for field in ("x", "y", "lane_id"):
            assert got["ego"][EGO[field]] == obs["ego"][EGO[field]]
        np.testing.assert_array_equal(got["actors"], obs["actors"])
        assert float(ranged.reset(seed=seed)[0]["ego"][EGO["speed"]]) == speeds[-1]
    assert len(set(np.round(speeds, 3))) == len(speeds)  # drawn, not one fixed speed
    obs, _ = ranged.reset(seed=0)
    obs, *_ = ranged.step(np.zeros(2, np.float32))
    assert obs["ego"][EGO["speed"]] == pytest.approx(speeds[0], abs=0.05)  # the simulator drives from there
    for bad, match in (((30.0, 20.0), "lo <= hi"), ((1.0, 20.0), "lo <= hi"), ((float("nan"), 20.0), "lo <= hi"),
                       ((20.0,), "two numbers"), ("fast", "two numbers")):
        with pytest.raises(ValueError, match=match):
            EmbeddedDrivingEnv("highway", "medium", start_speed=bad)
    with pytest.raises(ValueError, match="highway option"):
        EmbeddedDrivingEnv("intersection", "medium", start_speed=(12.0, 32.0))
    with pytest.raises(ValueError, match="embedded simulator"):
        make_env("carla", "highway", "medium", start_speed=(12.0, 32.0))
