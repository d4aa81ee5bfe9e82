"""Data-parallel training over several processes (``torchrun`` / ``accelerate launch``): every
process holds the whole model, takes its share of each global batch, and the gradients are
averaged before the optimizer step, so N processes follow one process's trajectory.

``vla.train_loop`` calls this module; a process learns its rank and the world size from the
environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and
joins the process group on first use (gloo on CPU, NCCL when it trains on CUDA: ``use_device``). Without those
variables everything here is a no-op: one process, rank 0.

How a step is split: the loop draws the global batch (``TrainConfig.batch_size`` indices, the
same on every rank because the order is a pure function of the seed), rank r takes the r-th of
``WORLD_SIZE`` near-equal contiguous parts and the method's ``update`` computes its loss on
them. ``sync_gradients`` (called by the method between ``backward`` and gradient clipping)
replaces each gradient by the share-weighted sum over ranks, ``sum_r (n_r / n) g_r``. A loss
that is a mean over samples then gives exactly the one-process gradient; the policy's token
losses are means over VALID tokens (masked past an episode's end), so where the parts hold
different numbers of valid tokens the result is a close approximation, as with PyTorch's own
DDP, which averages per-process means. Logged values are reduced the same way. Only rank 0
writes checkpoints, logs and the final policy; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

_WEIGHT = [1.0]
"""This rank's share of the current global batch (set by ``shard_weight``)."""
_DEVICE = ["cpu"]
"""The device this process trains on (``use_device``); picks the collective backend."""


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) without one."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ValueError(f"RANK / WORLD_SIZE must be integers, got {os.environ.get('RANK')!r} / "
                         f"{os.environ.get('WORLD_SIZE')!r}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK {rank} / WORLD_SIZE {size} is not a valid process layout")
    return rank, size


def active() -> bool:
    """True when this process is one of several (and has joined their group)."""
    if world()[1] == 1:
        return False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if _DEVICE[0].startswith("cuda") else "gloo",
                                             timeout=datetime.timedelta(minutes=timeout_minutes()))
    return True


def use_device(device: str) -> None:
    """Train on ``device`` (before the first collective): NCCL for CUDA devices, gloo otherwise;
    the default is the CPU."""
    if torch.distributed.is_initialized() and device.split(":")[0] != _DEVICE[0].split(":")[0]:
        raise RuntimeError(f"the process group already runs on {_DEVICE[0]}; cannot switch to {device}")
    _DEVICE[0] = device


TIMEOUT_ENV = "VLA_DDP_TIMEOUT_MIN"
"""Minutes a collective (a barrier) may wait for the other ranks before the run fails; long, because
in a DAgger session the other ranks wait at a barrier while rank 0 drives its rollouts."""
DEFAULT_TIMEOUT_MIN = 360


def timeout_minutes() -> float:
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        minutes = float(value) if value else DEFAULT_TIMEOUT_MIN
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of minutes, got {value!r}") from None
    if not minutes > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0, got {value!r}")
    return minutes


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return world()[0] == 0


def shard(indices: np.ndarray) -> tuple[np.ndarray, float]:
    """This rank's contiguous part of a global batch and its share of it. A rank whose part
    is empty (a batch smaller than the world) gets the first index with share 0, so every rank
    still runs the same collective calls."""
    if not active():
        return indices, 1.0
    positions, weight = _part(len(indices))
    return indices[positions], weight


def shard_positions(n: int) -> np.ndarray:
    """The positions in a global batch of ``n`` that ``shard`` gives this rank."""
    return _part(n)[0]


def _part(n: int) -> tuple[np.ndarray, float]:
    rank, size = world()
    mine = np.array_split(np.arange(n), size)[rank]
    if len(mine) == 0:
        return np.zeros(1, dtype=np.int64), 0.0
    return mine, len(mine) / n


@contextmanager
def shard_weight(weight: float) -> Iterator[None]:
    """Within the block, ``sync_gradients`` and ``reduce_logs`` weight this rank by ``weight``."""
    previous = _WEIGHT[0]
    _WEIGHT[0] = float(weight)
    try:
        yield
    finally:
        _WEIGHT[0] = previous


def sync_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by the share-weighted sum over ranks (one all-reduce of one flat
    buffer); a no-op in a single process. Every rank must call it with the same parameters."""
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * _WEIGHT[0]
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def reduce_logs(logs: dict[str, float]) -> dict[str, float]:
    """Share-weighted sum over ranks of each logged value (the same keys on every rank); keys
    that are already global (``grad_norm`` after ``sync_gradients``, ``lr``) come out unchanged
    because every rank holds the same value and the shares sum to 1."""
    if not active():
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_DEVICE[0]) * _WEIGHT[0]
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    reduced = dict(zip(keys, values.cpu().tolist()))
    return {k: reduced[k] for k in logs}  # in update's order, as log.csv's columns are in one process


def barrier() -> None:
    if active():
        torch.distributed.barrier()
