"""benchmarks.junction_trace: a junction episode step by step, with what the rules did."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_the_trace_is_the_episode_that_was_driven_and_leaves_the_policy_as_it_was(tiny_plan_policy):
    from benchmarks.junction_trace import trace_episode
    from sim.highway import EmbeddedDrivingEnv
    from vla.policies_registry import load_checkpoint

    policy = load_checkpoint(str(tiny_plan_policy()))
    env = EmbeddedDrivingEnv("intersection", "medium")
    try:
        episode, rows = trace_episode(policy, env, seed=7000001)
    finally:
        env.close()
    assert "_yield" not in vars(policy)  # the class's rules again
    assert [r["t"] for r in rows] == list(range(len(episode.actions)))
    # what the trace says the rules executed is what the car was given
    assert np.allclose([r["out_a"] for r in rows], episode.actions[:, 0], atol=0.006)
    near = [r for r in rows if 0.0 <= r["junction_m"] < 50.0]
    assert near and all(r["conf"] in (0, 1) and r["vcross"] is not None for r in near)
    assert all(r["expert_a"] is not None for r in rows)


def test_cli_prints_rows_and_a_json_last_line_and_refuses_bad_input(tiny_plan_policy, capsys):
    from benchmarks.junction_trace import main

    plan = tiny_plan_policy()
    assert main(["--policy", str(plan), "--seed", "7000002", "--last", "3", "--set", "go_jerk=4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1])["seed"] == 7000002 and json.loads(lines[-1])["steps"] > 3
    assert lines[0].split()[:3] == ["t", "junction_m", "speed"] and len(lines) == 1 + 3 + 1
    for argv, message in ((["--set", "go_jerk"], "KEY=VALUE"), (["--set", "go_jerk=fast"], "not a number"),
                          (["--set", "warp=1"], "unknown plan execution settings"), (["--every", "0"], "--every")):
        assert main(["--policy", str(plan), "--seed", "1", *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["--policy", str(tiny_plan_policy("control")), "--seed", "1"]) == 2
    assert "not a plan policy" in capsys.readouterr().err
