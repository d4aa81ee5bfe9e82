"""``python -m benchmarks.junction_trace --policy DIR --seed N``: one closed-loop episode of a plan
policy, step by step, with what the junction rules (``sim.yield_check``) did to its acceleration.

Why: a junction episode that times out or collides says nothing of which rule held the car or
let it go. Each printed row has the step, the distance to the junction's entry (``route[0]``;
50 past it), our speed and measured acceleration, the acceleration the tracker asked for
(``plan_a``), the one the rules executed (``out_a``), the expert's label at that state, and,
within 50 m of the junction, the rules' verdicts there: whether going now would meet crossing
traffic (``conf``), whether standing would (``stand``), metres to anything on our next 12 m
(``block``), the crossing speed of our path (``vcross``), and whether the step was tested with
``go_commit``'s time gap (``lnch``: the go rule's launch held, or ``commit_inside`` inside the
junction; ``vla eval --go-commit``). The rules are the policy's own
settings (``--set`` overrides them, as ``vla eval``'s flags do). The last line is JSON.

This is a diagnostic for dev episodes (validation seeds 7,000,000+); the studies' held-out
seeds are for measuring, not for reading.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

ROW_FIELDS = ("t", "junction_m", "speed", "accel_now", "plan_a", "out_a", "expert_a", "conf", "stand", "block", "vcross",
              "lnch")
_WIDTHS = (4, 10, 6, 9, 6, 6, 8, 4, 5, 5, 6, 4)
"""Printed column widths, one per ``ROW_FIELDS``."""


def _verdicts(policy, obs: dict, accels: np.ndarray, yaw_rates: np.ndarray | None, launched: bool) -> dict:
    """The junction rules' tests at this state, as the policy's ``_yield`` runs them (``launched``:
    with the launch's time gap, ``go_commit``, where it is on)."""
    from sim.interface import ACTOR_FIELDS
    from sim.yield_check import crossing_conflict, crossing_speed, ego_path, path_block

    ego = np.asarray(obs["ego"], dtype=np.float64)
    actors = np.asarray(obs["actors"], dtype=np.float64).reshape(-1, len(ACTOR_FIELDS))
    path = ego_path(ego, np.asarray(obs["route_path"], dtype=np.float64))
    p = policy._rule_params(launched, float(np.asarray(obs["route"])[0]))
    paths = obs.get("actor_paths") if policy.config.yield_paths > 0 else None
    block = path_block(ego, actors, path, p)
    return {"conf": int(crossing_conflict(ego, actors, path, p, accels, yaw_rates, paths=paths)),
            "stand": int(crossing_conflict(ego, actors, path, p, accels, yaw_rates, stand=True, paths=paths)),
            "block": None if block is None else round(block, 1), "vcross": round(crossing_speed(path, p), 2),
            "lnch": int(p is not policy._yield_params)}


def trace_episode(policy, env, seed: int) -> tuple[object, list[dict]]:
    """Run one episode of ``policy`` (a plan ``VLAPolicy``) in ``env`` from ``seed``, the expert
    labelling every state; returns the ``Episode`` and one row per step (``ROW_FIELDS``)."""
    from sim.interface import EGO
    from sim.route import JUNCTION_HORIZON
    from sim.rollout import run_episode

    rows: list[dict] = []
    rules = policy._yield

    def watched(obs, action, accels, yaw_rates, t):
        launched = policy._launched
        out = rules(obs, action, accels, yaw_rates, t)
        ego = np.asarray(obs["ego"], dtype=np.float64)
        junction = float(np.asarray(obs["route"])[0]) if obs.get("route") is not None else float("nan")
        row = {"t": t, "junction_m": round(junction, 1), "speed": round(float(ego[EGO["speed"]]), 2),
               "accel_now": round(float(ego[EGO["accel_long"]]), 2), "plan_a": round(float(action[0]), 2),
               "out_a": round(float(out[0]), 2), "conf": None, "stand": None, "block": None, "vcross": None,
               "lnch": None}
        if 0.0 <= junction < JUNCTION_HORIZON and obs.get("route_path") is not None:
            row.update(_verdicts(policy, obs, accels, yaw_rates, launched))
        rows.append(row)
        return out

    policy._yield = watched
    try:
        episode = run_episode(env, policy, seed, query_expert=True, record_frames=False)
    finally:
        del policy._yield  # the class's method again
    for row in rows:
        row["expert_a"] = round(float(episode.expert_actions[row["t"], 0]), 2) if row["t"] < len(episode.actions) else None
    return episode, rows


def parse_settings(items: list[str]) -> dict[str, float]:
    """``--set KEY=VALUE ...`` -> {key: float}; ValueError naming the item that is not one."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            settings[key] = float(value)
        except ValueError:
            raise ValueError(f"--set {key}: {value!r} is not a number") from None
    return settings


def plan_policy_and_env(policy_dir: str, items: list[str], scenario: str, density: str, phrasings: str,
                        why: str) -> tuple[object, object]:
    """A diagnostic's plan policy (``--set`` ``items`` applied) and an embedded simulator without
    cameras that words commands by ``phrasings``; ValueError for bad settings or a checkpoint
    that is not a plan policy (``why`` says what needs one)."""
    settings = parse_settings(items)
    from sim.backends import make_env
    from vla.policies_registry import load_checkpoint
    from vla.speech_commands import rephraser

    policy = load_checkpoint(policy_dir)
    if not hasattr(policy, "set_execution") or getattr(policy, "tracker", None) is None:
        raise ValueError(f"{policy_dir} is not a plan policy checkpoint ({why})")
    if settings:
        policy.set_execution(**settings)
    return policy, make_env("embedded", scenario, density, cameras=(), rephrase=rephraser(phrasings))


def _format(row: dict) -> str:
    return " ".join(f"{'-' if row.get(k) is None else row[k]:>{w}}" for k, w in zip(ROW_FIELDS, _WIDTHS))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.junction_trace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a plan policy checkpoint directory (RUN/policy)")
    ap.add_argument("--scenario", default="intersection", help="scenario family (default: intersection)")
    ap.add_argument("--density", default="medium", help="traffic density (default: medium)")
    ap.add_argument("--seed", type=int, required=True, help="the episode's seed (use validation seeds, 7,000,000+)")
    ap.add_argument("--phrasings", default="heldout", help="how the command is worded, as for vla eval (default: heldout)")
    ap.add_argument("--every", type=int, default=1, help="print every K-th step (default: 1)")
    ap.add_argument("--last", type=int, default=0, help="print only the last N steps (default: all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="plan execution settings to drive with instead of the checkpoint's, e.g. go_jerk=4 curve_brake=2")
    args = ap.parse_args(argv)
    try:
        if args.every < 1 or args.last < 0:
            raise ValueError(f"--every must be >= 1 and --last >= 0, got {args.every} and {args.last}")
        policy, env = plan_policy_and_env(args.policy, args.set, args.scenario, args.density, args.phrasings,
                                          "the junction rules act on plans")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        episode, rows = trace_episode(policy, env, args.seed)
    finally:
        env.close()
    shown = rows[-args.last:] if args.last else rows
    print(" ".join(f"{k:>{w}}" for k, w in zip(ROW_FIELDS, _WIDTHS)))
    for row in shown[::args.every]:
        print(_format(row))
    print(json.dumps({"seed": args.seed, "goal": episode.goal.label, "command": episode.goal.command,
                      "outcome": episode.outcome, "steps": len(episode.actions)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
