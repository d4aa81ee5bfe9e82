"""Implicit Q-Learning (Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit
Q-Learning", ICLR 2022), one ``update(batch)`` for the shared loop ``vla.train_loop``.

Networks: twin critics ``Q_1, Q_2`` (one batched ensemble), their Polyak targets ``Q^_e``, a
state value ``V`` and an actor ``pi`` (``offline_rl.actors``: an MLP Gaussian, or the
transformer policy). On a batch ``(s, a, r, s', d)`` of dataset transitions::

    L_V  = E[ L2^tau( min_e Q^_e(s, a) - V(s) ) ],   L2^tau(u) = |tau - 1(u < 0)| u^2
    L_Q  = sum_e E[ (r + gamma (1 - d) V(s') - Q_e(s, a))^2 ]
    A    = min_e Q^_e(s, a) - V(s)                    (no gradient)
    L_pi = -E[ min(exp(beta A), 100) log pi(a | s) ]  (advantage-weighted regression)
    Q^_e <- (1 - alpha) Q^_e + alpha Q_e              (after every step)

Defaults are the paper's locomotion settings: tau = 0.7, beta = 3.0, gamma = 0.99,
alpha = 0.005, Adam lr 3e-4 for all networks, a cosine schedule on the actor's lr, weights
clipped at 100. ``V`` never sees an action outside the dataset: the expectile (tau > 0.5) of
``Q`` over the data's actions approximates a max over in-support actions.

Every loss above depends only on the parameters BEFORE the step (targets, ``V(s')`` and ``A``
carry no gradient), so the sum ``L_V + L_Q + L_pi`` is backpropagated once and one Adam with
a param group per network steps them together: the same update as three optimizers stepping
in turn, with one backward pass instead of three. Loss pieces are small pure functions picked
from ``VALUE_LOSSES`` and ``ACTOR_WEIGHTS``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from offline_rl.actors import MLPActor
from offline_rl.common import PRECISIONS, awr_weights, cosine_factor
from offline_rl.networks import (
    GaussianActor,
    MethodState,
    StateActionCritic,
    ValueNet,
    compiled,
    make_adam,
    polyak_update,
)
from offline_rl.replay import TransitionBatch

def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean |tau - 1(u < 0)| u^2`` of ``u = diff``; at tau = 0.5 it is half the MSE."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


def quantile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean |tau - 1(u < 0)| |u|`` (the tau-quantile instead of the expectile)."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.abs()).mean()


def uniform_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """All ones: behavior cloning of every dataset action."""
    return torch.ones_like(adv)


VALUE_LOSSES = {"expectile": expectile_loss, "quantile": quantile_loss}
ACTOR_WEIGHTS = {"awr": awr_weights, "uniform": uniform_weights}


@dataclass(frozen=True)
class IQLConfig:
    tau: float = 0.7
    """Expectile of the value loss (0.5 = mean, -> 1 = max over dataset actions)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta * A)."""
    discount: float = 0.99
    """gamma."""
    polyak: float = 0.005
    """Target-critic update rate alpha."""
    critic_lr: float = 3e-4
    """Adam lr of the twin critics."""
    value_lr: float = 3e-4
    """Adam lr of V."""
    actor_lr: float = 3e-4
    """Adam lr of the actor (cosine-decayed over actor_cosine_steps)."""
    actor_cosine_steps: int = 0
    """Steps of the actor's cosine lr schedule (the run's length); 0 = constant lr."""
    max_weight: float = 100.0
    """Clip of the advantage weights."""
    hidden: int = 256
    """Width of every MLP hidden layer."""
    n_hidden: int = 2
    """Hidden layers of every MLP (critics, V, MLP actor)."""
    value_loss: str = "expectile"
    """A key of VALUE_LOSSES."""
    weighting: str = "awr"
    """A key of ACTOR_WEIGHTS."""
    precision: str = "float32"
    """Matmul input precision of the MLPs: float32 (exact) or bfloat16 (see offline_rl.networks)."""
    compile: bool = False
    """Compile the loss computation (forward and backward) with torch.compile (inductor): fused
    element-wise kernels and packed matmuls; costs seconds of compilation at the first step."""

    def __post_init__(self) -> None:
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"IQLConfig.tau must be in (0, 1), got {self.tau}")
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.polyak <= 1.0:
            raise ValueError("IQLConfig.discount must be in [0, 1] and polyak in (0, 1]")
        for name in ("critic_lr", "value_lr", "actor_lr", "max_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IQLConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.beta < 0 or self.hidden < 1 or self.n_hidden < 1 or self.actor_cosine_steps < 0:
            raise ValueError("IQLConfig.beta must be >= 0, hidden and n_hidden >= 1, actor_cosine_steps >= 0")
        for name, table in (("value_loss", VALUE_LOSSES), ("weighting", ACTOR_WEIGHTS), ("precision", PRECISIONS)):
            if getattr(self, name) not in table:
                raise ValueError(f"IQLConfig.{name} must be one of {sorted(table)}, got {getattr(self, name)!r}")


class IQL(MethodState):
    """IQL as a ``vla.train_loop.TrainingMethod``."""

    name = "iql"

    def __init__(self, obs_dim: int, action_dim: int, config: IQLConfig = IQLConfig(), actor=None) -> None:
        c = self.config = config
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.dtype = PRECISIONS[c.precision]
        self.critic = StateActionCritic(obs_dim, action_dim, c.hidden, c.n_hidden, ensemble_size=2)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = ValueNet(obs_dim, c.hidden, c.n_hidden)
        self.actor = actor if actor is not None else MLPActor(GaussianActor(obs_dim, action_dim, c.hidden, c.n_hidden))
        self.optimizer = make_adam([
            {"params": list(self.critic.parameters()), "lr": c.critic_lr},
            {"params": list(self.value.parameters()), "lr": c.value_lr},
            {"params": list(self.actor.parameters()), "lr": c.actor_lr},
        ])
        const = cosine_factor(0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [const, const, cosine_factor(c.actor_cosine_steps)])
        self._value_loss = VALUE_LOSSES[c.value_loss]
        self._weights = ACTOR_WEIGHTS[c.weighting]

        self._losses = compiled(self._loss_terms) if c.compile else self._loss_terms

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        total, logs = self._losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        polyak_update(self.target_critic, self.critic, self.config.polyak)
        return logs

    def _loss_terms(self, batch: TransitionBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``L_V + L_Q + L_pi`` and the logged values (pure tensor code: compilable)."""
        c, dt = self.config, self.dtype
        s, a, s2 = batch.observations, batch.actions, batch.next_observations
        with torch.no_grad():
            target_q = self.target_critic(s, a, dtype=dt).min(0).values  # (B,)
            next_v = self.value(s2, dt)  # (B,)
            q_target = batch.rewards + c.discount * (1.0 - batch.dones) * next_v
        v = self.value(s, dt)
        adv = target_q - v
        value_loss = self._value_loss(adv, c.tau)
        q = self.critic(s, a, dtype=dt)  # (E, B)
        q_loss = (q - q_target).pow(2).mean(-1).sum()
        weights = self._weights(adv.detach(), c.beta, c.max_weight)
        actor_loss = self.actor.weighted_nll(batch, weights, dt)
        return value_loss + q_loss + actor_loss, {
            "value_loss": value_loss.detach(), "q_loss": q_loss.detach(),
            "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean(),
            "v_mean": v.detach().mean(), "adv_mean": adv.detach().mean(),
            "weight_mean": weights.mean()}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"critic": self.critic, "target_critic": self.target_critic, "value": self.value,
                **self.actor.modules()}

    def config_dict(self) -> dict:
        return {"method": self.name, "iql": asdict(self.config), "obs_dim": self.obs_dim,
                "action_dim": self.action_dim, "actor": self.actor.kind}
