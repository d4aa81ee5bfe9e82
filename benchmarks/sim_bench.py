"""Throughput of the embedded simulator, its expert and the camera renderer (``vla bench sim``).

Five rates and a ratio, each from ``steps`` timed calls on one core (``cv2.setNumThreads(1)``):

* ``env_steps_per_s``: ``env.step([0, 0])`` without cameras (hold speed, wheel straight).
* ``env_steps_per_s_cameras``: the same with the default 6-camera rig rendered every step.
* ``expert_steps_per_s``: ``env.expert_action()`` then ``env.step`` of it, without cameras.
* ``camera_frames_per_s``: ``CameraRenderer.render`` alone on the scenes the first run
  visited; every camera image counts as one frame (one render = 6 frames).
* ``env_steps_per_s_highway_env_road``: the first measurement again with highway-env's own
  road code (``VLA_FAST_ROAD=off``) in place of ``sim.fast_road``'s NumPy neighbour search and
  collision pre-filter; ``fast_road_speedup`` is the first rate over this one (same steps, same
  traffic).

Only the calls named are timed: ``env.reset`` (a new episode with seed + k starts whenever
one ends), a few warm-up steps and the scene snapshots are not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

WARMUP_STEPS = 5
HOLD = np.zeros(2, dtype=np.float32)
"""The constant action of the plain env measurements: accel 0 m/s^2, steer 0 rad."""


def _timed_steps(env, steps: int, seed: int, act: Callable[[object], np.ndarray],
                 scenes: list | None = None) -> float:
    """Seconds spent in ``act(env)`` + ``env.step`` over ``steps`` steps (resets untimed),
    after ``WARMUP_STEPS`` untimed steps (first-call costs: lazy imports, caches)."""
    env.reset(seed=seed)
    for _ in range(WARMUP_STEPS):
        env.step(act(env))
    env.reset(seed=seed)
    episode, elapsed = 0, 0.0
    for _ in range(steps):
        if scenes is not None:
            scenes.append(env.scene())
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(act(env))
        elapsed += time.perf_counter() - t0
        if terminated or truncated:
            episode += 1
            env.reset(seed=seed + episode)
    return elapsed


def _line(label: str, rate: float, unit: str) -> str:
    return f"{label + ':':<28}{rate:9.1f} {unit}"


def _render_seconds(renderer, scenes: list) -> float:
    renderer.render(scenes[0])  # warm-up: builds the lane tables once
    t0 = time.perf_counter()
    for scene in scenes:
        renderer.render(scene)
    return time.perf_counter() - t0


def run_sim_bench(scenario: str = "highway", density: str = "medium", steps: int = 300,
                  seed: int = 0, width: int = 96, height: int = 64,
                  log: Callable[[str], None] | None = None) -> dict:
    """Measure the rates and the ratio (see the module docstring); ``log`` gets progress lines."""
    import cv2

    from sim import fast_road
    from sim.cameras import default_rig
    from sim.backends import DEFAULT_BACKEND, make_env
    from sim.render import CameraRenderer

    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    log = log or (lambda line: None)
    rig = default_rig(width, height)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        scenes: list = []
        plain = make_env(DEFAULT_BACKEND, scenario, density)
        t_env = _timed_steps(plain, steps, seed, lambda env: HOLD, scenes)
        log(_line("env.step, no cameras", steps / t_env, "steps/s"))
        cams = make_env(DEFAULT_BACKEND, scenario, density, cameras=rig)
        t_cam = _timed_steps(cams, steps, seed, lambda env: HOLD)
        log(_line(f"env.step, {len(rig)} cameras", steps / t_cam, "steps/s"))
        t_expert = _timed_steps(plain, steps, seed, lambda env: env.expert_action())
        log(_line("expert_action + env.step", steps / t_expert, "steps/s"))
        t_render = _render_seconds(CameraRenderer(rig), scenes)
        frames = len(scenes) * len(rig)
        log(_line("renderer alone", frames / t_render, "frames/s")
            + f" ({len(scenes) / t_render:.1f} rig renders/s)")
        saved = os.environ.get(fast_road.SWITCH_ENV)
        os.environ[fast_road.SWITCH_ENV] = "off"
        try:
            t_search = _timed_steps(make_env(DEFAULT_BACKEND, scenario, density), steps, seed, lambda env: HOLD)
        finally:
            if saved is None:
                os.environ.pop(fast_road.SWITCH_ENV, None)
            else:
                os.environ[fast_road.SWITCH_ENV] = saved
        log(_line("env.step, highway-env road", steps / t_search, "steps/s")
            + f" (sim.fast_road: {t_search / t_env:.2f}x faster)")
    finally:
        cv2.setNumThreads(threads)
    return {
        "scenario": scenario,
        "density": density,
        "steps": steps,
        "seed": seed,
        "cameras": len(rig),
        "camera_size": [width, height],
        "env_steps_per_s": steps / t_env,
        "env_steps_per_s_cameras": steps / t_cam,
        "expert_steps_per_s": steps / t_expert,
        "camera_frames_per_s": frames / t_render,
        "env_steps_per_s_highway_env_road": steps / t_search,
        "fast_road_speedup": t_search / t_env,
    }
