"""The GPU path's CPU-runnable parts (vla.accel): --device / --precision / --compile resolve and
fail by name, bf16 autocast trains with fp32 master weights, a run resumes under other settings
and records them; and, marked ``gpu``, the same on CUDA (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.accel import Accel, resolve
from vla.errors import VLAError


@pytest.fixture(scope="module")
def data(light_episode) -> Path:
    return light_episode  # tests/conftest.py


def _tiny_policy(seed: int = 0):
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    torch.manual_seed(seed)
    return VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))


def _batch(policy, data: Path, n: int = 16):
    from sim.storage import read_episodes
    from vla.data import DemoDataset

    dataset = DemoDataset(policy, augment_commands=0.0)
    for ep in read_episodes(data, load_frames=False):
        dataset.add_episode(ep)
    return dataset.batch(np.arange(min(n, len(dataset))))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choices of a machine without CUDA")
def test_auto_on_a_cpu_machine_and_cuda_refused_by_name():
    assert resolve() == Accel("cpu", "fp32", False)
    assert resolve("cpu", "bf16", "on") == Accel("cpu", "bf16", True)
    with pytest.raises(VLAError, match="--device cuda: torch sees no CUDA device"):
        resolve("cuda")
    with pytest.raises(VLAError, match="--device cuda:1: torch sees no CUDA device"):
        resolve("cuda:1")


@pytest.mark.parametrize("device, precision, compile_, message", [
    ("gpu", "auto", "auto", "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("cpu", "fp16", "auto", "--precision must be one of auto, bf16, fp32, got 'fp16'"),
    ("cpu", "auto", "yes", "--compile must be one of auto, on, off, got 'yes'"),
])
def test_bad_settings_are_one_line_errors(device, precision, compile_, message):
    with pytest.raises(VLAError) as err:
        resolve(device, precision, compile_)
    assert str(err.value) == message


def test_bf16_autocast_keeps_fp32_master_weights_and_follows_fp32(data):
    from methods.bc import BCConfig, BCMethod

    runs = {}
    for precision in ("fp32", "bf16"):
        policy = _tiny_policy()
        method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=40), Accel("cpu", precision))
        batch = _batch(policy, data)
        runs[precision] = [method.update(batch)["loss"] for _ in range(40)]
        assert all(p.dtype == torch.float32 for p in policy.parameters())
        assert all(v.dtype == torch.float32 for s in method.optimizer.state.values() for v in s.values()
                   if torch.is_tensor(v) and v.is_floating_point())
    fp32, bf16 = np.array(runs["fp32"]), np.array(runs["bf16"])
    assert np.isfinite(bf16).all()
    assert abs(bf16[0] - fp32[0]) < 0.02 * fp32[0]  # the same loss up to bf16 rounding at the same weights
    assert bf16[-5:].mean() < 0.7 * bf16[0]  # and it learns as fp32 does
    assert abs(bf16[-5:].mean() - fp32[-5:].mean()) < 0.15 * fp32[-5:].mean()


def test_autocast_really_runs_bf16_matmuls():
    """Not a no-op: under bf16 the decoder's linear layers compute in bf16 (their output dtype)."""
    seen = []
    policy = _tiny_policy()
    real = torch.nn.functional.linear

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.dtype)
        return out

    x = torch.randn(2, 5, policy.config.d_model)
    mask = torch.ones(2, 5, dtype=torch.bool)
    from vla import decoder
    from vla.model import positions

    torch.nn.functional.linear = spy
    try:
        with Accel("cpu", "bf16").autocast():
            decoder.run(policy.model.backbone, x, mask, positions(mask))
    finally:
        torch.nn.functional.linear = real
    assert seen and all(d == torch.bfloat16 for d in seen)


def test_a_run_resumes_under_other_settings_and_records_them(data, tmp_path):
    """bf16 for 4 steps, then fp32 to step 8 from the step-4 checkpoint: the loop resumes (the
    settings are how it runs, not what it computes) and the newest config records fp32."""
    from methods.bc import BCConfig, BCMethod
    from vla.data import DemoDataset
    from sim.storage import read_episodes
    from vla.train_loop import TrainConfig, train

    out, messages = tmp_path / "train", []
    for precision, steps in (("bf16", 4), ("fp32", 8)):
        policy = _tiny_policy()
        dataset = DemoDataset(policy, augment_commands=0.0)
        for ep in read_episodes(data, load_frames=False):
            dataset.add_episode(ep)
        method = BCMethod(policy, BCConfig(total_steps=8), Accel("cpu", precision))
        result = train(method, dataset, TrainConfig(steps=steps, batch_size=8, checkpoint_every=4, progress=False),
                       out, log=messages.append)
        assert result.steps_done == steps
    assert result.resumed_from == 4 and any("resuming from step 4" in m for m in messages)
    configs = sorted((out / "checkpoints").glob("*/config.json"))
    assert [json.loads(c.read_text())["method_config"]["runtime"]["precision"] for c in configs] == ["bf16", "fp32"]
    # what the run computes may still not change on resume
    with pytest.raises(ValueError, match="bc.lr"):
        train(BCMethod(_tiny_policy(), BCConfig(lr=0.5, total_steps=8)), dataset,
              TrainConfig(steps=9, batch_size=8, progress=False), out, log=messages.append)


def test_cli_takes_the_settings_and_records_them(data, tmp_path):
    from app import cli

    out = tmp_path / "run"
    argv = ["train", "bc", "--data", str(data), "--out", str(out), "--no-cameras", "--size", "tiny",
            "--batch-size", "8", "--steps", "3", "--device", "cpu", "--precision", "bf16", "--compile", "off"]
    assert cli.main(argv) == 0
    config = json.loads(next((out / "train" / "checkpoints").glob("*/config.json")).read_text())
    assert config["method_config"]["runtime"] == {"device": "cpu", "precision": "bf16", "compile": False}
    assert cli.main([*argv[:-6], "--device", "tpu"]) == 2


@pytest.mark.gpu
def test_cuda_bf16_training_and_inference(data):
    """On a GPU: bf16 training with fused AdamW moves the weights, keeps them fp32, and the policy
    trained on CUDA acts on CPU as it did on CUDA (up to float rounding)."""
    from methods.bc import BCConfig, BCMethod

    policy = _tiny_policy()
    accel = resolve("cuda", "bf16", "off")
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=20), accel)
    assert method.optimizer.defaults.get("fused") is True
    batch = _batch(policy, data)
    losses = [method.update(batch)["loss"] for _ in range(20)]
    assert losses[-1] < losses[0]
    assert next(policy.model.parameters()).is_cuda and next(policy.model.parameters()).dtype == torch.float32
    inputs = _batch(policy, data, n=2)
    on_gpu = policy.predict_chunk_batch(inputs)
    policy.to("cpu")
    np.testing.assert_allclose(policy.predict_chunk_batch(inputs), on_gpu, atol=1e-3)


@pytest.mark.gpu
def test_cuda_compiled_training_matches_eager(data):
    from methods.bc import BCConfig, BCMethod

    logs = {}
    for compile_ in ("off", "on"):
        policy = _tiny_policy()
        method = BCMethod(policy, BCConfig(lr=1e-3, warmup_steps=0, total_steps=5), resolve("cuda", "fp32", compile_))
        batch = _batch(policy, data)
        logs[compile_] = [method.update(batch)["loss"] for _ in range(5)]
    np.testing.assert_allclose(logs["on"], logs["off"], rtol=1e-3)
