"""Where the route goes (sim.route): the features, what the backends report, storage, the policy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.highway import EmbeddedDrivingEnv
from sim.interface import ACTOR, EGO, EGO_FIELDS, MAX_ACTORS
from sim.route import (ACTOR_PATH_POINTS, JUNCTION_HORIZON, ROUTE_AHEAD_TIME, ROUTE_FIELDS, ROUTE_MIN_AHEAD, ROUTE_PATH_POINTS,
                       ROUTE_PATH_SPACING, points_along, route_features, route_path)
from sim.storage import DatasetError, read_episode, read_episodes, write_episode

ROUTE_AHEAD = 10.0 * ROUTE_AHEAD_TIME  # the test ego drives at 10 m/s


def _ego(x=0.0, y=0.0, yaw=0.0):
    e = np.zeros(len(EGO_FIELDS))
    e[EGO["x"]], e[EGO["y"]], e[EGO["yaw"]], e[EGO["speed"]] = x, y, yaw, 10.0
    return e


def test_route_features_on_a_left_turn():
    # straight along +x for 40 m, a quarter circle of 10 m radius (the junction), then up +y: a left turn
    straight = np.stack([np.arange(0.0, 40.0), np.zeros(40)], axis=-1)
    corner = np.stack([40.0 + 10 * np.sin(np.linspace(0, np.pi / 2, 16)), 10 - 10 * np.cos(np.linspace(0, np.pi / 2, 16))], axis=-1)
    exit_ = np.stack([np.full(40, 50.0), 10.0 + np.arange(1.0, 41.0)], axis=-1)
    points = np.concatenate([straight, corner, exit_])
    junction = np.r_[np.zeros(40, bool), np.ones(16, bool), np.zeros(40, bool)]
    far = route_features(points, junction, 0.0, _ego())
    assert np.allclose(far, [40.0, ROUTE_AHEAD, 0.0], atol=1e-6)  # the junction begins 40 m along
    near = route_features(points, junction, 30.0, _ego(x=30.0))
    assert np.isclose(near[0], 10.0) and near[2] > 2.0  # 10 m to the junction, the route bends left ahead
    inside = route_features(points, junction, 45.0, _ego(x=44.0, y=2.0, yaw=0.6))
    assert inside[0] == 0.0
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    y70 = np.interp(70.0, cum, points[:, 1])  # on the exit, 70 m along the route
    after = route_features(points, junction, 70.0, _ego(x=50.0, y=y70, yaw=np.pi / 2))
    assert after[0] == JUNCTION_HORIZON and np.allclose(after[1:], [ROUTE_AHEAD, 0.0], atol=1e-6)
    right = route_features(points * [1, -1], junction, 30.0, _ego(x=30.0))
    assert right[2] < -2.0
    assert route_features(points, None, 30.0, _ego(x=30.0))[0] == JUNCTION_HORIZON
    with pytest.raises(ValueError, match="polyline"):
        route_features(np.zeros((1, 2)), None, 0.0, _ego())


@pytest.mark.parametrize("turn", ["turn_left", "turn_right", "turn_straight"])
def test_the_embedded_junction_reports_its_route_as_the_expert_drives_it(turn):
    env = EmbeddedDrivingEnv("intersection", "light")
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        if env.goal.label == turn:
            break
    rows, paths, positions = [obs["route"]], [obs["route_path"]], [obs["ego"][[EGO["x"], EGO["y"]]]]
    for _ in range(120):
        obs, _, terminated, truncated, _ = env.step(env.expert_action())
        rows.append(obs["route"])
        paths.append(obs["route_path"])
        positions.append(obs["ego"][[EGO["x"], EGO["y"]]])
        if terminated or truncated:
            break
    rows, positions = np.array(rows), np.array(positions)
    # route_path: the route's centre line from the ego on, every 2.5 m; the expert drives along it
    paths = np.array(paths)
    assert paths.shape[1:] == (ROUTE_PATH_POINTS, 2) and np.all(np.isfinite(paths))
    assert np.allclose(np.hypot(*np.diff(paths[0], axis=0).T), ROUTE_PATH_SPACING, atol=0.05)
    assert np.all(np.hypot(*(paths[:, 0] - positions).T) < 1.0)
    travelled = positions[np.hypot(*(positions - positions[0]).T) < 35.0]
    assert np.min(np.hypot(*(travelled[:, None] - paths[0][None]).transpose(2, 0, 1)), axis=1).max() < 1.5
    entry = int(np.argmax(rows[:, 0] == 0.0))  # where the path goes from the junction's entry, seen from the ego
    ego = obs["ego"].copy()
    ego[[EGO["x"], EGO["y"]]] = positions[entry]
    ego[EGO["yaw"]] = np.arctan2(*(paths[entry][1] - paths[entry][0])[::-1])
    side = -np.sin(ego[EGO["yaw"]]) * (paths[entry][-1, 0] - positions[entry][0]) + np.cos(ego[EGO["yaw"]]) * (
        paths[entry][-1, 1] - positions[entry][1])
    assert side > 10.0 if turn == "turn_left" else (side < -10.0 if turn == "turn_right" else abs(side) < 2.0)
    assert rows.shape[1] == len(ROUTE_FIELDS) and np.all(np.isfinite(rows))
    approach = rows[: int(np.argmax(rows[:, 0] == 0.0))]
    assert len(approach) > 10 and approach[0, 0] > 20.0 and np.all(np.diff(approach[:, 0]) <= 1e-6)
    assert (rows[:, 0] == 0.0).any()  # it went through the junction
    bend = rows[np.argmax(rows[:, 0] == 0.0), 2]  # the route's point ahead as the junction begins
    if turn == "turn_left":
        assert bend > 3.0
    elif turn == "turn_right":
        assert bend < -3.0
    else:
        assert abs(bend) < 1.0


def _to_polyline(point: np.ndarray, line: np.ndarray) -> float:
    """Metres from ``point`` to the polyline ``line`` (N, 2)."""
    a, b = line[:-1], line[1:]
    t = np.clip(np.einsum("ij,ij->i", point - a, b - a) / np.maximum(np.einsum("ij,ij->i", b - a, b - a), 1e-12), 0, 1)
    return float(np.min(np.hypot(*(point - (a + t[:, None] * (b - a))).T)))


def test_the_embedded_junction_reports_where_each_car_will_drive():
    env = EmbeddedDrivingEnv("intersection", "dense")
    obs, _ = env.reset(seed=5)
    seen = [(obs["actors"].copy(), obs["actor_paths"].copy())]
    for _ in range(60):
        obs, _, terminated, truncated, _ = env.step(env.expert_action())
        seen.append((obs["actors"].copy(), obs["actor_paths"].copy()))
        if terminated or truncated:
            break
    assert obs["actor_paths"].shape == (MAX_ACTORS, ACTOR_PATH_POINTS, 2)
    on_path, off_line, turned = [], [], 0
    for (before, paths), (after, _) in zip(seen, seen[20:]):  # where each moving car is 2 s later
        absent = before[:, ACTOR["present"]] < 0.5
        assert not paths[absent].any()  # padding rows have no path
        for i in np.flatnonzero(~absent & (before[:, ACTOR["speed"]] > 2.0)):
            j = np.flatnonzero(after[:, ACTOR["id"]] == before[i, ACTOR["id"]])
            if not len(j):
                continue
            later = after[j[0], [ACTOR["x"], ACTOR["y"]]]
            on_path.append(_to_polyline(later, paths[i]))
            yaw = before[i, ACTOR["yaw"]]
            line = before[i, [ACTOR["x"], ACTOR["y"]]] + np.outer([0.0, 60.0], [np.cos(yaw), np.sin(yaw)])
            off_line.append(_to_polyline(later, line))
            turned += abs(np.arctan2(*(paths[i][-1] - paths[i][-2])[::-1]) - np.arctan2(*(paths[i][1] - paths[i][0])[::-1])) > 0.5
    assert len(on_path) > 50 and turned > 0  # cars that signal a turn were among them
    assert max(on_path) < 1.5  # the path is where the car went
    assert max(off_line) > 3.0  # where a straight line along its heading was not
    highway = EmbeddedDrivingEnv("highway", "light").reset(seed=3)[0]
    assert not highway["actor_paths"].any()  # no junction, no paths


def test_the_highway_route_is_the_lane_ahead_at_the_ego_s_speed():
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=3)
    ahead = max(ROUTE_MIN_AHEAD, float(obs["ego"][EGO["speed"]]) * ROUTE_AHEAD_TIME)
    assert np.allclose(obs["route"], [JUNCTION_HORIZON, ahead, 0.0], atol=0.05)
    slow = route_features(np.array([[0.0, 0.0], [1.0, 0.0]]), None, 0.0, _ego() * 0.0)  # standing at the origin
    assert np.allclose(slow, [JUNCTION_HORIZON, ROUTE_MIN_AHEAD, 0.0])


def test_route_path_samples_the_route_ahead_and_runs_on_past_its_end():
    points = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])  # 10 m east, then 10 m north
    path = route_path(points, 5.0)
    assert path.shape == (ROUTE_PATH_POINTS, 2)
    assert np.allclose(path[:3], [[5.0, 0.0], [7.5, 0.0], [10.0, 0.0]])
    assert np.allclose(path[4], [10.0, 5.0]) and np.allclose(path[-1], [10.0, 5.0 + 2.5 * (ROUTE_PATH_POINTS - 5)])
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=3)
    lane_ahead = obs["route_path"] - obs["ego"][[EGO["x"], EGO["y"]]]
    assert np.allclose(lane_ahead[-1], [40.0, 0.0], atol=1.0)  # the highway's lanes run along +x
    with pytest.raises(ValueError, match="polyline"):
        route_path(np.zeros((1, 2)), 0.0)
    # the same sampling at any distances, straight on before the start and past the end
    assert np.allclose(points_along(points, [-2.0, 0.0, 12.5, 30.0]), [[-2.0, 0.0], [0.0, 0.0], [10.0, 2.5], [10.0, 20.0]])


def test_episodes_record_the_route_and_old_ones_read_without_it(light_episode, tmp_path):
    (ep,) = read_episodes(light_episode, load_frames=False)
    assert ep.route is not None and ep.route.shape == (ep.num_steps + 1, len(ROUTE_FIELDS))
    old = dataclasses.replace(ep, route=None)
    write_episode(tmp_path / "old.h5", old)
    assert read_episode(tmp_path / "old.h5").route is None
    with pytest.raises(ValueError, match="route"):
        dataclasses.replace(ep, route=ep.route[:-1])
    broken = ep.route.copy()
    broken[1, 0] = np.nan
    with pytest.raises(DatasetError, match="route"):  # measured every state: NaN is damage, not "not recorded"
        write_episode(tmp_path / "nan.h5", dataclasses.replace(ep, route=broken))

    from vla.config import PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          observation="lane_route")
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    data = DemoDataset(policy)
    data.add_episode(ep)
    assert len(data) > 0
    with pytest.raises(ValueError, match="route"):
        DemoDataset(policy).add_episode(old)
    obs, _ = EmbeddedDrivingEnv("highway", "light").reset(seed=1)
    with pytest.raises(ValueError, match="route"):
        policy.inputs_from_obs({k: v for k, v in obs.items() if k != "route"})
