"""Driving dataset recipes mirroring D4RL's, for ``vla collect --recipe NAME``.

* ``expert``: the simulator's expert (``env.expert_action()``), as ``--policy expert``.
* ``random``: uniform random actions within the action limits (``sim.rollout.RandomPolicy``).
* ``medium``: a weaker, noisier driver: the expert with a delayed reaction and action noise.
  It executes the expert action computed ``MEDIUM_DELAY`` steps earlier (0.5 s at 10 Hz; the
  first action is held until then) plus Gaussian noise of std ``MEDIUM_NOISE`` ([1.0 m/s^2,
  0.04 rad]), clipped to the limits, drawn from a generator seeded by the episode seed.
  Measured on highway/medium seeds 100..109 (default RewardWeights): return 23.6 vs the
  expert's 29.8, driving score 0.94 vs 1.00, 10% collisions, 10% off-road, comfort 2% vs 99%.
* ``medium-replay``: a mixture by episode index ``i`` (counted from the run's first episode),
  in blocks of 10: ``i % 10`` in {0, 1, 2} random (30%), {3, .., 7} medium (50%), {8, 9}
  expert (20%) -- poor-to-medium data with some good episodes, like D4RL's replay buffers.

Every recipe records the expert's label at each visited state as usual (``expert_actions``),
and the executed action as ``actions``: what offline RL learns from.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sim.interface import ACTION_HIGH, ACTION_LOW
from sim.rollout import ExpertPolicy, RandomPolicy

MEDIUM_DELAY = 5
"""Reaction delay of the medium driver, in 10 Hz steps."""
MEDIUM_NOISE = np.array([1.0, 0.04], dtype=np.float32)
"""Std of the medium driver's Gaussian action noise: [accel m/s^2, steer rad]."""
REPLAY_MIX = ("random",) * 3 + ("medium",) * 5 + ("expert",) * 2
"""medium-replay: the recipe of episode i is REPLAY_MIX[i % 10]."""


class MediumPolicy:
    """The expert with a ``delay``-step reaction delay and Gaussian action noise."""

    name = "medium"

    def __init__(self, env, seed: int, delay: int = MEDIUM_DELAY, noise: np.ndarray = MEDIUM_NOISE) -> None:
        self.env, self.seed, self.delay = env, int(seed), int(delay)
        self.noise = np.asarray(noise, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng([self.seed, 7])
        self._queue: deque = deque()

    def select_action(self, obs: dict) -> np.ndarray:
        self._queue.append(np.asarray(self.env.expert_action(), dtype=np.float32))
        action = self._queue.popleft() if len(self._queue) > self.delay else self._queue[0]
        noisy = action + self._rng.normal(size=2).astype(np.float32) * self.noise
        return np.clip(noisy, ACTION_LOW, ACTION_HIGH).astype(np.float32)


def _named(policy, name: str):
    policy.name = name
    return policy


RECIPES = {
    "expert": lambda env, seed: ExpertPolicy(env),
    "medium": lambda env, seed: MediumPolicy(env, seed),
    "random": lambda env, seed: RandomPolicy(seed),
}
"""Single-policy recipes: name -> factory(env, seed)."""
RECIPE_NAMES = (*RECIPES, "medium-replay")


def recipe_policy(recipe: str, env, seed: int, index: int):
    """The driving policy of episode ``index`` (seed ``seed``) of a ``recipe`` collection run."""
    if recipe == "medium-replay":
        return _named(RECIPES[REPLAY_MIX[index % len(REPLAY_MIX)]](env, seed), f"medium-replay/{REPLAY_MIX[index % 10]}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPE_NAMES)}")
    return RECIPES[recipe](env, seed)


def collect_options(args, env):
    """``vla collect``'s offline-RL options, checked before anything is recorded: the policy
    wrapper for ``--recipe`` (or None) and the reward weights for ``--d4rl``."""
    from pathlib import Path

    from offline_rl.datasets import (
        HDF5_SUFFIXES,
        NPZ_SUFFIXES,
        reward_weights_from_json,
    )

    recipe, d4rl = getattr(args, "recipe", None), getattr(args, "d4rl", None)
    if recipe is not None and recipe not in RECIPE_NAMES:
        raise ValueError(f"unknown --recipe {recipe!r}; choose one of {', '.join(RECIPE_NAMES)}")
    if d4rl is not None and Path(d4rl).suffix.lower() not in HDF5_SUFFIXES + NPZ_SUFFIXES:
        raise ValueError(f"--d4rl {d4rl}: use a {', '.join(HDF5_SUFFIXES + NPZ_SUFFIXES)} file")
    weights = reward_weights_from_json(getattr(args, "reward_weights", ""))
    wrap = None
    if recipe is not None:
        def wrap(policy, seed: int):
            return recipe_policy(recipe, env, seed, seed - args.seed)
    return wrap, weights
