"""``python -m benchmarks.paired_compare --a DIR... --b DIR...``: arm B against arm A on the same
held-out episodes, from ``vla eval --out`` directories.

The i-th directory of ``--a`` and of ``--b`` are the same training seed of the two recipes;
inside each pair, episodes are matched by their seed (both must have driven the same ones).
Prints each arm's mean per metric, goal success per directory, per goal type and (when the
files have the ``command`` column, ``vla eval`` writes it since 2026-12) per phrasing the
passenger used, and B minus A with a 95% percentile-bootstrap interval over all (training
seed, episode) pairs. Evaluations with a command during the drive (``vla eval --talk drive``)
also compare acting on it within 1 s (``benchmarks.metrics.act_latency``) and its goal success,
over the episodes where both arms heard one (the env words it from the state the car is in, so
an arm that crawled may hear none). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from operator import itemgetter
from pathlib import Path

import numpy as np

from benchmarks.dagger_combine import episode_rows, paired_bootstrap
from benchmarks.metrics import goal_success_counts
from benchmarks.reports import said

METRICS = ("goal_success", "collided", "off_road", "progress", "jerk_long_p95", "jerk_lat_p95", "comfort_fraction")
"""Per-episode columns of ``episodes.csv`` compared."""


def read_episodes_csv(directory: str | Path) -> dict[str, dict[str, str]]:
    """episode seed -> row of ``DIR/episodes.csv``; ``ValueError`` naming the file when missing
    or lacking a compared column."""
    path = Path(directory) / "episodes.csv"
    try:
        return episode_rows(path, ("goal_type", *METRICS))
    except OSError as e:
        raise ValueError(f"{path}: not readable ({e.strerror or e})") from None


def compare(a_dirs: list[str], b_dirs: list[str], resamples: int = 10_000) -> dict:
    if len(a_dirs) != len(b_dirs) or not a_dirs:
        raise ValueError(f"--a and --b need the same number (>= 1) of directories, got {len(a_dirs)} and {len(b_dirs)}")
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    means: dict[str, dict[str, list[float]]] = {"a": {m: [] for m in METRICS}, "b": {m: [] for m in METRICS}}
    per_dir: dict[str, list[float]] = {"a": [], "b": []}
    rows: dict[str, list[dict]] = {"a": [], "b": []}
    talk: dict[str, list[float]] = {"a_within_1s": [], "b_within_1s": [], "a_goal": [], "b_goal": [],
                                    "a_within_1s_cf": [], "b_within_1s_cf": []}
    for da, db in zip(a_dirs, b_dirs):
        ea, eb = read_episodes_csv(da), read_episodes_csv(db)
        if set(ea) != set(eb):
            raise ValueError(f"{da} and {db} drove different episodes ({len(set(ea) ^ set(eb))} seeds differ)")
        for arm, episodes in (("a", ea), ("b", eb)):
            per_dir[arm].append(float(np.mean([float(r["goal_success"]) for r in episodes.values()])))
            rows[arm] += episodes.values()
        for seed in sorted(ea):
            for m in METRICS:
                va, vb = float(ea[seed][m]), float(eb[seed][m])
                means["a"][m].append(va)
                means["b"][m].append(vb)
                diffs[m].append(vb - va)
            if all(_heard_during(r) for r in (ea[seed], eb[seed])):
                for arm, r in (("a", ea[seed]), ("b", eb[seed])):
                    talk[f"{arm}_within_1s"].append(float(float(r["act_latency_s"]) <= 1.0 + 1e-9))
                    talk[f"{arm}_goal"].append(float(r["goal_success"]))
                cf = [float(r.get("act_latency_cf_s") or "nan") for r in (ea[seed], eb[seed])]
                if not np.isnan(cf).any():  # both drove the branch without the words
                    for arm, v in zip("ab", cf):
                        talk[f"{arm}_within_1s_cf"].append(float(v <= 1.0 + 1e-9))
    return {
        "pairs": len(diffs["goal_success"]),
        "a": {m: float(np.mean(v)) for m, v in means["a"].items()},
        "b": {m: float(np.mean(v)) for m, v in means["b"].items()},
        "b_minus_a": {m: paired_bootstrap(d, resamples=resamples) for m, d in diffs.items()},
        "goal_success_per_dir": per_dir,
        "goal_success_by_type": {arm: _fractions(v, itemgetter("goal_type")) for arm, v in rows.items()},
        # files from before vla eval wrote the command column have no per-phrasing counts
        "goal_success_by_command": {arm: _fractions(v, said) for arm, v in rows.items()}
        if all("command" in r for v in rows.values() for r in v) else None,
        "talk": _talk_summary(talk, resamples) if talk["a_goal"] else None,
    }


def _heard_during(row: dict) -> bool:
    """The episode heard a command during the drive (files without the column: none did)."""
    return float(row.get("heard_at_s") or 0.0) > 0


def _talk_summary(talk: dict[str, list[float]], resamples: int) -> dict:
    """Acting within 1 s and goal success over the episodes where both arms heard a command
    during the drive: each arm's rate and B minus A with its paired interval; acting within 1 s
    against the branch without the words (``act_latency_cf``) over the pairs where both drove it
    (None where none did)."""
    out: dict = {"pairs": len(talk["a_goal"]), "cf_pairs": len(talk["a_within_1s_cf"])}
    for name in ("within_1s", "goal", "within_1s_cf"):
        a, b = np.array(talk[f"a_{name}"]), np.array(talk[f"b_{name}"])
        out[name] = None if not len(a) else {
            "a": float(a.mean()), "b": float(b.mean()), "b_minus_a": paired_bootstrap(b - a, resamples=resamples)}
    return out


def _fractions(rows: list[dict], key) -> dict[str, str]:
    return {k: f"{s}/{n}" for k, (s, n) in goal_success_counts(rows, key).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.paired_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", nargs="+", required=True, help="arm A: vla eval --out directories, one per training seed")
    ap.add_argument("--b", nargs="+", required=True, help="arm B: the same training seeds, in the same order")
    args = ap.parse_args(argv)
    try:
        report = compare(args.a, args.b)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report['pairs']} episode pairs; B minus A with 95% bootstrap intervals")
    for m, r in report["b_minus_a"].items():
        print(f"  {m:16s} A {report['a'][m]:.3f}  B {report['b'][m]:.3f}  B-A {r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
    for arm in ("a", "b"):
        per = " / ".join(f"{x:.2f}" for x in report["goal_success_per_dir"][arm])
        kinds = ", ".join(f"{g} {c}" for g, c in report["goal_success_by_type"][arm].items())
        print(f"  {arm.upper()} goal success per directory {per}; by type {kinds}")
    if report["talk"] is not None:
        t = report["talk"]
        print(f"  commands during the drive, {t['pairs']} pairs where both arms heard one:")
        for name, label in (("within_1s", "acted within 1 s"), ("goal", "goal success"),
                            ("within_1s_cf", f"acted within 1 s against the car without the words ({t['cf_pairs']} pairs)")):
            if t[name] is None:
                continue
            r = t[name]["b_minus_a"]
            print(f"    {label:16s} A {t[name]['a']:.3f}  B {t[name]['b']:.3f}  B-A {r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
    if report["goal_success_by_command"] is not None:
        print("  goal success by phrasing (A | B):")
        a, b = report["goal_success_by_command"]["a"], report["goal_success_by_command"]["b"]
        for c in sorted(set(a) | set(b)):
            print(f"    {a.get(c, '-'):>7s} | {b.get(c, '-'):>7s}  {c}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
