"""Pieces every offline-RL method shares (IQL, CQL and the BC baseline): the hidden layers'
matmul precisions, advantage weights and the cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Matmul input precision of the MLPs' hidden layers (``offline_rl.networks``)."""


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``min(exp(beta * adv), max_weight)`` (computed without overflow)."""
    return torch.exp((beta * adv).clamp(max=math.log(max_weight)))


def cosine_factor(total_steps: int):
    """lr multiplier ``0.5 (1 + cos(pi * step / total))`` (constant 1 when total is 0)."""
    def factor(step: int) -> float:
        if total_steps <= 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return factor
