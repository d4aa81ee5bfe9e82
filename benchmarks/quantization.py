"""What action tokenization alone costs: reconstruction error and the jerk it adds.

For every ``n_bins`` x scheme (``tokenizers_mm.action``) an ``ActionTokenizer`` is fitted on
ALL the given actions (the question is the codec's own loss, not generalization), each episode
is encoded and decoded either from its bins alone (bin centres) or from bins + residual, and
the decoded sequences are compared with the originals:

* ``mae_accel`` (m/s^2), ``mae_steer`` (rad): mean |decoded - original| over all steps.
* ``jerk_p95`` (m/s^3): p95 of |diff(accel) / dt| pooled over the steps of all episodes (the
  jerk of the commanded acceleration sequence, differenced within each episode);
  ``jerk_p95_added`` = that of the decoded sequences minus that of the originals.
* ``steer_rate_p95`` (rad/s): p95 of |diff(steer) / dt|, and ``steer_rate_p95_added`` likewise.
* ``jerk_err_p95`` (m/s^3): p95 over steps of |jerk(decoded) - jerk(original)|, the per-step
  jerk error (the p95 difference above can be <= 0 while single steps get much rougher).
* ``bounds``: the tokenizer's ``(q_low, q_high)`` quantiles; ``(0, 1)`` = data min / max.

With the residual the only loss left is the clipping at the tokenizer's robust bounds
(q_low / q_high quantiles, 1% / 99% by default), which shows up in the error of the extremes.
Run ``python -m benchmarks.quantization DATASET_DIR [...]`` for the table of recorded expert
episodes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.metrics import format_table
from sim.interface import ACTION_FIELDS, DT
from sim.storage import read_episodes
from tokenizers_mm.action import ActionTokenizer

ACCEL, STEER = ACTION_FIELDS.index("accel"), ACTION_FIELDS.index("steer")
COLUMNS = ("bounds", "scheme", "n_bins", "decode", "mae_accel", "mae_steer", "max_err_accel",
           "max_err_steer", "jerk_p95", "jerk_p95_added", "jerk_err_p95", "steer_rate_p95",
           "steer_rate_p95_added")


def load_expert_actions(dataset_dir: str | Path) -> list[np.ndarray]:
    """The EXECUTED (T_i, 2) actions of every non-empty expert episode of a dataset directory."""
    out, policies = [], set()
    for ep in read_episodes(dataset_dir, load_frames=False):
        policies.add(ep.policy)
        if ep.policy == "expert" and ep.num_steps > 0:
            out.append(np.asarray(ep.actions, dtype=np.float64))
    if not out:
        raise ValueError(f"{dataset_dir}: no expert episodes with steps (policies found: {sorted(policies)})")
    return out


def _rates(seqs: Sequence[np.ndarray], dim: int, dt: float) -> np.ndarray:
    """diff(x[:, dim]) / dt of every sequence (differenced within each), concatenated."""
    rates = [np.diff(s[:, dim]) / dt for s in seqs if len(s) > 1]
    return np.concatenate(rates) if rates else np.zeros(0)


def _rate_p95(seqs: Sequence[np.ndarray], dim: int, dt: float) -> float:
    """p95 of |diff(x[:, dim]) / dt| pooled over sequences."""
    pooled = np.abs(_rates(seqs, dim, dt))
    return float(np.percentile(pooled, 95)) if len(pooled) else float("nan")


def _row(tok: ActionTokenizer, episodes: list[np.ndarray], residual: bool, dt: float,
         reference: dict[str, float]) -> dict:
    decoded = []
    for a in episodes:
        bins, res = tok.encode(a)
        decoded.append(tok.decode(bins, res if residual else None))
    err = np.abs(np.concatenate(decoded) - np.concatenate(episodes))
    jerk, steer_rate = _rate_p95(decoded, ACCEL, dt), _rate_p95(decoded, STEER, dt)
    jerk_err = np.abs(_rates(decoded, ACCEL, dt) - _rates(episodes, ACCEL, dt))
    return {
        "bounds": f"({tok.q_low:g}, {tok.q_high:g})",
        "scheme": tok.scheme,
        "n_bins": tok.n_bins,
        "decode": "bins+residual" if residual else "bins",
        "mae_accel": float(err[:, ACCEL].mean()),
        "mae_steer": float(err[:, STEER].mean()),
        "max_err_accel": float(err[:, ACCEL].max()),
        "max_err_steer": float(err[:, STEER].max()),
        "jerk_p95": jerk,
        "jerk_p95_added": jerk - reference["jerk_p95"],
        "jerk_err_p95": float(np.percentile(jerk_err, 95)) if len(jerk_err) else float("nan"),
        "steer_rate_p95": steer_rate,
        "steer_rate_p95_added": steer_rate - reference["steer_rate_p95"],
        "jerk_p95_original": reference["jerk_p95"],
        "steer_rate_p95_original": reference["steer_rate_p95"],
        "steps": int(err.shape[0]),
    }


def quantization_table(actions_per_episode: list[np.ndarray], dt: float = DT,
                       n_bins: Sequence[int] = (32, 64, 256),
                       schemes: Sequence[str] = ("uniform", "quantile"),
                       bounds: Sequence[tuple[float, float]] = ((0.01, 0.99),)) -> list[dict]:
    """One row per bounds x n_bins x scheme x {bins, bins+residual}; see the module docstring."""
    episodes = [np.asarray(a, dtype=np.float64) for a in actions_per_episode]
    if not episodes or any(a.ndim != 2 or a.shape[1] != len(ACTION_FIELDS) for a in episodes):
        shapes = [a.shape for a in episodes[:5]]
        raise ValueError(f"need a non-empty list of (T_i, {len(ACTION_FIELDS)}) arrays, got shapes {shapes}")
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    everything = np.concatenate(episodes)
    reference = {"jerk_p95": _rate_p95(episodes, ACCEL, dt),
                 "steer_rate_p95": _rate_p95(episodes, STEER, dt)}
    rows = []
    for q_low, q_high in bounds:
        for n in n_bins:
            for scheme in schemes:
                tok = ActionTokenizer.fit(everything, n, scheme, q_low=q_low, q_high=q_high)
                rows += [_row(tok, episodes, residual, dt, reference) for residual in (False, True)]
    return rows


def format_quantization_table(rows: list[dict]) -> str:
    """Aligned text table with the originals' p95 values in a header line."""
    if not rows:
        return "(no rows)"
    head = (f"{rows[0]['steps']} steps; original accel jerk p95 {rows[0]['jerk_p95_original']:.3f} m/s^3, "
            f"steer rate p95 {rows[0]['steer_rate_p95_original']:.4f} rad/s; errors in m/s^2 / rad")
    return head + "\n" + format_table(rows, COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    dirs = list(sys.argv[1:] if argv is None else argv)
    if not dirs:
        print("usage: python -m benchmarks.quantization DATASET_DIR [DATASET_DIR ...]", file=sys.stderr)
        return 2
    episodes = [a for d in dirs for a in load_expert_actions(d)]
    print(format_quantization_table(quantization_table(episodes, bounds=((0.01, 0.99), (0.0, 1.0)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
