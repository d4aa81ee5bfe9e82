"""Behavior cloning baseline for the offline-RL comparison: the SAME actor an offline-RL method
trains (``offline_rl.actors``), on the same dataset, batches and steps, by plain maximum
likelihood of the dataset actions::

    L_BC = -E_D[ log pi(a | s) ]

It is IQL's actor loss with every advantage weight equal to 1 (``ACTOR_WEIGHTS["uniform"]``),
without critics. Adam, lr 3e-4, optionally cosine-decayed like IQL's actor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from offline_rl.actors import MLPActor
from offline_rl.common import cosine_factor
from offline_rl.networks import ACTORS, MethodState, make_adam
from offline_rl.replay import TransitionBatch


@dataclass(frozen=True)
class MLPBCConfig:
    lr: float = 3e-4
    """Adam learning rate."""
    cosine_steps: int = 0
    """Steps of a cosine lr schedule; 0 = constant."""
    hidden: int = 256
    """Width of the MLP actor's hidden layers."""
    n_hidden: int = 2
    """Hidden layers of the MLP actor."""
    actor: str = "gaussian"
    """MLP actor kind (a key of offline_rl.networks.ACTORS): IQL's gaussian or CQL's tanh_gaussian."""

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.cosine_steps < 0 or self.hidden < 1 or self.n_hidden < 1:
            raise ValueError("MLPBCConfig.lr must be > 0, cosine_steps >= 0, hidden and n_hidden >= 1")
        if self.actor not in ACTORS:
            raise ValueError(f"MLPBCConfig.actor must be one of {sorted(ACTORS)}, got {self.actor!r}")


class BC(MethodState):
    """Behavior cloning as a ``vla.train_loop.TrainingMethod``."""

    name = "bc"

    def __init__(self, obs_dim: int, action_dim: int, config: MLPBCConfig = MLPBCConfig(), actor=None) -> None:
        self.config, self.obs_dim, self.action_dim = config, obs_dim, action_dim
        self.actor = actor if actor is not None else MLPActor(
            ACTORS[config.actor](obs_dim, action_dim, config.hidden, config.n_hidden))
        self.optimizer = make_adam([{"params": list(self.actor.parameters()), "lr": config.lr}])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_factor(config.cosine_steps))

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        loss = self.actor.weighted_nll(batch, torch.ones_like(batch.rewards))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"actor_loss": loss.detach()}

    def modules(self) -> dict[str, torch.nn.Module]:
        return self.actor.modules()

    def config_dict(self) -> dict:
        return {"method": self.name, "bc": asdict(self.config), "obs_dim": self.obs_dim,
                "action_dim": self.action_dim, "actor": self.actor.kind}
