"""``vla bench gpu``: its figures are computed, not assumed (FLOPs counted on the real update
agree with the 6N + attention estimate; MFU is tokens/s x FLOPs/token over the stated peak), it
runs on the CPU with --device cpu, and bad options are one-line errors. The CUDA run is marked."""

from __future__ import annotations

import json

import pytest

from app import cli
from benchmarks.gpu_bench import peak_tflops

TINY = ["bench", "gpu", "--sizes", "tiny", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "3",
        "--no-cameras"]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cpu_run_counts_flops_and_computes_mfu_from_the_stated_peak(capsys):
    assert cli.main([*TINY, "--device", "cpu", "--peak-tflops", "2"]) == 0
    out = _last_json(capsys)
    r = out["sizes"]["tiny"]
    assert out["torch_device"] == "cpu" and out["peak_tflops"] == 2
    assert 0.8 < r["flops_per_token"] / r["flops_per_token_estimate"] < 1.25
    assert r["mfu"] == pytest.approx(r["train_tokens_per_s"] * r["flops_per_token"] / 2e12)
    assert r["chunk_hz"] == pytest.approx(1000 / r["chunk_latency_ms"])
    assert r["train_tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["decode_steps"] > 0


def test_no_mfu_without_a_known_peak(capsys):
    assert cli.main([*TINY, "--device", "cpu"]) == 0
    assert _last_json(capsys)["sizes"]["tiny"]["mfu"] is None


@pytest.mark.parametrize("extra, message", [
    (["--sizes", "huge"], "--sizes: unknown size 'huge'"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--peak-tflops", "-1"], "--peak-tflops must be > 0"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_options(extra, message, capsys):
    assert cli.main([*TINY, "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err


def test_peak_table_matches_device_names():
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA GeForce GTX 1080") is None


@pytest.mark.gpu
def test_cuda_run(capsys):
    assert cli.main([*TINY, "--device", "cuda"]) == 0
    out = _last_json(capsys)
    assert out["torch_device"].startswith("cuda") and out["sizes"]["tiny"]["peak_memory_mb"] > 0


@pytest.mark.gpu
def test_bench_policy_on_cuda(capsys):
    assert cli.main(["bench", "policy", "--size", "tiny", "--density", "light", "--steps", "5", "--no-cameras",
                     "--device", "cuda"]) == 0
    out = _last_json(capsys)
    assert out["device"].startswith("cuda") and out["chunk_latency_ms"] > 0
