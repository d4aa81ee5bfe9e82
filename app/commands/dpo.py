"""``vla make-pairs``, ``vla train dpo`` and ``vla report``: preference alignment end to end.

::

    vla make-pairs --policy REF/policy --scenario highway --density dense --episodes 16 --out PAIRS
    vla train dpo --pairs PAIRS --ref REF/policy --loss dpo --beta 0.1 --out RUN
    vla train dpo --pairs PAIRS --ref REF/policy --loss bt-reward --out SCORER_RUN
    vla eval --policy REF/policy --best-of 8 --scorer SCORER_RUN/scorer ...
    vla report --before REF/policy --after RUN/policy --episodes 20 --seed 1000 --out REPORT

Every option is validated before any work starts; problems are one-line errors. Outputs are
written atomically; ``make-pairs``, ``train dpo`` and ``report`` resume where they stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np

LOSSES = ("dpo", "cdpo", "ipo", "orpo", "bt-reward")
REPORT_COLUMNS = ("label", "collision_rate", "ttc_min_p5", "jerk_long_p95", "jerk_lat_p95", "comfort_fraction",
                  "progress_mean", "goal_success_rate", "driving_score", "tax_progress", "tax_goal_success")
TRADEOFF_PANELS = (("collision_rate", "collision rate (lower is safer)"), ("ttc_min_p5", "min TTC p5 [s]"),
                   ("comfort_fraction", "comfort fraction (nuPlan)"), ("jerk_long_p95", "jerk long p95 [m/s³]"))


def _fail(message: str) -> None:
    from vla.errors import VLAError

    raise VLAError(message)


def _check_checkpoint(flag: str, path: str) -> None:
    from vla.policies_registry import is_checkpoint

    if not is_checkpoint(path):
        _fail(f"{flag} {path} is not a policy checkpoint directory (needs policy.json and model.safetensors)")


def _check_out(out: str) -> None:
    from app.cli import _check_out_dir

    _check_out_dir(out)


# ----------------------------------------------------------------------------- make-pairs
def configure_make_pairs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint whose own rollouts are branched")
    p.add_argument("--scenario", default="highway", help="scenario family (default: %(default)s)")
    p.add_argument("--density", default="medium", help="traffic density (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=8, help="episodes (seeds seed .. seed+N-1) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: %(default)s)")
    p.add_argument("--out", required=True, help="pairs directory (created; an existing one is resumed)")
    p.add_argument("--continuation-steps", type=int, default=20, help="steps per candidate continuation (default: %(default)s)")
    p.add_argument("--stride", type=int, default=20, help="steps between branch states (default: %(default)s)")
    p.add_argument("--first-branch", type=int, default=5, help="step of the first branch state, >= 2 (default: %(default)s)")
    p.add_argument("--max-branches", type=int, default=8, help="branch states per episode (default: %(default)s)")
    p.add_argument("--samples", type=int, default=3, help="sampled chunks per branch state (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=0, help="stop each rollout after this many steps, 0 = never (default: %(default)s)")
    p.add_argument("--phrasings", choices=("train", "heldout", "canonical"), default="train",
                   help="how the passenger phrases the command (default: %(default)s)")
    p.add_argument("--no-expert", action="store_true", help="no expert continuation among the candidates")
    p.add_argument("--no-revise", action="store_true", help="no smoothed revision, no critique-and-revise pairs")


def run_make_pairs(args: argparse.Namespace) -> int:
    from sim.scenarios import check_scenario

    check_scenario(args.scenario, args.density)
    _check_checkpoint("--policy", args.policy)
    if args.episodes < 1 or args.seed < 0:
        _fail(f"--episodes must be >= 1 and --seed >= 0, got {args.episodes} and {args.seed}")
    from methods.pairs import PairConfig

    config = PairConfig(continuation_steps=args.continuation_steps, stride=args.stride, first_branch=args.first_branch,
                        max_branches=args.max_branches, samples=args.samples, temperature=args.temperature,
                        max_steps=args.max_steps, expert=not args.no_expert, revise=not args.no_revise)
    _check_out(args.out)
    import torch

    from methods.pairs import make_pairs
    from sim.backends import DEFAULT_BACKEND, make_env
    from vla.policy import VLAPolicy
    from vla.speech_commands import rephraser

    torch.set_num_threads(1)
    policy = VLAPolicy.load(args.policy)
    env = make_env(DEFAULT_BACKEND, args.scenario, args.density, cameras=policy.rig, rephrase=rephraser(args.phrasings))
    meta = {"policy": str(Path(args.policy).resolve()), "scenario": args.scenario, "density": args.density,
            "phrasings": args.phrasings, "command": policy.config.command}
    seeds = [args.seed + i for i in range(args.episodes)]
    manifest = make_pairs(policy, env, seeds, args.out, config, meta, log=lambda s: print(s, flush=True))
    total = sum(s["pairs"] for s in manifest["shards"])
    rules: dict[str, int] = {}
    for s in manifest["shards"]:
        for rule, n in s["rules"].items():
            rules[rule] = rules.get(rule, 0) + n
    print(json.dumps({"pairs": total, "episodes": len(manifest["shards"]), "by_rule": rules}, sort_keys=True))
    print(f"wrote {Path(args.out) / 'pairs.json'} (train on them: vla train dpo --pairs {args.out} --ref {args.policy} ...)")
    return 0


# ----------------------------------------------------------------------------- train dpo
def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="pairs directory written by vla make-pairs")
    p.add_argument("--ref", required=True, help="reference policy checkpoint (frozen; also the starting weights)")
    p.add_argument("--loss", default="dpo", help=f"one of {', '.join(LOSSES)} (bt-reward: train a Bradley-Terry "
                                                  "trajectory scorer for best-of-N instead) (default: %(default)s)")
    p.add_argument("--beta", type=float, default=0.1, help="beta of the loss, > 0 (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="cdpo's label flip rate (default: %(default)s)")
    p.add_argument("--residual-scale", type=float, default=0.25,
                   help="Laplace scale of the residual term, in bin widths (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 5e-5; bt-reward 1e-3)")
    p.add_argument("--steps", type=int, default=200, help="gradient steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (default: %(default)s)")
    p.add_argument("--heldout-fraction", type=float, default=0.2,
                   help="fraction of episode seeds held out for evaluation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--out", required=True, help="run directory (an existing one is resumed)")


def _validate_train(args: argparse.Namespace) -> None:
    from methods.preference_losses import check_loss

    if args.loss not in LOSSES:
        _fail(f"unknown --loss {args.loss!r}; choose one of {', '.join(LOSSES)}")
    if args.loss != "bt-reward":
        check_loss(args.loss, args.beta, args.label_smoothing)
    elif not args.beta > 0:
        _fail(f"--beta must be > 0, got {args.beta}")
    if args.steps < 1 or args.batch_size < 1 or args.threads < 0 or args.seed < 0:
        _fail("--steps and --batch-size must be >= 1, --threads and --seed >= 0")
    if not 0.0 <= args.heldout_fraction < 1.0:
        _fail(f"--heldout-fraction must be in [0, 1), got {args.heldout_fraction}")
    if args.lr is not None and not args.lr > 0:
        _fail(f"--lr must be > 0, got {args.lr}")
    from methods.pairs import read_manifest

    read_manifest(args.pairs)
    _check_checkpoint("--ref", args.ref)
    _check_out(args.out)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_reference_logps(out: Path, ref_dir: str, reference, data, pairs_dir: str, scale: float) -> np.ndarray:
    """Reference log-probs of every pair, computed once and cached as OUT/reference_logps.npz."""
    from methods.dpo import reference_logps
    from methods.pairs import read_manifest
    from sim.atomic import atomic_output

    key = json.dumps({"ref": _file_digest(Path(ref_dir) / "model.safetensors"), "residual_scale": scale,
                      "pairs": read_manifest(pairs_dir)["shards"]}, sort_keys=True)
    path = out / "reference_logps.npz"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if str(cached["key"]) == key:
            return cached["logp"]
    logp = reference_logps(reference, data, scale)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, logp=logp, key=np.array(key))
    return logp


def run_train(args: argparse.Namespace) -> int:
    _validate_train(args)
    import torch

    from benchmarks.reports import write_json
    from methods.dpo import DPOConfig, DPOMethod, PairDataset, split_by_seed
    from methods.pairs import read_manifest, read_pairs
    from vla.policy import VLAPolicy
    from vla.train_loop import TrainConfig, train

    out = Path(args.out)
    torch.set_num_threads(max(1, args.threads))
    policy = VLAPolicy.load(args.ref)
    manifest = read_manifest(args.pairs)
    if manifest.get("command", policy.config.command) != policy.config.command:
        _fail(f"the pairs hold {manifest['command']} command ids but --ref hears {policy.config.command}")
    if args.loss != "bt-reward" and getattr(policy.config, "head", "bins") != "bins":
        _fail(f"--loss {args.loss} scores chunks by their bin log-probabilities; --ref has a "
              f"{policy.config.head} action head (use --loss bt-reward and best-of-N instead)")
    arrays = read_pairs(args.pairs)
    full = PairDataset(arrays, policy)
    train_rows, held_rows = split_by_seed(arrays["seed"], args.heldout_fraction)
    if len(train_rows) == 0:
        _fail(f"no training pairs left after holding out {args.heldout_fraction:.0%} of the seeds")
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, log_every=10,
                      eval_every=max(1, args.steps // 4) if len(held_rows) else 0,
                      checkpoint_every=max(50, args.steps // 4), threads=args.threads)
    log = (lambda line: print(line, flush=True))
    print(f"{len(train_rows)} training pairs, {len(held_rows)} held-out pairs", flush=True)
    if args.loss == "bt-reward":
        from methods.reward_model import ScorerConfig, ScorerMethod, TrajectoryScorer

        torch.manual_seed(args.seed)
        scorer = TrajectoryScorer(ScorerConfig(horizon=policy.config.horizon, vocab_size=policy.layout.size,
                                               observation=policy.config.observation, lr=args.lr or 1e-3))
        method = ScorerMethod(scorer, heldout=full.subset(held_rows))
        before = {}  # an untrained scorer's held-out numbers say nothing
        result = train(method, full.subset(train_rows), cfg, out / "train", log=log)
        scorer.save(out / "scorer")
        saved = f"{out / 'scorer'} (use it: vla eval --policy {args.ref} --best-of 8 --scorer {out / 'scorer'} ...)"
    else:
        reference = VLAPolicy.load(args.ref)
        policy.name = str(out / "policy")
        full = full.with_reference(cached_reference_logps(out, args.ref, reference, full, args.pairs,
                                                          args.residual_scale))
        config = DPOConfig(loss=args.loss, beta=args.beta, label_smoothing=args.label_smoothing,
                           residual_scale=args.residual_scale, lr=args.lr or 5e-5, total_steps=args.steps,
                           warmup_steps=min(10, args.steps // 5))
        method = DPOMethod(policy, config, reference=reference, heldout=full.subset(held_rows))
        before = DPOMethod(reference, config, reference=reference, heldout=full.subset(held_rows)).evaluate()
        result = train(method, full.subset(train_rows), cfg, out / "train", log=log)
        policy.save(out / "policy")
        saved = f"{out / 'policy'} (evaluate it: vla eval --policy {out / 'policy'} ...)"
    after = method.evaluate()
    record = {"loss": args.loss, "beta": args.beta, "pairs": args.pairs, "ref": args.ref, "steps": result.steps_done,
              "train_pairs": len(train_rows), "heldout_pairs": len(held_rows), "last_update": result.last_logs,
              "heldout_before": before, "heldout_after": after}
    write_json(out / "summary.json", record)
    print(json.dumps({"steps": result.steps_done, **result.last_logs, **after}, sort_keys=True))
    print(f"wrote {saved}")
    return 0


# ----------------------------------------------------------------------------- report
def configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--before", required=True, help="policy before alignment (checkpoint or baseline name)")
    p.add_argument("--after", required=True, action="append", help="policy after alignment (repeatable)")
    p.add_argument("--labels", nargs="*", default=None, help="names of the --after policies, in order")
    p.add_argument("--scenario", default="highway", help="scenario family (default: %(default)s)")
    p.add_argument("--density", default="medium", help="traffic density (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes per policy (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="first held-out seed (default: %(default)s)")
    p.add_argument("--phrasings", choices=("heldout", "train", "canonical"), default="heldout",
                   help="command phrasings (default: %(default)s)")
    p.add_argument("--best-of", type=int, default=1, help="also evaluate --before with best-of-N (needs --scorer)")
    p.add_argument("--scorer", default=None, help="trajectory scorer directory for --best-of")
    p.add_argument("--out", required=True, help="report directory (created; finished evaluations are reused)")


def _label(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "policy" and p.parent.name else p.name


def _safe(label: str) -> str:
    """A label as a directory name (evaluations are cached per label)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", label) or "_"


def _entries(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    labels = args.labels or [_label(a) for a in args.after]
    if len(labels) != len(args.after):
        _fail(f"--labels names {len(labels)} policies but --after gives {len(args.after)}")
    entries = [("before", args.before, 1)] + [(lab, a, 1) for lab, a in zip(labels, args.after)]
    if args.best_of > 1:
        entries.append((f"before+best-of-{args.best_of}", args.before, args.best_of))
    if len({_safe(e[0]) for e in entries}) != len(entries):
        _fail("report labels must be distinct (pass --labels)")
    return entries


def _evaluate(args: argparse.Namespace, label: str, policy_name: str, best_of: int, out: Path) -> dict:
    from benchmarks.reports import write_json
    from vla.evaluation import evaluate

    what = {"policy": str(policy_name), "best_of": best_of, "scenario": args.scenario, "density": args.density,
            "seed": args.seed, "episodes": args.episodes, "phrasings": args.phrasings, "scorer": args.scorer}
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("what") == what:
        return json.loads((out / "metrics.json").read_text())
    wrap = None
    if best_of > 1:
        from methods.reward_model import BestOfNPolicy, TrajectoryScorer

        scorer = TrajectoryScorer.load(args.scorer)

        def wrap(policy, seed: int):
            return BestOfNPolicy(policy, scorer, best_of, seed=seed)

    result = evaluate(policy_name, args.scenario, args.density, range(args.seed, args.seed + args.episodes),
                      phrasings=args.phrasings, wrap=wrap, progress=label, out=out,
                      name=policy_name if best_of == 1 else f"{policy_name}+best-of-{best_of}")
    write_json(done, {"what": what})
    return result.metrics


def _plot_tradeoff(path: Path, rows: list[dict], title: str) -> None:
    from matplotlib.figure import Figure

    from sim.atomic import atomic_output

    fig = Figure(figsize=(9, 7), layout="constrained")
    for ax, (key, ylabel) in zip(fig.subplots(2, 2).ravel(), TRADEOFF_PANELS):
        for r in rows:
            x, y = r.get("progress_mean"), r.get(key)
            if x is None or y is None:
                continue
            ax.scatter([x], [y], s=40, marker="s" if r["label"] == "before" else "o")
            ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("progress (fraction of the route)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    with atomic_output(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def run_report(args: argparse.Namespace) -> int:
    from sim.scenarios import check_scenario
    from vla.policies_registry import check_policy

    check_scenario(args.scenario, args.density)
    if args.episodes < 1 or args.seed < 0 or args.best_of < 1:
        _fail("--episodes and --best-of must be >= 1, --seed >= 0")
    for name in [args.before, *args.after]:
        check_policy(name)
    if args.best_of > 1:
        _check_checkpoint("--before", args.before)
        from methods.reward_model import TrajectoryScorer

        if args.scorer is None:
            _fail("--best-of needs --scorer (train one: vla train dpo --loss bt-reward ...)")
        TrajectoryScorer.load(args.scorer)
    entries = _entries(args)
    _check_out(args.out)
    import torch

    from benchmarks.metrics import format_table
    from benchmarks.reports import write_json
    from sim.atomic import atomic_output

    torch.set_num_threads(1)
    out = Path(args.out)
    results = [(label, name, best_of, _evaluate(args, label, name, best_of, out / "evals" / _safe(label)))
               for label, name, best_of in entries]
    base = results[0][3]
    rows, policies = [], []
    for label, name, best_of, m in results:
        delta = {k: (m[k] - base[k]) for k in m if isinstance(m.get(k), (int, float)) and isinstance(base.get(k), (int, float))
                 and k not in ("seed", "episodes")}
        tax = {"progress_drop": base["progress_mean"] - m["progress_mean"],
               "goal_success_drop": base["goal_success_rate"] - m["goal_success_rate"]}
        policies.append({"label": label, "policy": name, "best_of": best_of, "metrics": m, "delta": delta, "tax": tax})
        rows.append({**m, "label": label, "tax_progress": tax["progress_drop"], "tax_goal_success": tax["goal_success_drop"]})
    report = {"scenario": args.scenario, "density": args.density, "seed": args.seed, "episodes": args.episodes,
              "tax_definition": "tax = before - after of progress_mean and of goal_success_rate (positive = lost)",
              "policies": policies}
    write_json(out / "report.json", report)
    table = format_table(rows, REPORT_COLUMNS)
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text(f"# Alignment tax: {args.scenario}/{args.density}, {args.episodes} episodes from seed "
                       f"{args.seed}\n\n```\n{table}\n```\n")
    _plot_tradeoff(out / "tradeoff.png", rows, f"{args.scenario}/{args.density}, seeds {args.seed}.."
                   f"{args.seed + args.episodes - 1}: safety / comfort vs progress")
    print(table)
    for name in ("report.json", "report.md", "tradeoff.png"):
        print(f"wrote {out / name}")
    return 0
