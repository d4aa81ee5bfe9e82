"""``vla bench gpu``: training throughput, model FLOP utilization, peak memory and action-chunk
latency of the transformer policy on a device (a CUDA GPU by default; ``--device cpu`` runs the
same measurement on the CPU, without MFU unless ``--peak-tflops`` is given).

Per size (``--sizes``, ``vla.config.SIZES``; 'large' is ~100M parameters):

* ``train_tokens_per_s``: BC updates (``methods.bc.BCMethod`` under ``vla.accel``: bf16 autocast,
  fused AdamW, optional compile) on one fixed batch already on the device, so the figure is the
  model's, not the data pipeline's. Tokens are sequence positions computed: batch x (prefix +
  the H x D action tokens - 1, teacher-forced), padding included.
* ``flops_per_token``: the FLOPs of one whole update (forward + backward), **counted** by
  ``torch.utils.flop_counter.FlopCounterMode`` on that batch (matmuls, attention, convolutions;
  elementwise work is not counted, as in every MFU figure), divided by its tokens. For
  reference it also prints the usual estimate ``6 N + 12 n_layers d_model L`` (N: the decoder
  blocks' parameters, L: the sequence length).
* ``mfu`` = train_tokens_per_s x flops_per_token / peak, where peak is the device's dense bf16
  tensor throughput from ``PEAK_BF16_TFLOPS`` (by device name) or ``--peak-tflops``; null when
  unknown (every CPU).
* ``peak_memory_mb``: ``torch.cuda.max_memory_allocated`` over the training; on the CPU the
  process's peak resident memory instead (``peak_rss_mb``).
* ``chunk_latency_ms`` / ``chunk_hz``: one action chunk for one observation
  (``predict_chunk_batch``: the prefix pass and the H x D KV-cached decoding steps), median of
  ``--repeats`` after warm-up, synchronized; under the same autocast.

The JSON on the last line holds ``sizes.<name>.*`` and the device.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from benchmarks.policy_bench import _sync, median_ms
from vla.options import accel_from_args, add_accel_args

PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H800": 989.0,
    "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0, "RTX A6000": 155.0, "RTX 3090": 71.0,
}
"""Dense bf16 tensor-core peak (TFLOP/s, no sparsity) from the vendors' data sheets, matched as
a substring of ``torch.cuda.get_device_name`` (the first match in this order; an H100 SXM
reports itself as "NVIDIA H100 80GB HBM3")."""


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="small,large",
                   help="comma-separated policy sizes (vla.config.SIZES) (default: %(default)s)")
    add_accel_args(p)
    p.add_argument("--batch-size", type=int, default=128, help="samples per update (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed updates (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates first (compiles) (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=50, help="timed action chunks (default: %(default)s)")
    p.add_argument("--no-cameras", action="store_true", help="blind policies (state tokens only)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's bf16 peak for MFU when it is not in the table (default: by name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode and the weights (default: %(default)s)")


def _block_params(policy) -> int:
    return sum(p.numel() for p in policy.model.backbone.layers.parameters())


def counted_flops(policy, batch, accel) -> float:
    """FLOPs of one training step's loss, forward and backward, counted by torch's
    FlopCounterMode on the eager loss (a compiled graph hides its ops from the counter; the
    optimizer's elementwise work is not counted in any case). The gradients are dropped."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with accel.autocast():
            loss, _ = policy.compute_loss(batch)
        loss.backward()
    policy.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _episode_batch(policy, batch_size: int, seed: int):
    """A batch of ``batch_size`` states of one recorded expert episode (cycled), on the CPU."""
    from sim.backends import DEFAULT_BACKEND, make_env
    from sim.rollout import BASELINES, run_episode
    from vla.data import DemoDataset

    env = make_env(DEFAULT_BACKEND, "highway", "medium", cameras=policy.rig)
    try:
        episode = run_episode(env, BASELINES["expert"](env, seed), seed, record_frames=policy.config.cameras)
    finally:
        env.close()
    data = DemoDataset(policy, augment_commands=0.0)
    data.add_episode(episode)
    return data.batch(np.arange(batch_size) % len(data))


def measure_size(size: str, accel, args: argparse.Namespace, batch_cache: dict, log=print) -> dict:
    from methods.bc import BCConfig, BCMethod
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    torch.manual_seed(args.seed)
    config = PolicyConfig(**SIZES[size], cameras=not args.no_cameras, action="plan", observation="lane_frame")
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    key = (config.cameras, config.horizon, config.n_bins)
    if key not in batch_cache:
        batch_cache[key] = _episode_batch(policy, args.batch_size, args.seed)
    cpu_batch = batch_cache[key]
    method = BCMethod(policy, BCConfig(total_steps=args.steps + args.warmup + 2), accel)
    batch = cpu_batch.to(accel.device)
    with torch.no_grad():
        prefix = policy.model.prefix(batch)[0].shape[1]
    decode_steps = int(batch.action_bins[0].numel())  # H x D action tokens
    seq = prefix + decode_steps - 1  # teacher forcing: the last action token predicts nothing
    tokens = batch.batch_size * seq
    flops = counted_flops(policy, batch, accel)
    for _ in range(args.warmup):
        method.update(batch)
    if accel.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(accel.device)
    _sync(accel.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        method.update(batch)
    _sync(accel.device)
    step_s = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in policy.parameters())
    estimate = 6 * _block_params(policy) + 12 * config.n_layers * config.d_model * seq
    out = {"parameters": params, "batch_size": batch.batch_size, "sequence_tokens": seq,
           "train_step_ms": 1000 * step_s, "train_tokens_per_s": tokens / step_s,
           "flops_per_token": flops / tokens, "flops_per_token_estimate": float(estimate)}
    if accel.device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(accel.device) / 2**20
    else:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    one = cpu_batch.select(np.arange(1))
    policy.eval()
    with accel.autocast():
        latency = median_ms(lambda: policy.predict_chunk_batch(one), accel.device, args.repeats, warmup=5)
    out.update(chunk_latency_ms=latency, chunk_hz=1000 / latency, decode_steps=decode_steps)
    log(f"{size}: {params / 1e6:.1f}M parameters, {seq} tokens/sample, batch {batch.batch_size}: "
        f"{out['train_tokens_per_s']:.0f} tokens/s ({out['train_step_ms']:.1f} ms/step), "
        f"{out['flops_per_token'] / 1e6:.1f} MFLOP/token counted ({estimate / 1e6:.1f} estimated); "
        f"chunk {latency:.2f} ms = {1000 / latency:.0f} Hz")
    return out


def run(args: argparse.Namespace) -> int:
    from vla.config import SIZES
    from vla.errors import VLAError

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        if size not in SIZES:
            raise VLAError(f"--sizes: unknown size {size!r}; choose from {', '.join(SIZES)}")
    for name in ("batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise VLAError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise VLAError(f"--warmup must be >= 0, got {args.warmup}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise VLAError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    accel = accel_from_args(args)
    name = torch.cuda.get_device_name(accel.device) if accel.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if accel.device.startswith("cuda") else None)
    print(f"device {name} ({accel.device}), {accel.precision}{', compiled' if accel.compile else ''}; "
          f"bf16 peak {'unknown (give --peak-tflops)' if peak is None else f'{peak:g} TFLOP/s'}", flush=True)
    results, cache = {}, {}
    for size in sizes:
        r = measure_size(size, accel, args, cache, log=lambda line: print(line, flush=True))
        r["mfu"] = None if peak is None else r["train_tokens_per_s"] * r["flops_per_token"] / (peak * 1e12)
        if r["mfu"] is not None:
            print(f"{size}: MFU {100 * r['mfu']:.1f}% of {peak:g} TFLOP/s", flush=True)
        results[size] = r
    print(json.dumps({"device": name, "torch_device": accel.device, "precision": accel.precision,
                      "compile": accel.compile, "peak_tflops": peak, "sizes": results}, sort_keys=True))
    return 0
