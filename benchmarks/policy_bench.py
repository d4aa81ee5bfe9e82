"""``vla bench policy``: inference cost of the transformer policy against the simulator.

* ``chunk_latency_ms``: one ``predict_action_chunk`` (prefix pass + H*D KV-cached decoding
  steps) on one observation, median over repeats, one torch thread;
* ``closed_loop_steps_per_s``: env.step with the policy's camera rig + ``select_action`` every
  step (the DAgger / eval loop without expert queries; a new chunk / plan every
  ``replan_every`` steps); ``closed_loop_ratio`` = it / ``sim_steps_per_s``;
* ``sim_steps_per_s``: the same env and rig driven by a constant action (the simulator alone);
* ``train_samples_per_s``: BC updates (``methods.bc.BCMethod``, batch ``TRAIN_BATCH``) on the
  samples of one recorded expert episode, one torch thread, after 2 warm-up updates.
Weights are random (speed does not depend on them); the size is ``vla.config.SIZES``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sim.backends import DEFAULT_BACKEND, make_env
from vla.accel import Accel
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


TRAIN_BATCH = 32
TRAIN_UPDATES = 10


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_ms(fn, device: str, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after ``warmup``, each waiting
    for the device."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _train_samples_per_s(policy: VLAPolicy, env, seed: int, accel: Accel = Accel()) -> float:
    from methods.bc import BCConfig, BCMethod
    from sim.rollout import BASELINES, run_episode
    from vla.data import DemoDataset

    ep = run_episode(env, BASELINES["expert"](env, seed), seed, record_frames=policy.config.cameras)
    data = DemoDataset(policy)
    data.add_episode(ep)
    method = BCMethod(policy, BCConfig(total_steps=TRAIN_UPDATES + 2), accel)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        method.update(data.batch(rng.integers(0, len(data), TRAIN_BATCH)))
    _sync(accel.device)
    t0 = time.perf_counter()
    for _ in range(TRAIN_UPDATES):  # batch assembly counts: it is part of every training step
        method.update(data.batch(rng.integers(0, len(data), TRAIN_BATCH)))
    _sync(accel.device)
    return TRAIN_UPDATES * TRAIN_BATCH / (time.perf_counter() - t0)


def run_policy_bench(config: PolicyConfig, scenario: str = "highway", density: str = "medium",
                     steps: int = 200, seed: int = 0, log=print, accel: Accel = Accel()) -> dict:
    """The figures above, with the policy on ``accel.device`` under ``accel``'s precision (the
    simulator stays on the CPU; on CUDA every timing waits for the GPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).eval()
        policy.to(accel.device)
        env = make_env(DEFAULT_BACKEND, scenario, density, cameras=policy.rig)
        obs, _ = env.reset(seed=seed)
        policy.hear(env.goal.command, env.goal.lang)
        with accel.autocast():
            latency = median_ms(lambda: policy.predict_action_chunk(obs), accel.device, 30)
        log(f"chunk latency: {latency:.1f} ms (H={config.horizon}, {config.horizon * 2} decoding steps)")
        policy.reset()
        with accel.autocast():
            closed = _steps_per_s(env, policy.select_action, steps, seed)
        log(f"closed loop: {closed:.1f} steps/s")
        sim = _steps_per_s(env, lambda obs: np.zeros(2, np.float32), steps, seed)
        log(f"simulator alone (same rig): {sim:.1f} steps/s")
        params = sum(p.numel() for p in policy.parameters())
        train = _train_samples_per_s(policy, env, seed, accel)
        log(f"training (BC, batch {TRAIN_BATCH}): {train:.0f} samples/s")
        log(f"closed loop / simulator alone: {closed / sim:.2f} (a new {config.action} every "
            f"{config.replan_period} step(s))")
        return {"chunk_latency_ms": latency, "closed_loop_steps_per_s": closed, "sim_steps_per_s": sim,
                "closed_loop_ratio": closed / sim, "replan_every": config.replan_period,
                "train_samples_per_s": train, "action": config.action, "observation": config.observation,
                "parameters": params, "cameras": len(policy.rig), "scenario": scenario, "density": density,
                "device": accel.device, "precision": accel.precision}
    finally:
        torch.set_num_threads(threads)
