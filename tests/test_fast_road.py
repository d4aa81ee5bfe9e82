"""sim.fast_road: highway-env's traffic, faster, and exactly the same."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from highway_env.road.road import Road

from sim import fast_road
from sim.highway import EmbeddedDrivingEnv


def _original(road, vehicle, lane_index=None):
    return Road.neighbour_vehicles(road, vehicle, lane_index)


def _lanes_to_ask(road, vehicle):
    """The lanes IDM / MOBIL and the expert ask about: the vehicle's own and its side lanes."""
    lanes = [None]
    if vehicle.lane_index:
        lanes += road.network.side_lanes(vehicle.lane_index)
    return lanes


def test_only_the_highways_plain_road_is_changed():
    env = EmbeddedDrivingEnv("intersection", "dense", goals="any")
    env.reset(seed=11)
    assert not {"neighbour_vehicles", "act", "step"} & set(vars(env._core.road))  # highway-env's own


def test_every_vehicle_gets_the_same_leader_and_follower_on_every_lane_it_may_ask_about():
    env = EmbeddedDrivingEnv("highway", "dense", goals="any")
    env.reset(seed=11)
    road = env._core.road
    assert road.neighbour_vehicles.__func__ is fast_road.neighbour_vehicles  # installed at reset
    assert road.step.__func__ is fast_road._step and road.act.__func__ is fast_road._act
    asked = 0
    for _ in range(25):
        env.step(env.expert_action())
        for vehicle in road.vehicles:
            for lane in _lanes_to_ask(road, vehicle):
                fast = road.neighbour_vehicles(vehicle, lane)
                slow = _original(road, vehicle, lane)
                assert fast[0] is slow[0] and fast[1] is slow[1]
                asked += 1
    assert asked > 100


def test_ties_are_broken_as_highway_env_breaks_them():
    """Vehicles at exactly the same distance: the last one in road order leads, the first follows."""
    env = EmbeddedDrivingEnv("highway", "medium", goals="any")
    env.reset(seed=3)
    road = env._core.road
    ego = env._core.vehicle
    lane = road.network.get_lane(ego.lane_index)
    s, _ = lane.local_coordinates(ego.position)
    others = [v for v in road.vehicles if v is not ego][:4]
    for v, ds in zip(others, (12.0, 12.0, -8.0, -8.0)):
        v.position = lane.position(s + ds, 0.0)
    fast, slow = road.neighbour_vehicles(ego), _original(road, ego)
    assert fast[0] is slow[0] is others[1]
    assert fast[1] is slow[1] is others[2]


def test_the_projection_is_bit_identical_and_the_distance_within_the_precheck_slack():
    """The lane projection is highway-env's to the last bit. The pre-check's distance may differ
    from highway-env's np.linalg.norm in the last bit (a fused multiply-add on some CPUs), never
    by as much as PRECHECK_SLACK, so no pair highway-env would check is skipped."""
    env = EmbeddedDrivingEnv("highway", "medium", goals="any")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for lane in env._core.road.network.lanes_list():
        points = rng.normal(0.0, 300.0, (500, 2))
        dx, dy = points[:, 0] - lane.start[0], points[:, 1] - lane.start[1]
        ours = np.stack([dx * lane.direction[0] + dy * lane.direction[1],
                         dx * lane.direction_lateral[0] + dy * lane.direction_lateral[1]], axis=1)
        theirs = np.array([lane.local_coordinates(p) for p in points])
        assert np.array_equal(ours, theirs)
        norm = np.array([np.linalg.norm(p - lane.start) for p in points])
        assert np.max(np.abs(np.sqrt(dx * dx + dy * dy) - norm)) < fast_road.PRECHECK_SLACK / 1000


def _drive(density: str, seed: int, steps: int = 60) -> np.ndarray:
    env = EmbeddedDrivingEnv("highway", density, goals="any")
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.expert_action())
        crashed = [float(v.crashed) for v in env._core.road.vehicles]
        rows.append(np.concatenate([obs["ego"], obs["actors"].ravel(), [reward, len(crashed), sum(crashed)]]))
        if terminated or truncated:
            break
    return np.array(rows)


@pytest.mark.parametrize("density", ["medium", "dense"])
def test_an_expert_episode_is_the_same_with_highway_envs_road(density, monkeypatch):
    fast = _drive(density, seed=5)
    monkeypatch.setenv(fast_road.SWITCH_ENV, "off")
    slow = _drive(density, seed=5)
    assert fast.shape == slow.shape and np.array_equal(fast, slow)


def test_crashes_between_traffic_cars_are_found_as_highway_env_finds_them(monkeypatch):
    """Two traffic cars put on top of each other crash on the next step with either road."""
    def crashed(switch: str) -> list[bool]:
        monkeypatch.setenv(fast_road.SWITCH_ENV, switch)
        env = EmbeddedDrivingEnv("highway", "dense", goals="any")
        env.reset(seed=4)
        road, ego = env._core.road, env._core.vehicle
        a, b = [v for v in road.vehicles if v is not ego][2:4]
        b.position = a.position + np.array([2.0, 0.5])
        env.step(np.zeros(2, np.float32))
        return [v.crashed for v in road.vehicles]

    fast, slow = crashed("on"), crashed("off")
    assert fast == slow and sum(fast) >= 2


def test_a_copied_road_uses_its_own_vehicles():
    env = EmbeddedDrivingEnv("highway", "dense", goals="any")
    env.reset(seed=2)
    road = env._core.road
    twin = copy.deepcopy(road)
    assert twin.neighbour_vehicles.__self__ is twin and twin.step.__self__ is twin and twin.act.__self__ is twin
    ego = twin.vehicles[0]
    leader, follower = twin.neighbour_vehicles(ego)
    assert all(v is None or any(v is w for w in twin.vehicles) for v in (leader, follower))
    assert (leader, follower) == tuple(_original(twin, ego))


def test_a_bad_switch_is_refused(monkeypatch):
    monkeypatch.setenv(fast_road.SWITCH_ENV, "fast")
    with pytest.raises(ValueError, match="VLA_FAST_ROAD must be one of on, off, got 'fast'"):
        EmbeddedDrivingEnv("highway", "light", goals="any").reset(seed=0)
