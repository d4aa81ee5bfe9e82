"""Learning curves of BC and DAgger over expert-label budgets: one policy for every setting,
several training seeds, held-out episodes, paired intervals (issue "Policies that drive like
the expert", item 7).

::

    python -m benchmarks.learning_curve --out runs/curve --scenarios highway intersection \\
        --densities medium dense --budgets 40 80 160 --seeds 0 1 2 --eval-episodes 50

(defaults: blind plan policy in the lane frame, DART and goal-relabelled expert data with plan
labels at every 3rd state, 4 DAgger iterations with the learner driving).

A budget B counts expert-labelled episodes (over all settings: B / S per setting). For every
training seed and budget:

* **bc**: a ``methods.dagger.DaggerSession`` without DAgger iterations on B expert episodes;
* **dagger**: a session whose iteration 0 is BC on B / 2 expert episodes, followed by
  ``--iterations`` rounds in which the learner drives (beta = ``--beta0``, 0 by default: the
  issue's "the learner drives") and the expert labels what it visits, B / 2 episodes in all;
* both arms take the same number of gradient steps, ``--steps-per-episode`` x B (DAgger's are
  split evenly over its iterations, each warm-started from the last).

The expert episodes come from ONE pool shared by every seed and budget (setting j's episode i
has seed ``POOL_SEED_OFFSET + j * 1_000_000 + i``, recorded exactly as a session's iteration 0
would, ``methods.dagger.rollout_spec``): budget B uses the first B / S episodes of each
setting, so curves are nested and differences between budgets are not differences of data
draws. Training seeds vary the weights, the sampling order and DAgger's rollouts.

Every final policy and the expert drive ``--eval-episodes`` held-out episodes per setting
(seeds ``dagger_study.STUDY_SEED_OFFSET + i``, held-out spoken phrasings). Reported per setting
and budget: mean +- sample std over training seeds, goal success per goal type (pooled), and
paired 95% bootstrap intervals over (seed, episode) pairs of DAgger minus BC at the same budget
and of DAgger at B minus BC at 2B (the issue's "half the labels"). ``OUT/study.json``,
``OUT/study.md`` and ``OUT/learning_curve.png``. Everything resumes: run the same command again.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.dagger_combine import PAIRED, paired_bootstrap
from benchmarks.dagger_study import METRICS, _evaluate, _goal_types
from benchmarks.reports import mean_std, to_jsonable, write_json
from sim.atomic import atomic_output
from sim.storage import EpisodeWriter, count_episodes, episode_paths
from vla.parallel import RolloutPool

POOL_SEED_OFFSET = 22_000_000
"""First seed of the shared expert pool (setting j: + j * 1_000_000); disjoint from sessions'
training seeds (seed * 100_000 + ...), their evaluation seeds (1_000_000 + ...) and the
study's held-out seeds (3_000_000 + ...)."""
ARMS = ("bc", "dagger")
CURVE_METRICS = ("collision_rate", "progress_mean", "goal_success_rate", "jerk_long_p95")


def _setting_name(setting: tuple[str, str]) -> str:
    return f"{setting[0]}_{setting[1]}"


def check_budgets(budgets: list[int], settings: int, iterations: int) -> None:
    """Each budget must split evenly: B / S expert episodes per setting for BC, half of that for
    DAgger's iteration 0, and the other half over the iterations' rollouts."""
    for b in budgets:
        if b < 1 or b % (2 * settings) or (b // 2) % max(iterations, 1):
            raise ValueError(f"budget {b} must be a positive multiple of 2 x {settings} settings whose half "
                             f"splits over {iterations} DAgger iterations")


def collect_pool(base, out: Path, need: int, pool: RolloutPool, log) -> dict[tuple[str, str], Path]:
    """The shared expert pool: ``need`` episodes per setting under ``out/pool/<setting>``."""
    from methods.dagger import rollout_spec

    dirs = {}
    for j, (scenario, density) in enumerate(base.settings):
        target = out / "pool" / _setting_name((scenario, density))
        dirs[(scenario, density)] = target
        done = count_episodes(target)
        if done >= need:
            continue
        log(f"expert pool {scenario}/{density}: recording episodes {done}..{need - 1}")
        first = POOL_SEED_OFFSET + j * 1_000_000
        # beta 0: the expert drives either way; a session's beta-1 coin would only consume
        # draws of the episode's generator that DART bursts use too
        spec = replace(rollout_spec(base, 0, "expert", scenario, density), beta=0.0)
        with EpisodeWriter(target) as writer:
            pool.run(spec, range(first + done, first + need), on_episode=writer.append)
    return dirs


def _seed_session_data(session_dir: Path, pool_dirs: dict, per_setting: int) -> None:
    """Fill a session's iteration-0 data with the pool's first ``per_setting`` episodes of each
    setting, in the order the session itself would write them (setting by setting)."""
    target = session_dir / "data" / "iter_000"
    want = per_setting * len(pool_dirs)
    done = count_episodes(target)
    if done >= want:
        return
    sources = [p for d in pool_dirs.values() for p in episode_paths(d)[:per_setting]]
    with EpisodeWriter(target) as writer:
        for path in sources[done:]:
            writer.append_copy(path)


def _arm_config(base, arm: str, budget: int, seed: int, args):
    steps = max(args.min_steps, args.steps_per_episode * budget)
    if arm == "bc":
        return replace(base, seed=seed, iterations=0, expert_episodes=budget, train_steps=steps)
    return replace(base, seed=seed, iterations=args.iterations, expert_episodes=budget // 2,
                   rollouts=budget // 2 // args.iterations, train_steps=max(1, steps // (args.iterations + 1)))


def _episodes_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["seed"]: row for row in csv.DictReader(f)}


def _paired(out: Path, seeds, setting: str, arm_a: tuple[str, int], arm_b: tuple[str, int]) -> dict | None:
    """Paired bootstrap of arm_b minus arm_a over (training seed, held-out episode) pairs."""
    diffs = {c: [] for c in PAIRED}
    for seed in seeds:
        a = out / f"seed_{seed}" / f"eval_{arm_a[0]}_{arm_a[1]}" / setting / "episodes.csv"
        b = out / f"seed_{seed}" / f"eval_{arm_b[0]}_{arm_b[1]}" / setting / "episodes.csv"
        if not (a.exists() and b.exists()):
            continue
        ra, rb = _episodes_csv(a), _episodes_csv(b)
        for s in sorted(set(ra) & set(rb)):
            for c in PAIRED:
                diffs[c].append(float(rb[s][c]) - float(ra[s][c]))
    return {c: paired_bootstrap(v) for c, v in diffs.items()} if diffs[PAIRED[0]] else None


def summarize_curve(out: Path, args, settings, results: dict) -> dict:
    """``results[setting][arm][budget]`` = per-seed metrics records -> the study's summary."""
    summary = {}
    for setting in settings:
        name = _setting_name(setting)
        per = results.get(name, {})
        entry = {"expert": per.get("expert"), "arms": {}, "paired": {}, "half_labels": {}}
        for arm in ARMS:
            for budget in args.budgets:
                recs = per.get(arm, {}).get(budget, [])
                if recs:
                    entry["arms"].setdefault(arm, {})[budget] = {
                        "metrics": {m: mean_std([r.get(m) for r in recs]) for m in METRICS},
                        "goal_success_by_type": _goal_types(recs), "runs": len(recs)}
        for budget in args.budgets:
            p = _paired(out, args.seeds, name, ("bc", budget), ("dagger", budget))
            if p:
                entry["paired"][budget] = p
            if 2 * budget in args.budgets:
                h = _paired(out, args.seeds, name, ("bc", 2 * budget), ("dagger", budget))
                if h:
                    entry["half_labels"][budget] = h
        summary[name] = entry
    return summary


def format_curve(summary: dict) -> str:
    lines = []
    for name, entry in summary.items():
        lines += [f"\n### {name}\n", "| arm | budget | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        if entry["expert"]:
            lines.append("| expert | - | " + " | ".join(
                f"{entry['expert'].get(m, float('nan')):.3f}" for m in METRICS) + " |")
        for arm, per_budget in entry["arms"].items():
            for budget, s in sorted(per_budget.items()):
                cells = ["n/a" if s["metrics"][m]["mean"] is None else
                         f"{s['metrics'][m]['mean']:.3f} ± {s['metrics'][m]['std']:.3f}" for m in METRICS]
                lines.append(f"| {arm} (x{s['runs']}) | {budget} | " + " | ".join(cells) + " |")
        lines.append("")
        for arm, per_budget in entry["arms"].items():
            for budget, s in sorted(per_budget.items()):
                lines.append(f"goal success per type, {arm} {budget}: " + ", ".join(
                    f"{g} {v['successes']}/{v['episodes']}" for g, v in s["goal_success_by_type"].items()))
        for title, key in (("DAgger minus BC, same budget", "paired"), ("DAgger at B minus BC at 2B", "half_labels")):
            if entry[key]:
                lines += ["", f"{title} (95% paired bootstrap over seed x episode pairs):", "",
                          "| B | " + " | ".join(PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
                for budget, cols in sorted(entry[key].items()):
                    lines.append(f"| {budget} | " + " | ".join(
                        f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for v in cols.values()) + " |")
    return "\n".join(lines)


def plot_curve(summary: dict, path: Path) -> None:
    """One row per setting, one column per ``CURVE_METRICS``: mean +- std over seeds against the
    budget (log scale) for each arm, the expert as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(len(names), len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        entry = summary[name]
        for col, metric in enumerate(CURVE_METRICS):
            ax = axes[row][col]
            for arm, per_budget in entry["arms"].items():
                budgets = sorted(per_budget)
                mean = [per_budget[b]["metrics"][metric]["mean"] for b in budgets]
                std = [per_budget[b]["metrics"][metric]["std"] or 0.0 for b in budgets]
                ax.errorbar(budgets, mean, yerr=std, marker="o", capsize=3, label=arm)
            if entry["expert"] and metric in entry["expert"]:
                ax.axhline(entry["expert"][metric], ls="--", color="k", lw=1, label="expert")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{name}: {metric}", fontsize=9)
            ax.set_xlabel("expert-labelled episodes")
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def collected_results(out: Path, args, settings) -> dict:
    """The evaluations already on disk (``--summarize-only``): nothing is run, missing runs are
    left out of the summary."""
    results: dict = {}
    for setting in settings:
        name = _setting_name(setting)
        per = results.setdefault(name, {})
        expert = out / "eval_expert" / name / "metrics.json"
        if expert.exists():
            per["expert"] = json.loads(expert.read_text())
        for seed in args.seeds:
            for budget in args.budgets:
                for arm in ARMS:
                    path = out / f"seed_{seed}" / f"eval_{arm}_{budget}" / name / "metrics.json"
                    if path.exists():
                        per.setdefault(arm, {}).setdefault(budget, []).append(json.loads(path.read_text()))
    return results


def run_study(args: argparse.Namespace, log=print) -> dict:
    from methods.dagger import DaggerSession
    from methods.session_options import dagger_config

    base = dagger_config(args, ",".join(args.scenarios), ",".join(args.densities), seed=0)
    base = replace(base, eval_episodes=len(base.settings), threads=args.threads)
    settings = base.settings
    check_budgets(args.budgets, len(settings), args.iterations)
    out = Path(args.out)
    if args.summarize_only:
        if not out.is_dir():
            raise ValueError(f"--summarize-only: {out} is not a study directory")
        return _write(out, args, settings, collected_results(out, args, settings))
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with RolloutPool(args.workers) as pool:
        pool_dirs = collect_pool(base, out, max(args.budgets) // len(settings), pool, log)
        for scenario, density in settings:
            name = _setting_name((scenario, density))
            results.setdefault(name, {})["expert"] = _evaluate(
                pool, "expert", False, scenario, density, args.eval_episodes, out / "eval_expert" / name, log)
        for seed in args.seeds:
            for budget in sorted(args.budgets):
                for arm in ARMS:
                    cfg = _arm_config(base, arm, budget, seed, args)
                    session_dir = out / f"seed_{seed}" / f"{arm}_{budget}"
                    _seed_session_data(session_dir, pool_dirs, cfg.expert_episodes // len(settings))
                    log(f"== seed {seed}, budget {budget}: {arm}")
                    DaggerSession(cfg, session_dir, log=log).run_all()
                    policy = str(session_dir / f"iter_{cfg.iterations:03d}" / "policy")
                    for scenario, density in settings:
                        name = _setting_name((scenario, density))
                        rec = _evaluate(pool, policy, cfg.policy.cameras, scenario, density, args.eval_episodes,
                                        out / f"seed_{seed}" / f"eval_{arm}_{budget}" / name, log)
                        results[name].setdefault(arm, {}).setdefault(budget, []).append(rec)
                _write(out, args, settings, results)
    return _write(out, args, settings, results)


def _write(out: Path, args, settings, results: dict) -> dict:
    summary = summarize_curve(out, args, settings, results)
    text = "# BC vs DAgger over expert-label budgets (mean ± std over training seeds)\n" + format_curve(summary) + "\n"
    write_json(out / "study.json", to_jsonable({"config": {k: v for k, v in vars(args).items() if k != "func"},
                                                "summary": summary}))
    with atomic_output(out / "study.md") as tmp:
        tmp.write_text(text)
    plot_curve(summary, out / "learning_curve.png")
    return {"summary": summary, "text": text}


def build_parser() -> argparse.ArgumentParser:
    from methods.session_options import add_session_args

    p = argparse.ArgumentParser(prog="python -m benchmarks.learning_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="study directory (resumed when it exists)")
    p.add_argument("--scenarios", nargs="+", default=["highway", "intersection"], help="scenario families")
    p.add_argument("--densities", nargs="+", default=["medium", "dense"], help="traffic densities")
    p.add_argument("--budgets", nargs="+", type=int, default=[20, 40, 80],
                   help="expert-labelled episodes per arm, over all settings (default: 20 40 80)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes per policy and setting")
    p.add_argument("--steps-per-episode", type=int, default=40,
                   help="gradient steps per budget episode, both arms (default: %(default)s)")
    p.add_argument("--min-steps", type=int, default=1000, help="fewest gradient steps of an arm (default: %(default)s)")
    p.add_argument("--summarize-only", action="store_true",
                   help="run nothing: summarize the evaluations already in --out (e.g. of seeds and budgets run "
                        "by separate processes side by side)")
    # --train-steps is unused: the study sets each arm's steps from --steps-per-episode
    add_session_args(p, train_steps=1, eval_option="--session-eval-episodes", eval_default=1,
                     iterations=4, beta0=0.0, no_cameras=True, default_action="plan", observation="lane_frame", dart=True,
                     goal_relabel=True, label_every=3, threads=1)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.eval_episodes < 1 or args.steps_per_episode < 1 or args.min_steps < 1 or args.iterations < 1:
            raise ValueError("--eval-episodes, --steps-per-episode, --min-steps and --iterations must be >= 1")
        result = run_study(args, log=lambda line: print(line, flush=True))
    except (ValueError, OSError) as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    print(result["text"])
    print(f"wrote {Path(args.out) / 'study.json'}, study.md and learning_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
