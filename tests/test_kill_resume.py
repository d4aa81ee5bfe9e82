"""kill -9 anywhere (issue "Reliability", item 2): each command is started in a child process,
killed with SIGKILL once it has written part of its result, and run again with the same
arguments; the result must equal that of the same command never killed, run beside it.

``vla collect`` and ``vla dagger`` have their own kill tests (tests/test_cli.py,
tests/test_dagger.py) and ``vla.train_loop`` kills its child mid-checkpoint
(tests/test_train_loop.py); this file covers the other commands that write results:
``vla train bc|diffusion|iql|cql|dpo``, ``vla make-pairs``, ``vla make-speech`` and a study.

What "equal" means per command:
- training (bc, diffusion, iql, cql, dpo): the final weights are bit-identical and the training
  log has the same rows (its wall-clock column aside). The loop checkpoints weights, optimizer,
  scheduler and every RNG it draws from, and the data order is a function of the step.
- make-pairs: the same shards, array for array (an ``.npz`` zip carries its write time, so
  bytes would differ), and the same manifest.
- make-speech: the same items.jsonl and byte-identical wav files (synthesis is seeded).
- the study: the same summary and paired intervals (its episodes depend only on seeds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vla.checkpoint import checkpoint_step, latest_checkpoint

CLI = [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def kill_rerun_and_whole(command: Callable[[Path], list[str]], reached: Callable[[Path], bool],
                         tmp_path: Path, timeout: float = 240.0) -> tuple[Path, Path]:
    """Run ``command`` twice side by side: one run uninterrupted ("whole"), the other SIGKILLed
    as soon as ``reached(its out)`` and then run again to the end ("cut"). Returns both outs."""
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    full = subprocess.Popen(command(whole), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(command(cut), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not reached(cut):
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed; give it more work"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = subprocess.run(command(cut), env=ENV, capture_output=True, text=True, timeout=timeout)
    assert again.returncode == 0, again.stderr[-3000:]
    assert full.wait(timeout=timeout) == 0, full.stderr.read().decode()[-3000:]
    return cut, whole


def checkpointed(at_least: int) -> Callable[[Path], bool]:
    def reached(out: Path) -> bool:
        latest = latest_checkpoint(out / "train")
        return latest is not None and checkpoint_step(latest) >= at_least
    return reached


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys() and x
    different = [k for k in x if not np.array_equal(x[k], y[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def assert_same_log(a: Path, b: Path) -> None:
    def rows(run: Path) -> list[list[str]]:
        lines = (run / "train" / "log.csv").read_text().splitlines()
        return [line.split(",")[:1] + line.split(",")[2:] for line in lines]  # without elapsed_s
    assert rows(a) == rows(b) and len(rows(a)) > 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two recorded expert episodes (with plan labels), their D4RL file, a tiny blind control
    policy and its preference pairs."""
    import torch

    from app import cli
    from methods.pairs import read_pairs
    from sim.storage import export_d4rl
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    root = tmp_path_factory.mktemp("kill_inputs")
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "2",
                     "--cameras", "none", "--out", str(root / "data")]) == 0
    export_d4rl(root / "data", root / "d4rl.h5")
    config = PolicyConfig(**SIZES["tiny"], cameras=False)
    torch.manual_seed(0)  # the same policy, hence the same pairs, in every test session
    VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(root / "policy")
    assert cli.main(["make-pairs", "--policy", str(root / "policy"), "--density", "light", "--episodes", "2",
                     "--max-steps", "60", "--stride", "20", "--continuation-steps", "10",
                     "--out", str(root / "pairs")]) == 0
    assert len(read_pairs(root / "pairs")["seed"]) >= 4
    return root


TRAIN_POLICY = ["--steps", "250", "--batch-size", "8", "--size", "tiny", "--no-cameras"]


@pytest.mark.parametrize("method", ["bc", "diffusion"])
def test_train_policy_killed_and_rerun(method, inputs, tmp_path):
    cut, whole = kill_rerun_and_whole(
        lambda out: [*CLI, "train", method, "--data", str(inputs / "data"), "--out", str(out), *TRAIN_POLICY],
        checkpointed(50), tmp_path)
    assert_same_weights(cut / "policy", whole / "policy")
    assert_same_log(cut, whole)


@pytest.mark.parametrize("method", ["iql", "cql"])
def test_train_offline_rl_killed_and_rerun(method, inputs, tmp_path):
    cut, whole = kill_rerun_and_whole(
        lambda out: [*CLI, "train", method, "--data", str(inputs / "d4rl.h5"), "--out", str(out), "--steps", "800",
                     "--batch-size", "32", "--hidden", "32", "--checkpoint-every", "100", "--eval-episodes", "0",
                     "--no-progress"],
        checkpointed(100), tmp_path)
    assert_same_weights(cut / "policy", whole / "policy")
    assert_same_log(cut, whole)


def test_train_dpo_killed_and_rerun(inputs, tmp_path):
    cut, whole = kill_rerun_and_whole(
        lambda out: [*CLI, "train", "dpo", "--pairs", str(inputs / "pairs"), "--ref", str(inputs / "policy"),
                     "--steps", "200", "--batch-size", "4", "--out", str(out)],
        checkpointed(50), tmp_path)
    assert_same_weights(cut / "policy", whole / "policy")
    assert_same_log(cut, whole)


def test_make_pairs_killed_and_rerun(inputs, tmp_path):
    from methods.pairs import read_manifest

    def shards(out: Path) -> int:
        return len(list((out / "shards").glob("pairs_*.npz"))) if (out / "shards").is_dir() else 0

    cut, whole = kill_rerun_and_whole(
        lambda out: [*CLI, "make-pairs", "--policy", str(inputs / "policy"), "--density", "light", "--episodes", "4",
                     "--max-steps", "60", "--stride", "20", "--continuation-steps", "10", "--out", str(out)],
        lambda out: shards(out) >= 1, tmp_path)
    a, b = read_manifest(cut), read_manifest(whole)
    assert a == b and len(a["shards"]) == 4
    for shard in a["shards"]:
        x, y = np.load(cut / shard["file"]), np.load(whole / shard["file"])
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{shard['file']}:{k}")


def test_make_speech_killed_and_rerun(tmp_path):
    def finished_items(out: Path) -> int:
        tmp = out / ".items.jsonl.tmp"
        return tmp.read_text().count("\n") if tmp.is_file() else 0

    cut, whole = kill_rerun_and_whole(
        lambda out: [*CLI, "make-speech", "--size", "tiny", "--seed", "3", "--out", str(out)],
        lambda out: finished_items(out) >= 3, tmp_path)
    assert (cut / "items.jsonl").read_text() == (whole / "items.jsonl").read_text()
    assert json.loads((cut / "manifest.json").read_text()) == json.loads((whole / "manifest.json").read_text())
    wavs = sorted(p.name for p in (whole / "audio").glob("*.wav"))
    assert wavs == sorted(p.name for p in (cut / "audio").glob("*.wav")) and len(wavs) == 10
    assert all((cut / "audio" / w).read_bytes() == (whole / "audio" / w).read_bytes() for w in wavs)
    assert not list(cut.rglob(".*.tmp*"))  # no temp file survives


def test_make_speech_resumes_only_what_matches_its_plan(tmp_path):
    """A killed build of another seed, or a torn last line, is not reused: the rerun renders
    those items again and the corpus equals a clean build."""
    from tokenizers_mm.corpus import build_corpus, plan

    build_corpus(tmp_path / "clean", size=4, seed=1, progress=False)
    other = build_corpus(tmp_path / "other", size=4, seed=2, progress=False)
    assert other["seed"] == 2
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "audio").mkdir()
    lines = (tmp_path / "clean" / "items.jsonl").read_text().splitlines(keepends=True)
    for line in lines[:2]:
        name = json.loads(line)["audio"]
        (out / name).write_bytes((tmp_path / "clean" / name).read_bytes())
    torn = lines[2][: len(lines[2]) // 2]
    (out / ".items.jsonl.tmp").write_text("".join(lines[:2]) + torn)
    build_corpus(out, size=4, seed=1, progress=False)
    assert (out / "items.jsonl").read_text() == (tmp_path / "clean" / "items.jsonl").read_text()
    # a tmp file left by another seed's build: nothing of it matches this plan
    out2 = tmp_path / "from_other_seed"
    (out2 / "audio").mkdir(parents=True)
    (out2 / ".items.jsonl.tmp").write_text((tmp_path / "other" / "items.jsonl").read_text())
    for p in (tmp_path / "other" / "audio").glob("*.wav"):
        (out2 / "audio" / p.name).write_bytes(p.read_bytes())
    build_corpus(out2, size=4, seed=1, progress=False)
    assert (out2 / "items.jsonl").read_text() == (tmp_path / "clean" / "items.jsonl").read_text()
    assert [s.id for s in plan(4, 1)] == [json.loads(x)["id"] for x in lines]


def test_study_killed_and_rerun(tmp_path):
    """A plan study killed after its first arm's session finished: the rerun completes the same
    study (same summary, same paired intervals) as one never killed."""
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "benchmarks.plan_study", "--out", str(out), "--density", "light",
                "--seeds", "0", "--arms", "control_dart", "plan_dart", "--expert-episodes", "2",
                "--train-steps", "30", "--batch-size", "8", "--eval-episodes", "3", "--workers", "1",
                "--threads", "1", "--size", "tiny"]

    cut, whole = kill_rerun_and_whole(
        command, lambda out: (out / "seed_0" / "control_dart" / "iter_000" / "policy" / "model.safetensors").exists(),
        tmp_path)
    a, b = json.loads((cut / "study.json").read_text()), json.loads((whole / "study.json").read_text())
    assert a["summary"] == b["summary"] and a["paired_vs_baseline"] == b["paired_vs_baseline"]
    assert a["paired_vs_baseline"]["plan_dart"]["collided"]["n"] == 3
