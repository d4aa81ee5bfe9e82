"""What ``vla eval`` / ``vla collect`` write next to their episodes, each file written atomically.

Outputs of one evaluation directory
-----------------------------------
* ``metrics.json``: ONE object, the keys of ``benchmarks.metrics.aggregate`` (documented in
  ``benchmarks.metrics.METRIC_DOCS``; ``episodes`` is the number of episodes) plus the run:
  ``policy``, ``scenario``, ``density``, ``seed`` (episode i used seed + i). Sorted keys,
  2-space indent, strict JSON: NaN / inf become ``null`` (e.g. jerk with no samples).
* ``episodes.csv``: one row per episode, ``benchmarks.metrics.public(episode_metrics(ep))``,
  leading columns ``EPISODE_COLUMNS`` then the rest in ``episode_metrics`` order. Integral
  values are written as integers, others with ``repr`` (round-trip exact, ``inf`` / ``nan``
  as such, e.g. ``ttc_min`` = inf when nothing was ever on a collision course).
* ``trajectory.png``: speed, longitudinal acceleration and longitudinal jerk over time of one
  episode (the signals of ``benchmarks.metrics.kinematics``), nuPlan comfort bounds dashed.
* ``cameras.gif``: the 6-camera grid (``sim.render.render_grid``) of one episode, upscaled
  to about ``GIF_MIN_WIDTH`` pixels wide; at most ``GIF_MAX_FRAMES`` frames: a longer episode
  is subsampled with a constant stride and each frame lasts stride x 0.1 s (real time).

Every file goes to a temporary file in the same directory first, is fsync'ed and renamed onto
its name (``os.replace``), so a reader sees the old file or the whole new one, never a part.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sim.atomic import atomic_output
from benchmarks.metrics import (  # noqa: F401 (the record writers live with the metrics they write)
    EPISODE_COLUMNS,
    NUPLAN_COMFORT,
    format_table,
    goal_success_counts,
    kinematics,
    metrics_record,
    to_jsonable,
    write_episodes_csv,
    write_json,
)
from sim.episode import Episode

SUMMARY_COLUMNS = (
    "policy", "episodes", "collision_rate", "goal_success_rate", "progress_mean",
    "jerk_long_p95", "comfort_fraction", "ttc_min_p5", "driving_score",
)
"""The one-row table printed at the end of ``vla eval`` / ``vla collect``."""
GIF_MAX_FRAMES = 150
GIF_MIN_WIDTH = 384  # pixels; the camera grid is upscaled (nearest) by an integer factor
FRAME_SECONDS = 0.1


def mean_std(values: Sequence[float | None]) -> dict:
    """``{"mean", "std" (sample std; 0 for one value), "n"}`` of the values that are not None
    (e.g. one metric over training seeds); mean and std are None when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals)}


def summary_table(record: dict) -> str:
    """The one-row summary of a ``metrics_record``, then success per goal type."""
    table = format_table([record], SUMMARY_COLUMNS)
    by_type = record.get("goal_success_by_type") or {}
    if by_type:
        parts = ", ".join(f"{k} {v['successes']}/{v['episodes']}" for k, v in by_type.items())
        table += f"\ngoal success by type: {parts}"
    if record.get("talk_episodes"):
        table += (f"\nspoken during the drive: {record['talk_episodes']} episodes, acted within 1 s in "
                  f"{record['act_within_1s_rate']:.2f}, median {record['act_latency_s_median']:.1f} s, "
                  f"goal success {record['talk_goal_success_rate']:.2f}")
    return table


def said(row: dict) -> str:
    """An episode row's goal and what the passenger said: "goal: phrasing"."""
    return f"{row['goal_type']}: {row['command']}"


def phrasing_table(rows: Sequence[dict]) -> str:
    """Goal success per phrasing the passenger used (``episode_metrics``' ``command``), one line
    each ("successes/episodes  goal: phrasing"), goals then phrasings in sorted order."""
    lines = [f"  {f'{s}/{n}':>7s}  {k}" for k, (s, n) in goal_success_counts(rows, said).items()]
    return "\n".join(["goal success by phrasing:", *lines])


def plot_trajectory(path: str | Path, ep: Episode) -> None:
    """Speed, longitudinal acceleration and jerk of ``ep`` over time (3 stacked plots); atomic."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    k = kinematics(ep)
    t = np.arange(len(k["speed"])) * float(ep.dt)
    c = NUPLAN_COMFORT
    fig = Figure(figsize=(8, 7), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    panels = (
        ("speed", "speed [m/s]", []),
        ("accel_long", "accel long [m/s²]", [c["accel_long_min"], c["accel_long_max"]]),
        ("jerk_long", "jerk long [m/s³]", [-c["jerk_long_abs_max"], c["jerk_long_abs_max"]]),
    )
    for ax, (name, label, bounds) in zip(axes, panels):
        ax.plot(t, k[name], color="tab:blue", lw=1.2)
        for i, b in enumerate(bounds):
            ax.axhline(b, color="tab:red", ls="--", lw=0.9, label="nuPlan comfort bound" if i == 0 else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if ep.goal.target_speed > 0:
        axes[0].axhline(ep.goal.target_speed, color="tab:green", ls="--", lw=0.9, label="goal speed")
        axes[0].legend(loc="lower right", fontsize=8)
    axes[1].legend(loc="lower right", fontsize=8)
    axes[2].set_xlabel("time [s]")
    fig.suptitle(f"{ep.scenario}/{ep.density} seed {ep.seed}, policy {ep.policy}: "
                 f"goal {ep.goal.label}, outcome {ep.outcome}", fontsize=10)
    with atomic_output(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def camera_grid_frames(ep: Episode, max_frames: int = GIF_MAX_FRAMES) -> tuple[np.ndarray, int]:
    """(F, H, W, 3) uint8 grid images of ``ep``'s frames, F <= max_frames, and the stride used."""
    import cv2

    from sim.render import render_grid

    if ep.frames is None or len(ep.frames) == 0:
        raise ValueError(f"episode seed {ep.seed} has no camera frames to animate")
    stride = max(1, math.ceil(len(ep.frames) / max_frames))
    names = [cam.name for cam in ep.cameras]
    grids = [render_grid(f, names) for f in ep.frames[::stride]]
    scale = max(1, GIF_MIN_WIDTH // grids[0].shape[1])
    if scale > 1:
        h, w = grids[0].shape[:2]
        grids = [cv2.resize(g, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) for g in grids]
    return np.stack(grids), stride


def write_camera_gif(path: str | Path, ep: Episode, max_frames: int = GIF_MAX_FRAMES) -> int:
    """Animate ``ep``'s camera grid as a looping GIF (real time); returns the frame count."""
    import imageio.v3 as iio

    frames, stride = camera_grid_frames(ep, max_frames)
    with atomic_output(path, keep_suffix=True) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=round(1000 * FRAME_SECONDS * stride), loop=0)
    return len(frames)
