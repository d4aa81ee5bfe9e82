"""``vla bench tokenizers``: tokens per second of every tokenizer on CPU, and the
action-quantization table on recorded expert episodes.

Each tokenizer module exposes its own ``bench_*() -> dict`` (what it measures is stated there);
this module runs them on one thread and gathers the figures. The quantization table uses the
executed actions of expert episodes: from ``data_dirs`` when given (datasets written by
``vla collect``), otherwise recorded here, in memory, from a few highway and intersection
episodes at medium density.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from benchmarks.quantization import format_quantization_table, load_expert_actions, quantization_table


def _benches() -> dict[str, Callable[[], dict]]:
    from tokenizers_mm.action import bench_action_tokenizer
    from tokenizers_mm.camera import bench_camera_tokenizer
    from tokenizers_mm.codec import bench_codec
    from tokenizers_mm.dialogue import bench_dialogue
    from tokenizers_mm.ipa import bench_ipa
    from tokenizers_mm.vad import bench_vad

    return {
        "action": bench_action_tokenizer,
        "camera": bench_camera_tokenizer,
        "dialogue": bench_dialogue,
        "ipa": bench_ipa,
        "vad": bench_vad,
        "codec": bench_codec,
    }


def record_expert_actions(episodes_per_scenario: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Executed actions of fresh expert episodes (no cameras), highway + intersection, medium."""
    from sim.backends import DEFAULT_BACKEND, make_env
    from sim.rollout import ExpertPolicy, run_episode

    out = []
    for scenario in ("highway", "intersection"):
        env = make_env(DEFAULT_BACKEND, scenario, "medium")
        for i in range(episodes_per_scenario):
            ep = run_episode(env, ExpertPolicy(env), seed + i, query_expert=False, record_frames=False)
            out.append(ep.actions.astype(np.float64))
    return out


def run_tokenizer_bench(data_dirs: Sequence[str] = (), episodes: int = 4,
                        log: Callable[[str], None] = print) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results: dict = {}
        for name, bench in _benches().items():
            t0 = time.perf_counter()
            results[name] = bench()
            figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in results[name].items())
            log(f"{name:9s} ({time.perf_counter() - t0:.1f} s): {figures}")
        actions = ([a for d in data_dirs for a in load_expert_actions(d)] if data_dirs
                   else record_expert_actions(episodes))
        rows = quantization_table(actions, bounds=((0.01, 0.99), (0.0, 1.0)))
        log("action quantization (expert executed actions):")
        log(format_quantization_table(rows))
        results["quantization"] = [
            {k: r[k] for k in ("bounds", "scheme", "n_bins", "decode", "mae_accel", "mae_steer",
                               "jerk_p95_added", "steer_rate_p95_added")}
            for r in rows
        ]
        return results
    finally:
        torch.set_num_threads(threads)
