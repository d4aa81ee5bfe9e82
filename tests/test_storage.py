"""Episode storage: round trip, append numbering, crash safety under kill -9, errors, D4RL export."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sim.cameras import default_rig
from sim.episode import Episode
from sim.features import STATE_DIM, state_feature_names, state_vector
from sim.interface import (
    ACTION_FIELDS,
    ACTOR_FIELDS,
    EGO_FIELDS,
    EVENT_FIELDS,
    MAX_ACTORS,
    REWARD_FIELDS,
    Goal,
)
from sim.storage import (
    FORMAT_VERSION,
    DatasetError,
    EpisodeWriter,
    RewardWeights,
    count_steps,
    episode_paths,
    export_d4rl,
    read_episode,
    read_episodes,
    write_episode,
)

REPO = Path(__file__).resolve().parents[1]
ARRAYS = ("ego", "actors", "actions", "expert_actions", "events", "reward_terms")


def make_episode(
    t: int = 7, cams: int = 2, height: int = 6, width: int = 8, seed: int = 0,
    outcome: str = "timeout", frames: bool = True,
) -> Episode:
    rng = np.random.default_rng(seed)
    expert = rng.normal(size=(t, len(ACTION_FIELDS))).astype(np.float32)
    expert[::3] = np.nan  # not queried on every third step
    return Episode(
        scenario="highway",
        density="dense",
        seed=seed,
        goal=Goal(kind="lane_speed", label="lane_left", command="move one lane left",
                  target_lane=0, target_speed=25.0),
        outcome=outcome,
        route_length=500.0,
        policy="expert",
        cameras=default_rig(width=width, height=height)[:cams],
        ego=rng.normal(size=(t + 1, len(EGO_FIELDS))),
        actors=rng.normal(size=(t + 1, MAX_ACTORS, len(ACTOR_FIELDS))),
        actions=rng.normal(size=(t, len(ACTION_FIELDS))).astype(np.float32),
        expert_actions=expert,
        events=(rng.random((t, len(EVENT_FIELDS))) < 0.2).astype(np.float32),
        reward_terms=rng.normal(size=(t, len(REWARD_FIELDS))).astype(np.float32),
        frames=rng.integers(0, 256, size=(t, cams, height, width, 3), dtype=np.uint8) if frames else None,
    )


def assert_same(a: Episode, b: Episode, frames: bool = True) -> None:
    assert a.meta() == b.meta()
    assert a.goal == b.goal and a.cameras == b.cameras
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert np.array_equal(np.isnan(a.expert_actions), np.isnan(b.expert_actions))
    if frames:
        assert b.frames is not None and b.frames.dtype == np.uint8
        assert np.array_equal(a.frames, b.frames)


def test_round_trip(tmp_path: Path) -> None:
    ep = make_episode()
    path = tmp_path / "ep.h5"
    write_episode(path, ep)
    assert_same(ep, read_episode(path))
    fast = read_episode(path, load_frames=False)
    assert fast.frames is None
    assert_same(ep, fast, frames=False)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert list(f["reward_terms"].attrs["fields"]) == list(REWARD_FIELDS)
        assert f["frames"].chunks == (1, 2, 6, 8, 3)
    assert not list(tmp_path.glob("*.tmp"))


def test_round_trip_without_frames_gzip_and_empty(tmp_path: Path) -> None:
    ep = make_episode(frames=False, outcome="collision")
    write_episode(tmp_path / "ep.h5", ep, compression="gzip")
    back = read_episode(tmp_path / "ep.h5")
    assert back.frames is None
    assert_same(ep, back, frames=False)
    empty = make_episode(t=0)
    write_episode(tmp_path / "empty.h5", empty, compression=None)
    assert_same(empty, read_episode(tmp_path / "empty.h5"))


def test_writer_numbering_resumes_and_cleans_tmp(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with EpisodeWriter(root) as w:
        paths = [w.append(make_episode(seed=i)) for i in range(2)]
    assert [p.name for p in paths] == ["ep_000000.h5", "ep_000001.h5"]
    info = json.loads((root / "dataset.json").read_text())
    assert info["format_version"] == FORMAT_VERSION
    stray = root / "episodes" / ".ep_000002.h5.tmp"
    stray.write_bytes(b"half an episode")
    assert episode_paths(root) == paths  # readers ignore the .tmp
    (root / "episodes" / "ep_000005.h5").write_bytes((root / "episodes" / "ep_000001.h5").read_bytes())
    with EpisodeWriter(root) as w:
        assert not stray.exists()
        assert w.append(make_episode(seed=9)).name == "ep_000006.h5"
    assert [p.name for p in episode_paths(root)] == ["ep_000000.h5", "ep_000001.h5", "ep_000005.h5",
                                                    "ep_000006.h5"]
    assert count_steps(root) == 4 * 7
    assert [e.seed for e in read_episodes(root, load_frames=False)] == [0, 1, 1, 9]


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path / "ds"):
        with pytest.raises(DatasetError, match="another EpisodeWriter"):
            EpisodeWriter(tmp_path / "ds")
    EpisodeWriter(tmp_path / "ds").close()  # free again once closed


CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
from test_storage import make_episode
from sim.storage import EpisodeWriter
w = EpisodeWriter({root!r})
for i in range(3):
    w.append(make_episode(seed=i))
big = make_episode(t=400, cams=6, height=64, width=96, seed=3)
print("big", flush=True)
while True:
    w.append(big)
"""


def test_kill_9_mid_write_keeps_earlier_episodes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    code = CHILD.format(tests=str(REPO / "tests"), repo=str(REPO), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    tmp_file = root / "episodes" / ".ep_000003.h5.tmp"
    deadline = time.monotonic() + 60
    try:
        while not (tmp_file.exists() and tmp_file.stat().st_size > 1_000_000):  # mid-write
            assert proc.poll() is None, "writer exited before the big episode"
            assert time.monotonic() < deadline, "writer never started the big episode"
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    names = [p.name for p in episode_paths(root)]
    # The big episode is ~44 MB, so a kill after its first MB lands mid-write; should it land
    # after the rename anyway, that episode must then be complete.
    assert names[:3] == ["ep_000000.h5", "ep_000001.h5", "ep_000002.h5"]
    assert names[3:] in ([], ["ep_000003.h5"])
    assert tmp_file.exists() or names[3:]
    for i, ep in enumerate(read_episodes(root, load_frames=False)):
        assert_same(make_episode(seed=i) if i < 3 else make_episode(400, 6, 64, 96, seed=3), ep, False)
    for i in range(3):
        assert_same(make_episode(seed=i), read_episode(root / "episodes" / names[i]))
    with EpisodeWriter(root) as w:
        assert not list((root / "episodes").glob("*.tmp"))
        assert w.append(make_episode(seed=7)).name == f"ep_{len(names):06d}.h5"


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "ep_000000.h5"
    write_episode(path, make_episode())
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DatasetError, match="ep_000000.h5") as err:
        read_episode(path)
    assert "\n" not in str(err.value)


def test_corrupted_data_fails_checksum(tmp_path: Path) -> None:
    path = tmp_path / "ep.h5"
    write_episode(path, make_episode())
    with h5py.File(path, "r") as f:
        offset = f["actions"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as f:
        f.seek(offset + 4)
        byte = f.read(1)
        f.seek(offset + 4)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DatasetError, match="ep.h5"):
        read_episode(path, load_frames=False)


def test_missing_key_and_wrong_fields(tmp_path: Path) -> None:
    path = tmp_path / "ep.h5"
    write_episode(path, make_episode())
    with h5py.File(path, "r+") as f:
        f["reward_terms"].attrs["fields"] = [*REWARD_FIELDS[:-1], "bonus"]
    with pytest.raises(DatasetError, match="'bonus' vs 'goal'"):
        read_episode(path)
    with h5py.File(path, "r+") as f:
        del f["events"]
    with pytest.raises(DatasetError, match="missing dataset 'events'"):
        read_episode(path)


def test_bad_values_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "ep.h5"
    write_episode(path, make_episode())
    with h5py.File(path, "r+") as f:
        f["actions"][2, 1] = np.nan
    with pytest.raises(DatasetError, match=r"'actions' has 1 non-finite values \(first at \(2, 1\)\)"):
        read_episode(path)
    bad = make_episode()
    bad.ego[3, 0] = np.nan
    with pytest.raises(DatasetError, match="'ego'"):
        write_episode(tmp_path / "nan.h5", bad)
    assert not list(tmp_path.glob("*nan*"))
    write_episode(path, make_episode())
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format_version 99"):
        read_episode(path)
    write_episode(path, make_episode())
    with h5py.File(path, "r+") as f:
        del f["ego"]
        f["ego"] = np.zeros((3, len(EGO_FIELDS)))
        f["ego"].attrs["fields"] = list(EGO_FIELDS)
    with pytest.raises(DatasetError, match="'ego' has shape"):
        read_episode(path)


def test_bad_roots(tmp_path: Path) -> None:
    file_root = tmp_path / "file"
    file_root.write_text("not a dataset")
    with pytest.raises(DatasetError, match="not a directory"):
        EpisodeWriter(file_root)
    with pytest.raises(DatasetError, match="not a directory"):
        episode_paths(file_root)
    with pytest.raises(DatasetError, match="does not exist"):
        count_steps(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no episodes"):
        list(read_episodes(tmp_path / "empty"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "dataset.json").write_text('{"format_version": 0}')
    with pytest.raises(DatasetError, match="refusing to append"):
        EpisodeWriter(tmp_path / "old")
    with pytest.raises(ValueError, match="finite"):
        RewardWeights(collision=float("inf"))


def test_export_d4rl(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    outcomes = ["collision", "timeout", "off_road", "route_complete", "route_deviation"]
    eps = [make_episode(t=5 + i, seed=i, outcome=o) for i, o in enumerate(outcomes)]
    with EpisodeWriter(root) as w:
        for ep in eps:
            w.append(ep)
    weights = RewardWeights(collision=-5.0)
    out = tmp_path / "d4rl.h5"
    summary = export_d4rl(root, out, weights)
    n = sum(ep.num_steps for ep in eps)
    assert summary["transitions"] == n and summary["episodes"] == 5
    with h5py.File(out, "r") as f:  # plain h5py, no project code
        d = {k: f[k][()] for k in ("observations", "next_observations", "actions", "expert_actions",
                                    "rewards", "terminals", "timeouts")}
        epi, step = f["infos/episode_index"][()], f["infos/step"][()]
        assert json.loads(f.attrs["feature_names"]) == list(state_feature_names())
        assert json.loads(f.attrs["reward_weights"])["collision"] == -5.0
        assert json.loads(f.attrs["action_fields"]) == list(ACTION_FIELDS)
    assert d["observations"].shape == d["next_observations"].shape == (n, STATE_DIM)
    assert d["actions"].shape == (n, 2) and d["rewards"].shape == (n,) and d["terminals"].dtype == bool
    assert d["observations"].dtype == np.float32
    row = 0
    for i, ep in enumerate(eps):
        sl = slice(row, row + ep.num_steps)
        assert (epi[sl] == i).all() and np.array_equal(step[sl], np.arange(ep.num_steps))
        assert np.array_equal(d["observations"][row], state_vector(ep.ego[0], ep.actors[0], ep.goal))
        assert np.array_equal(d["next_observations"][sl][:-1], d["observations"][sl][1:])
        assert np.array_equal(d["next_observations"][sl][-1], state_vector(ep.ego[-1], ep.actors[-1], ep.goal))
        assert np.array_equal(d["actions"][sl], ep.actions)
        assert np.array_equal(d["expert_actions"][sl], ep.expert_actions, equal_nan=True)
        assert np.array_equal(d["rewards"][sl], weights.reward(ep.reward_terms))
        term, tout = d["terminals"][sl], d["timeouts"][sl]
        assert not term[:-1].any() and not tout[:-1].any()
        assert term[-1] == (ep.outcome in ("collision", "off_road", "route_deviation"))
        assert tout[-1] == (ep.outcome in ("timeout", "route_complete"))
        row += ep.num_steps
    assert summary["terminals"] == 3 and summary["timeouts"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_reward_weights() -> None:
    terms = np.zeros((3, len(REWARD_FIELDS)), dtype=np.float32)
    terms[0, 0] = 10.0  # 10 m of progress
    terms[1, 1] = 1.0  # a collision
    r = RewardWeights().reward(terms)
    assert r.dtype == np.float32 and np.allclose(r, [1.0, -10.0, 0.0])
    with pytest.raises(ValueError, match="last axis"):
        RewardWeights().reward(np.zeros((3, 2)))


def test_expert_plans_round_trip_and_bad_shapes(tmp_path: Path) -> None:
    ep = make_episode(frames=False)
    plans = np.random.default_rng(1).normal(size=(ep.num_steps, 3, len(ACTION_FIELDS))).astype(np.float32)
    plans[-1, 1:] = np.nan  # the continuation ended after one action
    ep = dataclasses.replace(ep, expert_plans=plans)
    write_episode(tmp_path / "p.h5", ep)
    back = read_episode(tmp_path / "p.h5")
    assert np.array_equal(back.expert_plans, plans, equal_nan=True)
    assert read_episode(tmp_path / "p.h5").expert_plans.dtype == np.float32
    plain = make_episode(frames=False)
    write_episode(tmp_path / "q.h5", plain)
    assert read_episode(tmp_path / "q.h5").expert_plans is None
    with pytest.raises(ValueError, match="expert_plans"):
        dataclasses.replace(plain, expert_plans=plans[:-1])
    bad = plans.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(DatasetError, match="expert_plans"):
        write_episode(tmp_path / "r.h5", dataclasses.replace(plain, expert_plans=bad))


def test_goal_labels_round_trip_and_shape_check(tmp_path: Path) -> None:
    from sim.scenarios import HIGHWAY_GOAL_LABELS

    ep = make_episode(frames=False)
    labels = np.random.default_rng(2).normal(size=(ep.num_steps, len(HIGHWAY_GOAL_LABELS), 2)).astype(np.float32)
    labels[:, 1] = np.nan  # a goal that is not possible from the start lane
    ep = dataclasses.replace(ep, goal_labels=labels)
    write_episode(tmp_path / "g.h5", ep)
    assert np.array_equal(read_episode(tmp_path / "g.h5").goal_labels, labels, equal_nan=True)
    with pytest.raises(ValueError, match="goal_labels"):
        dataclasses.replace(ep, goal_labels=labels[:, :3])
