"""Preference optimization of the transformer policy (DPO / cDPO / IPO / ORPO) against a frozen
reference, as a method of the shared training loop (``vla.train_loop``).

Data: pairs made by ``methods.pairs`` (context x, chosen chunk y_w, rejected chunk y_l). A
``PairBatch`` stacks the chosen rows then the rejected rows into ONE ``PolicyInputs`` of 2B rows
(the context repeated), so a single teacher-forced forward pass of ``policy.model`` scores both
(``policy_logprob``: bin log-probabilities plus the residual term of
``VLAPolicy.chunk_log_prob``). The reference's log-probabilities are computed
once before training (``reference_logps``) and travel with the batch; the reference network is
kept only to measure the KL on held-out pairs.

Logged per update (and on held-out pairs by ``evaluate``): ``loss``; ``pref_acc`` = fraction of
pairs whose implicit reward beta*(log pi - log ref) is higher for the chosen (ORPO: higher
log-odds); ``reward_margin`` = mean beta*h (ORPO: log-odds difference); ``chosen_reward`` /
``rejected_reward``; ``logp_acc`` = fraction where the policy itself gives the chosen chunk the
higher log-probability. ``evaluate`` adds ``kl_ref``: the mean over held-out pairs of the sum
over the chosen chunk's tokens of KL(pi(.|prefix) || ref(.|prefix)) between the bin
distributions, teacher-forced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from methods.bc import warmup_cosine
from methods.preference_losses import (
    PREFERENCE_LOSSES,
    REFERENCE_FREE,
    PreferenceLogps,
    average_logps,
    check_loss,
    log_odds,
)
from vla.inputs import PolicyInputs, collate


@dataclass(frozen=True)
class PairBatch:
    inputs: PolicyInputs  # (2B, ...) rows [0, B) the chosen chunks, rows [B, 2B) the rejected
    actions: torch.Tensor  # (2B, H, 2) float32 physical chunks, same order
    ref_logp: torch.Tensor | None  # (2B,) float32 reference log-probabilities, same order

    @property
    def pairs(self) -> int:
        return self.inputs.batch_size // 2


class PairDataset:
    """Pairs as a ``BatchSource`` of the training loop (``batch`` is a pure function)."""

    def __init__(self, arrays: dict[str, np.ndarray], policy, ref_logp: np.ndarray | None = None) -> None:
        cfg = policy.config
        n, h = len(arrays["seed"]), arrays["chosen_actions"].shape[1]
        if h != cfg.horizon:
            raise ValueError(f"the pairs hold {h}-step chunks but the policy predicts {cfg.horizon}")
        if cfg.cameras and "frames" not in arrays:
            raise ValueError("the policy reads cameras but the pairs hold no camera frames")
        if ref_logp is not None and ref_logp.shape != (n, 2):
            raise ValueError(f"reference log-probs have shape {ref_logp.shape}, expected ({n}, 2)")
        self.arrays, self.policy, self.ref_logp = arrays, policy, ref_logp
        enc = [policy.action_tokenizer.encode(arrays[k].astype(np.float64)) for k in ("chosen_actions", "rejected_actions")]
        self._bins = np.stack([e[0] for e in enc], 1).astype(np.int64)  # (N, 2, H, D)
        self._res = np.stack([e[1] for e in enc], 1).astype(np.float32)

    def __len__(self) -> int:
        return len(self.arrays["seed"])

    def subset(self, rows: np.ndarray) -> PairDataset:
        rows = np.asarray(rows, dtype=np.int64)
        ref = None if self.ref_logp is None else self.ref_logp[rows]
        return PairDataset({k: v[rows] for k, v in self.arrays.items()}, self.policy, ref)

    def with_reference(self, ref_logp: np.ndarray) -> PairDataset:
        return PairDataset(self.arrays, self.policy, ref_logp)

    def batch(self, indices: np.ndarray) -> PairBatch:
        i = np.asarray(indices, dtype=np.int64)
        a, both = self.arrays, np.concatenate([i, i])

        def side(name: str) -> np.ndarray:
            return np.concatenate([a[f"chosen_{name}"][i], a[f"rejected_{name}"][i]])

        inputs = collate(a["ego"][both], a["actors"][both],
                         [cmd[m] for cmd, m in zip(a["command"][both], a["command_mask"][both])],
                         self.policy.layout.special("<pad>"), self.policy.config.command_ids_max,
                         frames=a["frames"][both] if self.policy.config.cameras else None,
                         action_bins=np.concatenate([self._bins[i, 0], self._bins[i, 1]]),
                         action_residual=np.concatenate([self._res[i, 0], self._res[i, 1]]),
                         action_mask=side("mask"))
        ref = None
        if self.ref_logp is not None:
            ref = torch.as_tensor(np.concatenate([self.ref_logp[i, 0], self.ref_logp[i, 1]]).astype(np.float32))
        return PairBatch(inputs=inputs, actions=torch.as_tensor(side("actions")), ref_logp=ref)


def split_by_seed(seeds: np.ndarray, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held-out): the last ceil(fraction * #seeds) episode seeds are held
    out (never a part of an episode on each side); no held-out rows with a single seed."""
    unique = np.unique(seeds)
    k = math.ceil(heldout_fraction * len(unique)) if len(unique) > 1 else 0
    held = np.isin(seeds, unique[len(unique) - k:]) if k else np.zeros(len(seeds), bool)
    return np.flatnonzero(~held), np.flatnonzero(held)


def policy_logprob(policy, inputs: PolicyInputs, residual_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) teacher-forced log pi(chunk | context) and (B,) token counts (the policy's head)."""
    return policy.chunk_log_prob(inputs, residual_scale)


@torch.no_grad()
def reference_logps(reference, data: PairDataset, residual_scale: float, batch_size: int = 64) -> np.ndarray:
    """(N, 2) [chosen, rejected] log-probabilities of every pair under the frozen reference."""
    reference.eval()
    out = np.zeros((len(data), 2), dtype=np.float32)
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(len(data), start + batch_size))
        logp, _ = policy_logprob(reference, data.batch(idx).inputs, residual_scale)
        out[idx, 0], out[idx, 1] = logp[: len(idx)].numpy(), logp[len(idx):].numpy()
    return out


@dataclass(frozen=True)
class DPOConfig:
    loss: str = "dpo"
    """Preference loss: a key of ``PREFERENCE_LOSSES`` (dpo, cdpo, ipo, orpo)."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward (ORPO: weight of the odds-ratio term); > 0."""
    label_smoothing: float = 0.1
    """cDPO's probability that a label is flipped (other losses ignore it)."""
    residual_scale: float = 0.25
    """Laplace scale, in bin widths, of the residual term of the chunk log-probability."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (0: stay near the reference)."""
    warmup_steps: int = 10
    """Linear warm-up steps, then cosine decay to 10% of lr at total_steps."""
    total_steps: int = 200
    """Steps of the schedule."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = none)."""

    def __post_init__(self) -> None:
        check_loss(self.loss, self.beta, self.label_smoothing)
        if not (self.lr > 0 and math.isfinite(self.lr)) or not self.residual_scale > 0:
            raise ValueError("DPOConfig.lr and residual_scale must be finite numbers > 0")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.total_steps < 1 or self.grad_clip < 0:
            raise ValueError("DPOConfig: weight_decay, warmup_steps, grad_clip must be >= 0, total_steps >= 1")


def _stats(x: PreferenceLogps, loss_name: str, beta: float) -> dict[str, torch.Tensor]:
    if loss_name in REFERENCE_FREE:
        avg_w, avg_l = average_logps(x)
        margin = log_odds(avg_w) - log_odds(avg_l)
        chosen, rejected = avg_w, avg_l
    else:
        chosen = beta * (x.policy_chosen - x.ref_chosen)
        rejected = beta * (x.policy_rejected - x.ref_rejected)
        margin = chosen - rejected
    return {"pref_acc": (margin > 0).float().mean(), "reward_margin": margin.mean(),
            "chosen_reward": chosen.mean(), "rejected_reward": rejected.mean(),
            "logp_acc": (x.policy_chosen > x.policy_rejected).float().mean(),
            "logp_chosen": x.policy_chosen.mean(), "logp_rejected": x.policy_rejected.mean()}


class DPOMethod:
    """``update(PairBatch)``: one preference-optimization step of ``policy`` (the trainable copy)."""

    name = "dpo"

    def __init__(self, policy, config: DPOConfig = DPOConfig(), reference=None,
                 heldout: PairDataset | None = None) -> None:
        from vla.policy import require_control_actions, require_token_likelihood

        require_control_actions(policy, "DPO")
        require_token_likelihood(policy, "DPO")
        self.policy, self.config, self.reference, self.heldout = policy, config, reference, heldout
        if reference is not None:
            reference.eval()
            reference.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

    def _lr_factor(self, step: int) -> float:
        return warmup_cosine(step, self.config.warmup_steps, self.config.total_steps)

    def _logps(self, batch: PairBatch) -> PreferenceLogps:
        logp, tokens = policy_logprob(self.policy, batch.inputs, self.config.residual_scale)
        b = batch.pairs
        needs_ref = self.config.loss not in REFERENCE_FREE
        if needs_ref and batch.ref_logp is None:
            raise ValueError(f"loss {self.config.loss!r} needs reference log-probabilities in the batch")
        ref = batch.ref_logp if needs_ref else None
        return PreferenceLogps(logp[:b], logp[b:], None if ref is None else ref[:b],
                               None if ref is None else ref[b:], tokens[:b], tokens[b:])

    def update(self, batch: PairBatch) -> dict[str, float]:
        c = self.config
        self.policy.train()
        x = self._logps(batch)
        loss = PREFERENCE_LOSSES[c.loss](x, c.beta, c.label_smoothing).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logs = {"loss": loss.item()}
        if c.grad_clip > 0:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            logs.update({k: float(v) for k, v in _stats(x, c.loss, c.beta).items()})
        logs["lr"] = self.scheduler.get_last_lr()[0]
        return logs

    @torch.no_grad()
    def evaluate(self, batch_size: int = 64) -> dict[str, float]:
        """Mean statistics over the held-out pairs (``{}`` without any)."""
        if self.heldout is None or len(self.heldout) == 0:
            return {}
        c, was_training = self.config, self.policy.training
        self.policy.eval()
        sums: dict[str, float] = {}
        n = len(self.heldout)
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            batch = self.heldout.batch(idx)
            x = self._logps(batch)
            stats = {"loss": PREFERENCE_LOSSES[c.loss](x, c.beta, c.label_smoothing).mean(),
                     **_stats(x, c.loss, c.beta)}
            if self.reference is not None:
                stats["kl_ref"] = self._kl(batch.inputs.select(np.arange(len(idx))))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        self.policy.train(was_training)
        return {f"heldout_{k}": v / n for k, v in sums.items()} | {"heldout_pairs": float(n)}

    def _kl(self, inputs: PolicyInputs) -> torch.Tensor:
        logp = torch.log_softmax(self.policy.chunk_logits(inputs).float(), -1)
        ref = torch.log_softmax(self.reference.chunk_logits(inputs).float(), -1)
        kl = (logp.exp() * (logp - ref)).sum(-1)  # (B, H, D)
        return (kl * inputs.action_mask[..., None]).flatten(1).sum(1).mean()

    def state_dict(self) -> dict:
        return {"model": self.policy.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def config_dict(self) -> dict:
        return {"method": self.name, "dpo": asdict(self.config), "policy": self.policy.config.to_dict()}
