"""A/B of ``vla bench policy`` between two checkouts, alternating runs on the same machine.

A shared machine's speed drifts by 10-20% within minutes, more than most changes to the policy's
step. So the two sides run alternately (A, B, A, B, ...), each in its own process from its own
checkout, and the figures are compared run by run::

    git worktree add /tmp/base <baseline commit>
    python -m benchmarks.policy_ab --base /tmp/base --runs 4 --policy runs/dagger2/iter_003/policy

prints each run's ``closed_loop_ratio``, the policy's and ``env.step``'s ms per step and the chunk
latency, then per side the mean (min-max) and the paired differences (new minus base, by run).
The policy directory is read by both sides, so it must load in the baseline's code too; other
arguments (``--size``, ``--steps``, ``--density`` ...) go to ``vla bench policy`` on both sides."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

FIELDS = ("closed_loop_ratio", "policy_ms_per_step", "closed_loop_env_ms_per_step", "chunk_latency_ms")


def bench_once(checkout: Path, args: list[str]) -> dict:
    """``vla bench policy ARGS`` run from ``checkout`` (its own code first on the path) -> its JSON line."""
    code = ("import os, sys; import vla; from app.cli import main; "
            "assert os.path.dirname(os.path.dirname(os.path.abspath(vla.__file__))) == os.getcwd(), "
            "f'vla imported from {vla.__file__}, not this checkout'; "
            "sys.argv = ['vla', 'bench', 'policy', *sys.argv[1:]]; main()")
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=checkout, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"vla bench policy failed in {checkout}: {tail}")
    return json.loads(lines[-1])


def summarize(runs: dict[str, list[dict]]) -> list[str]:
    """Per side: each field's mean (min-max); then new minus base, run by run, for the ratio."""
    lines = []
    for side, rows in runs.items():
        parts = []
        for field in FIELDS:
            values = [r[field] for r in rows]
            parts.append(f"{field} {sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        lines.append(f"{side}: " + ", ".join(parts))
    diffs = [b["closed_loop_ratio"] - a["closed_loop_ratio"] for a, b in zip(runs["base"], runs["new"])]
    lines.append("closed_loop_ratio, new - base by run: " + " ".join(f"{d:+.3f}" for d in diffs)
                 + f" (mean {sum(diffs) / len(diffs):+.3f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the baseline checkout (a git worktree, say)")
    parser.add_argument("--new", default=".", help="the checkout under test (default: this one)")
    parser.add_argument("--runs", type=int, default=4, help="runs per side, alternating (default 4)")
    parser.add_argument("--policy", help="a saved policy both sides bench (default: random weights)")
    args, extra = parser.parse_known_args(argv)  # the rest goes to `vla bench policy` (--size, --steps, ...)
    sides = {"base": Path(args.base).resolve(), "new": Path(args.new).resolve()}
    for side, path in sides.items():
        if not (path / "vla" / "__init__.py").is_file():
            parser.error(f"--{side} {path} is not a checkout of this project (no vla/__init__.py)")
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    bench_args = []
    if args.policy:
        policy = Path(args.policy).resolve()
        if not (policy / "policy.json").is_file():
            parser.error(f"--policy {policy} is not a saved policy (no policy.json)")
        bench_args = ["--policy", str(policy)]
    bench_args += extra
    runs: dict[str, list[dict]] = {"base": [], "new": []}
    try:
        for i in range(args.runs):
            for side, path in sides.items():
                row = bench_once(path, bench_args)
                runs[side].append(row)
                print(f"run {i + 1} {side}: " + ", ".join(f"{f} {row[f]:.3f}" for f in FIELDS), flush=True)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(summarize(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
