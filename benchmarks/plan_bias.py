"""``python -m benchmarks.plan_bias --policy DIR``: where a plan policy's own plans differ from the
expert's, by the ego's speed, over closed-loop episodes.

Why: a goal type that is missed in closed loop (the car settles at the wrong speed, it holds a
lane it was told to leave) can be the network's plan, the execution beside it (commitment,
temporal ensembling, the tracker, the rules), or the words. This drives the policy as ``vla
eval`` does, keeps the network's raw plan at every re-plan (before commitment and blending), and
puts it beside the expert's plan from the same state (``sim.plan.plan_labels``: the expert's
continuation simulated from that state). Rows are speed bins; each gives the mean speed gain to
the plan's last waypoint (m/s over the plan's horizon, ``sim.plan.PLAN_FIELDS``) of the network
and of the expert, their mean difference with a 95% bootstrap interval, and the mean absolute
difference of the last waypoint's lateral offset (m). A network that learned the right plans
and still misses points at the execution; one whose gain differs where the misses happen
points at the data or the training. Beside the network's executed (argmax) gain, ``mean`` is
the gain its own distribution expects (``mean_plan``: each plan token's bin centres weighted by
their probabilities, the tokens before it as decoded) and ``p(top)`` the probability of the
chosen bin of that token: a mean far from the argmax says the decoding picks one mode of a
split belief, a mean near it with a high p(top) says the network believes the plan it makes.

This is a diagnostic for dev episodes (validation seeds 7,000,000+); the studies' held-out
seeds are for measuring, not for reading. The last line is JSON (null where a bin is empty).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks.dagger_combine import paired_bootstrap

DEFAULT_EDGES = (0.0, 10.0, 13.0, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 40.0)
"""Speed bin edges (m/s): the highway's goal speeds are 20 / 25 / 30 m/s, met within 2.5."""


def plan_pairs(policy, env, seed: int) -> tuple[object, list[dict]]:
    """Drive one episode of ``policy`` (a plan ``VLAPolicy``) in ``env`` from ``seed``, the expert
    labelling every state (its continuation, the costly part, at the re-plan states only).
    Returns the ``Episode`` and one row per re-plan: the step ``t``, the ego's speed, the
    network's raw plan and the expert's plan from that state ((K, 2) each; the expert's rows are
    NaN where its continuation is unknown)."""
    from sim.interface import EGO
    from sim.plan import plan_labels, plan_steps
    from sim.rollout import run_episode

    k = policy.config.horizon
    made: list[tuple[int, float, np.ndarray, np.ndarray, np.ndarray]] = []
    own, model = policy._own_plan, policy.inference_model
    generate, last = model.generate_chunk, {}

    def watched_generate(*args, **kwargs):
        last["out"] = out = generate(*args, **kwargs)
        return out

    def watched(obs):
        last.clear()
        plan = own(obs)
        mean, top = mean_plan(policy, last.get("out"))
        made.append((policy._t - 1, float(np.asarray(obs["ego"])[EGO["speed"]]), np.array(plan, dtype=np.float64),
                     mean, top))
        return plan

    policy._own_plan, model.generate_chunk = watched, watched_generate
    try:
        episode = run_episode(env, policy, seed, query_expert=True, record_frames=False,
                              plan_horizon=int(plan_steps(k)[-1]), plan_every=policy.plan_period)
    finally:
        del policy._own_plan, model.generate_chunk  # the classes' methods again
    labels = plan_labels(episode.ego, episode.actions, episode.expert_actions, episode.expert_futures, k)
    rows = [{"t": t, "speed": v, "net": plan, "net_mean": mean, "net_top": top, "expert": labels[t]}
            for t, v, plan, mean, top in made if t < len(labels)]
    return episode, rows


def mean_plan(policy, out) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) the plan ``policy``'s distribution expects for one decoded chunk ``out`` (a bins
    head's ``ChunkOutput``): per token, the bin centres (``action_tokenizer``, no residual)
    weighted by the softmax of its logits, given the tokens decoded before it; and (K, 2) the
    probability of the bin that was chosen. NaN where there is no such output (a diffusion head)
    or the tokenizer has one token per action."""
    k = policy.config.horizon
    nan = np.full((k, 2), np.nan)
    logits = getattr(out, "bin_logits", None)
    if logits is None or tuple(logits.shape[1:3]) != (k, 2):
        return nan, nan
    logits = logits[0].float().cpu().numpy().astype(np.float64)  # (K, 2, n)
    n = logits.shape[-1]
    grid = np.broadcast_to(np.arange(n)[:, None, None], (n, k, 2))  # every bin at every token
    centres = policy.action_tokenizer.decode(grid)  # (n, K, 2): per-dimension bins decode elementwise
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    chosen = out.bins[0].cpu().numpy()  # (K, 2)
    top = np.take_along_axis(p, chosen[..., None], -1)[..., 0]
    return np.einsum("kdn,nkd->kd", p, centres), top


def summarize(rows: list[dict], edges: tuple[float, ...], seed: int = 0) -> list[dict]:
    """Per speed bin [lo, hi): re-plans, the network's and the expert's mean speed gain to the
    last waypoint, the mean network-minus-expert gain with a 95% bootstrap interval over
    re-plans (``benchmarks.dagger_combine.paired_bootstrap``: the two plans of a re-plan are a
    pair), the mean |lateral difference| at the last waypoint, and the network's expected gain
    and chosen bin's probability there (``mean_plan``; NaN-skipping). Re-plans whose expert plan
    is unknown count in ``n`` only."""
    speed = np.array([r["speed"] for r in rows], dtype=np.float64)
    net = np.array([r["net"][-1] for r in rows], dtype=np.float64).reshape(-1, 2)
    mean = np.array([r.get("net_mean", np.full((1, 2), np.nan))[-1, 0] for r in rows], dtype=np.float64)
    top = np.array([r.get("net_top", np.full((1, 2), np.nan))[-1, 0] for r in rows], dtype=np.float64)
    exp = np.array([r["expert"][-1] for r in rows], dtype=np.float64).reshape(-1, 2)
    known = np.isfinite(exp).all(1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (speed >= lo) & (speed < hi)
        both = inside & known
        diff = net[both, 0] - exp[both, 0]
        ci = paired_bootstrap(diff, seed=seed) if both.any() else {"lo": float("nan"), "hi": float("nan")}
        out.append({"lo": lo, "hi": hi, "n": int(inside.sum()), "labelled": int(both.sum()),
                    "net_gain": float(net[inside, 0].mean()) if inside.any() else float("nan"),
                    "net_mean_gain": _nanmean(mean[inside]), "net_top_p": _nanmean(top[inside]),
                    "expert_gain": float(exp[both, 0].mean()) if both.any() else float("nan"),
                    "diff": float(diff.mean()) if both.any() else float("nan"), "diff_low": ci["lo"], "diff_high": ci["hi"],
                    "lateral_abs": float(np.abs(net[both, 1] - exp[both, 1]).mean()) if both.any() else float("nan")})
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _fmt(x: float, spec: str = "+.2f") -> str:
    return "-" if not np.isfinite(x) else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plan_bias", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a plan policy checkpoint directory (RUN/policy)")
    ap.add_argument("--scenario", default="highway", help="scenario family (default: highway)")
    ap.add_argument("--density", default="dense", help="traffic density (default: dense)")
    ap.add_argument("--episodes", type=int, default=40, help="episodes to drive (default: 40)")
    ap.add_argument("--seed", type=int, default=7000000,
                    help="first episode seed (default: 7000000, the validation seeds; not the studies' held-out ones)")
    ap.add_argument("--goal", default="", help="only episodes of this goal type, e.g. slow_down (default: all)")
    ap.add_argument("--phrasings", default="canonical", help="how the command is worded, as for vla eval "
                    "(default: canonical, so that the words are not what differs)")
    ap.add_argument("--edges", type=float, nargs="+", default=list(DEFAULT_EDGES), metavar="M/S",
                    help="speed bin edges, increasing (default: %(default)s)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="plan execution settings to drive with instead of the checkpoint's, e.g. commit_margin=0")
    args = ap.parse_args(argv)
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        edges = tuple(args.edges)
        if len(edges) < 2 or any(not np.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"--edges must be >= 2 finite, increasing speeds, got {list(edges)}")
        from benchmarks.junction_trace import plan_policy_and_env
        from sim.interface import EGO
        from sim.scenarios import HIGHWAY_GOAL_LABELS, TURN_COMMANDS

        goals = set(HIGHWAY_GOAL_LABELS) | {f"turn_{turn}" for turn in TURN_COMMANDS}
        if args.goal and args.goal not in goals:
            raise ValueError(f"unknown --goal {args.goal!r}; choose one of {sorted(goals)}")
        policy, env = plan_policy_and_env(args.policy, args.set, args.scenario, args.density, args.phrasings,
                                          "it makes no plans to compare")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, driven, ends = [], 0, []
    try:
        from tqdm import tqdm

        for seed in tqdm(range(args.seed, args.seed + args.episodes), desc="plan_bias", unit="ep", file=sys.stderr):
            episode, got = plan_pairs(policy, env, seed)
            if args.goal and episode.goal.label != args.goal:
                continue
            driven += 1
            target = getattr(episode.goal, "target_speed", None)
            ends.append({"seed": seed, "goal": episode.goal.label, "outcome": episode.outcome,
                         "end_speed": round(float(episode.ego[-1, EGO["speed"]]), 2),
                         "target_speed": None if target is None or not np.isfinite(target) else float(target)})
            rows.extend(got)
    finally:
        env.close()
    if not rows:
        print(f"error: none of the {args.episodes} episodes from seed {args.seed} had goal {args.goal!r}",
              file=sys.stderr)
        return 2
    table = summarize(rows, edges)
    print(f"{driven} episodes, {len(rows)} re-plans; speed gain to the plan's last waypoint, network vs expert (m/s)")
    print(f"{'speed m/s':>11} {'n':>5} {'network':>8} {'mean':>6} {'p(top)':>6} {'expert':>7} {'net-exp':>8} "
          f"{'95% interval':>17} {'|dy| m':>7}")
    for r in table:
        print(f"{r['lo']:>5.1f}-{r['hi']:<5.1f} {r['n']:>5} {_fmt(r['net_gain']):>8} {_fmt(r['net_mean_gain']):>6} "
              f"{_fmt(r['net_top_p'], '.2f'):>6} {_fmt(r['expert_gain']):>7} "
              f"{_fmt(r['diff']):>8} {'[' + _fmt(r['diff_low']) + ', ' + _fmt(r['diff_high']) + ']':>17} "
              f"{_fmt(r['lateral_abs'], '.2f'):>7}")
    print("episodes (seed goal outcome: end speed / target):",
          "; ".join(f"{e['seed']} {e['goal']} {e['outcome']}: {e['end_speed']:.1f}"
                    + ("" if e["target_speed"] is None else f" / {e['target_speed']:.0f}") for e in ends))
    bins = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in b.items()} for b in table]
    print(json.dumps({"policy": args.policy, "scenario": args.scenario, "density": args.density, "goal": args.goal,
                      "replans": len(rows), "bins": bins, "episodes": ends}, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
