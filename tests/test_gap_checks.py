"""sim.gap_checks: a plan policy begins a lane change only into a gap the expert's MOBIL
criterion accepts, read from the observed actors; otherwise its plan keeps the lane."""

from __future__ import annotations

import numpy as np
import pytest

from sim.driver_models import PARAMS, acc_model, idm
from sim.interface import ACTOR, ACTOR_FIELDS, EGO, EGO_FIELDS
from sim.gap_checks import MergeParams, hold_lane, lane_change_side, merge_safe


def _ego(speed: float = 25.0, yaw: float = 0.0, x: float = 0.0, y: float = 0.0) -> np.ndarray:
    ego = np.zeros(len(EGO_FIELDS))
    ego[[EGO["x"], EGO["y"], EGO["yaw"], EGO["speed"], EGO["speed_limit"]]] = x, y, yaw, speed, 30.0
    return ego


def _actor(x: float, y: float, speed: float) -> np.ndarray:
    a = np.zeros(len(ACTOR_FIELDS))
    a[[ACTOR["present"], ACTOR["x"], ACTOR["y"], ACTOR["speed"]]] = 1.0, x, y, speed
    return a


def _open_road(junction: float = 50.0) -> np.ndarray:
    from sim.route import ROUTE_FIELDS

    route = np.zeros(len(ROUTE_FIELDS), dtype=np.float32)
    route[0] = junction  # metres to the next junction along the route (clipped at 50: none near)
    return route


def test_a_lane_change_is_a_plan_ending_over_half_a_lane_aside_before_the_car_is_committed():
    plan = np.zeros((4, 2))
    assert lane_change_side(plan, 0.0) == 0
    plan[-1, 1] = 3.5
    assert lane_change_side(plan, 0.0) == 1 and lane_change_side(plan, 0.9) == 1
    assert lane_change_side(plan, 1.2) == 0  # committed: under way, not checked
    plan[-1, 1] = -3.5
    assert lane_change_side(plan, -0.3) == -1
    held = hold_lane(plan)
    assert np.all(held[:, 1] == 0) and np.all(held[:, 0] == plan[:, 0]) and plan[-1, 1] == -3.5


def test_the_gap_is_judged_as_the_expert_judges_it():
    """The follower's IDM braking against b_safe, the new leader against the current one; only
    actors in the target lane count, wherever the road points."""
    ego = _ego()
    assert merge_safe(ego, np.zeros((0, len(ACTOR_FIELDS))), 1)
    assert merge_safe(ego, np.stack([_actor(-5.0, 0.0, 25.0), _actor(-5.0, -4.0, 25.0)]), 1)  # not in the left lane
    for gap in (20.0, 40.0, 60.0, 90.0):
        follower = np.stack([_actor(-gap, 4.0, 25.0)])
        want = idm(25.0, 30.0, gap, 0.0, PARAMS) >= -2.0
        assert merge_safe(ego, follower, 1) == want
        assert merge_safe(ego, follower, 1, MergeParams(b_safe=50.0))  # a lenient check lets everything by
    assert not merge_safe(ego, np.stack([_actor(-20.0, 4.0, 25.0)]), 1)  # 20 m behind at our speed: too close
    assert merge_safe(ego, np.stack([_actor(-20.0, 4.0, 15.0)]), 1)  # ... unless it is much slower
    assert not merge_safe(ego, np.stack([_actor(8.0, 4.0, 25.0)]), 1)  # inside the jam distance
    lead = _actor(30.0, 4.0, 25.0)
    now = acc_model(25.0, 25.0, 20.0, 0.0)
    assert merge_safe(ego, np.stack([lead, _actor(20.0, 0.0, 25.0)]), 1) == (acc_model(25.0, 25.0, 30.0, 0.0) >= now)
    # the same scene turned by 90 degrees and moved: the lane frame follows the ego
    turned = _ego(yaw=np.pi / 2, x=100.0, y=50.0)
    scene = np.stack([_actor(100.0 - 4.0, 50.0 - 30.0, 25.0)])  # left of a car heading +y is -x; 30 m behind
    assert merge_safe(turned, scene, 1) == merge_safe(ego, np.stack([_actor(-30.0, 4.0, 25.0)]), 1)


@pytest.mark.parametrize("brake", [0.0, 2.0])
def test_a_plan_policy_with_the_check_keeps_its_lane_beside_a_car(brake):
    """With a car right beside it in the target lane a plan asking for the left lane is held in
    the lane (merge_brake 2); without the check (0) it is executed as predicted."""
    import torch

    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first", merge_brake=brake)
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    ego = _ego()
    obs = {"ego": ego, "actors": np.stack([_actor(-3.0, 4.0, 25.0)]), "route": _open_road()}
    change = np.array([[0.0, 0.5], [0.0, 1.5], [0.0, 2.8], [0.0, 3.8]])
    policy.reset()
    policy.select_action(obs, plan=lambda o: change)
    executed = policy._plan[0]
    if brake:
        np.testing.assert_array_equal(executed, hold_lane(change))
    else:
        np.testing.assert_array_equal(executed, change)
    policy.reset()
    policy.select_action({**obs, "route": _open_road(20.0)}, plan=lambda o: change)  # a junction 20 m on: a turn
    np.testing.assert_array_equal(policy._plan[0], change)
    policy.reset()
    obs["actors"] = np.stack([_actor(-200.0, 4.0, 25.0)])  # the lane is free: the change goes ahead
    policy.select_action(obs, plan=lambda o: change)
    np.testing.assert_array_equal(policy._plan[0], change)


def test_the_following_check_brakes_only_when_the_gap_needs_more_than_the_trigger():
    from sim.gap_checks import FollowParams, follow_brake

    ego = _ego(speed=22.7)
    free = follow_brake(ego, np.stack([_actor(-10.0, 0.0, 30.0), _actor(12.0, 4.0, 10.0)]))
    assert free is None  # behind us, or in the next lane: not our leader
    assert follow_brake(ego, np.stack([_actor(60.0, 0.0, 22.0)])) is None  # a slightly slower car far ahead
    lead = np.stack([_actor(10.3, 0.0, 18.2)])  # 3.3 m of room beyond the margin, closing at 4.5 m/s
    steady = follow_brake(ego, lead)
    assert steady == pytest.approx(-(4.5 ** 2) / (2 * 3.3))
    braking = follow_brake(ego, lead, accels=np.array([-2.0]))  # and it brakes: judged by its speed 0.5 s on
    assert braking == pytest.approx(-(5.5 ** 2) / (2 * 3.3))
    assert follow_brake(ego, np.stack([_actor(15.0, 0.0, 22.8)]), accels=np.array([-6.0])) is None  # far enough
    assert follow_brake(ego, lead, params=FollowParams(trigger=5.0)) is None
    assert follow_brake(ego, lead, params=FollowParams(trigger=0.0)) is None  # off
    assert follow_brake(ego, np.stack([_actor(6.0, 0.0, 18.0)])) == -6.0  # no room left: the hardest brake
    assert follow_brake(ego, np.stack([_actor(30.0, 0.0, 22.0)]), accels=np.array([-0.3])) is None


@pytest.mark.parametrize("trigger", [0.0, 3.0])
def test_a_plan_policy_with_the_following_check_brakes_behind_a_slow_car(trigger):
    import torch

    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first", follow_brake=trigger)
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    policy.reset()
    cruise = np.zeros((4, 2))
    obs = {"ego": _ego(speed=22.7), "actors": np.stack([_actor(10.3, 0.0, 18.2)]), "route": _open_road()}
    action = policy.select_action(obs, plan=lambda o: cruise)
    if trigger:
        assert action[0] == pytest.approx(-(4.5 ** 2) / (2 * 3.3), rel=1e-5)
    else:
        assert action[0] > -1.0  # the plan holds its speed and nothing overrides it
    policy.reset()
    assert policy.select_action({**obs, "route": _open_road(30.0)}, plan=lambda o: cruise)[0] > -1.0  # junction


def test_the_road_edge_keeps_a_plan_between_the_outermost_lane_centres():
    from sim.gap_checks import keep_on_road

    plan = np.array([[0.5, -0.5], [0.5, -1.5], [0.5, -2.8], [0.5, -3.8]])  # toward the right lane
    np.testing.assert_array_equal(keep_on_road(plan, [1, 2]), plan)  # two lanes on the right
    kept = keep_on_road(plan, [3, 0])  # the rightmost lane: no lane to go to
    np.testing.assert_array_equal(kept[:, 1], 0.0)
    np.testing.assert_array_equal(kept[:, 0], plan[:, 0])
    assert plan[-1, 1] == -3.8  # the input is left alone
    two = np.array([[0.0, 2.0], [0.0, 6.0], [0.0, 9.0], [0.0, 10.0]])  # two lanes to the left, one exists
    np.testing.assert_array_equal(keep_on_road(two, [1, 0])[:, 1], [2.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(keep_on_road(two, [np.nan, np.nan]), two)  # unknown: unchanged
    np.testing.assert_array_equal(keep_on_road(plan, [0, 0], lane_width=3.5)[:, 1], 0.0)


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_a_plan_policy_with_the_road_edge_never_plans_off_the_road(edge):
    """In the rightmost lane a plan to the right is kept in the lane (road_edge 1), executed as
    predicted without it (0), left alone near a junction and where the backend reports no lanes."""
    import torch

    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first", road_edge=edge)
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    obs = {"ego": _ego(), "actors": np.stack([_actor(-200.0, 4.0, 25.0)]), "route": _open_road(),
           "lanes": np.array([3.0, 0.0], np.float32)}
    right = np.array([[0.0, -0.5], [0.0, -1.5], [0.0, -2.8], [0.0, -3.8]])
    policy.reset()
    policy.select_action(obs, plan=lambda o: right)
    if edge:
        np.testing.assert_array_equal(policy._plan[0][:, 1], 0.0)
    else:
        np.testing.assert_array_equal(policy._plan[0], right)
    for other in ({**obs, "route": _open_road(20.0)}, {k: v for k, v in obs.items() if k != "lanes"}):
        policy.reset()
        policy.select_action(other, plan=lambda o: right)
        np.testing.assert_array_equal(policy._plan[0], right)


def test_the_embedded_simulator_reports_the_lanes_beside_the_ego():
    from sim.highway import EmbeddedDrivingEnv
    from sim.scenarios import HIGHWAY_LANES

    env = EmbeddedDrivingEnv("highway", "light")
    seen = set()
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        lane = int(obs["ego"][EGO["lane_id"]])
        assert obs["lanes"].tolist() == [lane, HIGHWAY_LANES - 1 - lane]
        assert env.observation_space["lanes"].contains(obs["lanes"])
        seen.add(lane)
    assert len(seen) >= 2
    env.close()


def test_a_checkpoint_saved_before_the_road_edge_existed_drives_with_it(tmp_path):
    import json

    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          road_edge=0.0)
    VLAPolicy(config, default_action_tokenizer(16, "plan")).save(tmp_path / "p")
    assert VLAPolicy.load(tmp_path / "p").config.road_edge == 0.0  # a saved choice is kept
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    del meta["config"]["road_edge"]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    assert VLAPolicy.load(tmp_path / "p").config.road_edge == 1.0
