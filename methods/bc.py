"""Behavior cloning (and goal-conditioned BC: the goal is the heard command in the inputs).

Minimizes the policy's own action-chunk loss on expert-labelled states,
``L = CE(bins) + w * smoothL1(residual of the target bin)`` (``vla.losses``), with AdamW,
a linear warm-up then cosine decay, and gradient-norm clipping.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from vla.accel import Accel
from vla.distributed import sync_gradients


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup_steps``, then cosine decay to 0.1 at
    ``total_steps`` (held there after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class BCConfig:
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps before the cosine decay."""
    total_steps: int = 1000
    """Steps of the cosine schedule (the decay reaches 10% of lr here)."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping)."""

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"BCConfig.lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.total_steps < 1 or self.grad_clip < 0:
            raise ValueError("BCConfig: weight_decay, warmup_steps, grad_clip must be >= 0 and total_steps >= 1")


class BCMethod:
    name = "bc"
    data_parallel = True
    """``update`` averages gradients over data-parallel processes (``vla.distributed``)."""

    def __init__(self, policy, config: BCConfig = BCConfig(), accel: Accel = Accel()) -> None:
        """``accel`` (``vla.accel``): the device the policy is moved to, bf16 autocast of the
        forward pass (fp32 master weights and optimizer state), fused AdamW on CUDA, compile."""
        self.policy, self.config, self.accel = policy, config, accel
        policy.to(accel.device)
        self.optimizer = accel.adamw(policy.parameters(), config.lr, config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self._loss = accel.compiled(policy.compute_loss)

    def _lr_factor(self, step: int) -> float:
        return warmup_cosine(step, self.config.warmup_steps, self.config.total_steps)

    def update(self, batch) -> dict[str, float]:
        self.policy.train()
        with self.accel.autocast():
            loss, logs = self._loss(batch.to(self.accel.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients(self.policy.parameters())  # data-parallel: the whole batch's gradient (vla.distributed)
        if self.config.grad_clip > 0:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip))
        self.optimizer.step()
        if hasattr(self.policy, "after_optimizer_step"):  # e.g. the diffusion head's EMA
            self.policy.after_optimizer_step()
        self.scheduler.step()
        logs["lr"] = self.scheduler.get_last_lr()[0]
        return logs

    def state_dict(self) -> dict:
        state = {"model": self.policy.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        ema = self.policy.ema_state_dict() if hasattr(self.policy, "ema_state_dict") else {}
        return {**state, "ema": ema} if ema else state

    def load_state_dict(self, state: dict) -> None:
        self.policy.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "ema" in state:
            self.policy.load_ema_state_dict(state["ema"])

    def config_dict(self) -> dict:
        return {"method": self.name, "bc": asdict(self.config), "policy": self.policy.config.to_dict(),
                "runtime": self.accel.to_dict()}
