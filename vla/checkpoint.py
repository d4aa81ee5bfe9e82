"""A training run's directory: checkpoints (whole or absent, whatever interrupts the writer),
the config check a resume must pass, and the logs (``RunLogs``).

Layout under a run's output directory ``OUT``::

    OUT/log.csv, log_extra.jsonl, eval.jsonl   RunLogs (columns: see vla.train_loop)
    OUT/checkpoints/step_00000200/method.pt    torch.save(method.state_dict())
                                  loop.json    loop position + every RNG state (see train_loop)
                                  config.json  {"format_version", "method", "method_config", "train"}
    OUT/checkpoints/latest                     one line: the newest complete checkpoint's name

A checkpoint is written into ``.step_XXXXXXXX.tmp``, each file and the directory fsync'ed, then
renamed onto ``step_XXXXXXXX`` (``os.replace``: atomic on POSIX) before ``latest`` is rewritten
atomically and checkpoints beyond the newest ``keep`` are removed (renamed to ``.NAME.del``
first, so a half-deleted directory never looks like a checkpoint). Readers ignore dot-names and
directories missing a file, so a kill -9 at any moment leaves the previous checkpoint usable.
``latest_checkpoint`` trusts the directory listing (a renamed directory is complete by
construction); the ``latest`` file is for people and outside tools. One writer per ``OUT``.

``method.pt`` must hold only tensors and plain Python values (dict, list, tuple, str, int,
float, bool, None): what ``torch.load(weights_only=True)`` accepts, and what model, optimizer
and LR-scheduler ``state_dict()``s are. ``load_method_state`` loads with ``weights_only=True``,
so a checkpoint can never run code on load; a method that needs more stores it as plain values.

``check_same_config`` compares a checkpoint's config.json with the current run's, key by key
(nested method-config keys dotted: ``policy.d_model``), and names the first difference.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim.atomic import atomic_output, fsync_path

FORMAT_VERSION = 1
"""Version of the checkpoint layout, stored in every config.json."""
CHECKPOINTS = "checkpoints"
LATEST = "latest"
METHOD_FILE, LOOP_FILE, CONFIG_FILE = "method.pt", "loop.json", "config.json"
CHECKPOINT_FILES = (METHOD_FILE, LOOP_FILE, CONFIG_FILE)
_NAME = re.compile(r"^step_(\d{8,})$")
LOG_CSV, LOG_EXTRA, EVAL_JSONL = "log.csv", "log_extra.jsonl", "eval.jsonl"
_STALE = re.compile(r"^\.step_\d{8,}\.(tmp|del)$")


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` updates."""
    return f"step_{step:08d}"


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint directory was taken at (from its name)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint directory (step_XXXXXXXX)")
    return int(match.group(1))


def _is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


def _list(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and _is_complete(p)]
    return sorted(found, key=checkpoint_step)


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of the run in ``out_dir``, oldest first (temp dirs ignored)."""
    return _list(Path(out_dir) / CHECKPOINTS)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of the run in ``out_dir``, or None if it has none."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


def _remove_dir(root: Path, path: Path) -> None:
    """Rename ``path`` to a dot-name first, then delete it: never a half-deleted checkpoint."""
    trash = root / f".{path.name}.del"
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def write_checkpoint(out_dir: str | Path, step: int, method_state: dict, loop_state: dict,
                     config: dict, keep: int) -> Path:
    """Write the checkpoint of ``step`` atomically, point ``latest`` at it, keep the newest
    ``keep``; return its directory. A complete checkpoint of the same step already there is
    kept as it is (the loop reaches a step in one state only)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    if not _is_complete(final):
        for stale in root.iterdir():
            if _STALE.match(stale.name) and stale.is_dir():
                shutil.rmtree(stale)
        tmp = root / f".{final.name}.tmp"
        tmp.mkdir()
        torch.save(method_state, tmp / METHOD_FILE)
        _write_json(tmp / LOOP_FILE, loop_state)
        _write_json(tmp / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})
        for name in CHECKPOINT_FILES:
            fsync_path(tmp / name)
        fsync_path(tmp)
        if final.exists():  # an incomplete directory under a checkpoint's name: not ours
            _remove_dir(root, final)
        os.replace(tmp, final)
        fsync_path(root)
    with atomic_output(root / LATEST) as tmp_latest:
        tmp_latest.write_text(final.name + "\n")
    for old in _list(root)[:-keep]:
        _remove_dir(root, old)
    return final


def load_method_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``method.state_dict()`` as saved in checkpoint directory ``path`` (weights_only load)."""
    return torch.load(Path(path) / METHOD_FILE, map_location=map_location, weights_only=True)


def load_loop_state(path: str | Path) -> dict:
    """The training loop's state (``loop.json``) saved in checkpoint directory ``path``."""
    return json.loads((Path(path) / LOOP_FILE).read_text())


def load_config(path: str | Path) -> dict:
    """The configs (``config.json``) saved beside checkpoint directory ``path``'s state."""
    return json.loads((Path(path) / CONFIG_FILE).read_text())


# ----------------------------------------------------------------------------- configs and logs
def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


RUNTIME_KEY = "runtime"
"""A method config's entry for how it runs (device, precision, compile: ``vla.accel``): recorded,
but a resumed run may change it."""


def check_same_config(saved: dict, current: dict, may_change: tuple[str, ...] = ()) -> None:
    """Raise a one-line ValueError naming the first key where ``current`` differs from the
    checkpoint's ``saved`` config (``{"method", "method_config", "train"}``; the ``train`` keys
    in ``may_change`` and the method's ``RUNTIME_KEY`` entry are not compared)."""
    current = json.loads(json.dumps(current))
    train_now = {k: v for k, v in current["train"].items() if k not in may_change}
    train_then = {k: v for k, v in saved.get("train", {}).items() if k not in may_change}
    method_then = {k: v for k, v in saved.get("method_config", {}).items() if k != RUNTIME_KEY}
    method_now = {k: v for k, v in current["method_config"].items() if k != RUNTIME_KEY}
    pairs = [({"format_version": saved.get("format_version")}, {"format_version": FORMAT_VERSION}),
             ({"method": saved.get("method")}, {"method": current["method"]}),
             (_flatten(method_then), _flatten(method_now)),
             (train_then, train_now)]
    missing = "<missing>"
    for then, now in pairs:
        for key in [*now, *(k for k in then if k not in now)]:
            if then.get(key, missing) != now.get(key, missing):
                raise ValueError(f"config differs from the checkpoint's: {key} "
                                 f"{then.get(key, missing)} != {now.get(key, missing)}; "
                                 "use a new --out")


def _keep_lines(path: Path, keep: Callable[[str], bool]) -> None:
    """Rewrite ``path`` (atomically) with only its complete lines that ``keep``; delete it if
    none are left."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and keep(line)]
    if len(kept) == len(lines):
        return
    if not kept:
        path.unlink()
        return
    with atomic_output(path) as tmp:
        tmp.write_text("".join(kept))


def _step_of_json(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize


class RunLogs:
    """log.csv, log_extra.jsonl and eval.jsonl of a run (see ``vla.train_loop``), cut back to
    the rows of steps <= ``step`` on opening (rows a crashed run wrote past its checkpoint)."""

    def __init__(self, out: str | Path, step: int) -> None:
        out = Path(out)
        self.csv, self.extra, self.eval = out / LOG_CSV, out / LOG_EXTRA, out / EVAL_JSONL

        def csv_keep(line: str) -> bool:
            head = line.split(",", 1)[0]
            return not head.isdigit() or int(head) <= step

        _keep_lines(self.csv, csv_keep)
        if self.csv.exists() and self.csv.read_text().count("\n") < 2:
            self.csv.unlink()  # a header alone: let the next first row fix the columns
        for path in (self.extra, self.eval):
            _keep_lines(path, lambda line: _step_of_json(line) <= step)
        self.columns: list[str] | None = None
        if self.csv.exists():
            with self.csv.open(newline="") as f:
                self.columns = next(csv.reader(f))[2:]

    def row(self, step: int, elapsed_s: float, values: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = list(values)
            self._append(self.csv, self._csv_line(["step", "elapsed_s", *self.columns]))
        cells = [str(step), f"{elapsed_s:.3f}", *(repr(values[k]) if k in values else ""
                                                   for k in self.columns)]
        self._append(self.csv, self._csv_line(cells))
        extra = {k: v for k, v in values.items() if k not in self.columns}
        if extra:
            self._append(self.extra, json.dumps({"step": step, **extra}) + "\n")

    def evaluation(self, step: int, results: dict) -> None:
        self._append(self.eval, json.dumps({"step": step, **results}, default=float) + "\n")

    @staticmethod
    def _csv_line(cells: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        return buffer.getvalue()

    @staticmethod
    def _append(path: Path, text: str) -> None:
        with path.open("a") as f:
            f.write(text)


# ----------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """Every global RNG state a training step may draw from, as JSON-able values: Python's
    ``random``, numpy's legacy global ``np.random``, torch's CPU generator (a list of byte
    values) and, when CUDA is available, each CUDA device's generator."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every global RNG back to a ``capture_rng()`` state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
