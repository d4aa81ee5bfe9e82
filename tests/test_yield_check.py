"""The yield check and the go rule (sim.yield_check) and their use by a plan policy (PolicyConfig.yield_zone,
go_zone)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.interface import ACTOR, ACTOR_FIELDS, EGO, EGO_FIELDS, MAX_ACTORS
from sim.yield_check import (YieldParams, block_brake, crossing_conflict, crossing_speed, curve_accel, curve_speed, ego_path,
                              follow_accel, go_accel, go_distances, junction_brake, junction_hold, launch_accel, path_block,
                              route_leader, yield_accel)


def _ego(speed: float, x: float = 0.0) -> np.ndarray:
    """Heading east (+x) along y = 0 at ``speed``, in the centre of its lane."""
    ego = np.zeros(len(EGO_FIELDS))
    ego[EGO["x"]], ego[EGO["speed"]] = x, speed
    return ego


def _actors(*rows: tuple[float, float, float, float]) -> np.ndarray:
    """(MAX_ACTORS, ACTOR_FIELDS) from (x, y, yaw, speed) rows, the rest padding."""
    out = np.zeros((MAX_ACTORS, len(ACTOR_FIELDS)))
    for i, (x, y, yaw, speed) in enumerate(rows):
        out[i, [ACTOR["present"], ACTOR["id"], ACTOR["x"], ACTOR["y"], ACTOR["yaw"], ACTOR["speed"]]] = (1, i + 1, x, y, yaw, speed)
        out[i, [ACTOR["length"], ACTOR["width"]]] = (5.0, 2.0)
    return out


STRAIGHT = np.array([[0.0, 0.0], [10.0, 0.0]])


def test_a_car_crossing_our_path_when_we_would_be_there_is_a_conflict_and_we_stop_at_the_line():
    # we are 20 m before the junction at 6 m/s; the crossing road runs north at x = 25, a car 25 m
    # south of our path drives north at 8 m/s: both reach (25, 0) about 3 s from now
    ego, crossing = _ego(6.0), _actors((25.0, -25.0, np.pi / 2, 8.0))
    path = ego_path(ego, np.array([[6.0, 0.0], [12.0, 0.0]]))
    assert crossing_conflict(ego, crossing, path)
    brake = yield_accel(ego, crossing, 20.0, path)
    assert brake is not None and np.isclose(brake, -6.0**2 / (2 * (20.0 - YieldParams().stop_back)))
    # standing at the line, a car coming along the crossing road 8 m ahead (we would reach it in
    # 2.8 s from standstill, it in 2.5 s): hold, and never past standstill
    near = _actors((8.0, -20.0, np.pi / 2, 8.0))
    assert yield_accel(_ego(0.0), near, 3.0, STRAIGHT) == 0.0
    assert -1.0 <= yield_accel(_ego(0.1), near, 3.0, STRAIGHT) < 0.0


def test_no_conflict_when_traffic_is_elsewhere_in_time_or_space_or_goes_our_way():
    ego = _ego(6.0)
    assert not crossing_conflict(ego, _actors((25.0, -80.0, np.pi / 2, 8.0)), STRAIGHT)  # arrives > 4 s later
    assert not crossing_conflict(ego, _actors((25.0, -12.0, np.pi / 2, 8.0)), STRAIGHT)  # 1.5 s before us
    assert not crossing_conflict(ego, _actors((25.0, 5.0, np.pi / 2, 8.0)), STRAIGHT)  # already past our path
    assert not crossing_conflict(ego, _actors((25.0, -25.0, np.pi / 2, 0.0)), STRAIGHT)  # waiting at its line
    # one standing across our path is an obstacle for the plan (car following), not traffic to wait for
    assert not crossing_conflict(ego, _actors((10.0, 0.5, np.pi / 2, 0.3)), STRAIGHT)
    assert crossing_conflict(ego, _actors((10.0, 0.5, np.pi / 2, 0.3)), STRAIGHT, YieldParams(moving=0.0))
    # a slower leader in our lane is the plan's business (car following), not a crossing
    assert not crossing_conflict(ego, _actors((8.0, 0.0, 0.0, 2.0)), STRAIGHT)
    assert not crossing_conflict(ego, _actors(), STRAIGHT)  # nobody there
    # a crossing car that is braking (yielding to us) stands 8 m short of our path: no conflict
    coming = _actors((25.0, -25.0, np.pi / 2, 8.0))
    assert crossing_conflict(ego, coming, STRAIGHT, accels=np.full(MAX_ACTORS, 0.0))
    assert not crossing_conflict(ego, coming, STRAIGHT, accels=np.full(MAX_ACTORS, -4.0))
    assert crossing_conflict(ego, coming, STRAIGHT, accels=np.full(MAX_ACTORS, 2.0))  # speeding up: constant speed
    # an oncoming car in the next lane (4 m to our left) passes us, it does not cross us
    assert not crossing_conflict(ego, _actors((30.0, 4.0, np.pi, 8.0)), STRAIGHT)
    # but it crosses a left turn (we reach its lane in 1.7 s, it that spot in 2.4 s)
    left = ego_path(ego, np.array([[8.0, 1.0], [12.0, 5.0], [13.0, 12.0]]))
    assert crossing_conflict(ego, _actors((30.0, 4.0, np.pi, 8.0)), left)


def test_turning_actors_are_predicted_on_arcs_when_max_turn_is_set():
    ego, arcs = _ego(6.0), YieldParams(max_turn=np.pi / 2)
    rates = np.zeros(MAX_ACTORS)
    # an oncoming car in the next lane turning left (0.8 rad/s at 8 m/s: a 10 m radius) cuts
    # across our lane at x ~ 16 about 1.2 s from now; we would be there at 2.0 s
    oncoming = _actors((24.0, 4.0, np.pi, 8.0))
    rates[0] = 0.8
    assert not crossing_conflict(ego, oncoming, STRAIGHT, YieldParams(), yaw_rates=rates)  # straight lines: it passes us
    assert not crossing_conflict(ego, oncoming, STRAIGHT, arcs)  # no yaw rates given: straight lines
    assert crossing_conflict(ego, oncoming, STRAIGHT, arcs, yaw_rates=rates)
    # a car from the north turning to its right (west) before our road: straight on it would
    # cross our path at x = 25 as we get there; on its arc it leaves northward of us
    from_north = _actors((25.0, 25.0, -np.pi / 2, 8.0))
    rates[0] = -0.8
    assert crossing_conflict(ego, from_north, STRAIGHT, YieldParams(), yaw_rates=rates)
    assert not crossing_conflict(ego, from_north, STRAIGHT, arcs, yaw_rates=rates)
    # the turn stops at max_turn: the car from the north, turned by 0.1 rad at most, still drives
    # almost straight across our path
    assert crossing_conflict(ego, from_north, STRAIGHT, YieldParams(max_turn=0.1), yaw_rates=rates)
    with pytest.raises(ValueError, match="YieldParams"):
        YieldParams(max_turn=-0.1)


def test_the_junction_hold_waits_inside_the_junction_only_where_standing_is_clear_and_going_is_not():
    hold = YieldParams(hold_speed=4.0)
    # inside the junction (distance 0) at 2 m/s; a car 16 m south drives north at 8 m/s across our
    # path 8 m ahead: going on at a_go we are there at 2.0 s, as it is; stopped (0.3 m on) we are not
    ego, crossing = _ego(2.0), _actors((8.0, -16.0, np.pi / 2, 8.0))
    assert crossing_conflict(ego, crossing, STRAIGHT)
    assert not crossing_conflict(ego, crossing, STRAIGHT, stand=True)
    assert junction_hold(ego, crossing, 0.0, STRAIGHT, hold) == -hold.max_brake
    assert junction_hold(_ego(0.3), crossing, 0.0, STRAIGHT, hold) == pytest.approx(-3.0)  # never past standstill
    assert junction_hold(_ego(0.0), crossing, 0.0, STRAIGHT, hold) == 0.0  # standing: stay
    assert junction_hold(ego, crossing, 2.0, STRAIGHT, hold) is not None  # at the line still moving, too
    # the same car crossing 2 m ahead of us meets us where we would stand: going on is no worse
    in_front = _actors((2.0, -12.0, np.pi / 2, 8.0))
    assert crossing_conflict(ego, in_front, STRAIGHT, stand=True)
    assert junction_hold(ego, in_front, 0.0, STRAIGHT, hold) is None
    # off, too fast, out of the zone, or nothing crossing: no hold
    assert junction_hold(ego, crossing, 0.0, STRAIGHT) is None
    assert junction_hold(_ego(5.0), crossing, 0.0, STRAIGHT, hold) is None
    assert junction_hold(ego, crossing, 40.0, STRAIGHT, hold) is None
    assert junction_hold(ego, _actors((8.0, -80.0, np.pi / 2, 8.0)), 0.0, STRAIGHT, hold) is None
    with pytest.raises(ValueError, match="YieldParams"):
        YieldParams(hold_speed=float("nan"))


def test_the_junction_brake_stops_short_of_what_we_would_touch_soon_and_only_that():
    on = YieldParams(brake_ttc=1.5)
    ego = _ego(4.0)
    # a car standing across our path 6 m ahead (centre to centre), inside the junction
    standing = _actors((6.0, 0.0, np.pi / 2, 0.0))
    brake = junction_brake(ego, standing, 0.0, STRAIGHT, on)
    assert brake is not None and -on.max_brake <= brake < -1.0
    # it stops us before we touch it: from 4 m/s at that rate we stop in v^2 / 2|a|, short of 6 m - 1.5 - 1
    assert 4.0**2 / (2 * -brake) < 6.0 - 1.5 - 1.0
    assert junction_brake(ego, standing, 0.0, STRAIGHT) is None  # off by default
    assert junction_brake(ego, standing, 50.0, STRAIGHT, on) is None  # open road: not near a junction
    assert junction_brake(_ego(0.0), standing, 0.0, STRAIGHT, on) is None  # standing: nothing to brake
    assert junction_brake(ego, _actors((30.0, 0.0, np.pi / 2, 0.0)), 0.0, STRAIGHT, on) is None  # beyond 1.5 s
    assert junction_brake(ego, _actors((6.0, 4.0, 0.0, 0.0)), 0.0, STRAIGHT, on) is None  # in the next lane
    assert junction_brake(ego, _actors((-6.0, 0.0, 0.0, 6.0)), 0.0, STRAIGHT, on) is None  # behind us: not ours
    # a car crossing from the right that will be on our path when we get there; one that will have passed
    assert junction_brake(ego, _actors((5.0, -4.0, np.pi / 2, 4.0)), 0.0, STRAIGHT, on) is not None
    assert junction_brake(ego, _actors((5.0, 1.0, np.pi / 2, 8.0)), 0.0, STRAIGHT, on) is None
    # a leader 8 m ahead going our speed is no touch; braking hard to a stand, it is
    leader = _actors((8.0, 0.0, 0.0, 4.0))
    assert junction_brake(ego, leader, 0.0, STRAIGHT, on) is None
    assert junction_brake(ego, leader, 0.0, STRAIGHT, on, accels=np.full(MAX_ACTORS, -6.0)) is not None
    with pytest.raises(ValueError, match="YieldParams"):
        YieldParams(brake_ttc=float("inf"))


def test_precomputed_verdicts_are_used_as_given():
    ego, coming = _ego(6.0), _actors((25.0, -25.0, np.pi / 2, 8.0))
    path = ego_path(ego, np.array([[6.0, 0.0], [12.0, 0.0]]))
    assert yield_accel(ego, coming, 20.0, path) is not None
    assert yield_accel(ego, coming, 20.0, path, conflict=False) is None
    assert yield_accel(ego, _actors(), 20.0, path, conflict=True) is not None
    go = YieldParams(go_zone=10.0)
    assert go_accel(_ego(0.0), _actors(), 3.0, STRAIGHT, go) == go.a_go
    assert go_accel(_ego(0.0), _actors(), 3.0, STRAIGHT, go, verdicts=(None, True)) is None
    assert go_accel(_ego(0.0), _actors(), 3.0, STRAIGHT, go, verdicts=(5.0, False)) is None
    assert go_accel(_ego(0.0), _actors(), 0.0, STRAIGHT, go, verdicts=(None, True)) == go.a_go  # inside: committed


def test_the_check_applies_only_on_the_approach_and_while_a_stop_is_possible():
    crossing = _actors((25.0, -25.0, np.pi / 2, 8.0))
    path = ego_path(_ego(6.0), STRAIGHT)
    assert yield_accel(_ego(6.0), crossing, 50.0, path) is None  # no junction within the zone
    assert yield_accel(_ego(6.0), crossing, 0.0, path) is None  # inside the junction: never stop there
    assert yield_accel(_ego(6.0), crossing, 20.0, path, YieldParams(zone=0.0)) is None  # off
    # 15 m/s with 8 m of room needs 14 m/s^2: committed, the check stays out of the way
    assert yield_accel(_ego(15.0), _actors((25.0, -40.0, np.pi / 2, 8.0)), 11.0, ego_path(_ego(15.0), STRAIGHT)) is None
    assert yield_accel(_ego(3.0), crossing, 2.0, path) is None  # at the line, still moving: go through
    with pytest.raises(ValueError):
        YieldParams(radius=float("nan"))
    with pytest.raises(ValueError):
        YieldParams(horizon=0.0)


def test_ego_path_starts_at_the_ego_and_a_standing_plan_points_along_its_heading():
    ego = _ego(0.0, x=3.0)
    ego[EGO["yaw"]] = np.pi / 2
    path = ego_path(ego, np.array([[3.0, 0.0], [3.0, 0.0]]))
    assert np.allclose(path, [[3.0, 0.0], [3.0, 1.0]])
    assert np.allclose(ego_path(_ego(5.0), np.array([[5.0, 0.0]]))[0], [0.0, 0.0])


def test_a_plan_policy_with_a_yield_zone_brakes_for_crossing_traffic_and_only_then():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    go = np.zeros((4, 2))  # keep speed, keep the lane

    def accel(zone: float, actors: np.ndarray, junction: float = 20.0, route_path: np.ndarray | None = None) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(yield_zone=zone)
        obs = {"ego": _ego(6.0), "actors": actors, "route": np.array([junction, 12.0, 0.0]), "goal": None}
        if route_path is not None:
            obs["route_path"] = route_path
        return float(policy.select_action(obs, plan=lambda o: go)[0])

    crossing = _actors((25.0, -25.0, np.pi / 2, 8.0))
    # the policy reads how fast each actor (by id) slowed since the step before
    policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
    policy.set_execution(yield_zone=30.0)
    obs = {"ego": _ego(6.0), "actors": crossing, "route": np.array([20.0, 12.0, 0.0]), "goal": None}
    assert policy.select_action(obs, plan=lambda o: go)[0] < -1.0  # coming on: held
    braking = crossing.copy()
    braking[0, ACTOR["speed"]] = 7.6  # -4 m/s^2 over the last step: it yields to us
    assert policy.select_action({**obs, "actors": braking}, plan=lambda o: go)[0] > -0.5
    free = accel(0.0, crossing)
    assert abs(free) < 0.5  # the plan holds its speed
    held = accel(30.0, crossing)
    assert np.isclose(held, -6.0**2 / (2 * (20.0 - 3.0)), atol=1e-4)
    assert np.isclose(accel(30.0, _actors()), free)  # nobody crossing: the plan's own command
    assert np.isclose(accel(30.0, crossing, junction=50.0), free)  # open road
    # the route (when the backend reports it) is the path checked: straight on meets the car ...
    straight = np.stack([np.arange(17) * 2.5, np.zeros(17)], axis=-1)
    assert np.isclose(accel(30.0, crossing, route_path=straight), held, atol=1e-4)
    # ... a right turn at x = 15 runs south 10 m clear of the car's road, ahead of it: no conflict
    right = np.array([[min(d, 15.0), -max(d - 15.0, 0.0)] for d in np.arange(17) * 2.5])
    assert np.isclose(accel(30.0, crossing, route_path=right), free)
    with pytest.raises(ValueError, match="yield_zone"):
        PolicyConfig(yield_zone=-1.0)


def test_a_plan_policy_reads_each_actor_s_yaw_rate_and_predicts_arcs_only_with_yield_turn():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    go = np.zeros((4, 2))
    # the oncoming car of test_turning_actors_...: a step ago it headed 0.08 rad less (0.8 rad/s)
    before, now = _actors((24.8, 4.0, np.pi - 0.08, 8.0)), _actors((24.0, 4.0, np.pi, 8.0))

    def second_step(turn: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(yield_zone=30.0, yield_turn=turn)
        obs = {"ego": _ego(6.0), "route": np.array([20.0, 12.0, 0.0]), "goal": None}
        policy.select_action({**obs, "actors": before}, plan=lambda o: go)
        return float(policy.select_action({**obs, "actors": now}, plan=lambda o: go)[0])

    assert abs(second_step(0.0)) < 0.5  # straight lines: it passes us, the plan's own command
    assert second_step(np.pi / 2) < -0.5  # on its arc it cuts across our lane: held at the line
    with pytest.raises(ValueError, match="yield_turn"):
        PolicyConfig(yield_turn=4.0)


def test_a_plan_policy_with_junction_ttc_brakes_for_a_car_standing_in_the_junction():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    go = np.zeros((4, 2))
    obs = {"ego": _ego(4.0), "actors": _actors((6.0, 0.0, np.pi / 2, 0.0)), "route": np.array([0.0, 12.0, 0.0]),
           "goal": None}

    def accel(ttc: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(junction_ttc=ttc, go_zone=0.0)  # (the go rule, on by default, brakes for it too)
        return float(policy.select_action(obs, plan=lambda o: go)[0])

    assert abs(accel(0.0)) < 0.5  # off: the plan holds its speed into the standing car
    assert accel(1.5) < -1.0
    with pytest.raises(ValueError, match="junction_ttc"):
        PolicyConfig(junction_ttc=-1.0)


def test_the_route_leader_is_the_nearest_actor_on_our_route_ahead_and_we_follow_it_as_the_expert_would():
    p = YieldParams(follow_ahead=40.0)
    ego = _ego(8.0)
    left_turn = np.array([[0.0, 0.0], [10.0, 0.0], [16.0, 2.0], [20.0, 6.0], [22.0, 12.0], [22.0, 40.0]])  # bends north
    path = ego_path(ego, left_turn)
    standing = _actors((15.0, 0.0, 0.0, 0.0))
    gap, closing = route_leader(ego, standing, path, p)
    assert gap == pytest.approx(15.0, abs=0.5) and closing == pytest.approx(8.0)
    assert follow_accel(ego, (gap, closing), 8.0) < -3.0  # 10 m of bumper room at 8 m/s: hard
    # on the bend: a car driving across our lane where the route turns; ahead of the standing one
    crossing = _actors((15.0, 0.0, 0.0, 0.0), (10.5, 0.5, -np.pi / 2, 6.0))
    gap, closing = route_leader(ego, crossing, path, p)
    assert gap == pytest.approx(10.5, abs=0.5) and closing == pytest.approx(8.0, abs=0.1)
    # where the route goes after the bend, not straight ahead of our bonnet
    assert route_leader(ego, _actors((21.5, 20.0, np.pi / 2, 0.0)), path, p)[0] == pytest.approx(36.3, abs=1.0)  # arc length
    assert route_leader(ego, _actors((35.0, 0.0, 0.0, 0.0)), path, p) is None  # where we would go without the turn
    # not on our route: the next lane, the oncoming one, behind us, beyond the look-ahead; or the follower is off
    straight = ego_path(ego, STRAIGHT)
    for row in ((15.0, 4.0, 0.0, 8.0), (15.0, -4.0, np.pi, 8.0), (-6.0, 0.0, 0.0, 8.0), (45.0, 0.0, 0.0, 0.0)):
        assert route_leader(ego, _actors(row), straight, p) is None, row
    assert route_leader(ego, standing, path, YieldParams()) is None
    # a leader at our speed: far, the expert's gentle approach to its 22 m gap; close, its comfortable brake
    assert -1.5 < follow_accel(ego, route_leader(ego, _actors((35.0, 0.0, 0.0, 8.0)), straight, p), 8.0) < -0.5
    assert follow_accel(ego, route_leader(ego, _actors((9.0, 0.0, 0.0, 8.0)), straight, p), 8.0) < -3.0
    # standing 6 m behind a standing car (inside the expert's 10 m jam distance): hold, never reverse
    stopped = _ego(0.0)
    assert follow_accel(stopped, route_leader(stopped, _actors((6.0, 0.0, 0.0, 0.0)), straight, p), 8.0) == 0.0
    assert follow_accel(_ego(0.2), (6.0, 0.2), 8.0) == pytest.approx(-0.2 / 0.1)  # to a stop within the step


def test_a_plan_policy_with_route_follow_brakes_for_a_car_crossing_its_route_inside_the_junction():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    go = np.zeros((4, 2))
    obs = {"ego": _ego(6.0), "actors": _actors((14.0, 0.0, np.pi / 2, 5.0)), "route": np.array([0.0, 12.0, 0.0]),
           "goal": None, "route_path": np.array([[0.0, 0.0], [40.0, 0.0]])}

    def accel(follow: float, o: dict = obs) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(route_follow=follow, go_zone=0.0)  # (the go rule, on by default, brakes for it too)
        return float(policy.select_action(o, plan=lambda o: go)[0])

    assert abs(accel(0.0)) < 0.5  # off: the plan holds its speed into the crossing car
    assert accel(40.0) < -1.0
    assert abs(accel(40.0, {**obs, "route": np.array([80.0, 12.0, 0.0])})) < 0.5  # open road: the gap checks' job
    assert abs(accel(40.0, {**obs, "actors": _actors((14.0, 6.0, np.pi / 2, 5.0))})) < 0.5  # not yet in our lane
    with pytest.raises(ValueError, match="route_follow"):
        PolicyConfig(route_follow=float("nan"))


def test_below_route_steer_speed_near_a_junction_the_wheel_follows_the_route_not_the_plan():
    from sim.plan import PlanTracker
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    straight_plan = np.zeros((4, 2))
    right = np.array([[min(d, 2.0), -max(d - 2.0, 0.0)] for d in np.arange(17) * 2.5])  # turns right 2 m ahead

    def steer(speed_limit: float | None, speed: float, junction: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        if speed_limit is not None:  # None: the default
            policy.set_execution(route_steer_speed=speed_limit)
        obs = {"ego": _ego(speed), "actors": _actors(), "route": np.array([junction, 5.0, 0.0]), "goal": None,
               "route_path": right}
        return float(policy.select_action(obs, plan=lambda o: straight_plan)[1])

    assert abs(steer(0.0, 2.0, 10.0)) < 1e-3  # off: the plan says straight on
    along = steer(4.0, 2.0, 10.0)
    assert along < -0.1  # a crawl near the junction: the route's right turn
    assert np.isclose(along, PlanTracker().steer_along(np.array([0.0, 0.0, 0.0, 2.0]), right), atol=1e-6)
    assert abs(steer(4.0, 2.0, 50.0)) < 1e-3  # open road: the plan
    assert abs(steer(4.0, 6.0, 10.0)) < 1e-3  # faster than the limit: the plan
    assert steer(4.0, 2.0, 0.0) < -0.1  # inside the junction too
    # the default (since 2026-12-07): at every speed a junction is driven at, not only at a crawl
    tracker = VLAPolicy(cfg, default_action_tokenizer(16, "plan")).tracker  # its look-ahead grows with speed
    assert np.isclose(steer(None, 9.0, 10.0), tracker.steer_along(np.array([0.0, 0.0, 0.0, 9.0]), right), atol=1e-6)
    assert abs(steer(None, 9.0, 50.0)) < 1e-3  # open road: still the plan
    assert PlanTracker().steer_along(np.array([0.0, 0.0, 0.0, 0.1]), right) == 0.0  # standing: wheel straight
    with pytest.raises(ValueError, match="route_steer_speed"):
        PolicyConfig(route_steer_speed=float("nan"))



def test_past_the_exit_the_wheel_follows_the_route_until_the_car_is_settled_on_it():
    from sim.plan import path_error
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    drift_left = np.array([[0.0, 1.0], [0.0, 2.5], [0.0, 4.0], [0.0, 5.5]])  # holds speed, veers 5.5 m left in 2 s
    exit_lane = np.array([[d, 0.0] for d in np.arange(17) * 2.5])  # the route: straight ahead along x
    ego_off = _ego(8.0)
    ego_off[EGO["y"]], ego_off[EGO["yaw"]] = 1.0, 0.2  # 1 m left of the centre line, 0.2 rad off its heading

    def steers(hold: float | None, ego_at_exit: np.ndarray, first: float = 0.0, after: int = 1) -> list[float]:
        """The wheel at the first ``after`` steps past the exit, after one step ``first`` m before
        the junction (0: inside it); ``hold`` None: the default."""
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        if hold is not None:
            policy.set_execution(route_exit_hold=hold)
        obs = {"ego": _ego(8.0), "actors": _actors(), "route": np.array([first, 5.0, 0.0]),
               "goal": None, "route_path": exit_lane}
        policy.select_action(obs, plan=lambda o: drift_left)
        past = {**obs, "ego": ego_at_exit, "route": np.array([50.0, 5.0, 0.0])}
        return [float(policy.select_action(past, plan=lambda o: drift_left)[1]) for _ in range(after)]

    tracker = VLAPolicy(cfg, default_action_tokenizer(16, "plan")).tracker
    along = tracker.steer_along(np.array([0.0, 1.0, 0.2, 8.0]), exit_lane)
    assert along < -0.05  # back towards the centre line
    plan_wheel = steers(0.0, ego_off)[0]  # off: the plan at the exit
    assert plan_wheel > along + 0.1  # (it veers left)
    assert np.isclose(steers(3.0, ego_off)[0], along, atol=1e-6)  # held: the route
    assert np.isclose(steers(None, ego_off)[0], along, atol=1e-6)  # the default since 2026-12-07: 3 s
    assert np.isclose(steers(3.0, ego_off, first=30.0)[0], plan_wheel, atol=1e-6)  # not steered inside: not armed
    assert np.isclose(steers(3.0, ego_off, first=50.0)[0], plan_wheel, atol=1e-6)  # open road (the highway): never
    assert np.isclose(steers(3.0, _ego(8.0))[0], steers(0.0, _ego(8.0))[0], atol=1e-6)  # settled: the plan
    # the hold ends after its time even while not settled (3 s = 30 steps past the last step inside)
    wheels = steers(3.0, ego_off, after=32)
    assert np.allclose(wheels[:30], along, atol=1e-6) and not np.isclose(wheels[31], along, atol=1e-3)
    assert np.allclose(path_error(np.array([2.0, 1.0, 0.2]), exit_lane), (1.0, 0.2))
    with pytest.raises(ValueError, match="route_exit_hold"):
        PolicyConfig(route_exit_hold=-1.0)


GO = YieldParams(go_zone=10.0)


def test_the_go_rule_starts_a_car_standing_at_the_line_only_when_the_crossing_and_its_path_are_clear():
    ego, path = _ego(0.0), ego_path(_ego(0.0), STRAIGHT)
    assert go_accel(ego, _actors(), 3.0, path, GO) == GO.a_go  # nobody there: go
    assert go_accel(ego, _actors(), 3.0, path) is None  # off by default (go_zone 0)
    assert go_accel(ego, _actors(), 20.0, path, GO) is None  # farther than go_zone from the entry
    assert go_accel(ego, _actors(), 50.0, path, GO) is None  # open road
    # a car coming along the crossing road would meet us (the yield check's own test): stay
    near = _actors((8.0, -20.0, np.pi / 2, 8.0))
    assert crossing_conflict(ego, near, path, GO)
    assert go_accel(ego, near, 3.0, path, GO) is None
    # inside the junction the car is committed: the crossing does not stop it, its path does
    assert go_accel(ego, near, 0.0, path, GO) == GO.a_go
    # a car standing 8 m ahead on our path (the queue, a yielding car): never start into it
    assert go_accel(ego, _actors((8.0, 0.0, 0.0, 0.0)), 3.0, path, GO) is None
    assert go_accel(ego, _actors((8.0, 0.0, 0.0, 0.0)), 0.0, path, GO) is None
    # already at the crossing speed (8 m/s straight on): the plan's business
    assert go_accel(_ego(8.5), _actors(), 3.0, ego_path(_ego(8.5), STRAIGHT), GO) is None
    with pytest.raises(ValueError):
        YieldParams(go_zone=-1.0)


def test_path_block_sees_a_crossing_car_by_its_nose_and_ignores_cars_beside_our_lane():
    path = ego_path(_ego(0.0), STRAIGHT)
    # a car in the next lane, parallel, 4 m to our left: not on our path
    assert path_block(_ego(0.0), _actors((6.0, 4.0, 0.0, 5.0)), path) is None
    # turning across at 45 degrees with its centre 2.8 m beside our centre line: its front is on it
    turning = _actors((6.0, 2.8, -np.pi / 4, 2.0))
    assert np.hypot(0.0, 2.8) > YieldParams().clear_width  # its centre alone would be missed
    d = path_block(_ego(0.0), turning, path)
    assert d is not None and 5.0 <= d <= 9.0
    assert path_block(_ego(0.0), _actors((30.0, 0.0, 0.0, 0.0)), path) is None  # beyond clear_ahead
    assert path_block(_ego(0.0), _actors(), path) is None


def test_block_brake_stops_short_of_what_is_on_the_path():
    # 6 m/s, something 12 m ahead: stop 3.5 m short of it, 8.5 m of room
    assert np.isclose(block_brake(_ego(6.0), 12.0), -36.0 / (2 * 8.5))
    assert block_brake(_ego(6.0), 2.0) == -YieldParams().max_brake  # no room: the hardest brake
    assert block_brake(_ego(0.2), 2.0) == pytest.approx(-2.0)  # never past standstill (0.2 m/s in one step)
    assert block_brake(_ego(0.0), 12.0) == 0.0


def test_crossing_speed_is_the_expert_s_curve_speed():
    assert crossing_speed(STRAIGHT) == YieldParams().v_go
    t = np.linspace(0.0, np.pi / 2, 40)
    arc = np.stack([9.0 * np.sin(t), 9.0 - 9.0 * np.cos(t)], axis=-1)  # a right turn of radius 9 m
    assert crossing_speed(arc) == pytest.approx(np.sqrt(3.0 * 9.0), rel=0.05)


def _left_turn(radius: float = 9.0, before: float = 0.0) -> np.ndarray:
    """(17, 2) route centre line every 2.5 m: ``before`` m straight east, then a left quarter turn."""
    s = np.arange(17) * 2.5
    angle = np.clip(s - before, 0.0, None) / radius  # the heading turned so far, until a quarter turn
    bend = np.minimum(angle, np.pi / 2)
    after = np.maximum(angle - np.pi / 2, 0.0) * radius  # metres north after the bend
    x = np.where(s < before, s, before + radius * np.sin(bend))
    y = np.where(s < before, 0.0, radius - radius * np.cos(bend) + after)
    return np.stack([x, y], axis=-1)


def test_the_curve_cap_slows_a_car_too_fast_for_the_junction_s_bend_as_the_expert_does():
    v_curve = curve_speed(_left_turn(9.0, before=15.0))
    assert v_curve == pytest.approx(np.sqrt(3.0 * 9.0), rel=0.1)
    cap = YieldParams(curve_brake=2.0)
    assert curve_accel(_ego(8.5), 15.0, _left_turn(9.0, before=15.0)) is None  # off by default
    # 15 m before the entry at 8.5 m/s: allowed sqrt(v_curve^2 + 2 * 2 * 15) > 8.5: nothing yet
    assert curve_accel(_ego(8.5), 15.0, _left_turn(9.0, before=15.0), cap) is None
    # 6 m before it: brake to reach the curve speed at the entry
    v_curve = curve_speed(_left_turn(9.0, before=6.0))
    assert curve_accel(_ego(8.5), 6.0, _left_turn(9.0, before=6.0), cap) == pytest.approx((v_curve**2 - 8.5**2) / 12.0)
    # inside: to the curve speed within a second, never harder than max_brake
    assert curve_accel(_ego(8.5), 0.0, _left_turn(9.0), cap) == pytest.approx(curve_speed(_left_turn(9.0)) - 8.5)
    assert curve_accel(_ego(20.0), 0.0, _left_turn(9.0), cap) == -cap.max_brake
    assert curve_accel(_ego(4.0), 0.0, _left_turn(9.0), cap) is None  # slow enough
    straight_on = np.stack([np.arange(17) * 2.5, np.zeros(17)], 1)
    assert curve_speed(straight_on) == float("inf") and curve_accel(_ego(12.0), 0.0, straight_on, cap) is None
    assert curve_accel(_ego(20.0), 40.0, _left_turn(9.0, before=15.0), cap) is None  # beyond the zone
    with pytest.raises(ValueError, match="YieldParams"):
        YieldParams(curve_brake=-1.0)


def test_a_plan_policy_with_curve_brake_caps_its_speed_before_the_bend():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    keep = np.stack([np.arange(1, 5) * 0.85, np.zeros(4)], axis=-1)  # the plan keeps 8.5 m/s

    def accel(**settings: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(**settings)
        obs = {"ego": _ego(8.5), "actors": _actors(), "route": np.array([3.0, 20.0, 0.0]), "goal": None,
               "route_path": _left_turn(9.0, before=3.0)}
        return float(policy.select_action(obs, plan=lambda o: keep)[0])

    assert accel(curve_brake=0.0) > -1.0  # off: the plan's speed
    assert accel() < -4.0  # on by default (2 m/s^2): 3 m before a bend good for 5 m/s
    assert accel(curve_brake=2.0) == accel()
    with pytest.raises(ValueError, match="curve_brake"):
        PolicyConfig(curve_brake=float("nan"))
    with pytest.raises(ValueError, match="go_jerk"):
        PolicyConfig(go_jerk=-1.0)


def test_a_plan_policy_with_a_go_zone_starts_at_the_line_and_brakes_for_its_path():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    stand = np.zeros((4, 2))  # the cloned plan keeps its speed: standing at the line, it stays there
    straight = np.stack([np.arange(17) * 2.5, np.zeros(17)], axis=-1)

    def accel(go_zone: float, actors: np.ndarray, speed: float = 0.0, junction: float = 3.0, jerk: float = 0.0) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(go_zone=go_zone, go_jerk=jerk)
        obs = {"ego": _ego(speed), "actors": actors, "route": np.array([junction, 5.0, 0.0]), "goal": None,
               "route_path": straight}
        return float(policy.select_action(obs, plan=lambda o: stand)[0])

    assert abs(accel(0.0, _actors())) < 0.5  # off: the plan stands
    assert accel(10.0, _actors()) == pytest.approx(2.0)  # clear: go at a_go
    # a throttle like the tracker's (the default): ramped from the car's acceleration now at its jerk limit
    assert accel(10.0, _actors(), jerk=1.5) == pytest.approx(1.5 * 0.1)
    assert accel(10.0, _actors(), jerk=5.0) == pytest.approx(5.0 * 0.1)
    assert abs(accel(10.0, _actors((8.0, -20.0, np.pi / 2, 8.0)))) < 0.5  # crossing traffic coming: stay
    assert abs(accel(10.0, _actors(), junction=50.0)) < 0.5  # open road: the plan
    # moving at 5 m/s inside the junction with a car standing 9 m ahead on the path: brake for it
    assert accel(10.0, _actors((9.0, 0.0, 0.0, 0.0)), speed=5.0, junction=0.0) < -2.0
    with pytest.raises(ValueError, match="go_zone"):
        PolicyConfig(go_zone=float("inf"))


def test_a_launch_commits_against_marginal_conflicts_with_go_commit_and_ends_at_a_brake():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    stand = np.zeros((4, 2))
    straight = np.stack([np.arange(17) * 2.5, np.zeros(17)], axis=-1)
    # a car on the crossing road that would pass our path 0.5-1 s from us: a conflict at the
    # test's 1 s, none at 0.5 s; one nearer is a conflict at both
    marginal, close = _actors((8.0, -33.0, np.pi / 2, 8.0)), _actors((8.0, -20.0, np.pi / 2, 8.0))
    moving = _ego(0.5)
    moving[EGO["accel_long"]] = 2.0
    assert crossing_conflict(moving, marginal, straight, YieldParams(go_zone=10.0))
    assert not crossing_conflict(moving, marginal, straight, YieldParams(go_zone=10.0, time_gap=0.5))
    assert crossing_conflict(moving, close, straight, YieldParams(go_zone=10.0, time_gap=0.5))

    def step(policy, ego, actors) -> float:
        obs = {"ego": ego, "actors": actors, "route": np.array([3.0, 5.0, 0.0]), "goal": None, "route_path": straight}
        return float(policy.select_action(obs, plan=lambda o: stand)[0])

    def launched(commit: float) -> VLAPolicy:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(go_zone=10.0, go_jerk=0.0, go_commit=commit)
        assert step(policy, _ego(0.0), _actors()) == pytest.approx(2.0)  # clear at the line: go
        return policy

    assert step(launched(0.0), moving, marginal) < -1.0  # off: the 1 s test stops the car it just started
    policy = launched(0.5)
    assert step(policy, moving, marginal) == pytest.approx(2.0)  # launched: a marginal conflict does not
    assert step(policy, moving, close) < -1.0  # one within 0.5 s does ...
    assert step(policy, moving, marginal) < -1.0  # ... and ends the launch: the next start needs the 1 s test
    # commit_inside: a car standing inside the junction (no launch) is tested with go_commit's gap
    inside = _ego(0.0)

    def start_inside(commit: float, commit_inside: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(go_zone=10.0, go_jerk=0.0, junction_hold=4.0, go_commit=commit, commit_inside=commit_inside)
        obs = {"ego": inside, "actors": marginal, "route": np.array([0.0, 5.0, 0.0]), "goal": None, "route_path": straight}
        return float(policy.select_action(obs, plan=lambda o: stand)[0])

    assert start_inside(0.5, 0.0) < 0.5  # the hold's 1 s test keeps it standing
    assert start_inside(0.5, 1.0) == pytest.approx(2.0)  # the committed gap lets it clear the junction
    assert start_inside(0.0, 1.0) < 0.5  # without go_commit the switch does nothing
    with pytest.raises(ValueError, match="commit_inside"):
        PolicyConfig(commit_inside=0.5)
    # yield_gap: the conflict test's gap for every step (the marginal car conflicts at 1 s, not at 0.5 s)
    def start_at_line(gap: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(go_zone=10.0, go_jerk=0.0, yield_gap=gap)
        return step(policy, moving, marginal)

    assert start_at_line(1.0) < -1.0 and start_at_line(0.5) == pytest.approx(2.0)
    assert PolicyConfig().yield_gap == 1.0
    with pytest.raises(ValueError, match="yield_gap"):
        PolicyConfig(yield_gap=0.0)
    assert PolicyConfig().go_commit == 0.0  # off by default
    with pytest.raises(ValueError, match="go_commit"):
        PolicyConfig(go_commit=-0.5)


def test_our_path_is_timed_with_the_go_rule_s_throttle_ramp():
    times = np.arange(0.0, 4.01, 0.25)
    instant = go_distances(0.0, 0.0, times)
    assert np.allclose(instant, 0.5 * 2.0 * times**2)  # 2 m/s^2 from standstill, under 8 m/s within 4 s
    ramped = go_distances(0.0, 0.0, times, YieldParams(go_jerk=1.5))
    # the acceleration reaches 2 m/s^2 after 4/3 s: a(t) = 1.5 t until then, so d(1 s) = 1.5 / 6
    assert ramped[4] == pytest.approx(1.5 / 6.0, abs=0.02)
    assert np.all(ramped <= instant + 1e-9) and ramped[-1] < instant[-1] - 1.0
    # a car already braking first releases its brake
    assert go_distances(3.0, -3.0, times, YieldParams(go_jerk=1.5))[-1] < go_distances(3.0, 0.0, times, YieldParams(go_jerk=1.5))[-1]
    # late in the horizon both run at v_go: the same speed, the ramp a constant distance behind
    long = np.arange(0.0, 12.01, 0.25)
    gap = go_distances(0.0, 0.0, long) - go_distances(0.0, 0.0, long, YieldParams(go_jerk=1.5))
    assert gap[-1] == pytest.approx(gap[-5], abs=0.05)


def test_a_braking_car_the_go_rule_launches_lets_go_of_the_brake_at_go_release():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 2.0])
    same = YieldParams(go_jerk=1.5)
    # off (0): the brake is released at go_jerk, as before the setting
    assert np.allclose(launch_accel(-3.0, t, same), np.minimum(2.0, -3.0 + 1.5 * t))
    fast = YieldParams(go_jerk=1.5, go_release=4.0)
    # 4 m/s^3 up to 0 (after 0.75 s), then 1.5 m/s^3: 0.375 m/s^2 at 1 s, 1.875 at 2 s
    assert np.allclose(launch_accel(-3.0, t, fast), [-3.0, -2.0, -1.0, 0.0, 0.375, 1.875])
    assert np.allclose(launch_accel(0.5, t, fast), launch_accel(0.5, t, same))  # not braking: the throttle ramp
    assert np.allclose(launch_accel(-3.0, t, YieldParams(go_release=4.0)), 2.0)  # go_jerk 0: at once
    # the test times our path with the same profile: released sooner, it covers more
    times = np.arange(0.0, 4.01, 0.25)
    assert go_distances(3.0, -3.0, times, fast)[-1] > go_distances(3.0, -3.0, times, same)[-1] + 1.0

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    straight = np.stack([np.arange(17) * 2.5, np.zeros(17)], axis=-1)

    def first_step(release: float) -> float:  # the cloned plan brakes for the line; the crossing is clear
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(go_zone=10.0, go_jerk=1.5, go_release=release)
        ego = _ego(3.0)
        ego[EGO["accel_long"]] = -3.0
        obs = {"ego": ego, "actors": _actors(), "route": np.array([3.0, 5.0, 0.0]), "goal": None, "route_path": straight}
        return float(policy.select_action(obs, plan=lambda o: np.zeros((4, 2)))[0])

    assert first_step(0.0) == pytest.approx(-3.0 + 1.5 * 0.1)
    assert first_step(4.0) == pytest.approx(-3.0 + 4.0 * 0.1)
    assert PolicyConfig().go_release == 0.0
    with pytest.raises(ValueError, match="go_release"):
        PolicyConfig(go_release=-1.0)


def test_a_plan_policy_with_junction_hold_waits_inside_the_junction_for_a_crossing_car():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    ahead = np.array([[1.2, 0.0], [2.6, 0.0], [4.2, 0.0], [6.0, 0.0]])  # the plan goes on, speeding up
    # just inside the junction at 2 m/s, the crossing car of test_the_junction_hold_...
    obs = {"ego": _ego(2.0), "route": np.array([0.0, 10.0, 0.0]), "goal": None,
           "actors": _actors((8.0, -16.0, np.pi / 2, 8.0)), "route_path": np.stack([np.arange(17) * 2.5, np.zeros(17)], 1)}

    def accel(**settings: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(**settings)
        return float(policy.select_action(obs, plan=lambda o: ahead)[0])

    assert accel(go_zone=10.0, junction_hold=0.0) > 0.0  # committed: the go rule drives on
    assert accel() == pytest.approx(-6.0)  # the hold (on by default) waits
    assert accel(go_zone=10.0, junction_hold=1.0) > 0.0  # faster than the hold's speed
    with pytest.raises(ValueError, match="junction_hold"):
        PolicyConfig(junction_hold=-1.0)


def test_actors_are_predicted_along_their_lane_paths_when_given():
    ego = _ego(6.0)
    # the car of the first test, 25 m south of our road driving north: straight on it crosses our
    # path as we get there; its lane turns right (east) 5 m before our road, away from our path
    coming = _actors((25.0, -25.0, np.pi / 2, 8.0))
    turn = np.array([[25.0, -25.0 + d] if d <= 20.0 else [25.0 + d - 20.0, -5.0] for d in np.arange(16) * 2.5])
    paths = np.zeros((MAX_ACTORS, len(turn), 2))
    paths[0] = turn
    assert crossing_conflict(ego, coming, STRAIGHT)
    assert not crossing_conflict(ego, coming, STRAIGHT, paths=paths)
    assert crossing_conflict(ego, coming, STRAIGHT, paths=np.zeros_like(paths))  # no path known: straight on
    nan = paths.copy()
    nan[0, 3] = np.nan
    assert crossing_conflict(ego, coming, STRAIGHT, paths=nan)  # a broken path: straight on, too
    with pytest.raises(ValueError, match="actor_paths"):
        crossing_conflict(ego, coming, STRAIGHT, paths=paths[:4])
    # a car from the north whose lane turns onto our road toward us... and across our path 25 m ahead
    onto = np.array([[25.0, 25.0 - d] if d <= 25.0 else [25.0 - (d - 25.0), 0.0] for d in np.arange(16) * 2.5])
    paths[0] = onto
    from_north = _actors((25.0, 25.0, -np.pi / 2, 8.0))
    assert crossing_conflict(ego, from_north, STRAIGHT, paths=paths)
    # the hold tests standing along the same predictions
    hold, crossing = YieldParams(hold_speed=4.0), _actors((8.0, -16.0, np.pi / 2, 8.0))
    away = np.zeros((MAX_ACTORS, 16, 2))
    away[0] = [[8.0, -16.0 + d] if d <= 10.0 else [8.0 + d - 10.0, -6.0] for d in np.arange(16) * 2.5]
    assert junction_hold(_ego(2.0), crossing, 0.0, STRAIGHT, hold) is not None
    assert junction_hold(_ego(2.0), crossing, 0.0, STRAIGHT, hold, paths=away) is None


def test_a_plan_policy_reads_actor_paths_only_with_yield_paths():
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    go = np.zeros((4, 2))
    turn = np.array([[25.0, -25.0 + d] if d <= 20.0 else [25.0 + d - 20.0, -5.0] for d in np.arange(16) * 2.5])
    paths = np.zeros((MAX_ACTORS, 16, 2))
    paths[0] = turn
    obs = {"ego": _ego(6.0), "route": np.array([20.0, 12.0, 0.0]), "goal": None,
           "actors": _actors((25.0, -25.0, np.pi / 2, 8.0)), "actor_paths": paths}

    def accel(on: float) -> float:
        policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
        policy.set_execution(yield_zone=30.0, yield_paths=on)
        return float(policy.select_action(obs, plan=lambda o: go)[0])

    assert accel(0.0) < -0.5  # straight on, the car crosses our path: held at the line
    assert abs(accel(1.0)) < 0.5  # its lane turns away: the plan's own command
    with pytest.raises(ValueError, match="yield_paths"):
        PolicyConfig(yield_paths=0.5)
