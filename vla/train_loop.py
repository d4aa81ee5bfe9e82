"""The one training loop every training method shares (BC, DAgger, diffusion, CQL/IQL, DPO).

A method owns its models, optimizers, schedulers, target and reference networks and exposes
``update(batch) -> dict[str, float]`` (see ``TrainingMethod``); ``train`` draws batches, calls
it, and does the rest: tqdm bar, ``log.csv``, evaluation, checkpoints (``vla.checkpoint``) and
exact resume.

Sampling: epoch ``e`` visits the data in the order ``default_rng([seed, e]).permutation(n)``,
``batch_size`` indices at a time; the epoch's last, smaller batch is used (``drop_last=False``)
or skipped. The order is a pure function of ``(seed, epoch, cursor)``, so the loop state is just
``(step, epoch, cursor)`` plus the global RNG states a step may draw from (Python ``random``,
``np.random``, torch CPU and CUDA; ``vla.checkpoint.capture_rng``). All of it is saved in every
checkpoint: resuming after a kill -9 replays the same batches in the same order and, for a
method whose ``update`` is a deterministic function of its state, the batch and those RNGs,
gives bitwise the parameters of an uninterrupted run. ``BatchSource.batch`` must be a pure
function of the indices; an RNG a method keeps itself (a ``torch.Generator``) goes in its
``state_dict``. A fresh run seeds the global RNGs from ``TrainConfig.seed``; evaluation runs
with them saved and restored, so it never changes the training trajectory.

Files in ``out_dir``: ``log.csv`` (``step, elapsed_s`` then the update keys, each the mean over
the steps since the previous row; the columns are fixed by the first update, keys that appear
later go to ``log_extra.jsonl``), ``eval.jsonl`` (``{"step": s, ...}`` per evaluation) and
``checkpoints/``. On resume, rows past the checkpoint's step (written before a crash) are
dropped, so the logs read as one uninterrupted run. ``elapsed_s`` is training time summed over
resumes. Ctrl-C (SIGINT, main thread) is deferred to the end of the running step; the loop then
saves a checkpoint and raises KeyboardInterrupt (a second Ctrl-C aborts at once, saving
nothing). A KeyboardInterrupt raised any other way is saved as it stands, labelled with the
last completed step.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from vla import distributed
from vla.checkpoint import (
    RunLogs,
    capture_rng,
    check_same_config,
    latest_checkpoint,
    load_config,
    load_loop_state,
    load_method_state,
    restore_rng,
    write_checkpoint,
)

RESUME_MAY_CHANGE = ("steps", "progress", "threads", "eval_every")
"""TrainConfig fields that may differ from the checkpoint's on resume (e.g. to extend a run)."""
POSTFIX_KEYS = 4
"""How many update() keys the progress bar shows."""


class TrainingMethod(Protocol):
    """What ``train`` needs from a training method. Optionally also
    ``evaluate(self) -> dict[str, float]``, called every ``eval_every`` steps when ``train``
    gets no ``eval_fn``."""

    name: str

    def update(self, batch: Any) -> dict[str, float]:
        """One optimization step (or more) on ``batch``; scalar logs (floats or 0-d tensors)."""

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: models, optimizers, schedulers, own RNGs."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``."""

    def config_dict(self) -> dict:
        """The method's config as JSON-able values (dumped beside every checkpoint)."""


class BatchSource(Protocol):
    """What ``train`` draws batches from."""

    def __len__(self) -> int:
        """Number of samples."""

    def batch(self, indices: np.ndarray) -> Any:
        """The batch of samples ``indices`` (int64, ``(B,)``) for ``update``; pure function.

        Optionally ``select(batch, positions) -> batch``: rows of a batch. Data-parallel
        training then has every rank assemble the whole batch and keep its rows, so random
        augmentations drawn in ``batch`` are those of one process; without it a rank
        assembles only its own samples."""


@dataclass(frozen=True)
class TrainConfig:
    """How ``train`` runs a method; everything but the method's own hyper-parameters."""

    steps: int = 1000
    """Total update() calls, counted across resumes; may be raised on resume to extend a run."""
    batch_size: int = 32
    """Samples per batch."""
    drop_last: bool = False
    """Skip each epoch's last batch when it is smaller than batch_size (else train on it)."""
    log_every: int = 10
    """Write a log.csv row (means since the previous row) every this many steps, and at the end."""
    eval_every: int = 0
    """Evaluate (eval_fn or method.evaluate) every this many steps; 0 = never."""
    checkpoint_every: int = 200
    """Save a checkpoint every this many steps; 0 = only at the end (and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    seed: int = 0
    """Seeds the sampling order and, on a fresh run, Python/numpy/torch global RNGs."""
    progress: bool = True
    """Show a tqdm progress bar on stderr."""
    threads: int = 0
    """torch.set_num_threads during training (restored after); 0 = leave torch's setting."""

    def __post_init__(self) -> None:
        minimum = {"steps": 1, "batch_size": 1, "log_every": 1, "keep_checkpoints": 1}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"TrainConfig.{f.name} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"TrainConfig.{f.name} must be an integer, got {value!r}")
            elif value < minimum.get(f.name, 0):
                raise ValueError(f"TrainConfig.{f.name} must be >= {minimum.get(f.name, 0)}, got {value}")
            else:
                object.__setattr__(self, f.name, int(value))  # numpy ints -> int (JSON)
        if self.seed >= 2**32:
            raise ValueError(f"TrainConfig.seed must be < 2**32, got {self.seed}")


@dataclass(frozen=True)
class TrainResult:
    """What a ``train`` call did."""

    steps_done: int
    """Steps completed in total (across resumes)."""
    last_logs: dict[str, float]
    """update()'s logs at the last step of this call ({} when there was nothing to do)."""
    checkpoint_dir: Path
    """The newest checkpoint (the one written at the end)."""
    resumed_from: int | None
    """Step this call resumed from, or None for a fresh run."""
    wall_time_s: float
    """Wall-clock seconds of this call."""


@dataclass
class _LoopState:
    """Position of the run; saved as loop.json (with the RNG states) in every checkpoint."""

    data_len: int
    step: int = 0
    epoch: int = 0
    cursor: int = 0
    elapsed_s: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _log_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order epoch ``epoch`` visits ``n`` samples in (read-only; cached)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def _draw(state: _LoopState, config: TrainConfig) -> tuple[np.ndarray, int, int]:
    """Indices of the batch at ``(state.epoch, state.cursor)`` and the position after it."""
    epoch, cursor, n, size = state.epoch, state.cursor, state.data_len, config.batch_size
    if cursor >= n or (config.drop_last and cursor + size > n):
        epoch, cursor = epoch + 1, 0
    indices = _epoch_order(config.seed, epoch, n)[cursor:cursor + size]
    return indices, epoch, cursor + len(indices)


@dataclass
class _Sigint:
    requested: bool = False
    """A SIGINT arrived during the step: save and stop at its end."""


@contextmanager
def _deferred_sigint() -> Iterator[_Sigint]:
    """While active (main thread only), the first SIGINT just sets ``requested``; a second
    raises KeyboardInterrupt at once."""
    flag = _Sigint()

    def handle(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


@contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


@contextmanager
def _cpu_determinism() -> Iterator[None]:
    """Training on CPU with torch's deterministic algorithms (restored after): with several
    threads some CPU kernels otherwise sum in a scheduling-dependent order, so two runs of the
    same steps on 2 threads differed in the 7th digit (2026-12-05) and a resumed run would not
    equal an uninterrupted one. On 2 cores it cost no measurable speed (12.4-13.9 s per 100 main-job
    steps with it, 12.6-14.3 without). Ops without a deterministic kernel only warn. Left alone
    where CUDA is available (its deterministic mode needs ``CUBLAS_WORKSPACE_CONFIG``)."""
    if torch.cuda.is_available():
        yield
        return
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _finite_logs(logs: dict, step: int) -> dict[str, float]:
    """update()'s logs as floats; a one-line RuntimeError at the first non-finite value."""
    values = {str(k): float(v) for k, v in logs.items()}
    for key, value in values.items():
        if not math.isfinite(value):
            raise RuntimeError(f"non-finite {key} = {value} at step {step}; "
                               "stopped without saving (the last checkpoint is intact)")
    return values


def _upgraded(saved: dict) -> dict:
    """A checkpoint's config as this code reads it: a policy config written before a field
    existed gets the value that field stands for in old checkpoints (``PolicyConfig.from_dict``),
    so a run resumes across such an addition unless the new field is set to something else."""
    method_config = saved.get("method_config")
    if isinstance(method_config, dict) and isinstance(method_config.get("policy"), dict):
        from vla.config import PolicyConfig

        policy = PolicyConfig.from_dict(method_config["policy"]).to_dict()
        saved = {**saved, "method_config": {**method_config, "policy": policy}}
    return saved


class _Run:
    """One ``train`` call: the state it moves forward and the files it writes."""

    def __init__(self, method: TrainingMethod, data: BatchSource, config: TrainConfig,
                 out: Path, eval_fn: Callable[[int], dict] | None,
                 log: Callable[[str], None]) -> None:
        self.method, self.data, self.config, self.out = method, data, config, out
        self.eval_fn, self.log = eval_fn, log
        self.record = {"method": method.name, "method_config": method.config_dict(),
                       "train": asdict(config)}
        self.state = _LoopState(data_len=len(data))
        self.resumed_from: int | None = None
        self.checkpoint = latest_checkpoint(out)
        self.clock = time.perf_counter()

    def start(self) -> None:
        """Resume from the newest checkpoint, or seed the global RNGs for a fresh run."""
        if self.checkpoint is None:
            _seed_all(self.config.seed)
            return
        check_same_config(_upgraded(load_config(self.checkpoint)), self.record, RESUME_MAY_CHANGE)
        loop = load_loop_state(self.checkpoint)
        rng = loop.pop("rng")
        if loop["data_len"] != self.state.data_len:
            raise ValueError(f"dataset size differs from the checkpoint's: {loop['data_len']} "
                             f"!= {self.state.data_len}; use a new --out")
        self.method.load_state_dict(load_method_state(self.checkpoint))
        self.state = _LoopState(**loop)
        restore_rng(rng)
        self.resumed_from = self.state.step
        self.log(f"resuming from step {self.state.step} ({self.checkpoint})")

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.clock

    def save(self) -> Path:
        """Checkpoint the current state (atomically; in data-parallel training rank 0 writes
        and the others wait for it)."""
        if distributed.is_main():
            loop = {**asdict(self.state), "elapsed_s": self.elapsed(), "rng": capture_rng()}
            self.checkpoint = write_checkpoint(self.out, self.state.step, self.method.state_dict(),
                                               loop, self.record, self.config.keep_checkpoints)
        distributed.barrier()
        if not distributed.is_main():
            self.checkpoint = latest_checkpoint(self.out)
        return self.checkpoint

    def step(self) -> dict[str, float]:
        """Draw the next batch, update the method, advance the state; return update's logs.
        In data-parallel training this process updates on its share of the batch
        (``vla.distributed``) and the logs are the whole batch's."""
        state = self.state
        indices, epoch, cursor = _draw(state, self.config)
        mine, weight = distributed.shard(indices)
        if distributed.active() and hasattr(self.data, "select"):
            # every rank assembles the whole batch (drawing its random augmentations as one
            # process would, so all ranks keep one RNG stream) and keeps its part
            batch = self.data.select(self.data.batch(indices), distributed.shard_positions(len(indices)))
        else:
            batch = self.data.batch(mine)
        with distributed.shard_weight(weight):
            logs = distributed.reduce_logs(self.method.update(batch))
        values = _finite_logs(logs, state.step + 1)
        state.step, state.epoch, state.cursor = state.step + 1, epoch, cursor
        for key, value in values.items():
            state.sums[key] = state.sums.get(key, 0.0) + value
            state.counts[key] = state.counts.get(key, 0) + 1
        return values

    def after_step(self, files: RunLogs, bar: tqdm) -> None:
        """Log, evaluate and checkpoint as the config asks at the step just done."""
        state, config = self.state, self.config
        if state.step % config.log_every == 0 or state.step == config.steps:
            means = {k: state.sums[k] / state.counts[k] for k in state.sums}
            files.row(state.step, self.elapsed(), means)
            state.sums, state.counts = {}, {}
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:POSTFIX_KEYS]})
        if config.eval_every and state.step % config.eval_every == 0:
            saved = capture_rng()
            try:
                results = self.eval_fn(state.step) if self.eval_fn else self.method.evaluate()
            finally:
                restore_rng(saved)
            files.evaluation(state.step, results)
            self.log(f"eval at step {state.step}: " + json.dumps(results, default=float))
        if config.checkpoint_every and state.step % config.checkpoint_every == 0:
            self.save()

    def interrupted(self) -> None:
        path = self.save()
        self.log(f"interrupted: saved step {self.state.step} to {path}")

    def loop(self) -> dict[str, float]:
        """Run the steps left; checkpoint at the end; return the last step's logs."""
        config, last = self.config, {}
        files = RunLogs(self.out, self.state.step) if distributed.is_main() else _NoLogs()
        bar = tqdm(total=config.steps, initial=self.state.step, disable=not config.progress or not distributed.is_main(),
                   file=sys.stderr, unit="step", dynamic_ncols=True, desc=self.method.name)
        with _num_threads(config.threads), _cpu_determinism(), _deferred_sigint() as sigint, bar:
            while self.state.step < config.steps:
                try:
                    last = self.step()
                except KeyboardInterrupt:
                    self.interrupted()
                    raise
                bar.update(1)
                self.after_step(files, bar)
                if sigint.requested:
                    self.interrupted()
                    raise KeyboardInterrupt
        self.save()
        return last


class _NoLogs:
    """The log files of a data-parallel rank other than 0: it writes none."""

    def row(self, step: int, elapsed_s: float, values: dict[str, float]) -> None:
        pass

    def evaluation(self, step: int, results: dict) -> None:
        pass


def _seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (a fresh run)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(method: TrainingMethod, data: BatchSource, config: TrainConfig, out_dir: str | Path,
          eval_fn: Callable[[int], dict] | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``method`` on ``data`` until ``config.steps``, resuming from ``out_dir``'s newest
    checkpoint if it has one (its saved configs must equal the current ones but for
    RESUME_MAY_CHANGE, else ValueError). ``eval_fn(step)`` (or ``method.evaluate()``) runs every
    ``eval_every`` steps. A non-finite update() value raises RuntimeError, saving nothing."""
    started = time.perf_counter()
    if len(data) < 1 or (config.drop_last and len(data) < config.batch_size):
        raise ValueError(f"data has {len(data)} samples: too few for batch_size "
                         f"{config.batch_size}" + (" with drop_last" if config.drop_last else ""))
    if config.eval_every and eval_fn is None and not callable(getattr(method, "evaluate", None)):
        raise ValueError(f"eval_every is {config.eval_every} but there is no eval_fn and "
                         f"method {method.name} has no evaluate()")
    if distributed.active():
        if not getattr(method, "data_parallel", False):
            raise ValueError(f"method {method.name} does not support data-parallel training yet; "
                             "run it as one process")
        if config.batch_size < distributed.world()[1]:
            raise ValueError(f"batch_size {config.batch_size} is smaller than the {distributed.world()[1]} "
                             "processes it is split over")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(method, data, config, out, eval_fn, log or _log_stderr)
    run.start()
    last: dict[str, float] = {}
    if run.state.step >= config.steps:
        run.log(f"already at step {run.state.step} of {config.steps}: nothing to do")
    else:
        last = run.loop()
    assert run.checkpoint is not None
    return TrainResult(steps_done=run.state.step, last_logs=last, checkpoint_dir=run.checkpoint,
                       resumed_from=run.resumed_from, wall_time_s=time.perf_counter() - started)
