"""The diffusion action head: learning, seeded sampling, EMA, save/load, the CLI, and the binned
head left as it was."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from methods.bc import BCConfig, BCMethod
from sim.highway import EmbeddedDrivingEnv
from sim.rollout import ExpertPolicy, run_episode
from app.cli import main
from vla.config import PolicyConfig
from vla.data import DemoDataset
from vla.diffusion_head import denormalize_actions, normalize_actions
from vla.policy import VLAPolicy, default_action_tokenizer

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_bins": 16, "horizon": 3, "cameras": False,
        "command": "text", "diffusion_width": 32, "diffusion_blocks": 2, "diffusion_train_steps": 50,
        "diffusion_inference_steps": 5}


@pytest.fixture(scope="module")
def episodes():
    env = EmbeddedDrivingEnv("highway", "light")
    return [run_episode(env, ExpertPolicy(env), seed) for seed in range(2)]


@pytest.fixture(scope="module")
def obs():
    env = EmbeddedDrivingEnv("highway", "light")
    observation, _ = env.reset(seed=7)
    return observation, env.goal.command


def make_policy(**overrides) -> VLAPolicy:
    torch.manual_seed(0)
    cfg = PolicyConfig(**{**TINY, "head": "diffusion", **overrides})
    return VLAPolicy(cfg, default_action_tokenizer(cfg.n_bins))


def fixed_batch(policy, episodes, n=16):
    data = DemoDataset(policy)
    for ep in episodes:
        data.add_episode(ep)
    return data.batch(np.arange(0, 2 * n, 2))


def trained(episodes, steps=20, **overrides):
    policy = make_policy(**overrides)
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=steps))
    batch = fixed_batch(policy, episodes)
    torch.manual_seed(1)
    logs = [method.update(batch)["loss"] for _ in range(steps)]
    return policy, method, batch, logs


def test_noise_prediction_loss_drops_on_a_fixed_batch(episodes):
    _, _, _, logs = trained(episodes, steps=60)
    assert np.all(np.isfinite(logs))
    assert np.mean(logs[-10:]) < 0.5 * np.mean(logs[:3])


def test_sampling_is_deterministic_under_a_seed(obs):
    policy = make_policy().eval()
    observation, command = obs
    policy.hear(command)

    def chunk(seed):
        return policy.predict_action_chunk(observation, generator=torch.Generator().manual_seed(seed))

    a, b, c = chunk(3), chunk(3), chunk(4)
    assert a.shape == (3, 2) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # select_action draws from the policy's own generator, reseeded by reset(): reproducible
    runs = []
    for _ in range(2):
        policy.reset()
        policy.hear(command)
        runs.append([policy.select_action(observation) for _ in range(3)])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))
    assert not np.array_equal(runs[0][0], runs[0][1])  # fresh noise at every step
    # diffusion_noise 0: the deterministic map of the zero latent, whatever the seed
    policy.config = PolicyConfig(**{**policy.config.to_dict(), "diffusion_noise": 0.0})
    np.testing.assert_array_equal(chunk(3), chunk(4))


def test_dpmsolver_sampler_is_seeded_too(obs):
    policy = make_policy(diffusion_scheduler="dpmsolver").eval()
    observation, command = obs
    policy.hear(command)
    a = policy.predict_action_chunk(observation, generator=torch.Generator().manual_seed(0))
    b = policy.predict_action_chunk(observation, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a))


def test_save_load_round_trip_with_ema(episodes, obs, tmp_path):
    policy, _, _, _ = trained(episodes, steps=15)
    policy.eval()
    assert policy._ema.step == 15 and policy.inference_model is policy._ema.model
    observation, command = obs
    policy.hear(command)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(5)

    with_ema = policy.predict_action_chunk(observation, generator=gen())
    raw = policy.head.predict(policy, policy.model, policy.inputs_from_obs(observation), 0.0, gen())[0]
    assert not np.allclose(with_ema, raw)  # the EMA, not the raw weights, predicts
    policy.save(tmp_path / "ckpt")
    assert any(k.startswith("ema.") for k in load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    assert loaded._ema.step == 15
    loaded.hear(command)
    np.testing.assert_array_equal(with_ema, loaded.predict_action_chunk(observation, generator=gen()))
    for p in (policy, loaded):
        p.reset()
        p.hear(command)
    np.testing.assert_array_equal(policy.select_action(observation), loaded.select_action(observation))


def test_method_state_resumes_exactly_with_ema(episodes):
    policy, method, batch, _ = trained(episodes, steps=5)
    buffer = io.BytesIO()  # through bytes, as a checkpoint is (no tensors shared with the live run)
    torch.save(method.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert "ema" in state and int(state["ema"]["_step"]) == 5
    other = make_policy()
    other_method = BCMethod(other, BCConfig(lr=3e-3, warmup_steps=0, total_steps=5))
    other_method.load_state_dict(state)
    for m in (method, other_method):
        torch.manual_seed(9)
        m.update(batch)
    for a, b in zip(policy.ema_state_dict().values(), other.ema_state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(policy.model.parameters(), other.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("field", ["diffusion_inference_steps", "diffusion_train_steps"])
@pytest.mark.parametrize("value", [0, -2])
def test_bad_step_counts_are_clear_errors(field, value):
    with pytest.raises(ValueError, match=field):
        PolicyConfig(head="diffusion", **{field: value})


def test_bad_options(obs, tmp_path, capsys):
    with pytest.raises(ValueError, match="diffusion_inference_steps .* <= diffusion_train_steps"):
        PolicyConfig(diffusion_train_steps=10, diffusion_inference_steps=20)
    with pytest.raises(ValueError, match="head"):
        PolicyConfig(head="gaussian")
    with pytest.raises(ValueError, match="diffusion_scheduler"):
        PolicyConfig(diffusion_scheduler="euler")
    with pytest.raises(ValueError, match="ema_decay"):
        PolicyConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="diffusion_noise"):
        PolicyConfig(diffusion_noise=-0.5)
    policy = make_policy()
    features = torch.zeros(1, policy.config.d_model)
    with pytest.raises(ValueError, match="inference steps"):
        policy.model.diffusion_head.sample(features, steps=0)
    code = main(["dagger", "--head", "diffusion", "--diffusion-steps", "0", "--no-cameras", "--size", "tiny",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "diffusion_inference_steps" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_normalization_round_trip():
    x = np.array([[-6.0, -0.7], [0.0, 0.0], [4.0, 0.7]])
    z = normalize_actions(x)
    assert z.min() >= -1 and z.max() <= 1
    np.testing.assert_allclose(z[0, 0], -1.0) and np.testing.assert_allclose(z[2, 0], 1.0)
    np.testing.assert_allclose(denormalize_actions(z), x, atol=1e-9)


def test_binned_head_is_unchanged(episodes, tmp_path):
    torch.manual_seed(0)
    cfg = PolicyConfig(**{k: v for k, v in TINY.items() if not k.startswith("diffusion")})
    policy = VLAPolicy(cfg, default_action_tokenizer(cfg.n_bins))
    assert cfg.head == "bins" and policy.model.diffusion_head is None and policy._ema is None
    assert policy.ema_state_dict() == {}
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=3))
    assert "bin_ce" in method.update(fixed_batch(policy, episodes))
    assert "ema" not in method.state_dict()
    # a checkpoint written before the head fields existed still loads
    policy.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "policy.json").read_text())
    for key in ("head", "diffusion_train_steps", "diffusion_inference_steps", "diffusion_scheduler",
                "diffusion_width", "diffusion_blocks", "ema_decay"):
        del meta["config"][key]
    (tmp_path / "old" / "policy.json").write_text(json.dumps(meta))
    assert VLAPolicy.load(tmp_path / "old").config == cfg


def test_dagger_with_the_diffusion_head_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["dagger", "--head", "diffusion", "--diffusion-steps", "3", "--no-cameras", "--size", "tiny",
                 "--scenario", "highway", "--density", "light", "--iterations", "1", "--expert-episodes", "2",
                 "--rollouts", "1", "--eval-episodes", "1", "--train-steps", "6", "--batch-size", "8",
                 "--workers", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-2000:]
    meta = json.loads((out / "iter_001" / "policy" / "policy.json").read_text())
    assert meta["config"]["head"] == "diffusion" and meta["config"]["diffusion_inference_steps"] == 3
    weights = load_file(str(out / "iter_001" / "policy" / "model.safetensors"))
    assert int(weights["ema._step"]) == 6
    final = json.loads((out / "metrics.json").read_text())
    assert final["episodes"] == 1 and "jerk_long_p95" in final
    lines = [json.loads(x) for x in (out / "iterations.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [0, 1] and all(np.isfinite(x["train_loss"]) for x in lines)


def test_bench_prints_one_json_line(episodes, tmp_path, capsys):
    code = main(["bench", "diffusion", "--size", "tiny", "--no-cameras", "--repeats", "2", "--steps", "1,2",
                 "--density", "light"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(out[-1])
    assert set(result["diffusion_ms_per_chunk"]) == {"1", "2"} and result["bins_ms_per_chunk"] > 0
    assert main(["bench", "diffusion", "--size", "tiny", "--steps", "0"]) == 2
    policy, _, _, _ = trained(episodes, steps=3)
    policy.save(tmp_path / "ckpt")
    code = main(["bench", "diffusion", "--policy", str(tmp_path / "ckpt"), "--repeats", "1", "--steps", "2",
                 "--noise", "1,0", "--episodes", "1", "--density", "light"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and [(r["steps"], r["noise"]) for r in result["closed_loop"]] == [(2, 1.0), (2, 0.0)]
    assert {"collision_rate", "progress_mean", "jerk_long_p95", "jerk_lat_p95",
            "comfort_fraction"} <= set(result["closed_loop"][0])


def test_methods_that_need_a_token_likelihood_refuse_the_diffusion_head():
    """DPO and the offline-RL transformer actor read the chunk's token likelihood; the diffusion
    head has none, so they refuse it by name instead of training something that is never read."""
    from methods.dpo import DPOConfig, DPOMethod
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=2, cameras=False, head="diffusion")
    policy = VLAPolicy(cfg, default_action_tokenizer(16))
    with pytest.raises(ValueError, match="token likelihood.*head 'diffusion'"):
        DPOMethod(policy, DPOConfig(), reference=policy)
    with pytest.raises(ValueError, match="head 'diffusion' has none"):
        policy.chunk_log_prob(None, 0.5)
