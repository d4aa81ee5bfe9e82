"""``vla bench policy``: inference cost of the transformer policy against the simulator.

* ``chunk_latency_ms``: one ``predict_action_chunk`` (prefix pass + H*D KV-cached decoding
  steps) on one observation, median over repeats, one torch thread;
* ``closed_loop_steps_per_s``: env.step with the policy's camera rig + ``select_action`` every
  step (the DAgger / eval loop without expert queries; a new chunk / plan every
  ``replan_every`` steps); ``closed_loop_ratio`` = it / ``sim_steps_per_s``;
* ``policy_ms_per_step`` / ``closed_loop_env_ms_per_step``: the closed loop's step split into
  ``select_action`` and ``env.step`` (the ratio also counts a policy that drives into costlier
  scenes, e.g. more cars in view; this split does not);
* ``sim_steps_per_s``: the same env and rig driven by a constant action (the simulator alone),
  timed in blocks of ``BLOCK`` steps that alternate with the closed loop's, so that the ratio
  compares the two under the same machine load;
* ``train_samples_per_s``: BC updates (``methods.bc.BCMethod``, batch ``TRAIN_BATCH``) on the
  samples of one recorded expert episode, one torch thread, after 2 warm-up updates.
Weights are random (the size is ``vla.config.SIZES``) unless a saved policy is given
(``--policy``). The network's cost does not depend on its weights, but the rules around it do:
commitment (``commit_margin``) scores the executed plan against each new one in a second pass,
which a trained policy runs at most re-plans on open road and random weights (whose plans brake,
and a braking plan is always taken) almost never.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sim.backends import DEFAULT_BACKEND, make_env
from vla.accel import Accel
from vla.config import PolicyConfig
from vla.policy import VLAPolicy, default_action_tokenizer


class _Drive:
    """An env driven by ``act`` in timed blocks of steps, reset (untimed) at each episode's end."""

    def __init__(self, env, act, seed: int, on_reset=None) -> None:
        self.env, self.act, self.seed, self.on_reset = env, act, seed, on_reset
        self.steps, self.elapsed, self.acting = 0, 0.0, 0.0  # acting: the part spent in ``act``
        self._reset()

    def _reset(self) -> None:
        self.obs, _ = self.env.reset(seed=self.seed + self.steps)
        if self.on_reset is not None:
            self.on_reset(self.env)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            t0 = time.perf_counter()
            action = self.act(self.obs)
            t1 = time.perf_counter()
            self.obs, _, term, trunc, _ = self.env.step(action)
            t2 = time.perf_counter()
            self.elapsed += t2 - t0
            self.acting += t1 - t0
            self.steps += 1
            if term or trunc:
                self._reset()

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed


BLOCK = 20
"""Steps per timed block: the closed loop and the simulator alone alternate blocks, so a slower
or faster spell of a shared machine lands on both sides of ``closed_loop_ratio``."""


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
                     steps: int = 400, seed: int = 0, log=print, accel: Accel = Accel(),
                     policy: VLAPolicy | None = None) -> dict:
    """The figures above, with the policy on ``accel.device`` under ``accel``'s precision (the
    simulator stays on the CPU; on CUDA every timing waits for the GPU). ``policy``: a loaded
    one instead of random weights of ``config`` (its own config is used; it is trained on in
    memory for ``train_samples_per_s``, nothing is saved)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        if policy is None:
            policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
        config = policy.config
        policy.eval()
        policy.to(accel.device)
        env = make_env(DEFAULT_BACKEND, scenario, density, cameras=policy.rig)
        obs, _ = env.reset(seed=seed)
        policy.hear(env.goal.command, env.goal.lang)
        with accel.autocast():
            latency = median_ms(lambda: policy.predict_action_chunk(obs), accel.device, 30)
        log(f"chunk latency: {latency:.1f} ms (H={config.horizon}, {config.horizon * 2} decoding steps)")

        def new_episode(e) -> None:
            policy.reset()
            policy.hear(e.goal.command, e.goal.lang)

        # two envs with the same rig, timed in alternating blocks (``BLOCK``)
        closed_drive = _Drive(env, policy.select_action, seed, on_reset=new_episode)
        sim_env = make_env(DEFAULT_BACKEND, scenario, density, cameras=policy.rig)
        sim_drive = _Drive(sim_env, lambda obs: np.zeros(2, np.float32), seed)
        with accel.autocast():
            while closed_drive.steps < steps:
                block = min(BLOCK, steps - closed_drive.steps)
                closed_drive.run(block)
                sim_drive.run(block)
        closed, sim = closed_drive.steps_per_s, sim_drive.steps_per_s
        policy_ms = 1000 * closed_drive.acting / closed_drive.steps
        env_ms = 1000 * (closed_drive.elapsed - closed_drive.acting) / closed_drive.steps
        log(f"closed loop: {closed:.1f} steps/s (the policy {policy_ms:.2f} ms and env.step {env_ms:.2f} ms per step)")
        log(f"simulator alone (same rig, in alternating blocks of {BLOCK} steps): {sim:.1f} steps/s")
        params = sum(p.numel() for p in policy.parameters())
        train = _train_samples_per_s(policy, env, seed, accel)
        log(f"training (BC, batch {TRAIN_BATCH}): {train:.0f} samples/s")
        log(f"closed loop / simulator alone: {closed / sim:.2f} (a new {config.action} every "
            f"{config.replan_period} step(s))")
        return {"chunk_latency_ms": latency, "closed_loop_steps_per_s": closed, "sim_steps_per_s": sim,
                "policy_ms_per_step": policy_ms, "closed_loop_env_ms_per_step": env_ms,
                "closed_loop_ratio": closed / sim, "replan_every": config.replan_period,
                "train_samples_per_s": train, "action": config.action, "observation": config.observation,
                "parameters": params, "cameras": len(policy.rig), "scenario": scenario, "density": density,
                "device": accel.device, "precision": accel.precision}
    finally:
        torch.set_num_threads(threads)
