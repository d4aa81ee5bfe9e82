"""Evaluation hooks for offline RL: episode return in a gymnasium env (with the D4RL-style
normalized score) and closed-loop driving metrics on the embedded simulator.

* ``normalized_score(R, R_min, R_max) = 100 (R - R_min) / (R_max - R_min)``: 0 = the reference
  random policy, 100 = the reference expert (D4RL's convention).
* ``evaluate_gym``: ``episodes`` episodes with seeds ``seed, seed + 1, ...``; returns mean/std
  return and, with references, the normalized score of the mean.
* ``evaluate_driving``: ``vla.evaluation.evaluate`` in this process (held-out phrasings, like
  ``vla eval``), seeds ``seed + i``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DRIVING_KEYS = ("driving_score", "collision_rate", "off_road_rate", "progress_mean",
                "goal_success_rate", "jerk_long_p95", "comfort_fraction")
"""Aggregate driving metrics reported by ``evaluate_driving``."""


def normalized_score(mean_return: float, ref_min: float, ref_max: float) -> float:
    if ref_max == ref_min:
        raise ValueError(f"reference returns must differ, got min = max = {ref_min}")
    return 100.0 * (mean_return - ref_min) / (ref_max - ref_min)


def evaluate_gym(act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int = 10,
                 seed: int = 1000, reference: tuple[float, float] | None = None) -> dict[str, float]:
    """Run ``act(obs) -> action`` for ``episodes`` episodes of ``env_id``."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(f"--env {env_id}: {e}") from e
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(np.asarray(act(obs), dtype=np.float32))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    out = {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)), "episodes": episodes}
    if reference is not None:
        out["normalized_score"] = normalized_score(out["return_mean"], *reference)
    return out


def evaluate_driving(policy, scenario: str = "highway", density: str = "medium", episodes: int = 10,
                     seed: int = 1000) -> dict[str, float]:
    """Closed-loop metrics of a ``DrivingPolicy`` (an ``MLPPolicy`` or the transformer policy)."""
    from vla.evaluation import evaluate

    metrics = evaluate(policy, scenario, density, range(seed, seed + episodes)).metrics
    return {k: float(metrics[k]) for k in DRIVING_KEYS if metrics.get(k) is not None} | {"episodes": episodes}
