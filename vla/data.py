"""Training samples from recorded episodes: one sample per visited state, labelled with the
expert's action chunk from that state on (the DAgger aggregate and plain BC data alike).

A sample at step t of an episode holds the policy's inputs at s_t (``vla.inputs``) and the
targets ``expert_actions[t : t + H]`` encoded as bins + residuals by the policy's action
tokenizer; steps past the episode's end are masked. Frames stay in per-episode arrays and are
gathered per batch, so adding an episode never copies the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.episode import Episode
from sim.interface import EGO
from tokenizers_mm.action import ActionTokenizer
from vla.inputs import EGO_INPUT_FIELDS, PolicyInputs, actor_features, ego_features, pad_commands


@dataclass(frozen=True)
class _EpisodeArrays:
    frames: np.ndarray | None  # (T, N, H, W, 3) uint8
    ego: np.ndarray  # (T, E) float32
    actors: np.ndarray  # (T, K, A) float32
    command: np.ndarray  # (Lc,) int64
    bins: np.ndarray  # (T, H, D) int64
    residual: np.ndarray  # (T, H, D) float32
    mask: np.ndarray  # (T, H) bool


def episode_arrays(ep: Episode, policy) -> _EpisodeArrays:
    """Everything the policy trains on from one episode (labels: the expert's actions)."""
    t = ep.num_steps
    labels = ep.expert_actions
    if t and not np.all(np.isfinite(labels)):
        raise ValueError(f"episode seed {ep.seed} has steps without expert labels; record with expert queries")
    chunks, mask = ActionTokenizer.chunk(labels, policy.config.horizon) if t else (
        np.zeros((0, policy.config.horizon, 2)), np.zeros((0, policy.config.horizon), bool))
    bins, residual = policy.action_tokenizer.encode(chunks) if t else (
        np.zeros(chunks.shape, np.int64), np.zeros(chunks.shape, np.float32))
    start_lane = float(ep.ego[0, EGO["lane_id"]])
    frames = None
    if policy.config.cameras:
        if ep.frames is None:
            raise ValueError(f"episode seed {ep.seed} has no camera frames but the policy reads cameras")
        frames = ep.frames
    return _EpisodeArrays(
        frames=frames,
        ego=np.stack([ego_features(ep.ego[i], start_lane) for i in range(t)]) if t else np.zeros((0, len(EGO_INPUT_FIELDS)), np.float32),
        actors=np.stack([actor_features(ep.ego[i], ep.actors[i]) for i in range(t)]) if t else np.zeros((0, 8, 9), np.float32),
        command=policy.encode_command(ep.goal.command, ep.goal.lang),
        bins=bins.astype(np.int64),
        residual=residual.astype(np.float32),
        mask=mask.astype(bool),
    )


class DemoDataset:
    """The aggregated dataset: ``len`` samples, ``batch(indices) -> PolicyInputs``."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self._episodes: list[_EpisodeArrays] = []
        self._index = np.zeros((0, 2), dtype=np.int64)  # (episode, step) per sample

    def add_episode(self, ep: Episode) -> None:
        arrays = episode_arrays(ep, self.policy)
        e = len(self._episodes)
        self._episodes.append(arrays)
        steps = np.arange(len(arrays.ego))
        self._index = np.concatenate([self._index, np.stack([np.full_like(steps, e), steps], 1)])

    def __len__(self) -> int:
        return int(len(self._index))

    @property
    def episodes(self) -> int:
        return len(self._episodes)

    def batch(self, indices: np.ndarray) -> PolicyInputs:
        rows = self._index[np.asarray(indices, dtype=np.int64)]
        eps = [self._episodes[e] for e in rows[:, 0]]
        steps = rows[:, 1]
        pad = self.policy.layout.special("<pad>")
        command, cmask = pad_commands([ep.command for ep in eps], pad, self.policy.config.max_command_tokens)
        frames = None
        if self.policy.config.cameras:
            frames = torch.as_tensor(np.stack([ep.frames[s] for ep, s in zip(eps, steps)]))
        return PolicyInputs(
            frames=frames,
            ego=torch.as_tensor(np.stack([ep.ego[s] for ep, s in zip(eps, steps)])),
            actors=torch.as_tensor(np.stack([ep.actors[s] for ep, s in zip(eps, steps)])),
            command=torch.as_tensor(command),
            command_mask=torch.as_tensor(cmask),
            action_bins=torch.as_tensor(np.stack([ep.bins[s] for ep, s in zip(eps, steps)])),
            action_residual=torch.as_tensor(np.stack([ep.residual[s] for ep, s in zip(eps, steps)])),
            action_mask=torch.as_tensor(np.stack([ep.mask[s] for ep, s in zip(eps, steps)])),
        )
