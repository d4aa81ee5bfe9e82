"""The shared training loop: logs, checkpoints, and EXACT resume after an exception, Ctrl-C
or a real kill -9 (same batches, bitwise-identical parameters to an uninterrupted run).

The method is a 2-layer MLP with dropout (so the torch RNG matters) regressing a fixed random
dataset with Adam. Run as a script (``python tests/test_train_loop.py child OUT``) this module
is the child process the kill -9 test trains and kills.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_loop_state,
    load_method_state,
)
from vla.train_loop import TrainConfig, train

N, DIM = 100, 4
STEPS = 30
BASE = TrainConfig(steps=STEPS, batch_size=8, log_every=5, checkpoint_every=4,
                   keep_checkpoints=2, seed=3, progress=False, threads=1)


class ArraySource:
    """Batches of a fixed random regression set; records every batch's indices."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(N, DIM)).astype(np.float32)
        self.y = (self.x @ rng.normal(size=(DIM, 1)) + 0.1 * np.sin(3 * self.x[:, :1]))
        self.y = self.y.astype(np.float32)
        self.seen: list[list[int]] = []

    def __len__(self) -> int:
        return N

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append([int(i) for i in indices])
        return torch.from_numpy(self.x[indices]), torch.from_numpy(self.y[indices])


class TinyMethod:
    """MLP regression with dropout and Adam; ``fail`` maps an update call number (1-based,
    counted in this object) to an action run before that update."""

    name = "tiny"

    def __init__(self, lr: float = 1e-2, fail: dict | None = None, sleep: float = 0.0) -> None:
        torch.manual_seed(123)
        self.lr, self.fail, self.sleep, self.calls = lr, fail or {}, sleep, 0
        self.model = torch.nn.Sequential(torch.nn.Linear(DIM, 32), torch.nn.ReLU(),
                                         torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def update(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        self.calls += 1
        if self.calls in self.fail:
            result = self.fail[self.calls]()
            if result is not None:
                return result
        time.sleep(self.sleep)
        x, y = batch
        self.model.train()
        loss = F.mse_loss(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "batch": float(len(x))}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def config_dict(self) -> dict:
        return {"lr": self.lr, "hidden": 32, "dropout": 0.3}


def _raise(exc: BaseException):
    def action() -> None:
        raise exc
    return action


def _params(method: TinyMethod) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.model.parameters()]


def _assert_same_params(method: TinyMethod, reference: list[torch.Tensor]) -> None:
    ours = _params(method)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True))


def _without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


def _csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted reference run: parameters, batches and log rows after STEPS steps."""
    out = tmp_path_factory.mktemp("a")
    method, source = TinyMethod(), ArraySource()
    result = train(method, source, replace(BASE, checkpoint_every=0), out)
    return {"params": _params(method), "seen": source.seen, "rows": _csv_rows(out),
            "result": result}


def _resume_and_check(out: Path, run_a: dict, expected_from: int) -> None:
    method, source = TinyMethod(), ArraySource()
    result = train(method, source, BASE, out)
    assert result.resumed_from == expected_from and result.steps_done == STEPS
    assert source.seen == run_a["seen"][expected_from:]
    _assert_same_params(method, run_a["params"])
    assert _without_time(_csv_rows(out)) == _without_time(run_a["rows"])  # means included


def test_exact_resume_after_kill_9(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The child trains with 50 ms steps and stalls at step 21: killed while stepping or
    writing a checkpoint, somewhere between steps 8 and 21."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, __file__, "child", str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_a = request.getfixturevalue("run_a")  # computed while the child imports torch
    deadline = time.monotonic() + 60
    try:
        while True:
            latest = latest_checkpoint(tmp_path)
            if latest is not None and checkpoint_step(latest) >= 8:
                break
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "child never checkpointed"
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = checkpoint_step(latest_checkpoint(tmp_path))
    assert 8 <= killed_at <= 20
    _resume_and_check(tmp_path, run_a, killed_at)


def test_trains_logs_and_keeps_checkpoints(tmp_path: Path, run_a: dict) -> None:
    rows = run_a["rows"]
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert list(rows[0]) == ["step", "elapsed_s", "loss", "batch"]
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert len(run_a["seen"]) == STEPS and len(run_a["seen"][12]) == 4  # epoch's last batch
    assert sorted(np.concatenate(run_a["seen"][:13]).tolist()) == list(range(N))  # one epoch
    result = train(TinyMethod(), ArraySource(), BASE, tmp_path)
    assert result.resumed_from is None and result.steps_done == STEPS
    assert math.isclose(result.last_logs["batch"], 8.0)
    found = list_checkpoints(tmp_path)
    assert [checkpoint_step(p) for p in found] == [28, 30] and result.checkpoint_dir == found[-1]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_00000030\n"
    for path in found:
        config = json.loads((path / "config.json").read_text())
        assert config["format_version"] == 1 and config["method"] == "tiny"
        assert config["method_config"]["lr"] == 0.01 and config["train"]["batch_size"] == 8
        assert load_loop_state(path)["step"] == checkpoint_step(path)
    state = load_method_state(found[-1])  # weights_only load
    assert set(state) == {"model", "optimizer"}


def test_exact_resume_after_exception(tmp_path: Path, run_a: dict) -> None:
    crashing = TinyMethod(fail={13: _raise(RuntimeError("boom"))})
    with pytest.raises(RuntimeError, match="boom"):
        train(crashing, ArraySource(), BASE, tmp_path)
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 12
    _resume_and_check(tmp_path, run_a, 12)


def test_ctrl_c_saves_at_the_step_boundary_and_resumes_exactly(tmp_path: Path,
                                                               run_a: dict) -> None:
    interrupting = TinyMethod(fail={7: lambda: os.kill(os.getpid(), signal.SIGINT)})
    with pytest.raises(KeyboardInterrupt):
        train(interrupting, ArraySource(), BASE, tmp_path)
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 7  # step 7 finished, then saved
    _resume_and_check(tmp_path, run_a, 7)


def test_raised_keyboard_interrupt_saves_a_checkpoint(tmp_path: Path) -> None:
    method = TinyMethod(fail={6: _raise(KeyboardInterrupt())})
    with pytest.raises(KeyboardInterrupt):
        train(method, ArraySource(), replace(BASE, checkpoint_every=0), tmp_path)
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [5]


def test_eval_is_logged_and_does_not_change_training(tmp_path: Path, run_a: dict) -> None:
    def eval_fn(step: int) -> dict:
        return {"noise": float(torch.rand(()))}  # draws from the training RNG

    method = TinyMethod()
    train(method, ArraySource(), replace(BASE, eval_every=10), tmp_path, eval_fn=eval_fn)
    _assert_same_params(method, run_a["params"])
    lines = (tmp_path / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30]
    with pytest.raises(ValueError, match="eval_every"):
        train(TinyMethod(), ArraySource(), replace(BASE, eval_every=10), tmp_path / "x")


def test_config_change_on_resume_and_extending_steps(tmp_path: Path) -> None:
    config = replace(BASE, steps=8)
    train(TinyMethod(), ArraySource(), config, tmp_path)
    with pytest.raises(ValueError, match=r"^config differs from the checkpoint's: lr 0.01 != 0.02;"):
        train(TinyMethod(lr=0.02), ArraySource(), config, tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint's: batch_size 8 != 4;"):
        train(TinyMethod(), ArraySource(), replace(config, batch_size=4), tmp_path)
    logs: list[str] = []
    longer = replace(config, steps=12, threads=2, progress=True)
    result = train(TinyMethod(), ArraySource(), longer, tmp_path, log=logs.append)
    assert result.resumed_from == 8 and result.steps_done == 12
    assert logs[0].startswith("resuming from step 8")
    again = train(TinyMethod(), ArraySource(), longer, tmp_path, log=logs.append)
    assert again.steps_done == 12 and again.last_logs == {} and again.resumed_from == 12


def test_nan_loss_stops_without_saving(tmp_path: Path) -> None:
    method = TinyMethod(fail={7: lambda: {"loss": float("nan")}})
    with pytest.raises(RuntimeError, match=r"^non-finite loss = nan at step 7;"):
        train(method, ArraySource(), BASE, tmp_path)
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [4]
    state = load_method_state(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_stray_temp_and_incomplete_checkpoints_are_ignored(tmp_path: Path, run_a: dict) -> None:
    crashing = TinyMethod(fail={11: _raise(RuntimeError("boom"))})
    with pytest.raises(RuntimeError):
        train(crashing, ArraySource(), BASE, tmp_path)
    root = tmp_path / "checkpoints"
    for name in (".step_00000099.tmp", "step_00000050"):  # a killed write; a partial copy
        (root / name).mkdir()
        (root / name / "method.pt").write_bytes(b"garbage")
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 8
    with (tmp_path / "log.csv").open("a") as f:
        f.write("15,0.1,0.")  # a row cut by the crash: dropped on resume
    _resume_and_check(tmp_path, run_a, 8)
    assert not (root / ".step_00000099.tmp").exists()


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match=r"^TrainConfig.steps must be >= 1, got 0$"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="TrainConfig.batch_size must be an integer"):
        TrainConfig(batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TrainConfig.progress must be true or false"):
        TrainConfig(progress=1)  # type: ignore[arg-type]
    assert type(TrainConfig(steps=np.int64(5)).steps) is int


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    stall = {21: lambda: time.sleep(120)}
    train(TinyMethod(fail=stall, sleep=0.05), ArraySource(), BASE, sys.argv[2])


def test_resume_across_a_policy_field_added_later() -> None:
    """A checkpoint written before a PolicyConfig field existed resumes when the field keeps the
    value old checkpoints stand for, and is refused, naming the field, when it does not."""
    from vla.checkpoint import FORMAT_VERSION, check_same_config
    from vla.config import PolicyConfig
    from vla.train_loop import _upgraded

    now = PolicyConfig(observation="ego_frame", replan_every=1).to_dict()
    old = {k: v for k, v in now.items() if k not in ("forecast_weight", "observation", "replan_every")}
    record = {"method": "bc", "method_config": {"policy": now}, "train": {}}
    saved = {"format_version": FORMAT_VERSION, "method": "bc", "method_config": {"policy": old}, "train": {}}
    check_same_config(_upgraded(saved), record)
    with pytest.raises(ValueError, match="<missing>"):
        check_same_config(saved, record)  # without the upgrade an added field is "missing"
    changed = {**record, "method_config": {"policy": {**now, "observation": "lane_frame"}}}
    with pytest.raises(ValueError, match="policy.observation ego_frame != lane_frame"):
        check_same_config(_upgraded(saved), changed)


def test_cpu_training_uses_deterministic_algorithms_and_restores_the_setting(tmp_path: Path) -> None:
    """With several threads some CPU kernels sum in a scheduling-dependent order (two 2-thread
    runs of the main job's policy differed in the 7th digit); the loop trains with torch's
    deterministic algorithms on CPU, and leaves the caller's setting as it found it."""
    seen: list[bool] = []
    method = TinyMethod(fail={1: lambda: seen.append(torch.are_deterministic_algorithms_enabled())})
    before = torch.are_deterministic_algorithms_enabled()
    train(method, ArraySource(), replace(BASE, steps=2, threads=2, checkpoint_every=0), tmp_path / "run")
    assert seen == [not torch.cuda.is_available()]
    assert torch.are_deterministic_algorithms_enabled() == before
