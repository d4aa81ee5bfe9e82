"""``python -m benchmarks.command_follow``: which goal does the policy's plan serve when it hears a
phrasing? An open-loop measure of command following, in action space.

At recorded highway states where the expert's plan under the feasible goals is known (episodes
collected with ``--goal-labels --goal-futures``), the policy hears each phrasing of a split and
scores, teacher-forced, the expert's plan under each goal (the log-probability of its plan
bins). The phrasing is *followed* at a state when the plan of its own goal is the likeliest of
the plans that differ from it (goals whose plan is the same there, e.g. keep lane and speed up
at the speed limit, are not rivals). Rate = followed / (states x phrasings), per goal and per
phrasing; the canonical commands give the reference.

Why beside ``vla eval``: a closed-loop episode tests one phrasing once, and 30-50 episodes
leave intervals of +-0.15 on goal success; this tests every phrasing at hundreds of states in
a minute, with no simulator. It measures what the policy would plan, not what happens after
(closed loop remains the claim). Use states the policy never trained on (a separately
collected dataset).

A spoken policy (``audio`` / ``heard``) hears each phrasing synthesized in ``--renditions``
renditions in the ``--voices`` split at ``--snr-db`` (``vla eval``'s options and defaults:
held-out voices, 10 dB), so the same measure separates what the ear or codec loses from what
the policy does with what it hears (e.g. ``--phrasings train --voices train --snr-db clean``).

The last line is JSON: ``follow_rate``, ``follow_rate_canonical``, ``by_goal``, ``by_phrasing``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sim.scenarios import HIGHWAY_GOAL_LABELS
from vla.config import SPOKEN_MODALITIES
from vla.options import add_hearing_args, hearing_from_args


def _phrasings(split: str) -> list[tuple[str, str, str]]:
    """(label, lang, text) of the highway goals in ``split`` (train / heldout / canonical / a TSV)."""
    from sim.scenarios import highway_goal_for
    from tokenizers_mm.corpus import PHRASINGS
    from vla.speech_commands import SPLITS, read_phrasings_tsv

    if split == "canonical":
        return [(g, "en", highway_goal_for(g, 1).command) for g in HIGHWAY_GOAL_LABELS]
    if split.endswith(".tsv"):
        chosen = read_phrasings_tsv(split)
    elif split in SPLITS:
        chosen = [p for p in PHRASINGS if p.split == split]
    else:
        raise ValueError(f"--phrasings must be one of {SPLITS} or a .tsv file, got {split!r}")
    out = [(p.label, p.lang, p.text) for p in chosen if p.label in HIGHWAY_GOAL_LABELS]
    if not out:
        raise ValueError(f"--phrasings {split}: no phrasing of a highway goal {HIGHWAY_GOAL_LABELS}")
    return out


def states(policy, data: str, max_states: int, seed: int) -> list[dict]:
    """Up to ``max_states`` recorded states (drawn with ``seed``) where the expert's full plan is
    known under two highway goals or more (a goal that is not feasible there has none): ego,
    actors, per goal its plan bins, and which goals' plans are known."""
    from sim.storage import read_episodes
    from vla.data import episode_arrays

    found = []
    for ep in read_episodes(data, load_frames=False):
        if ep.scenario != "highway" or ep.goal_futures is None:
            continue
        arrays = episode_arrays(ep, policy, goal_relabel=True)
        known = arrays.goal_mask.all(-1)  # (T, G): the goal's plan known to the horizon (feasible goals)
        for t in np.flatnonzero(known.sum(-1) >= 2):
            found.append({"ego": arrays.ego[t], "actors": arrays.actors[t], "bins": arrays.goal_bins[t],
                          "known": known[t]})
    if not found:
        raise ValueError(f"{data}: no highway state with the expert's plan under two goals or more "
                         "(collect with --goal-labels --goal-futures --plan-horizon)")
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(found))[:max_states]
    return [found[i] for i in sorted(keep)]


@torch.no_grad()
def follow(policy, at: list[dict], phrasings: list[tuple[str, str, str]], batch: int = 256,
           renditions: int = 1) -> dict:
    """Per phrasing: followed / compared (see the module docstring). A spoken policy (``audio`` /
    ``heard``) hears each phrasing in ``renditions`` renditions (seeds 0..renditions-1 under
    its ``hearing``), each tested at every state."""
    from vla.inputs import collate

    pad = policy.layout.special("<pad>")
    goals = list(HIGHWAY_GOAL_LABELS)
    model = policy.inference_model
    model.eval()
    results = {}
    spoken = policy.config.command in SPOKEN_MODALITIES
    for label, lang, text in phrasings:
        own = goals.index(label)
        heard = [policy.encode_command(text, lang, seed=k) for k in range(renditions if spoken else 1)]
        followed = compared = 0
        for ids, start in ((ids, start) for ids in heard for start in range(0, len(at), batch)):
            chunk = at[start:start + batch]
            rows = [(s, g) for s in chunk for g in range(len(goals))]
            inputs = collate([s["ego"] for s, _ in rows], [s["actors"] for s, _ in rows], [ids] * len(rows), pad,
                             policy.config.command_ids_max, action_bins=[s["bins"][g] for s, g in rows],
                             action_residual=[np.zeros(s["bins"][g].shape, np.float32) for s, g in rows],
                             action_mask=[np.ones(s["bins"][g].shape[0], bool) for s, g in rows])
            inputs = inputs.to(next(model.parameters()).device)
            logits = policy.chunk_logits(inputs).float()
            logp = torch.log_softmax(logits, -1).gather(-1, inputs.action_bins.unsqueeze(-1)).squeeze(-1)
            score = logp.sum((1, 2)).view(len(chunk), len(goals)).cpu().numpy()
            for i, s in enumerate(chunk):
                rivals = [g for g in range(len(goals))
                          if s["known"][g] and not np.array_equal(s["bins"][g], s["bins"][own])]
                if s["known"][own] and rivals:
                    compared += 1
                    followed += int(score[i, own] > score[i, rivals].max())
        results[f"{label}|{lang}|{text}"] = (followed, compared)
    return results


def summarize(results: dict) -> dict:
    by_goal: dict[str, list[int]] = {}
    for key, (f, c) in results.items():
        acc = by_goal.setdefault(key.split("|")[0], [0, 0])
        acc[0] += f
        acc[1] += c
    rate = lambda f, c: round(f / c, 4) if c else None  # noqa: E731
    total_f = sum(f for f, _ in results.values())
    total_c = sum(c for _, c in results.values())
    return {"follow_rate": rate(total_f, total_c),
            "by_goal": {g: rate(*fc) for g, fc in sorted(by_goal.items())},
            "by_phrasing": {k: rate(*fc) for k, fc in results.items()}, "compared": total_c}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.command_follow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="policy checkpoint directory (plan head; any command modality)")
    ap.add_argument("--data", required=True, help="episodes recorded with --goal-labels --goal-futures "
                                                  "(use episodes the policy never trained on)")
    ap.add_argument("--phrasings", default="heldout", help="train, heldout, canonical or a .tsv file (default: %(default)s)")
    ap.add_argument("--states", type=int, default=300, help="states to test at (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="which states (default: %(default)s)")
    ap.add_argument("--out", default=None, help="also write command_follow.json here")
    ap.add_argument("--renditions", type=int, default=4,
                    help="audio / heard policies: renditions (voice, rate, pitch, noise) of each phrasing (default: %(default)s)")
    add_hearing_args(ap)
    args = ap.parse_args(argv)
    from vla.errors import VLAError
    from vla.policy import VLAPolicy

    try:
        if args.states < 1:
            raise ValueError(f"--states must be >= 1, got {args.states}")
        if args.renditions < 1:
            raise ValueError(f"--renditions must be >= 1, got {args.renditions}")
        hearing = hearing_from_args(args)
        phrasings = _phrasings(args.phrasings)
        if not Path(args.data).is_dir():
            raise ValueError(f"--data {args.data}: not a directory")
        policy = VLAPolicy.load(args.policy)
        if policy.config.action != "plan" or policy.config.command == "none":
            raise ValueError(f"{args.policy}: needs a plan-head policy that hears commands "
                             f"(this one: action {policy.config.action!r}, command {policy.config.command!r})")
        policy.hearing = hearing
        at = states(policy, args.data, args.states, args.seed)
    except (ValueError, OSError, VLAError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spoken = policy.config.command in SPOKEN_MODALITIES
    n = args.renditions if spoken else 1
    report = summarize(follow(policy, at, phrasings, renditions=n))
    report["follow_rate_canonical"] = summarize(follow(policy, at, _phrasings("canonical"), renditions=n))["follow_rate"]
    report.update(states=len(at), phrasings=args.phrasings, policy=args.policy)
    if spoken:
        report.update(renditions=n, voices=hearing.voices, snr_db=hearing.snrs_db[0])
    for key, r in report["by_phrasing"].items():
        print(f"  {r if r is not None else '-':>6}  {key}")
    print(f"follow rate {report['follow_rate']} ({args.phrasings}), canonical {report['follow_rate_canonical']}, "
          f"by goal {report['by_goal']}, {len(at)} states")
    if args.out:
        from sim.atomic import atomic_output

        Path(args.out).mkdir(parents=True, exist_ok=True)
        with atomic_output(Path(args.out) / "command_follow.json") as tmp:
            tmp.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
