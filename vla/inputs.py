"""What the policy reads, as one typed batch, and how simulator observations become it.

Per sample (one decision step):
* ``frames``: the surround cameras at this step (uint8, rig order);
* ``ego``: ``EGO_INPUT_FIELDS`` scaled by ``EGO_SCALE``. ``lanes_moved`` = lanes moved to the
  LEFT since the command was heard (lane id at the episode's first step minus now): with it a
  reactive policy can tell "change to the left lane" done from not done, which the expert
  knows from its absolute target lane. The last applied steering / acceleration and what
  follows from them at 10 Hz (yaw rate, lateral and longitudinal acceleration) are left out on
  purpose: the expert's next action is strongly correlated with its last one, and a cloned
  policy that can see its own last action learns to copy it ("copycat" causal confusion, de
  Haan et al. 2019) and then drifts in closed loop, which we measured: a BC policy whose
  steering ignored a 1.5 m drift;
* ``actors``: the nearest ``STATE_ACTORS`` vehicles in the ego frame (``sim.features``), scaled;
* ``command``: the passenger's spoken command as vocabulary ids (IPA symbols or text bytes),
  padded with ``<pad>`` and masked;
* targets (training only): the action chunk as bins + in-bin residuals + a validity mask.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from sim.features import ACTOR_STATE_FIELDS, STATE_ACTORS, actors_in_ego_frame
from sim.interface import EGO

EGO_INPUT_FIELDS = ("speed", "lane_offset", "lane_heading_error", "lane_id", "speed_limit", "progress",
                    "lanes_moved")
EGO_SCALE = np.array([30.0, 2.0, 0.5, 3.0, 30.0, 1.0, 2.0], dtype=np.float32)
ACTOR_SCALE = np.array([1.0, 50.0, 10.0, 1.0, 1.0, 10.0, 10.0, 5.0, 2.0], dtype=np.float32)
assert len(EGO_SCALE) == len(EGO_INPUT_FIELDS) and len(ACTOR_SCALE) == len(ACTOR_STATE_FIELDS)


@dataclass(frozen=True)
class PolicyInputs:
    frames: torch.Tensor | None  # (B, N, H, W, 3) uint8, or None for a camera-less policy
    ego: torch.Tensor  # (B, len(EGO_INPUT_FIELDS)) float32, scaled
    actors: torch.Tensor  # (B, STATE_ACTORS, len(ACTOR_STATE_FIELDS)) float32, scaled
    command: torch.Tensor  # (B, Lc) int64 vocabulary ids, <pad> where masked
    command_mask: torch.Tensor  # (B, Lc) bool, True = a real token
    action_bins: torch.Tensor | None = None  # (B, H, D) int64 target bins
    action_residual: torch.Tensor | None = None  # (B, H, D) float32 target residuals in [-0.5, 0.5]
    action_mask: torch.Tensor | None = None  # (B, H) bool, False past the episode's end

    @property
    def batch_size(self) -> int:
        return int(self.ego.shape[0])

    def to(self, device: torch.device | str) -> PolicyInputs:
        moved = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                 for f in fields(self)}
        return PolicyInputs(**moved)

    def select(self, index: torch.Tensor | np.ndarray) -> PolicyInputs:
        idx = torch.as_tensor(index, dtype=torch.long)
        picked = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                  for f in fields(self)}
        return PolicyInputs(**picked)


def ego_features(ego: np.ndarray, start_lane: float) -> np.ndarray:
    """(len(EGO_INPUT_FIELDS),) scaled ego features of one state."""
    raw = [ego[EGO[n]] for n in EGO_INPUT_FIELDS[:-1]] + [start_lane - ego[EGO["lane_id"]]]
    return (np.asarray(raw, dtype=np.float32) / EGO_SCALE).astype(np.float32)


def actor_features(ego: np.ndarray, actors: np.ndarray) -> np.ndarray:
    """(STATE_ACTORS, len(ACTOR_STATE_FIELDS)) scaled ego-frame features of the nearest actors."""
    return (actors_in_ego_frame(ego, actors, STATE_ACTORS) / ACTOR_SCALE).astype(np.float32)


def pad_commands(commands: list[np.ndarray], pad_id: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences to a common length (at most ``max_len``; longer ones are cut)."""
    length = max(1, min(max_len, max((len(c) for c in commands), default=1)))
    out = np.full((len(commands), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(commands), length), dtype=bool)
    for i, c in enumerate(commands):
        c = np.asarray(c, dtype=np.int64)[:length]
        out[i, : len(c)] = c
        mask[i, : len(c)] = True
    return out, mask
