"""Offline RL vs behavior cloning on a driving medium-replay dataset, over several training seeds.

    python -m benchmarks.offline_rl_driving --out RUN [--episodes 100] [--seeds 0 1 2]
        [--steps 3000] [--eval-episodes 50] [--density medium] [--jobs 2]

1. ``vla collect --recipe medium-replay`` records ``--episodes`` episodes (seeds 0..N-1) and
   writes them as one D4RL-layout file ``RUN/data.h5``.
2. For every training seed, four arms train on that same file for the same ``--steps``:
   ``bc-gaussian`` (IQL's actor by BC), ``iql``, ``bc-tanh`` (CQL's actor by BC) and ``cql``, the
   offline-RL arms in bf16 + compile (``vla train iql|cql ... --precision bfloat16 --compile``;
   CQL's penalty in bf16 too), the BC arms in float32 (BC has no penalty to speed up).
3. Each policy drives ``--eval-episodes`` held-out episodes (seeds from 5_000_000, disjoint from
   the data's) with ``vla eval``; ``RUN/summary.md`` / ``summary.json`` give mean +- sample std
   over the training seeds of collision, off-road, progress, jerk and driving score.

Every step is a subprocess of the real CLI and is skipped when its output exists, so a killed
run resumes where it stopped (use a fresh ``--out`` after changing code or options).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.reports import mean_std, write_json
from sim.atomic import atomic_output

EVAL_SEED = 5_000_000
"""Held-out evaluation seeds start here (the data uses seeds 0..episodes-1)."""
METRICS = ("collision_rate", "off_road_rate", "progress_mean", "jerk_long_p95", "jerk_lat_p95", "driving_score")
ARMS = {
    # arm: (vla train method, extra options)
    "bc-gaussian": ("iql", ["--bc"]),
    "iql": ("iql", ["--precision", "bfloat16", "--compile"]),
    "bc-tanh": ("cql", ["--bc"]),
    "cql": ("cql", ["--precision", "bfloat16", "--penalty-precision", "bfloat16", "--compile"]),
}


def _vla(*args: str) -> None:
    cmd = [sys.executable, "-m", "app.cli", *args]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {done.returncode}): {tail[0]}")


def collect(args: argparse.Namespace) -> Path:
    data = args.out / "data.h5"
    if not data.exists():
        print(f"collecting {args.episodes} medium-replay episodes ({args.scenario}/{args.density})", flush=True)
        _vla("collect", "--recipe", "medium-replay", "--episodes", str(args.episodes), "--cameras", "none",
             "--scenario", args.scenario, "--density", args.density, "--seed", "0",
             "--out", str(args.out / "episodes"), "--d4rl", str(data))
    return data


def train_and_eval(args: argparse.Namespace, data: Path, arm: str, seed: int) -> dict:
    run = args.out / f"{arm}_seed{seed}"
    metrics = run / "eval" / "metrics.json"
    if not metrics.exists():
        method, extra = ARMS[arm]
        if not (run / "policy" / "policy.json").exists():
            _vla("train", method, "--data", str(data), "--out", str(run), "--steps", str(args.steps),
                 "--seed", str(seed), "--scenario", args.scenario, "--density", args.density,
                 "--no-progress", *extra)
        _vla("eval", "--policy", str(run / "policy"), "--scenario", args.scenario, "--density", args.density,
             "--episodes", str(args.eval_episodes), "--seed", str(EVAL_SEED), "--no-gif", "--out", str(run / "eval"))
    print(f"done: {arm} seed {seed}", flush=True)
    return json.loads(metrics.read_text())


def summarize(results: dict[str, list[dict]]) -> dict:
    out = {}
    for arm, rows in results.items():
        out[arm] = {"seeds": len(rows)}
        for key in METRICS:
            values = [r[key] for r in rows]
            out[arm][key] = {**mean_std(values), "per_seed": [round(float(v), 4) for v in values]}
    return out


def format_summary(summary: dict, args: argparse.Namespace) -> str:
    title = (f"# Offline RL vs BC, {args.scenario}/{args.density} medium-replay ({args.episodes} episodes), "
             f"{args.steps} steps, {args.eval_episodes} held-out episodes per policy (seeds from {EVAL_SEED}); "
             f"mean ± std over training seeds {args.seeds}")
    lines = [title, "",
             "| arm | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for arm, row in summary.items():
        cells = [f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in METRICS]
        lines.append(f"| {arm} (x{row['seeds']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.offline_rl_driving", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run directory (an existing one is resumed)")
    p.add_argument("--episodes", type=int, default=100, help="medium-replay episodes (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--steps", type=int, default=3000, help="gradient steps per policy (default: %(default)s)")
    p.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per policy (default: %(default)s)")
    p.add_argument("--scenario", default="highway", help="scenario family (default: %(default)s)")
    p.add_argument("--density", default="medium", help="traffic density (default: %(default)s)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="arms to run (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="policies trained / evaluated at once (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("episodes", "steps", "eval_episodes", "jobs"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        data = collect(args)
        jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda job: train_and_eval(args, data, *job), jobs))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for (arm, _), row in zip(jobs, rows):
        results[arm].append(row)
    summary = summarize(results)
    write_json(args.out / "summary.json", {"args": {k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items()}, "arms": summary})
    text = format_summary(summary, args)
    with atomic_output(args.out / "summary.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
