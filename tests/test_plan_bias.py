"""benchmarks.plan_bias: a plan policy's own plans beside the expert's, by speed."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_pairs_are_the_raw_plans_at_each_replan_beside_the_expert_and_leave_the_policy_as_it_was(tiny_plan_policy):
    from benchmarks.plan_bias import plan_pairs, summarize
    from sim.highway import EmbeddedDrivingEnv
    from sim.interface import EGO
    from vla.policies_registry import load_checkpoint

    policy = load_checkpoint(str(tiny_plan_policy(observation="lane_frame")))
    env = EmbeddedDrivingEnv("highway", "medium", goals="any")
    try:
        episode, rows = plan_pairs(policy, env, seed=7000001)
    finally:
        env.close()
    assert "_own_plan" not in vars(policy)  # the class's method again
    every = policy.config.replan_period
    assert [r["t"] for r in rows] == list(range(0, len(episode.actions), every))
    for r in rows:
        assert r["net"].shape == r["expert"].shape == (4, 2)
        assert r["speed"] == pytest.approx(float(episode.ego[r["t"], EGO["speed"]]))
    assert np.isfinite(rows[0]["expert"]).all()  # the expert's continuation from the first state is known
    assert "generate_chunk" not in vars(policy.inference_model)
    for r in rows:  # the network's own expectation of each re-plan, and its chosen bins' probabilities
        assert r["net_mean"].shape == r["net_top"].shape == (4, 2) and np.isfinite(r["net_mean"]).all()
        assert ((r["net_top"] > 0) & (r["net_top"] <= 1)).all()
    table = summarize(rows, (0.0, 24.0, 26.0, 40.0))
    assert sum(b["n"] for b in table) == len(rows)
    inside = [r for r in rows if 24.0 <= r["speed"] < 26.0 and np.isfinite(r["expert"]).all()]
    middle = table[1]
    assert middle["labelled"] == len(inside)
    assert middle["diff"] == pytest.approx(np.mean([r["net"][-1, 0] - r["expert"][-1, 0] for r in inside]))
    assert middle["diff_low"] <= middle["diff"] <= middle["diff_high"]


def test_cli_prints_a_table_and_a_json_last_line_and_refuses_bad_input(tiny_plan_policy, capsys):
    from benchmarks.plan_bias import main

    plan = tiny_plan_policy(observation="lane_frame")
    assert main(["--policy", str(plan), "--density", "light", "--episodes", "1", "--edges", "0", "25", "40", "41"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert [b["lo"] for b in last["bins"]] == [0.0, 25.0, 40.0] and len(last["episodes"]) == 1
    assert last["bins"][-1]["n"] == 0 and last["bins"][-1]["diff"] is None  # an empty bin is null, valid JSON
    assert lines[1].split()[:2] == ["speed", "m/s"] and len(lines) == 1 + 1 + 3 + 1 + 1
    for argv, message in ((["--edges", "20", "10"], "--edges"), (["--episodes", "0"], "--episodes"),
                          (["--goal", "fly"], "unknown --goal"), (["--set", "warp=1"], "unknown plan execution")):
        assert main(["--policy", str(plan), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["--policy", str(tiny_plan_policy("control")), "--episodes", "1"]) == 2
    assert "not a plan policy" in capsys.readouterr().err


def test_mean_plan_weighs_bin_centres_by_the_networks_own_probabilities(tiny_plan_policy):
    """One sure bin: the mean is that bin's centre and p(top) 1. Two equal bins: the mean is
    halfway between their centres and p(top) 1/2. No bin logits (a diffusion head): NaN."""
    import torch

    from benchmarks.plan_bias import mean_plan
    from vla.model import ChunkOutput
    from vla.policies_registry import load_checkpoint

    policy = load_checkpoint(str(tiny_plan_policy(observation="lane_frame")))
    k, n = policy.config.horizon, policy.action_tokenizer.n_bins
    chosen = np.full((1, k, 2), n // 2 + 3, dtype=np.int64)
    logits = np.full((1, k, 2, n), -1e4, dtype=np.float32)
    logits[..., n // 2 + 3] = 0.0
    out = ChunkOutput(bins=torch.from_numpy(chosen), residual=torch.zeros(1, k, 2), logprob=torch.zeros(1, k, 2),
                      bin_logits=torch.from_numpy(logits), prefix=None, scored_logits=None)
    mean, top = mean_plan(policy, out)
    centres = policy.action_tokenizer.decode(chosen[0])
    np.testing.assert_allclose(mean, centres, atol=1e-9)
    np.testing.assert_allclose(top, 1.0)
    logits[..., n // 2 + 5] = 0.0  # a second bin, as likely
    mean, top = mean_plan(policy, out)
    other = policy.action_tokenizer.decode(np.full((k, 2), n // 2 + 5))
    np.testing.assert_allclose(mean, (centres + other) / 2, atol=1e-9)
    np.testing.assert_allclose(top, 0.5)
    assert np.isnan(mean_plan(policy, None)[0]).all()
