"""Decoding a plan chunk as the driving policy does: commitment's kept plan scored in the prefix
pass, continuation logits after a kept prefix, and the numpy greedy loop against the torch loop."""

from __future__ import annotations

import numpy as np
import pytest


def _tiny_plan_policy_and_inputs():
    """A small random plan policy (seeded) and its inputs at a light-traffic highway start."""
    import torch

    from sim.highway import EmbeddedDrivingEnv
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=2, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan")).eval()
    obs, _ = EmbeddedDrivingEnv("highway", "light").reset(seed=5)
    policy.hear("change to the left lane")
    return policy, policy.inputs_from_obs(obs)


def test_continuation_logits_after_a_kept_prefix_equal_the_teacher_forced_forward():
    """VLAModel.continuation_logits (commitment's scores without a second prefix pass): the
    logits of several chunks after one observation's kept prefix equal ``forward`` with each
    chunk as the target, and the prefix's cache is left as it was (it is copied)."""
    from dataclasses import replace

    import torch

    policy, x = _tiny_plan_policy_and_inputs()
    with torch.no_grad():
        out = policy.model.generate_chunk(x, keep_prefix=True)
        before = [k.clone() for k in out.prefix.cache.keys]
        bins = torch.stack([out.bins[0], torch.randint(0, 16, out.bins.shape[1:]), torch.zeros_like(out.bins[0])])
        got = policy.model.continuation_logits(out.prefix, bins)
        batch = replace(x.select([0, 0, 0]), action_bins=bins, action_residual=torch.zeros(bins.shape),
                        action_mask=torch.ones(3, bins.shape[1], dtype=torch.bool))
        want, _ = policy.model(batch)
    assert got.shape == want.shape == (3, 4, 2, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], out.bin_logits[0], atol=1e-5, rtol=1e-5)  # its own decoding's logits
    assert all(torch.equal(a, b) for a, b in zip(before, out.prefix.cache.keys))


def test_the_plan_commitment_weighs_is_scored_in_the_prefix_pass():
    """generate_chunk(score=...) gives another chunk's teacher-forced logits from the prefix's own
    pass and decodes what it decodes without it; driving with commitment, a re-plan's scores
    then need no second pass (continuation_logits) and equal the second pass's."""
    from dataclasses import replace

    import torch

    from sim.highway import EmbeddedDrivingEnv
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=2, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first", commit_margin=1.5)
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan")).eval()
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=5)
    policy.reset()
    policy.hear("change to the left lane")
    x = policy.inputs_from_obs(obs)
    other = torch.randint(0, 16, (1, 4, 2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = policy.model.generate_chunk(x)
        fused = policy.model.generate_chunk(x, score=other)
        want, _ = policy.model(replace(x, action_bins=other, action_residual=torch.zeros(other.shape),
                                       action_mask=torch.ones(1, 4, dtype=torch.bool)))
        with pytest.raises(ValueError, match="score must be"):
            policy.model.generate_chunk(x, score=other[:, :2])
    assert torch.equal(fused.bins, plain.bins)
    torch.testing.assert_close(fused.bin_logits, plain.bin_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.scored_logits, want, atol=1e-5, rtol=1e-5)

    passes = []
    original = policy.model.continuation_logits
    policy.model.continuation_logits = lambda *a: passes.append(1) or original(*a)
    scores = []
    original_scores = policy.commitment.scores

    def weigh(o, plans):
        scores.append((o, plans, original_scores(o, plans)))
        return scores[-1][2]

    policy.commitment.scores = weigh
    for _ in range(3 * config.replan_period):
        obs, *_ = env.step(policy.select_action(obs))
    assert len(scores) >= 2 and not passes  # every re-plan weighed the kept plan without a second pass
    for o, plans, fused_scores in scores:  # the same observations and plans through the forward pass
        policy.commitment.clear()
        np.testing.assert_allclose(fused_scores, original_scores(o, plans), rtol=1e-4)


def test_a_driving_policys_greedy_chunk_is_the_torch_loops(monkeypatch):
    """A driving policy's chunk (one sequence, temperature 0) is decoded by ``greedy_numpy``;
    bins, logits, residuals and log-probabilities equal the torch token loop's, with and
    without commitment's scored plan riding in the prefix pass."""
    import torch

    from vla import decoder

    policy, x = _tiny_plan_policy_and_inputs()
    other = torch.randint(0, 16, (1, 4, 2), generator=torch.Generator().manual_seed(1))
    original, fast = decoder.greedy_numpy, []
    for score in (None, other):
        monkeypatch.setattr(decoder, "greedy_numpy", lambda *a: fast.append(1) or original(*a))
        with torch.no_grad():
            got = policy.model.generate_chunk(x, score=score)
        monkeypatch.setattr(decoder, "greedy_numpy", lambda *a: None)
        with torch.no_grad():
            want = policy.model.generate_chunk(x, score=score)
        assert torch.equal(got.bins, want.bins)
        for a, b in ((got.bin_logits, want.bin_logits), (got.residual, want.residual), (got.logprob, want.logprob)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(fast) == 2
    from dataclasses import replace

    policy.model.to(torch.bfloat16)  # weights numpy cannot hold: the torch loop, no error
    with torch.no_grad():
        low = policy.model.generate_chunk(replace(x, ego=x.ego.bfloat16(), actors=x.actors.bfloat16()))
    assert low.bins.shape == (1, 4, 2) and len(fast) == 2
