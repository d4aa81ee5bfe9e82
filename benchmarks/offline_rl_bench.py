"""``vla bench offline-rl``: IQL and CQL gradient steps per second on ONE CPU thread.

Setup (the published defaults): batch 256 from a ~20k-transition Pendulum-v1 dataset generated
here (``offline_rl.pendulum``: random + energy-pumping controller episodes); IQL with 256x2
MLPs (twin critics, V, Gaussian actor), CQL(H) with 256x3 MLPs and 10 sampled actions per
source (30 per state). A step = gather a batch (``TransitionData.batch``) + ``update``; the
first ``--warmup`` steps are not timed (they include the compilation); the figure is the
median of ``--repeats`` timed runs.

The headline ``iql_steps_per_s`` / ``cql_steps_per_s`` are for what ``vla train iql|cql`` runs
by default on this machine (``--precision auto --compile auto``: bf16 matmul inputs where the
CPU has bf16 instructions, float32 accumulation / parameters / Adam; the losses compiled where
a C++ compiler is found), named by ``iql_settings`` / ``cql_settings``. The other settings are
timed too (unless ``--no-variants``): ``*_float32_eager_*`` (the reference implementations'
setting), ``*_float32_compiled_*``, ``*_bfloat16_eager_*``, ``*_bfloat16_compiled_*``, and CQL
with only the penalty in bf16 (``cql_bf16_penalty_*``). Each figure is also given per second
of thread CPU time (``*_per_cpu_s``), with the 1-minute load average (the machine may be
shared: compare runs at similar load). The last line printed is that JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def configure(p: argparse.ArgumentParser) -> None:
    from offline_rl.networks import PRECISION_CHOICES

    p.add_argument("--iql-steps", type=int, default=300, help="timed IQL steps per repeat (default: %(default)s)")
    p.add_argument("--cql-steps", type=int, default=30, help="timed CQL steps per repeat (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="transitions per step (default: %(default)s)")
    p.add_argument("--transitions", type=int, default=20_000, help="dataset size (default: %(default)s)")
    p.add_argument("--no-variants", action="store_true", help="time only the headline settings")
    p.add_argument("--emulated-bf16", action="store_true",
                   help="also time the bf16 variants on a CPU without bf16 instructions (emulated: slow, and "
                        "they can take far longer than the other settings; skipped by default there)")
    p.add_argument("--precision", choices=("auto", *PRECISION_CHOICES), default="auto",
                   help="the headline's matmul input precision, as vla train's (default: %(default)s)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="the headline's compile setting, as vla train's (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and the weights (default: %(default)s)")


def steps_per_second(method, data, steps: int, warmup: int, repeats: int, batch_size: int,
                     seed: int) -> tuple[float, float]:
    """Medians over ``repeats`` of steps/s of ``method.update(data.batch(idx))``: per wall-clock
    second, and per second of this thread's CPU time (what the rate would be on an unshared
    core; other processes on a busy machine lower the wall-clock figure only)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(data), size=(warmup + repeats * steps, batch_size))
    for idx in draws[:warmup]:
        method.update(data.batch(idx))
    wall, cpu = [], []
    for r in range(repeats):
        chunk = draws[warmup + r * steps: warmup + (r + 1) * steps]
        start, start_cpu = time.perf_counter(), time.thread_time()
        for idx in chunk:
            method.update(data.batch(idx))
        wall.append(steps / (time.perf_counter() - start))
        cpu.append(steps / (time.thread_time() - start_cpu))
    return float(np.median(wall)), float(np.median(cpu))


def measure_in_fresh_process(cls, config, steps: int, args: argparse.Namespace) -> tuple[float, float]:
    """``steps_per_second`` of one method configuration, in its own process on one thread.

    Each configuration gets a fresh interpreter, so the allocator state and compile caches one
    setting leaves behind cannot change the next one's figure. (IQL bf16 + compile measured 188
    steps/s after the CQL runs in one process and 273-291 alone, but later lone runs gave
    197-216: this shared machine drifts by up to ~40% between runs, so compare settings within
    one run.)"""
    torch.set_num_threads(1)
    from offline_rl.pendulum import make_pendulum_dataset
    from offline_rl.replay import Normalizer, TransitionData

    dataset = make_pendulum_dataset(args.transitions, seed=args.seed)
    data = TransitionData(dataset, Normalizer.fit(dataset, action_bounds=(-2.0, 2.0)))
    torch.manual_seed(args.seed)
    method = cls(dataset.obs_dim, dataset.action_dim, config)
    return steps_per_second(method, data, steps, args.warmup, args.repeats, args.batch_size, args.seed)


def bench_settings(args: argparse.Namespace, precision: str, compile_: bool, native_bf16: bool) -> tuple[dict, bool]:
    """{result key: (method class, config, steps)} of the settings to time, and whether the bf16
    variants were left out (a CPU without bf16 instructions, unless --emulated-bf16)."""
    from offline_rl.cql import CQL, CQLConfig
    from offline_rl.iql import IQL, IQLConfig

    precisions = ["float32", "bfloat16"] if not args.no_variants else [precision]
    skipped = ("bfloat16" in precisions and precision != "bfloat16"  # asked for explicitly: timed
               and not native_bf16 and not args.emulated_bf16)
    if skipped:
        precisions = [p for p in precisions if p != "bfloat16"]
    runs = {}
    for p in precisions:
        for c in ([False, True] if not args.no_variants else [compile_]):
            name = f"{p}_{'compiled' if c else 'eager'}"
            runs[f"iql_{name}_steps_per_s"] = (IQL, IQLConfig(precision=p, compile=c), args.iql_steps)
            runs[f"cql_{name}_steps_per_s"] = (CQL, CQLConfig(precision=p, penalty_precision=p, compile=c),
                                               args.cql_steps)
    if not args.no_variants and not skipped:
        runs["cql_bf16_penalty_steps_per_s"] = (CQL, CQLConfig(penalty_precision="bfloat16"), args.cql_steps)
    return runs, skipped


def run(args: argparse.Namespace) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from offline_rl.networks import native_bf16_matmul, resolve_compile, resolve_precision

    for name in ("iql_steps", "cql_steps", "repeats", "batch_size", "transitions"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    precision, compile_ = resolve_precision(args.precision), resolve_compile(args.compile)
    settings = f"{precision}_{'compiled' if compile_ else 'eager'}"
    print(f"offline-rl bench: Pendulum-v1 dataset of {args.transitions} transitions, batch {args.batch_size}, "
          f"1 thread, each setting in a fresh process, load average {os.getloadavg()[0]:.2f}; "
          f"headline settings (vla train's defaults here): {settings}", flush=True)
    runs, bf16_skipped = bench_settings(args, precision, compile_, native_bf16_matmul())
    if bf16_skipped:
        print("skipping the bf16 variants: this CPU has no bf16 instructions (AVX512-BF16 / AMX), where bf16 is "
              "emulated and far slower; --emulated-bf16 times them anyway", flush=True)
    result: dict[str, float | int | str] = {}
    context = multiprocessing.get_context("spawn")
    for key, (cls, config, steps) in runs.items():
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            rate, cpu_rate = pool.submit(measure_in_fresh_process, cls, config, steps, args).result()
        result[key] = round(rate, 2)
        result[key.replace("_per_s", "_per_cpu_s")] = round(cpu_rate, 2)
        print(f"{key}: {rate:.1f} (per CPU second: {cpu_rate:.1f})", flush=True)
    for method in ("iql", "cql"):
        for suffix in ("_steps_per_s", "_steps_per_cpu_s"):
            result[method + suffix] = result[f"{method}_{settings}{suffix}"]
        result[f"{method}_settings"] = settings
    print(f"headline ({settings}): iql_steps_per_s {result['iql_steps_per_s']:.1f}, "
          f"cql_steps_per_s {result['cql_steps_per_s']:.1f}", flush=True)
    result.update(bf16_variants_skipped=bf16_skipped, batch_size=args.batch_size, transitions=args.transitions, threads=1,
                  load_average_1m=round(os.getloadavg()[0], 2), torch=torch.__version__)
    print(json.dumps(result, sort_keys=True))
    return 0
