"""BC-only vs DAgger vs the expert, on held-out seeds, several training seeds per arm.

::

    python -m benchmarks.dagger_study --out runs/study --densities medium dense --seeds 0 1 2 \\
        --eval-episodes 50

For every density and training seed:

* **dagger**: a ``methods.dagger`` session (iteration 0 = BC on ``expert_episodes`` expert
  episodes, then ``iterations`` rounds of ``rollouts`` expert-labelled policy rollouts);
* **bc**: BC-only with the SAME label budget and the same number of gradient steps: one
  session with no DAgger iteration, ``expert_episodes + iterations * rollouts`` expert
  episodes and ``(iterations + 1) * train_steps`` steps. What differs is only where the
  labelled states come from (the expert's own states vs the policy's);
* both final policies and the expert drive the same ``eval_episodes`` held-out seeds
  (``STUDY_SEED_OFFSET + i``, never used for training) with held-out spoken phrasings.

Files: ``OUT/<density>/seed_<s>/{dagger,bc}/`` (the sessions, resumable),
``OUT/<density>/seed_<s>/eval_{dagger,bc}/`` and ``OUT/<density>/eval_expert/``
(``metrics.json`` + ``episodes.csv``), and ``OUT/study.json`` / ``OUT/study.md``: per density
and arm, the mean and the spread (sample standard deviation) over training seeds of each
metric, and goal success per goal type pooled over seeds. Everything resumes: run the same
command again after an interruption.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from benchmarks.reports import mean_std, to_jsonable, write_json
from sim.atomic import atomic_output
from vla.evaluation import evaluate
from vla.parallel import RolloutPool

STUDY_SEED_OFFSET = 3_000_000
"""Evaluation seeds of the study: disjoint from training (seed * 100000 + ...) and from the
sessions' own per-iteration evaluation seeds (1_000_000 + ...)."""
METRICS = ("collision_rate", "off_road_rate", "progress_mean", "goal_success_rate", "jerk_long_p95",
           "jerk_lat_p95", "comfort_fraction", "ttc_min_p5", "driving_score")
ARMS = ("expert", "bc", "dagger")


def _evaluate(pool: RolloutPool, policy: str, cameras: bool, scenario: str, density: str,
              episodes: int, out: Path, log) -> dict:
    """``policy`` on the study's held-out episodes (``vla.evaluation.evaluate``); a finished
    evaluation (its metrics.json) is read back instead of run again."""
    path = out / "metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    log(f"evaluating {policy} on {episodes} held-out episodes ({scenario}/{density})")
    return evaluate(policy, scenario, density, range(STUDY_SEED_OFFSET, STUDY_SEED_OFFSET + episodes),
                    cameras=cameras, pool=pool, out=out).metrics


def _goal_types(records: list[dict]) -> dict:
    pooled: dict[str, list[int]] = {}
    for rec in records:
        for goal, counts in (rec.get("goal_success_by_type") or {}).items():
            total = pooled.setdefault(goal, [0, 0])
            total[0] += counts["successes"]
            total[1] += counts["episodes"]
    return {goal: {"successes": s, "episodes": n, "rate": s / n if n else None} for goal, (s, n) in sorted(pooled.items())}


def summarize(per_arm: dict[str, list[dict]]) -> dict:
    return {arm: {"metrics": {m: mean_std([r.get(m) for r in recs]) for m in METRICS},
                  "goal_success_by_type": _goal_types(recs), "runs": len(recs)}
            for arm, recs in per_arm.items()}


def format_summary(summary: dict) -> str:
    lines = []
    for density, arms in summary.items():
        lines.append(f"\n### {density}\n")
        lines.append("| arm | " + " | ".join(METRICS) + " |")
        lines.append("|---|" + "---|" * len(METRICS))
        for arm, s in arms.items():
            cells = []
            for m in METRICS:
                v = s["metrics"][m]
                cells.append("n/a" if v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}")
            lines.append(f"| {arm} (x{s['runs']}) | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("goal success per type (pooled over seeds): " + "; ".join(
            f"{arm}: " + ", ".join(f"{g} {v['successes']}/{v['episodes']}" for g, v in s["goal_success_by_type"].items())
            for arm, s in arms.items()))
    return "\n".join(lines)


def run_study(args: argparse.Namespace, log=print) -> dict:
    from methods.dagger import DaggerSession
    from methods.session_options import dagger_config

    base = dagger_config(args, args.scenario, args.densities[0], seed=0)  # validates before any write
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    with RolloutPool(args.workers) as pool:
        for density in args.densities:
            per_arm: dict[str, list[dict]] = {arm: [] for arm in ARMS}
            per_arm["expert"].append(_evaluate(pool, "expert", False, args.scenario, density, args.eval_episodes,
                                               out / density / "eval_expert", log))
            for seed in args.seeds:
                run = out / density / f"seed_{seed}"
                dagger = replace(base, density=density, seed=seed)
                bc = replace(dagger, iterations=0,
                             expert_episodes=base.expert_episodes + base.iterations * base.rollouts,
                             train_steps=(base.iterations + 1) * base.train_steps)
                for arm, cfg in (("bc", bc), ("dagger", dagger)):
                    log(f"== {density} seed {seed}: {arm} session")
                    DaggerSession(cfg, run / arm, log=log).run_all()
                    policy = str(run / arm / f"iter_{cfg.iterations:03d}" / "policy")
                    per_arm[arm].append(_evaluate(pool, policy, cfg.policy.cameras, args.scenario, density,
                                                  args.eval_episodes, run / f"eval_{arm}", log))
            summary[density] = summarize(per_arm)
            _write(out, summary, args)
    return summary


def _write(out: Path, summary: dict, args: argparse.Namespace) -> None:
    record = {"config": {k: v for k, v in vars(args).items() if k != "func"}, "summary": summary}
    write_json(out / "study.json", to_jsonable(record))
    with atomic_output(out / "study.md") as tmp:
        tmp.write_text("# BC-only vs DAgger vs expert (mean ± std over training seeds)\n" + format_summary(summary) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from methods.session_options import add_session_args

    p = argparse.ArgumentParser(prog="python -m benchmarks.dagger_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="study directory (resumed when it exists)")
    p.add_argument("--scenario", default="highway")
    p.add_argument("--densities", nargs="+", default=["medium", "dense"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds per arm")
    p.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per policy")
    add_session_args(p, train_steps=600, eval_option="--iter-eval-episodes", eval_default=5)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.eval_episodes < 1:
        raise SystemExit("dagger_study: error: --eval-episodes must be >= 1")
    try:
        summary = run_study(args, log=lambda line: print(line, flush=True))
    except ValueError as e:  # a bad option (DaggerConfig / PolicyConfig validation)
        raise SystemExit(f"dagger_study: error: {e}") from None
    print(format_summary(summary))
    print(f"wrote {Path(args.out) / 'study.json'} and {Path(args.out) / 'study.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
