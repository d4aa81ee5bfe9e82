"""Combine ``benchmarks.dagger_study`` runs made with different training seeds (e.g. one process
per seed, side by side) into one table, with paired bootstrap confidence intervals of
DAgger minus BC over the held-out episodes both arms drove.

::

    python -m benchmarks.dagger_combine --out runs/study_all runs/study_s0 runs/study_s1 runs/study_s2

Per density found in the first study: the expert's evaluation (from the first study; every
study drives the same held-out seeds), each training seed's ``eval_bc`` / ``eval_dagger``
``metrics.json`` (mean ± sample std over training seeds, as ``dagger_study`` reports), and,
pairing the two arms of one training seed on each held-out episode, the mean per-episode
difference with a 95% percentile-bootstrap interval (``PAIRED``). Writes ``OUT/study.json``
and ``OUT/study.md`` (atomically) and prints the markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.dagger_study import format_summary, summarize
from benchmarks.reports import to_jsonable, write_json
from sim.atomic import atomic_output

PAIRED = ("collided", "off_road", "progress", "goal_success", "driving_score")
"""Per-episode columns of ``episodes.csv`` compared pairwise (DAgger minus BC)."""


def paired_bootstrap(diffs, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of per-pair differences and its percentile-bootstrap interval (pairs resampled
    with replacement): ``{"mean", "lo", "hi", "n"}``."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    return {"mean": float(d.mean()), "lo": float(np.percentile(means, tail)),
            "hi": float(np.percentile(means, 100.0 - tail)), "n": int(d.size)}


def episode_rows(path: Path, columns: tuple[str, ...] = PAIRED) -> dict[str, dict]:
    """Episode seed -> row of an ``episodes.csv`` (``vla eval``'s); ``ValueError`` naming the file
    when it lacks ``seed`` or one of ``columns``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("seed", *columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}")
        return {row["seed"]: row for row in reader}


def paired_differences(pairs) -> dict[str, list[float]]:
    """``PAIRED`` column -> per-episode differences (other minus base) over the episode seeds
    both ``episodes.csv`` of each ``(base, other)`` pair drove."""
    diffs: dict[str, list[float]] = {c: [] for c in PAIRED}
    for base_csv, other_csv in pairs:
        base, other = episode_rows(Path(base_csv)), episode_rows(Path(other_csv))
        for ep in sorted(base.keys() & other.keys()):
            for column in PAIRED:
                diffs[column].append(float(other[ep][column]) - float(base[ep][column]))
    return diffs


def combine(studies: list[Path]) -> dict:
    """``{density: {"arms": summarize(...), "paired": {column: paired_bootstrap}, "seeds": [...]}}``."""
    for study in studies:
        if not (study / "study.json").exists():
            raise ValueError(f"{study} is not a finished dagger_study run (no study.json)")
    densities = sorted(p.name for p in studies[0].iterdir() if (p / "eval_expert" / "metrics.json").exists())
    if not densities:
        raise ValueError(f"{studies[0]} has no <density>/eval_expert/metrics.json")
    result = {}
    for density in densities:
        per_arm: dict[str, list[dict]] = {"expert": [json.loads((studies[0] / density / "eval_expert" / "metrics.json").read_text())],
                                          "bc": [], "dagger": []}
        diffs: dict[str, list[float]] = {c: [] for c in PAIRED}
        seeds = []
        for study in studies:
            for run in sorted((study / density).glob("seed_*")):
                if run.name in seeds:
                    raise ValueError(f"training {run.name} of {density} appears in two studies ({run})")
                if not (run / "eval_dagger" / "metrics.json").exists():
                    raise ValueError(f"{run} has no eval_dagger/metrics.json (an unfinished study?)")
                seeds.append(run.name)
                for arm in ("bc", "dagger"):
                    per_arm[arm].append(json.loads((run / f"eval_{arm}" / "metrics.json").read_text()))
                bc, dagger = episode_rows(run / "eval_bc" / "episodes.csv"), episode_rows(run / "eval_dagger" / "episodes.csv")
                if bc.keys() != dagger.keys():
                    raise ValueError(f"{run}: eval_bc and eval_dagger drove different episode seeds")
                for ep in bc:
                    for column in PAIRED:
                        diffs[column].append(float(dagger[ep][column]) - float(bc[ep][column]))
        if not seeds:
            raise ValueError(f"no seed_* runs for {density} in {[str(s) for s in studies]}")
        result[density] = {"arms": summarize(per_arm), "seeds": seeds,
                           "paired": {c: paired_bootstrap(v) for c, v in diffs.items()}}
    return result


def format_combined(result: dict) -> str:
    lines = ["# BC-only vs DAgger vs expert (mean ± std over training seeds)"]
    for density, r in result.items():
        lines.append(format_summary({density: r["arms"]}))
        n = next(iter(r["paired"].values()))["n"]
        lines += ["", f"Paired DAgger minus BC over {n} (training seed, held-out episode) pairs, "
                      f"training seeds {', '.join(s.removeprefix('seed_') for s in r['seeds'])}:", "",
                  "| per-episode metric | DAgger - BC | 95% bootstrap CI |", "|---|---|---|"]
        lines += [f"| {c} | {p['mean']:+.3f} | [{p['lo']:+.3f}, {p['hi']:+.3f}] |" for c, p in r["paired"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dagger_combine", description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="+", help="dagger_study --out directories (different training seeds)")
    p.add_argument("--out", required=True, help="directory for study.json and study.md")
    args = p.parse_args(argv)
    try:
        result = combine([Path(s) for s in args.studies])
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", to_jsonable({"studies": args.studies, "result": result}))
    text = format_combined(result)
    with atomic_output(out / "study.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
