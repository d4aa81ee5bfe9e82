"""Does the command-label head tell chit-chat from commands it never heard? A dev screen.

Words heard during the drive are ignored when the policy's command-label head gives ``none``
at least ``PolicyConfig.chitchat_threshold`` (``VLAPolicy.chitchat_probability``). This drives
each policy a few steps into validation episodes (seeds 7,000,000+, never evaluation seeds),
asks the head about every line of the dev files at those states, and prints, for a sweep of
thresholds, the share of dev commands that would still be adopted and the share of dev
chit-chat that would be ignored. The dev files (``docs/dev_phrasings.tsv``,
``docs/dev_hearing.tsv``; columns goal, language, phrasing; goal ``none`` is chit-chat) are in
neither the training corpus and grammar nor the held-out split, so the threshold is chosen
here and not on the evaluation's phrasings. Plain script (JSON on the last line)::

    python -m benchmarks.chitchat_probe --policy runs/talk/seed_0/chat2/iter_000/policy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class _StopAt(Exception):
    pass


def probe_states(policy, scenario: str, density: str, seeds: list[int], steps: tuple[int, ...]) -> list[dict]:
    """Observations at ``steps`` of the policy's own drives of ``seeds`` (its canonical command)."""
    from sim.backends import make_env
    from sim.rollout import run_episode

    env, states, last = make_env("embedded", scenario, density), [], max(steps)

    class Recorder:
        name = "probe"
        t = 0

        def __getattr__(self, key):
            return getattr(policy, key)

        def reset(self):
            self.t = 0
            policy.reset()

        def select_action(self, obs):
            if self.t in steps:
                states.append(obs)
            if self.t >= last:
                raise _StopAt
            self.t += 1
            return policy.select_action(obs)

    for seed in seeds:
        try:
            run_episode(env, Recorder(), seed, query_expert=False, record_frames=False)
        except _StopAt:
            pass
    policy.reset()
    return states


def sweep(p_none: dict[tuple[str, str, str], float], thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold: commands adopted (p(none) below it) and chit-chat ignored (at or above)."""
    commands = [p for (goal, _, _), p in p_none.items() if goal != "none"]
    chat = [p for (goal, _, _), p in p_none.items() if goal == "none"]
    rows = []
    for tau in thresholds:
        kept = float(np.mean([p < tau for p in commands])) if commands else float("nan")
        ignored = float(np.mean([p >= tau for p in chat])) if chat else float("nan")
        rows.append({"threshold": tau, "commands_adopted": kept, "chitchat_ignored": ignored,
                     "balanced": (kept + ignored) / 2})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", nargs="+", required=True, help="policy checkpoints with the command-label head")
    ap.add_argument("--phrasings", nargs="+", default=[str(DOCS / "dev_phrasings.tsv"), str(DOCS / "dev_hearing.tsv")],
                    help="goal/language/phrasing TSV files (goal none = chit-chat) (default: the dev files)")
    ap.add_argument("--episodes", type=int, default=2, help="validation episodes per policy (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=7_000_000, help="first validation seed (default: %(default)s)")
    args = ap.parse_args(argv)
    from vla.errors import VLAError
    from vla.policy import VLAPolicy
    from vla.speech_commands import read_phrasings_tsv

    try:
        lines = [p for f in args.phrasings for p in read_phrasings_tsv(f)]
        policies = [VLAPolicy.load(d) for d in args.policy]
    except (OSError, ValueError) as err:
        raise VLAError(str(err)) from None
    if args.episodes < 1:
        raise VLAError(f"--episodes must be >= 1, got {args.episodes}")
    p_none: dict[tuple[str, str, str], list[float]] = {(p.label, p.lang, p.text): [] for p in lines}
    for directory, policy in zip(args.policy, policies):
        if policy.model.command_head is None:
            raise VLAError(f"{directory} has no command-label head (trained with --command-label-weight 0)")
        states = probe_states(policy, "highway", "medium", list(range(args.seed, args.seed + args.episodes)), (10, 30))
        for p in lines:
            p_none[(p.label, p.lang, p.text)].append(
                float(np.mean([policy.chitchat_probability(obs, p.text, p.lang) for obs in states])))
    mean = {k: float(np.mean(v)) for k, v in p_none.items()}
    for (goal, lang, text), p in sorted(mean.items(), key=lambda kv: kv[1]):
        print(f"  p(none) {p:.3f}  {goal:13s} {lang} {text}")
    rows = sweep(mean)
    print("threshold | commands adopted | chit-chat ignored")
    for r in rows:
        print(f"  {r['threshold']:.2f}    | {r['commands_adopted']:.2f}             | {r['chitchat_ignored']:.2f}")
    print(json.dumps({"policies": args.policy, "lines": len(lines), "sweep": rows,
                      "p_none": {f"{g}|{lang}|{t}": p for (g, lang, t), p in mean.items()}}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as err:  # noqa: BLE001 - one line for the user
        from vla.errors import VLAError

        if isinstance(err, VLAError):
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
