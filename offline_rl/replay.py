"""Replay sampling for offline RL: a D4RL dataset as torch tensors, and its batches.

``TransitionData`` is the shared training loop's ``BatchSource`` (``vla.train_loop``): the
loop draws the indices, ``batch(indices)`` gathers rows (a pure function of the indices).

Normalization (fitted once on the dataset, saved with every actor checkpoint):
* actions: ``a_n = 2 (a - low) / (high - low) - 1`` into ``[-1, 1]`` per dimension, with
  ``low/high`` given (the env's action bounds) or the dataset's min/max;
* observations (optional, default on): ``(s - mean) / (std + 1e-3)``;
* rewards (optional): ``r * scale`` with ``scale = 1000 / (max_return - min_return)`` over the
  dataset's episodes (the IQL paper's locomotion normalization), or a given scale.
``dones`` = ``terminals`` (a timeout is not an end: the target bootstraps from s').
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from offline_rl.datasets import D4RLData

OBS_STD_EPS = 1e-3


@dataclass(frozen=True)
class TransitionBatch:
    observations: torch.Tensor  # (B, S) float32, normalized
    actions: torch.Tensor  # (B, A) float32 in [-1, 1]
    rewards: torch.Tensor  # (B,) float32, scaled
    next_observations: torch.Tensor  # (B, S) float32, normalized
    dones: torch.Tensor  # (B,) float32, 1 = terminal (no bootstrap)
    inputs: object | None = None  # vla.inputs.PolicyInputs at s_t (transformer actor), or None
    next_inputs: object | None = None  # PolicyInputs at s_{t+1} (transformer actor + CQL), or None

    @property
    def batch_size(self) -> int:
        return int(self.rewards.shape[0])

    def to(self, device: torch.device | str) -> TransitionBatch:
        return TransitionBatch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                                  for f in fields(self)})


@dataclass(frozen=True)
class Normalizer:
    """What maps raw data to the networks' inputs and back (saved with every actor)."""

    obs_mean: np.ndarray  # (S,)
    obs_std: np.ndarray  # (S,)
    action_low: np.ndarray  # (A,)
    action_high: np.ndarray  # (A,)
    reward_scale: float = 1.0

    @staticmethod
    def fit(data: D4RLData, normalize_obs: bool = True, action_bounds: tuple | None = None,
            reward_scale: float | str = 1.0) -> Normalizer:
        """``reward_scale``: a number, or "returns" for 1000 / (max - min episode return)."""
        s, a = data.observations, data.actions
        mean = s.mean(0) if normalize_obs else np.zeros(s.shape[1], np.float32)
        std = s.std(0) + OBS_STD_EPS if normalize_obs else np.ones(s.shape[1], np.float32)
        if action_bounds is None:
            low, high = a.min(0), a.max(0)
        else:
            low = np.broadcast_to(np.asarray(action_bounds[0], np.float32), (a.shape[1],))
            high = np.broadcast_to(np.asarray(action_bounds[1], np.float32), (a.shape[1],))
        width = np.maximum(high - low, 1e-6)
        if reward_scale == "returns":
            returns = data.episode_returns()
            spread = float(returns.max() - returns.min())
            reward_scale = 1000.0 / spread if spread > 0 else 1.0
        return Normalizer(mean.astype(np.float32), std.astype(np.float32), low.astype(np.float32),
                          (low + width).astype(np.float32), float(reward_scale))

    def obs(self, s: np.ndarray) -> np.ndarray:
        return ((np.asarray(s, np.float32) - self.obs_mean) / self.obs_std).astype(np.float32)

    def action_to_unit(self, a: np.ndarray) -> np.ndarray:
        unit = 2.0 * (np.asarray(a, np.float32) - self.action_low) / (self.action_high - self.action_low) - 1.0
        return np.clip(unit, -1.0, 1.0).astype(np.float32)

    def action_from_unit(self, a: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(a, np.float32), -1.0, 1.0)
        return (self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"obs_mean": self.obs_mean.tolist(), "obs_std": self.obs_std.tolist(),
                "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist(),
                "reward_scale": self.reward_scale}

    @staticmethod
    def from_dict(d: dict) -> Normalizer:
        arr = {k: np.asarray(d[k], np.float32) for k in ("obs_mean", "obs_std", "action_low", "action_high")}
        return Normalizer(**arr, reward_scale=float(d.get("reward_scale", 1.0)))


class TransitionData:
    """A dataset as contiguous tensors; ``batch(indices) -> TransitionBatch``.

    ``inputs``: optional ``offline_rl.actors.EpisodeInputs`` that builds the transformer
    actor's ``PolicyInputs`` for rows (the dataset's ``infos/episode_index`` / ``infos/step``);
    ``next_inputs`` also builds them for s_{t+1} (CQL's next-state policy samples)."""

    def __init__(self, data: D4RLData, normalizer: Normalizer, inputs=None, next_inputs: bool = False) -> None:
        self.normalizer = normalizer
        self.observations = torch.from_numpy(normalizer.obs(data.observations))
        self.next_observations = torch.from_numpy(normalizer.obs(data.next_observations))
        self.actions = torch.from_numpy(normalizer.action_to_unit(data.actions))
        self.rewards = torch.from_numpy((data.rewards * normalizer.reward_scale).astype(np.float32))
        self.dones = torch.from_numpy(data.terminals.astype(np.float32))
        self.inputs, self.next_inputs = inputs, next_inputs

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def batch(self, indices: np.ndarray) -> TransitionBatch:
        idx = torch.from_numpy(np.array(indices, dtype=np.int64))
        inputs = next_inputs = None
        if self.inputs is not None:
            inputs = self.inputs.batch(indices, next_state=False)
            if self.next_inputs:
                next_inputs = self.inputs.batch(indices, next_state=True)
        return TransitionBatch(
            observations=self.observations.index_select(0, idx),
            actions=self.actions.index_select(0, idx),
            rewards=self.rewards.index_select(0, idx),
            next_observations=self.next_observations.index_select(0, idx),
            dones=self.dones.index_select(0, idx),
            inputs=inputs,
            next_inputs=next_inputs,
        )
