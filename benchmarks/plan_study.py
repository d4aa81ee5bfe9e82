"""The action-space ablation: raw-control chunks vs plan + tracker, with and without DART, on the
same expert data and the same gradient steps (issue "Policies that drive like the expert").

::

    python -m benchmarks.plan_study --out runs/plan_study --density medium --seeds 0 1 2 \\
        --expert-episodes 40 --train-steps 1500 --eval-episodes 50

Per training seed S every arm is a ``methods.dagger.DaggerSession`` with ``iterations = 0`` (BC
on the expert's episodes, seeds ``S * 100000 + i``), clean or with DART bursts
(``sim.rollout.DartNoise``). The first session of each kind records them; later arms of that
kind start from a copy (the episodes they would record themselves: they depend only on seed and
noise), so arms differ only in what ``ARMS`` says. Each policy is then
driven on the same held-out episodes (``dagger_study.STUDY_SEED_OFFSET + i``, held-out spoken
phrasings); arms are compared with the expert and, per episode, with the first arm
(``--baseline``) through paired bootstrap intervals. Everything resumes: a finished piece
(recording, session, evaluation) is kept. Writes ``OUT/study.json`` / ``OUT/study.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.dagger_combine import PAIRED, paired_bootstrap, paired_differences
from benchmarks.dagger_study import _evaluate, format_summary, summarize
from benchmarks.reports import to_jsonable, write_json
from sim.atomic import atomic_output
from sim.storage import count_episodes
from vla.parallel import RolloutPool

FORECAST_WEIGHT = 0.5
"""The forecasting arm's loss weight (the value of the junction's dev run, docs/drive_like_expert.md)."""

ARMS = {
    "control_dart": {"action": "control", "dart": True},
    "plan": {"action": "plan", "dart": False},
    "plan_dart": {"action": "plan", "dart": True},
    "control": {"action": "control", "dart": False},
    "plan_dart_relabel": {"action": "plan", "dart": True, "relabel": True},
    "plan_dart_forecast": {"action": "plan", "dart": True, "policy": {"forecast_weight": FORECAST_WEIGHT}},
}
"""Arm name -> the policy's action space, whether its expert data had DART bursts, whether it
is goal-relabelled (the expert's plan under every other highway goal at every ``--label-every``-th
recorded state, ``Episode.goal_futures``) and ``PolicyConfig`` fields it sets (the auxiliary
heads' ablation: ``plan_dart_forecast`` adds PlanT's actor-forecasting loss to ``plan_dart``)."""


def run_study(args: argparse.Namespace, log=print) -> dict:
    from methods.dagger import DaggerSession
    from methods.session_options import dagger_config

    arms = args.arms
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
    args.iterations, args.rollouts = 0, 1
    base = dagger_config(args, args.scenario, args.density, seed=0)  # validates before any write
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_arm: dict[str, list[dict]] = {"expert": [], **{a: [] for a in arms}}
    with RolloutPool(args.workers) as pool:
        per_arm["expert"].append(_evaluate(pool, "expert", False, args.scenario, args.density,
                                           args.eval_episodes, out / "eval_expert", log))
        for seed in args.seeds:
            run = out / f"seed_{seed}"
            recorded: dict[tuple, Path] = {}  # (dart, relabel) -> the first session's iteration-0 episodes
            for arm in arms:
                spec = ARMS[arm]
                relabel = spec.get("relabel", False)
                session_dir = run / arm
                target = session_dir / "data" / "iter_000"
                source = recorded.setdefault((spec["dart"], relabel), target)
                if source != target and count_episodes(target) < count_episodes(source) == base.expert_episodes:
                    shutil.rmtree(target, ignore_errors=True)  # the same episodes the session would record
                    shutil.copytree(source, target)
                cfg = replace(base, seed=seed, dart=spec["dart"], threads=args.threads, goal_relabel=relabel,
                              policy=replace(base.policy, action=spec["action"], **spec.get("policy", {})))
                log(f"== seed {seed}: {arm}")
                DaggerSession(cfg, session_dir, log=log).run_all()
                per_arm[arm].append(_evaluate(pool, str(session_dir / "iter_000" / "policy"), False, args.scenario,
                                              args.density, args.eval_episodes, run / f"eval_{arm}", log))
            _write(out, args, per_arm, arms)
    return _write(out, args, per_arm, arms)


def _pooled_paired(out: Path, args, arms) -> dict:
    """Paired differences pooled over all training seeds' episodes (arm minus the baseline)."""
    result = {}
    for arm in arms[1:]:
        pairs = [(out / f"seed_{s}" / f"eval_{arms[0]}" / "episodes.csv", out / f"seed_{s}" / f"eval_{arm}" / "episodes.csv")
                 for s in args.seeds]
        diffs = paired_differences([(a, b) for a, b in pairs if a.exists() and b.exists()])
        if diffs[PAIRED[0]]:
            result[arm] = {c: paired_bootstrap(v) for c, v in diffs.items()}
    return result


def _write(out: Path, args, per_arm: dict, arms) -> dict:
    summary = {args.density: summarize({k: v for k, v in per_arm.items() if v})}
    paired = _pooled_paired(out, args, arms)
    record = {"config": {k: v for k, v in vars(args).items() if k != "func"}, "summary": summary,
              "paired_vs_baseline": paired}
    write_json(out / "study.json", to_jsonable(record))
    lines = [format_summary(summary), "", f"paired, arm minus {arms[0]} (95% bootstrap CI over episodes):", ""]
    lines.append("| arm | " + " | ".join(PAIRED) + " |")
    lines.append("|---|" + "---|" * len(PAIRED))
    for arm, cols in paired.items():
        lines.append(f"| {arm} | " + " | ".join(
            f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for v in cols.values()) + " |")
    text = "\n".join(lines) + "\n"
    with atomic_output(out / "study.md") as tmp:
        tmp.write_text(text)
    return {"summary": summary, "paired": paired, "text": text}


def build_parser() -> argparse.ArgumentParser:
    from methods.session_options import add_session_args

    p = argparse.ArgumentParser(prog="python -m benchmarks.plan_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="study directory (resumed when it exists)")
    p.add_argument("--scenario", default="highway", help="scenario family (default: %(default)s)")
    p.add_argument("--density", default="medium", help="traffic density (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--arms", nargs="+", default=["control_dart", "plan", "plan_dart"],
                   help=f"arms, the first is the paired baseline; from {list(ARMS)} (default: %(default)s)")
    p.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per policy (default: %(default)s)")
    add_session_args(p, train_steps=1500, eval_option="--session-eval-episodes", eval_default=1)
    p.set_defaults(no_cameras=True, expert_episodes=40, threads=2)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run_study(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
