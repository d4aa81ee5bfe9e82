"""Data-parallel training (vla.distributed): two CPU processes under torchrun (gloo) follow the
one-process run at the same global batch, write one set of files, and resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = str(Path(__file__).parent / "ddp_child.py")
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                          "MASTER_PORT")}
ENV["OMP_NUM_THREADS"] = "1"


def _run(data: Path, out: Path, steps: int, total: int, processes: int) -> None:
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          f"--nproc_per_node={processes}"]
    done = subprocess.run([sys.executable, *launcher, CHILD, str(data), str(out), str(steps), str(total)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(out: Path) -> list[float]:
    with open(out / "train" / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _weights(out: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(out / "policy" / "model.safetensors"))


@pytest.fixture(scope="module")
def data(light_episode) -> Path:
    return light_episode  # tests/conftest.py


def test_two_processes_follow_one_and_resume(data, tmp_path):
    _run(data, tmp_path / "one", 9, 9, processes=1)
    _run(data, tmp_path / "two", 6, 9, processes=2)  # stops at step 6 ...
    assert len(_losses(tmp_path / "two")) == 6
    _run(data, tmp_path / "two", 9, 9, processes=2)  # ... and resumes from its step-6 checkpoint
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 9
    np.testing.assert_allclose(two, one, rtol=1e-4)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=2e-5, err_msg=k)
    assert {f.name: f.read_text() for f in (tmp_path / "two" / "ranks").iterdir()} == {"0": "2 True 4", "1": "2 True 4"}
    assert (tmp_path / "one" / "ranks" / "0").read_text() == "1 False 8"  # each of two saw half of every batch of 8
    # rank 0 alone wrote: one log, one set of checkpoints
    assert sorted(p.name for p in (tmp_path / "two" / "train").iterdir() if p.is_file()) == ["log.csv"]


def test_a_method_without_gradient_averaging_is_refused(monkeypatch, tmp_path):
    from vla import distributed
    from vla.train_loop import TrainConfig, train

    class Plain:
        name = "plain"

        def update(self, batch):
            return {}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

        def config_dict(self):
            return {}

    class Data:
        def __len__(self):
            return 4

        def batch(self, indices):
            return indices

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    with pytest.raises(ValueError, match="method plain does not support data-parallel training"):
        train(Plain(), Data(), TrainConfig(steps=1, progress=False), tmp_path)


DAGGER = ["dagger", "--scenario", "highway", "--density", "light", "--iterations", "1", "--expert-episodes", "1",
          "--rollouts", "1", "--train-steps", "6", "--batch-size", "8", "--eval-episodes", "1", "--workers", "1",
          "--no-cameras", "--size", "tiny", "--device", "cpu"]


def test_a_dagger_session_under_torchrun_retrains_on_both_ranks(tmp_path):
    """``vla dagger`` under torchrun: rank 0 alone drives and writes, both ranks retrain on
    their halves of every batch (with command augmentation drawn as one process draws it), and
    the session's losses follow the one-process session's."""
    import json

    from sim.storage import read_episodes

    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node=2"])):
        done = subprocess.run([sys.executable, *launcher, "-m", "app.cli", *DAGGER, "--out", str(tmp_path / name)],
                              env=ENV, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "metrics.json").exists() and len((two / "iterations.jsonl").read_text().splitlines()) == 2
    for k in (0, 1):
        a, b = _losses(one / f"iter_{k:03d}"), _losses(two / f"iter_{k:03d}")
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b, a, rtol=0.02)  # token means over ranks: a close approximation
    first = [next(iter(read_episodes(d / "data" / "iter_000", load_frames=False))) for d in (one, two)]
    np.testing.assert_array_equal(first[0].ego, first[1].ego)  # the expert's episode, written once
    assert json.loads((two / "iter_001" / "done.json").read_text())["dataset_episodes"] == 2
