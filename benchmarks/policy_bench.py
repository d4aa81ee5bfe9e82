"""``vla bench policy``: inference cost of the transformer policy against the simulator.

* ``chunk_latency_ms``: one ``predict_action_chunk`` (prefix pass + H*D KV-cached decoding
  steps) on one observation, median over repeats, one torch thread;
* ``closed_loop_steps_per_s``: env.step with the policy's camera rig + ``select_action`` every
  step (the DAgger / eval loop without expert queries);
* ``sim_steps_per_s``: the same env and rig driven by a constant action (the simulator alone).
Weights are random (speed does not depend on them); the size is ``vla.commands.train.SIZES``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sim.highway import EmbeddedDrivingEnv
from vla.config import PolicyConfig
from vla.policy import VLAPolicy, default_action_tokenizer


def _steps_per_s(env, act, steps: int, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    elapsed, done = 0.0, 0
    while done < steps:
        t0 = time.perf_counter()
        obs, _, term, trunc, _ = env.step(act(obs))
        elapsed += time.perf_counter() - t0
        done += 1
        if term or trunc:
            obs, _ = env.reset(seed=seed + done)
    return done / elapsed


def run_policy_bench(config: PolicyConfig, scenario: str = "highway", density: str = "medium",
                     steps: int = 200, seed: int = 0, log=print) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        policy = VLAPolicy(config, default_action_tokenizer(config.n_bins)).eval()
        env = EmbeddedDrivingEnv(scenario, density, cameras=policy.rig)
        obs, _ = env.reset(seed=seed)
        policy.hear(env.goal.command, env.goal.lang)
        for _ in range(3):
            policy.predict_action_chunk(obs)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            policy.predict_action_chunk(obs)
            times.append(time.perf_counter() - t0)
        latency = 1000 * float(np.median(times))
        log(f"chunk latency: {latency:.1f} ms (H={config.horizon}, {config.horizon * 2} decoding steps)")
        policy.reset()
        closed = _steps_per_s(env, policy.select_action, steps, seed)
        log(f"closed loop: {closed:.1f} steps/s")
        sim = _steps_per_s(env, lambda obs: np.zeros(2, np.float32), steps, seed)
        log(f"simulator alone (same rig): {sim:.1f} steps/s")
        params = sum(p.numel() for p in policy.parameters())
        return {"chunk_latency_ms": latency, "closed_loop_steps_per_s": closed, "sim_steps_per_s": sim,
                "parameters": params, "cameras": len(policy.rig), "scenario": scenario, "density": density}
    finally:
        torch.set_num_threads(threads)
