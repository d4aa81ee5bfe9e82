"""Drive every policy of a finished ``benchmarks.plan_study`` on another setting than it was
trained in (e.g. dense traffic after a medium study), on the same held-out episodes as the
studies (``dagger_study.STUDY_SEED_OFFSET + i``, held-out phrasings), and compare its arms.

::

    python -m benchmarks.transfer_eval --study runs/hw_study --density dense --episodes 50

Writes ``STUDY/transfer_{scenario}_{density}/{expert,ARM_SEED}/metrics.json`` + ``episodes.csv``
(an evaluation already there is kept: rerun to resume) and ``summary.md`` with mean +- std over
training seeds and, for every arm after the first, the paired 95% bootstrap interval against
the first arm over (seed, episode) pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.dagger_combine import PAIRED, paired_bootstrap, paired_differences
from benchmarks.dagger_study import STUDY_SEED_OFFSET
from sim.atomic import atomic_output

METRICS = ("collision_rate", "off_road_rate", "progress_mean", "goal_success_rate", "jerk_long_p95", "jerk_lat_p95",
           "comfort_fraction")


def _policies(study: Path) -> dict[str, dict[int, Path]]:
    """arm -> training seed -> policy directory, from the study's ``seed_S/ARM/iter_000/policy``."""
    found: dict[str, dict[int, Path]] = {}
    for policy in sorted(study.glob("seed_*/*/iter_000/policy")):
        seed, arm = int(policy.parents[2].name.removeprefix("seed_")), policy.parents[1].name
        found.setdefault(arm, {})[seed] = policy
    if not found:
        raise ValueError(f"{study}: no policies (expected seed_S/ARM/iter_000/policy from benchmarks.plan_study)")
    return found


def run(args: argparse.Namespace, log=print) -> str:
    from vla.evaluation import evaluate
    from vla.parallel import RolloutPool

    study = Path(args.study)
    out = study / f"transfer_{args.scenario}_{args.density}"
    seeds = range(STUDY_SEED_OFFSET, STUDY_SEED_OFFSET + args.episodes)
    arms = _policies(study)

    def measured(name: str, policy: str) -> dict:
        target = out / name
        if (target / "metrics.json").is_file():
            metrics = json.loads((target / "metrics.json").read_text())
            if metrics.get("episodes") == args.episodes:
                return metrics
        log(f"evaluating {policy} on {args.episodes} held-out {args.scenario}/{args.density} episodes")
        return evaluate(policy, args.scenario, args.density, seeds, pool=pool, out=target,
                        progress=name).metrics

    with RolloutPool(args.workers) as pool:
        table = {"expert": [measured("expert", "expert")]}
        for arm, by_seed in arms.items():
            table[arm] = [measured(f"{arm}_{s}", str(p)) for s, p in sorted(by_seed.items())]
    lines = [f"# {', '.join(arms)} on {args.scenario}/{args.density} ({args.episodes} held-out episodes, "
             "held-out phrasings)", "", "| arm | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for arm, rows in table.items():
        cells = [f"{np.mean([r[k] for r in rows]):.3f}" + (f" ± {np.std([r[k] for r in rows], ddof=1):.3f}"
                                                             if len(rows) > 1 else "") for k in METRICS]
        lines.append(f"| {arm} (x{len(rows)}) | " + " | ".join(cells) + " |")
    names = list(arms)
    for arm in names[1:]:
        diffs = paired_differences((out / f"{names[0]}_{s}" / "episodes.csv", out / f"{arm}_{s}" / "episodes.csv")
                                   for s in sorted(set(arms[names[0]]) & set(arms[arm])))
        lines += ["", f"{arm} minus {names[0]}, paired over {len(diffs[PAIRED[0]])} episodes (95% bootstrap CI): "
                  + ", ".join(f"{c} {v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
                              for c, v in ((c, paired_bootstrap(d)) for c, d in diffs.items()))]
    text = "\n".join(lines) + "\n"
    with atomic_output(out / "summary.md") as tmp:
        tmp.write_text(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transfer_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a finished benchmarks.plan_study output directory")
    p.add_argument("--scenario", default="highway", help="setting to drive in (default: %(default)s)")
    p.add_argument("--density", default="dense", help="traffic density to drive in (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=50, help="held-out episodes per policy (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="rollout processes (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from sim.scenarios import check_scenario

        check_scenario(args.scenario, args.density)
        if args.episodes < 1 or args.workers < 1:
            raise ValueError("--episodes and --workers must be >= 1")
        print(run(args))
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
