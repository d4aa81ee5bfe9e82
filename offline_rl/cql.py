"""Conservative Q-Learning (Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline
Reinforcement Learning", NeurIPS 2020): CQL(H) on a SAC actor, one ``update(batch)`` for the
shared loop ``vla.train_loop``.

Networks: twin critics ``Q_1, Q_2`` (one batched ensemble) with Polyak targets ``Q^_e``, a
tanh-Gaussian actor ``pi`` (``offline_rl.networks``), the entropy temperature ``alpha = exp(log
alpha)`` and, with ``lagrange``, the penalty weight ``alpha' = exp(log alpha')``. Actions are in
``[-1, 1]^A``. On a batch ``(s, a, r, s', d)``::

    y        = r + gamma (1 - d) min_e Q^_e(s', a'),           a' ~ pi(.|s')
    L_Q      = sum_e  E[(Q_e(s, a) - y)^2]  +  w * sum_e E_s[ P_e(s) ]
    P_e(s)   = T log sum_k exp((Q_e(s, a_k) - log q(a_k)) / T)  -  Q_e(s, a)        (cql_h)
               with N actions each from U(-1, 1)^A (log q = -A log 2), pi(.|s) and pi(.|s')
               (log q = their detached log-densities): the importance-sampled logsumexp
    w        = cql_alpha, or alpha' * cql_alpha with lagrange, where
    L_alpha' = -alpha' * cql_alpha * (E[P] - target_action_gap)   (alpha' grows while E[P] > gap)
    L_pi     = E_s[ alpha log pi(a~|s) - min_e Q_e(s, a~) ],      a~ ~ pi(.|s) reparameterized
    L_alpha  = -E_s[ log alpha * (log pi(a~|s) + target_entropy) ],  target_entropy = -A
    Q^_e    <- (1 - tau) Q^_e + tau Q_e

Defaults follow the paper / its reference code for Gym: N = 10 actions per source, T = 1,
cql_alpha = 5, Q lr 3e-4, policy lr 1e-4, gamma 0.99, tau 0.005, 256x3 MLPs, automatic
entropy tuning, no entropy bonus in the backup. ``P`` is written with a general log-weight
(``logsumexp_penalty``) so its tabular form is testable: with ALL actions enumerated and
``log w = log rho(a|s)`` it is CQL(rho)'s ``log sum_a rho(a|s) exp Q(s,a) - Q(s, a_data)``, zero
when rho puts all its mass on the dataset action (``tabular_cql_penalty``).

As in IQL, every loss is a function of the parameters before the step (the actor's loss reads
the critics through detached weights; alpha is detached in L_pi; samples for P are detached),
so one backward of the summed losses and one Adam (a param group each) is the reference
implementation's sequence of optimizer steps. Speed: the actor runs once per state and draws
its 1 + N samples from that one distribution; ``W1_s s`` of the critics' first layer is shared
by a state's 3N samples; ``penalty_precision = "bfloat16"`` runs the 3N sampled Q evaluations
(~95% of the FLOPs) on bf16 matmul inputs while the Bellman error stays float32.

With the transformer actor (``offline_rl.actors.TransformerActor``: a categorical policy over
action bins, sampled autoregressively) the reparameterized SAC step does not apply: the actor
is extracted from the conservative critic by advantage-weighted regression (as in IQL, with
``A = min_e Q_e(s, a) - mean_k min_e Q_e(s, a_k~pi)``), and the backup uses no entropy term.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch

from offline_rl.actors import MLPActor
from offline_rl.common import PRECISIONS, awr_weights
from offline_rl.networks import (
    StateActionCritic,
    TanhGaussianActor,
    compiled,
    make_adam,
    polyak_update,
)
from offline_rl.replay import TransitionBatch


def logsumexp_penalty(q_samples: torch.Tensor, log_weights: torch.Tensor, q_data: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``T logsumexp_k((Q_k + log w_k) / T) - Q_data`` over the last axis of ``q_samples``
    (``(..., K)``; ``log_weights`` broadcasts to it, ``q_data`` is ``(...)``)."""
    return temperature * torch.logsumexp((q_samples + log_weights) / temperature, dim=-1) - q_data


def tabular_cql_penalty(q: torch.Tensor, data_actions: torch.Tensor,
                        log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Tabular CQL penalty per state for ``q (B, n_actions)``, dataset actions ``(B,)``:
    CQL(H) ``logsumexp_a Q(s,a) - Q(s,a_data)`` without a prior, CQL(rho)
    ``log sum_a rho(a|s) exp Q(s,a) - Q(s,a_data)`` with ``log_prior = log rho (B, n_actions)``."""
    q_data = q.gather(1, data_actions[:, None].long())[:, 0]
    log_w = torch.zeros_like(q) if log_prior is None else log_prior
    return logsumexp_penalty(q, log_w, q_data)


def mean_gap_penalty(q_samples: torch.Tensor, log_weights: torch.Tensor, q_data: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """CQL's first form without a regularizer: ``mean_k Q_k - Q_data`` (no importance weights)."""
    return q_samples.mean(-1) - q_data


PENALTIES = {"cql_h": logsumexp_penalty, "mean_gap": mean_gap_penalty}
"""Conservative penalty variants (``CQLConfig.penalty``)."""


@dataclass(frozen=True)
class CQLConfig:
    discount: float = 0.99
    """gamma."""
    polyak: float = 0.005
    """Target-critic update rate."""
    critic_lr: float = 3e-4
    """Adam lr of the twin critics (and of log alpha' with lagrange)."""
    actor_lr: float = 1e-4
    """Adam lr of the actor and of log alpha."""
    n_actions: int = 10
    """Sampled actions per source (uniform, pi(s), pi(s')) in the penalty."""
    cql_alpha: float = 5.0
    """Weight w of the penalty (multiplied by alpha' with lagrange)."""
    temperature: float = 1.0
    """T of the logsumexp."""
    lagrange: bool = False
    """Tune alpha' by dual gradient descent so that E[P] stays near target_action_gap."""
    target_action_gap: float = 10.0
    """The Lagrange threshold tau of E[P]."""
    auto_entropy: bool = True
    """Tune alpha toward target_entropy = -A (else alpha stays at init_alpha)."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    backup_entropy: bool = False
    """Subtract alpha log pi(a'|s') in the target."""
    bc_steps: int = 0
    """First steps in which the actor maximizes log pi(a_data|s) instead of Q (a BC warm-up)."""
    hidden: int = 256
    """Width of the MLP hidden layers."""
    n_hidden: int = 3
    """Hidden layers of the critics and the MLP actor."""
    penalty: str = "cql_h"
    """A key of PENALTIES."""
    precision: str = "float32"
    """Matmul input precision of the Bellman error, target and actor (float32 or bfloat16)."""
    penalty_precision: str = "float32"
    """Matmul input precision of the 3N sampled Q evaluations of the penalty."""
    awr_beta: float = 3.0
    """Transformer actor only: inverse temperature of its advantage weights (clipped at 100)."""
    compile: bool = False
    """Compile the loss computation (forward and backward) with torch.compile (inductor); costs
    seconds of compilation at the first step and again once when the BC warm-up ends."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.discount <= 1.0 or not 0.0 < self.polyak <= 1.0:
            raise ValueError("CQLConfig.discount must be in [0, 1] and polyak in (0, 1]")
        for name in ("critic_lr", "actor_lr", "temperature", "init_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CQLConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.n_actions < 1 or self.hidden < 1 or self.n_hidden < 1 or self.bc_steps < 0:
            raise ValueError("CQLConfig.n_actions, hidden, n_hidden must be >= 1 and bc_steps >= 0")
        if self.cql_alpha < 0 or self.awr_beta < 0:
            raise ValueError("CQLConfig.cql_alpha and awr_beta must be >= 0")
        if self.penalty not in PENALTIES:
            raise ValueError(f"CQLConfig.penalty must be one of {sorted(PENALTIES)}, got {self.penalty!r}")
        for name in ("precision", "penalty_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"CQLConfig.{name} must be one of {sorted(PRECISIONS)}, got {getattr(self, name)!r}")


class CQL:
    """CQL(H) as a ``vla.train_loop.TrainingMethod``."""

    name = "cql"

    def __init__(self, obs_dim: int, action_dim: int, config: CQLConfig = CQLConfig(), actor=None) -> None:
        c = self.config = config
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.dtype, self.penalty_dtype = PRECISIONS[c.precision], PRECISIONS[c.penalty_precision]
        self.critic = StateActionCritic(obs_dim, action_dim, c.hidden, c.n_hidden, ensemble_size=2)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = actor if actor is not None else MLPActor(
            TanhGaussianActor(obs_dim, action_dim, c.hidden, c.n_hidden))
        self.sac = self.actor.kind == "mlp"
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(c.init_alpha)))
        self.log_alpha_prime = torch.nn.Parameter(torch.tensor(0.0))
        self.optimizer = make_adam([
            {"params": list(self.critic.parameters()), "lr": c.critic_lr},
            {"params": list(self.actor.parameters()), "lr": c.actor_lr},
            {"params": [self.log_alpha], "lr": c.actor_lr},
            {"params": [self.log_alpha_prime], "lr": c.critic_lr},
        ])
        self.target_entropy = -float(action_dim)
        self.steps = 0
        self._penalty = PENALTIES[c.penalty]
        self._losses = compiled(self._loss_terms) if c.compile else self._loss_terms

    # ------------------------------------------------------------------ samples
    def _policy_samples(self, batch: TransitionBatch):
        """Actor samples: (a~ (B, A) with grad, its log pi (B,)), the penalty's current- and
        next-state samples ((B, N, A), (B, N)) and the target's a' (B, A) with log pi (B,)."""
        n = self.config.n_actions
        if self.sac:
            net = self.actor.net
            acts, logp = net.sample(batch.observations, 1 + n, self.dtype)
            with torch.no_grad():
                nacts, nlogp = net.sample(batch.next_observations, 1 + n, self.dtype)
            return (acts[:, 0], logp[:, 0]), (acts[:, 1:].detach(), logp[:, 1:].detach()), \
                (nacts[:, 1:], nlogp[:, 1:]), (nacts[:, 0], nlogp[:, 0])
        cur, cur_logp = self.actor.sample(batch.inputs, n)
        nxt, nxt_logp = self.actor.sample(batch.next_inputs, n + 1)
        return None, (cur, cur_logp), (nxt[:, 1:], nxt_logp[:, 1:]), (nxt[:, 0], nxt_logp[:, 0])

    # ------------------------------------------------------------------ the update
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        total, logs = self._losses(batch, self.steps < self.config.bc_steps)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        polyak_update(self.target_critic, self.critic, self.config.polyak)
        self.steps += 1
        return logs

    def _loss_terms(self, batch: TransitionBatch, bc_phase: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed CQL, actor and temperature losses and the logged values (pure tensor
        code: compilable; ``bc_phase`` selects the BC warm-up actor loss)."""
        c, dt = self.config, self.dtype
        s, a = batch.observations, batch.actions
        b, n = batch.batch_size, c.n_actions
        new, (cur, cur_logp), (nxt, nxt_logp), (a2, a2_logp) = self._policy_samples(batch)
        alpha = self.log_alpha.exp().detach() if c.auto_entropy else torch.tensor(c.init_alpha)
        with torch.no_grad():
            target_q = self.target_critic(batch.next_observations, a2, dtype=dt).min(0).values
            if c.backup_entropy and self.sac:
                target_q = target_q - alpha * a2_logp
            y = batch.rewards + c.discount * (1.0 - batch.dones) * target_q
        q = self.critic(s, a, dtype=dt)  # (E, B)
        bellman = (q - y).pow(2).mean(-1).sum()
        rand = torch.rand(b, n, self.action_dim) * 2.0 - 1.0
        samples = torch.cat([rand, cur, nxt], dim=1)  # (B, 3N, A)
        log_q = torch.cat([torch.full((b, n), -self.action_dim * math.log(2.0)), cur_logp, nxt_logp], 1)
        q_ood = self.critic(s, samples, dtype=self.penalty_dtype)  # (E, B, 3N)
        gap = self._penalty(q_ood, -log_q, q, c.temperature).mean(-1)  # (E,)
        logs = {}
        if c.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            cql_loss = (alpha_prime.detach() * c.cql_alpha * (gap - c.target_action_gap)).sum()
            alpha_prime_loss = -(alpha_prime * c.cql_alpha * (gap.detach() - c.target_action_gap)).mean()
            logs["alpha_prime"] = alpha_prime.detach()
        else:
            cql_loss, alpha_prime_loss = c.cql_alpha * gap.sum(), torch.zeros(())
        actor_loss, alpha_loss = self._actor_losses(batch, new, alpha, q, q_ood, bc_phase)
        total = bellman + cql_loss + actor_loss + alpha_loss + alpha_prime_loss
        return total, {"q_loss": bellman.detach(), "cql_gap": gap.detach().mean(),
                       "actor_loss": actor_loss.detach(), "alpha": alpha, "q_mean": q.detach().mean(), **logs}

    def _actor_losses(self, batch, new, alpha, q, q_ood, bc_phase: bool) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if not self.sac:  # AWR on the conservative critic, A = Q(s, a) - mean_k Q(s, a_k ~ pi)
            n = c.n_actions
            v = q_ood[:, :, n:2 * n].detach().min(0).values.mean(-1)
            weights = awr_weights(q.detach().min(0).values - v, c.awr_beta, 100.0)
            return self.actor.weighted_nll(batch, weights), torch.zeros(())
        new_a, new_logp = new
        if bc_phase:
            actor_loss = (alpha * new_logp - self.actor.log_prob(batch, self.dtype)).mean()
        else:
            q_new = self.critic(batch.observations, new_a, detach=True, dtype=self.dtype).min(0).values
            actor_loss = (alpha * new_logp - q_new).mean()
        alpha_loss = torch.zeros(())
        if c.auto_entropy:
            alpha_loss = -(self.log_alpha * (new_logp.detach() + self.target_entropy)).mean()
        return actor_loss, alpha_loss

    # ------------------------------------------------------------------ state
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"critic": self.critic, "target_critic": self.target_critic, **self.actor.modules()}

    def state_dict(self) -> dict:
        return {**{k: m.state_dict() for k, m in self.modules().items()},
                "log_alpha": self.log_alpha.detach().clone(),
                "log_alpha_prime": self.log_alpha_prime.detach().clone(),
                "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        for key, module in self.modules().items():
            module.load_state_dict(state[key])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])

    def config_dict(self) -> dict:
        return {"method": self.name, "cql": asdict(self.config), "obs_dim": self.obs_dim,
                "action_dim": self.action_dim, "actor": self.actor.kind}
