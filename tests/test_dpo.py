"""Preference alignment: losses, trajectory log-probs, simulator cloning, pair making, the DPO
method, the reward model / best-of-N and the commands end to end (CPU, tiny policy)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.dpo_bench import synthetic_pairs
from methods.dpo import (
    DPOConfig,
    DPOMethod,
    PairDataset,
    policy_logprob,
    reference_logps,
    split_by_seed,
)
from methods.pairs import PairConfig, PairMaker
from vla.losses import chunk_log_prob
from methods.preference_losses import (
    PREFERENCE_LOSSES,
    PreferenceLogps,
    check_loss,
)
from methods.reward_model import BestOfNPolicy, ScorerConfig, TrajectoryScorer
from sim.highway import EmbeddedDrivingEnv
from app import cli
from vla.config import PolicyConfig
from vla.policy import VLAPolicy, default_action_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared CPU: one torch thread is many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=2, cameras=False)


def tiny_policy(seed: int = 0) -> VLAPolicy:
    torch.manual_seed(seed)
    return VLAPolicy(TINY, default_action_tokenizer(TINY.n_bins))


def logps(pc, pr, rc=0.0, rr=0.0, nc=4.0, nr=4.0, grad=False) -> PreferenceLogps:
    t = [torch.tensor([float(v)], requires_grad=grad) for v in (pc, pr)]
    return PreferenceLogps(t[0], t[1], torch.tensor([rc]), torch.tensor([rr]), torch.tensor([nc]), torch.tensor([nr]))


# ----------------------------------------------------------------------------- losses
def test_dpo_loss_is_log2_when_policy_equals_reference():
    policy = tiny_policy()
    data = PairDataset(synthetic_pairs(policy, 16), policy)
    data = data.with_reference(reference_logps(policy, data, residual_scale=0.25))
    for loss, expected in (("dpo", math.log(2)), ("cdpo", math.log(2)), ("ipo", (1 / (2 * 0.5)) ** 2)):
        method = DPOMethod(tiny_policy(), DPOConfig(loss=loss, beta=0.5))
        logs = method.update(data.batch(np.arange(8)))  # the loss before this step's update
        assert logs["loss"] == pytest.approx(expected, abs=1e-5), loss
        assert logs["reward_margin"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(PREFERENCE_LOSSES))
def test_gradient_pushes_chosen_up_and_rejected_down(name):
    x = logps(-3.0, -2.0, rc=-2.5, rr=-2.5, grad=True)
    PREFERENCE_LOSSES[name](x, 0.5, 0.1).sum().backward()
    assert x.policy_chosen.grad.item() < 0 < x.policy_rejected.grad.item()  # descent: chosen up, rejected down


def test_ipo_cdpo_orpo_match_hand_computed_values():
    x = logps(-3.0, -5.0, rc=-4.0, rr=-4.5, nc=4, nr=5)
    h = (-3.0 + 4.0) - (-5.0 + 4.5)  # 1.5
    beta = 0.2
    assert PREFERENCE_LOSSES["ipo"](x, beta, 0.0).item() == pytest.approx((h - 1 / (2 * beta)) ** 2)
    sig = 1 / (1 + math.exp(-beta * h))
    assert PREFERENCE_LOSSES["dpo"](x, beta, 0.0).item() == pytest.approx(-math.log(sig), rel=1e-6)
    assert PREFERENCE_LOSSES["cdpo"](x, beta, 0.1).item() == pytest.approx(
        -0.9 * math.log(sig) - 0.1 * math.log(1 - sig), rel=1e-6)
    aw, al = -3.0 / 4, -5.0 / 5
    odds = lambda a: math.log(math.exp(a) / (1 - math.exp(a)))
    expected = -aw - beta * math.log(1 / (1 + math.exp(-(odds(aw) - odds(al)))))
    assert PREFERENCE_LOSSES["orpo"](x, beta, 0.0).item() == pytest.approx(expected, rel=1e-5)


def test_chunk_log_prob_hand_computed():
    logits = torch.zeros(1, 2, 2, 4)
    logits[0, 0, 0, 1] = math.log(3.0)  # p(bin 1) = 3/6 at (step 0, accel)
    residuals = torch.zeros(1, 2, 2, 4)
    residuals[0, 0, 0, 1] = 0.1
    bins = torch.tensor([[[1, 0], [2, 3]]])
    target = torch.tensor([[[0.3, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False]])  # the second step is past the end
    lp, n = chunk_log_prob(logits, residuals, bins, target, mask, residual_scale=0.5)
    expected = math.log(0.5) - 0.2 / 0.5 + math.log(0.25)
    assert lp.item() == pytest.approx(expected, rel=1e-6) and n.item() == 2


def test_dpo_steps_raise_chosen_and_lower_rejected_logprob():
    policy = tiny_policy()
    data = PairDataset(synthetic_pairs(policy, 8, seed=1), policy)
    data = data.with_reference(reference_logps(policy, data, 0.25))
    batch = data.batch(np.arange(8))
    method = DPOMethod(policy, DPOConfig(beta=0.5, lr=3e-3, warmup_steps=0, total_steps=30))
    for _ in range(30):
        logs = method.update(batch)
    with torch.no_grad():
        lp, _ = policy_logprob(policy.eval(), batch.inputs, 0.25)
    ref = batch.ref_logp
    assert (lp[:8] - ref[:8]).mean() > 0 > (lp[8:] - ref[8:]).mean()
    assert logs["pref_acc"] == 1.0 and logs["loss"] < math.log(2)


# ----------------------------------------------------------------------------- simulator cloning
@pytest.mark.parametrize("scenario", ["highway", "intersection"])
def test_restoring_a_snapshot_reproduces_the_continuation(scenario):
    env = EmbeddedDrivingEnv(scenario, "medium")
    env.reset(seed=3)
    for _ in range(5):
        env.step(env.expert_action())
    snap = env.snapshot()
    actions = np.random.default_rng(0).uniform([-2.0, -0.02], [2.0, 0.02], size=(25, 2))

    def continuation() -> np.ndarray:
        rows = []
        for a in actions:
            obs, reward, term, trunc, info = env.step(a)
            rows.append(np.concatenate([obs["ego"], obs["actors"].ravel(), info["events"], [reward],
                                        env.expert_action()]))
            if term or trunc:
                break
        return np.array(rows)

    first = continuation()
    for _ in range(2):  # a snapshot can be restored again and again
        obs = env.restore(snap)
        assert obs["ego"][0] == pytest.approx(snap.episode["_ego"][0])
        np.testing.assert_array_equal(continuation(), first)


# ----------------------------------------------------------------------------- pair making
def test_pair_making_never_pairs_a_trajectory_with_itself():
    policy = tiny_policy().eval()
    env = EmbeddedDrivingEnv("highway", "light")
    # Near-zero temperature: the samples copy the greedy chunk and must be dropped as duplicates.
    config = PairConfig(continuation_steps=6, stride=5, first_branch=2, max_branches=3, samples=2,
                        temperature=1e-4, max_steps=14)
    records = PairMaker(policy, env, config).episode(seed=1)
    assert records, "a random policy against the expert should give pairs"
    judge = PairMaker(policy, env, config).constitution
    for r in records:
        assert r["chosen_source"] != r["rejected_source"]
        assert not (np.allclose(r["chosen_actions"], r["rejected_actions"]) and
                    np.array_equal(r["chosen_mask"], r["rejected_mask"]))
        assert "sample" not in r["chosen_source"] + r["rejected_source"]  # duplicates of greedy
        v = judge.compare(r["chosen_costs"], r["rejected_costs"], env.goal)
        assert (v.winner, v.rule) == (0, r["rule"])
    assert len({(r["step"], r["chosen_source"], r["rejected_source"]) for r in records}) == len(records)


def test_split_by_seed_keeps_episodes_whole():
    seeds = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    train, held = split_by_seed(seeds, 0.25)
    assert set(seeds[held]) == {3} and set(seeds[train]) == {0, 1, 2}
    assert len(split_by_seed(np.zeros(4, int), 0.5)[1]) == 0


# ----------------------------------------------------------------------------- reward model
def test_best_of_n_picks_the_top_scored_chunk():
    policy = tiny_policy()
    scorer = TrajectoryScorer(ScorerConfig(horizon=TINY.horizon, vocab_size=policy.layout.size, layers=1))
    with torch.no_grad():  # a scorer that prefers braking: GELU(10 - normalized accel summed over the chunk)
        for p in scorer.parameters():
            p.zero_()
        first, last = scorer.mlp[0], scorer.mlp[-1]
        accel_cols = [first.in_features - 3 * TINY.horizon + 2 * h for h in range(TINY.horizon)]
        first.weight[0, accel_cols] = -1.0
        first.bias[0] = 10.0
        last.weight[0, 0] = 1.0
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=0)
    bon = BestOfNPolicy(policy, scorer, n=6, temperature=2.0, seed=0)
    bon.reset()
    bon.hear(env.goal.command)
    best = bon.best_chunk(obs)
    greedy = policy.predict_action_chunk(obs)
    assert best[:, 0].sum() <= greedy[:, 0].sum() + 1e-6
    assert bon.select_action(obs).shape == (2,)
    assert "predict_action_chunk" not in policy.__dict__  # the shadowing is undone


# ----------------------------------------------------------------------------- commands
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_is_one_line_error(tmp_path, capsys):
    ref = tmp_path / "ref"
    tiny_policy().save(ref)
    cases = [
        (["train", "dpo", "--pairs", tmp_path / "nope", "--ref", ref, "--out", tmp_path / "o"], "does not exist"),
        (["train", "dpo", "--pairs", tmp_path, "--ref", ref, "--out", tmp_path / "o"], "no preference pairs"),
        (["train", "dpo", "--pairs", tmp_path, "--ref", ref, "--loss", "kto", "--out", tmp_path / "o"], "unknown --loss"),
        (["train", "dpo", "--pairs", tmp_path, "--ref", ref, "--beta", "0", "--out", tmp_path / "o"], "beta"),
        (["train", "dpo", "--pairs", tmp_path, "--ref", ref, "--beta", "-1", "--loss", "bt-reward", "--out",
          tmp_path / "o"], "beta"),
        (["make-pairs", "--policy", tmp_path / "nope", "--out", tmp_path / "p"], "not a policy checkpoint"),
        (["eval", "--policy", ref, "--best-of", "4", "--no-gif", "--out", tmp_path / "e"], "needs --scorer"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="unknown preference loss"):
        check_loss("kto", 0.1)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)


def test_end_to_end_make_pairs_train_eval(tmp_path, capsys):
    ref, pairs = tmp_path / "ref", tmp_path / "pairs"
    tiny_policy().save(ref)
    code, out, _ = run(capsys, "make-pairs", "--policy", ref, "--scenario", "highway", "--density", "light",
                       "--episodes", "2", "--max-steps", "12", "--continuation-steps", "6", "--stride", "2",
                       "--first-branch", "2", "--max-branches", "2", "--samples", "1", "--out", pairs)
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-2])
    assert summary["pairs"] > 0 and summary["episodes"] == 2
    assert not list(pairs.rglob(".*tmp*"))
    code, out, _ = run(capsys, "train", "dpo", "--pairs", pairs, "--ref", ref, "--loss", "dpo", "--beta", "0.1",
                       "--steps", "3", "--batch-size", "4", "--heldout-fraction", "0.5", "--out", tmp_path / "run")
    assert code == 0, out
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["heldout_before"]["heldout_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert "heldout_kl_ref" in record["heldout_after"] and (tmp_path / "run" / "reference_logps.npz").is_file()
    code, out, _ = run(capsys, "train", "dpo", "--pairs", pairs, "--ref", ref, "--loss", "bt-reward",
                       "--steps", "3", "--batch-size", "4", "--out", tmp_path / "rm")
    assert code == 0, out
    code, out, err = run(capsys, "eval", "--policy", tmp_path / "run" / "policy", "--scenario", "highway",
                         "--density", "light", "--episodes", "1", "--no-gif", "--out", tmp_path / "eval")
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["episodes"] == 1
    code, out, err = run(capsys, "eval", "--policy", ref, "--best-of", "3", "--scorer", tmp_path / "rm" / "scorer",
                         "--scenario", "highway", "--density", "light", "--episodes", "1", "--no-gif",
                         "--out", tmp_path / "bon")
    assert code == 0, err


def test_report_writes_tax_table_and_chart(tmp_path, capsys):
    argv = ["report", "--before", "constant", "--after", "expert", "--scenario", "highway", "--density", "light",
            "--episodes", "1", "--seed", "1000", "--out", tmp_path / "rep"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    before, after = report["policies"]
    assert (before["label"], after["label"]) == ("before", "expert")
    assert before["tax"] == {"progress_drop": 0.0, "goal_success_drop": 0.0}
    m0, m1 = before["metrics"], after["metrics"]
    assert after["tax"]["progress_drop"] == pytest.approx(m0["progress_mean"] - m1["progress_mean"])
    assert after["delta"]["collision_rate"] == pytest.approx(m1["collision_rate"] - m0["collision_rate"])
    assert (tmp_path / "rep" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "tax_progress" in (tmp_path / "rep" / "report.md").read_text()
    assert not list((tmp_path / "rep").rglob(".*tmp*"))
    code, out, _ = run(capsys, *argv)  # the finished evaluations are reused
    assert code == 0 and "episode 1/1" not in out
