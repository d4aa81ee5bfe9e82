"""sim.carla_route on maps the real ``carla`` wheel builds from OpenDRIVE files on the client
(no server): a straight 3-lane road and a junction with a left, a straight and a right exit
(``tests/data/*.xodr``, written for these tests)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from sim.carla_route import actor_path, is_off_road, plan_route  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def straight():
    return carla.Map("straight", (DATA / "straight.xodr").read_text())


@pytest.fixture(scope="module")
def junction():
    return carla.Map("junction", (DATA / "junction.xodr").read_text())


def test_keep_lane_route_progress_and_lateral_offset(straight):
    route = plan_route(straight, (10.0, -1.75), "keep_lane", 100.0)
    assert route.length == pytest.approx(100.0, abs=1e-6)
    assert np.allclose(route.points[:, 1], -1.75) and np.allclose(route.headings, 0.0)
    along, lateral = route.locate((50.0, -1.0))
    assert along == pytest.approx(40.0) and lateral == pytest.approx(0.75)  # + = left of the lane centre
    assert route.locate((50.0, -2.5))[1] == pytest.approx(-0.75)
    # the road ends at x = 200: a longer route stops there
    assert plan_route(straight, (150.0, -1.75), "keep_lane", 100.0).length == pytest.approx(50.0, abs=1.0)


def test_lane_changes_follow_the_neighbouring_lane(straight):
    left = plan_route(straight, (10.0, -5.25), "lane_left", 50.0)
    assert np.allclose(left.points[:, 1], -1.75) and left.lanes[0][2] == -1
    right = plan_route(straight, (10.0, -1.75), "lane_right", 50.0)
    assert np.allclose(right.points[:, 1], -5.25)
    with pytest.raises(ValueError, match="lane_right: no driving lane"):
        plan_route(straight, (10.0, -5.25), "lane_right", 50.0)
    with pytest.raises(ValueError, match="lane_left: no driving lane"):  # lane 1 drives the other way
        plan_route(straight, (10.0, -1.75), "lane_left", 50.0)


# 30 m to the junction, a 15.7 m arc (radius 10 m, measured on the reference line), the rest on the exit
@pytest.mark.parametrize("label, heading, end", [("turn_left", math.pi / 2, (1.75, 10.0 + 80.0 - 30.0 - 5 * math.pi)),
                                                  ("turn_right", -math.pi / 2, (-1.75, -(10.0 + 80.0 - 30.0 - 5 * math.pi))),
                                                  ("turn_straight", 0.0, (40.0, -1.75))])
def test_turns_take_the_branch_the_goal_names(junction, label, heading, end):
    route = plan_route(junction, (-40.0, -1.75), label, 80.0)
    assert route.headings[-1] == pytest.approx(heading, abs=1e-3)
    assert route.points[-1] == pytest.approx(end, abs=1.5)
    assert route.locate((-30.0, -1.75))[0] == pytest.approx(10.0, abs=1e-6)


def test_goals_the_map_does_not_allow_are_named(junction, straight):
    with pytest.raises(ValueError, match="turn_left: no junction within 50 m"):
        plan_route(straight, (10.0, -1.75), "turn_left", 50.0)
    with pytest.raises(ValueError, match="unknown goal 'fly'"):
        plan_route(junction, (-40.0, -1.75), "fly", 50.0)
    with pytest.raises(ValueError, match="no driving lane near"):
        plan_route(straight, (10.0, 300.0), "keep_lane", 50.0)


def test_off_road(straight, junction):
    assert not is_off_road(straight, (50.0, -1.75)) and not is_off_road(straight, (50.0, 1.75))
    assert is_off_road(straight, (50.0, 30.0)) and is_off_road(straight, (250.0, -1.75))
    assert not is_off_road(junction, (0.0, -1.75)) and is_off_road(junction, (-30.0, 20.0))


# ----------------------------------------------------------------------------- the CARLA expert
def _drive(route, pose, others=(), steps=150, speed_limit=15.0):
    from sim.carla_expert import expert_action
    from sim.plan import VehicleGeometry

    geometry, poses = VehicleGeometry(), [np.asarray(pose, dtype=np.float64)]
    for _ in range(steps):
        poses.append(geometry.step(poses[-1], expert_action(route, poses[-1], list(others), speed_limit)))
    return np.array(poses)


@pytest.mark.parametrize("label", ["turn_left", "turn_right", "turn_straight"])
def test_the_expert_drives_each_junction_route_on_the_bicycle(junction, label):
    route = plan_route(junction, (-40.0, -1.75), label, 80.0)
    poses = _drive(route, (-40.0, -1.75, 0.0, 8.0), steps=90)
    lateral = [abs(route.locate(p[:2])[1]) for p in poses]
    assert max(lateral) < 0.8  # within 0.8 m of the lane centre all the way through the turn
    assert route.locate(poses[-1][:2])[0] > 55.0  # and it got through the junction
    assert not any(is_off_road(junction, p[:2]) for p in poses if route.locate(p[:2])[0] <= route.length)


def test_the_expert_follows_a_slower_leader_and_keeps_its_distance(straight):
    from sim.carla_expert import Vehicle, expert_action, expert_plan, route_leader

    route = plan_route(straight, (10.0, -1.75), "keep_lane", 180.0)
    leader = Vehicle(40.0, -1.75, 0.0, 5.0)
    assert route_leader(route, 0.0, [leader, Vehicle(40.0, -5.25, 0.0, 1.0)]) == (pytest.approx(30.0), 5.0)
    assert expert_action(route, np.array([10.0, -1.75, 0.0, 15.0]), [leader], 20.0)[0] < -1.0  # closing fast: brake
    assert expert_action(route, np.array([10.0, -1.75, 0.0, 5.0]), [], 20.0)[0] > 1.0  # free road: speed up
    actions, poses = expert_plan(route, np.array([10.0, -1.75, 0.0, 15.0]), [leader], 20.0, horizon=60)
    gaps = [40.0 + 5.0 * 0.1 * (h + 1) - poses[h, 0] for h in range(60)]
    assert min(gaps) > 7.0 and abs(poses[-1, 3] - 5.0) < 2.0  # no collision, settles near the leader's speed
    assert actions.shape == (60, 2) and poses.shape == (60, 4)


@pytest.mark.parametrize("signal, heading", [(1, math.pi / 2), (-1, -math.pi / 2), (0, 0.0)])
def test_an_actor_s_path_takes_the_branch_its_indicator_shows(junction, signal, heading):
    # 20 m before the junction on the approach lane: 16 points 2.5 m apart reach 17.5 m past its entry
    path = actor_path(junction, (-20.0, -1.7), signal, 16, 2.5)
    assert path[0] == pytest.approx((-20.0, -1.75), abs=0.05)  # from the lane centre nearest the actor
    steps = np.hypot(*np.diff(path, axis=0).T)  # 2.5 m of the road's reference line: more on the outside of a bend
    assert np.all((steps > 2.0) & (steps < 3.0))  # (the inside of a bend: less)
    end = np.arctan2(*(path[-1] - path[-2])[::-1])
    assert end == pytest.approx(heading, abs=0.15)
    assert not actor_path(junction, (-30.0, 20.0), signal, 16, 2.5).any()  # off the road: no path
    # near the end of the exit road the lane graph stops: the path goes on straight
    tail = actor_path(junction, (35.0, -1.75), 0, 16, 2.5)
    assert np.allclose(tail[:, 1], -1.75, atol=0.05) and tail[-1, 0] == pytest.approx(35.0 + 15 * 2.5, abs=0.5)
