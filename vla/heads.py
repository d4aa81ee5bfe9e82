"""The policy's action heads: how each trains and predicts (``PolicyConfig.head`` picks one from
``POLICY_HEADS``). ``bins``: bin tokens + in-bin residuals decoded token by token by the
transformer (``VLAModel.generate_chunk``), with a token likelihood for DPO, offline RL and
commitment; ``diffusion``: a denoiser conditioned on the hidden state at <action>
(``vla.diffusion_head``), without one. Split out of ``vla.policy``, which holds the policy itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vla.diffusion_head import diffusion_loss, diffusion_predict
from vla.inputs import PolicyInputs
from vla.losses import ACTION_LOSSES, chunk_log_prob
from vla.model import ChunkOutput, VLAModel

if TYPE_CHECKING:
    from vla.policy import VLAPolicy


def bins_loss(policy: VLAPolicy, batch: PolicyInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Bin cross-entropy + in-bin residual loss on the expert's action chunk, plus
    ``forecast_weight`` x the actor forecasting loss when the policy has that head."""
    logits, residuals, forecast, command = policy.model.forward_with_forecast(batch)
    mask = batch.action_mask[..., None].expand_as(batch.action_bins)
    ce = ACTION_LOSSES["bin_ce"](logits, batch.action_bins, mask)
    res = ACTION_LOSSES["residual"](residuals, batch.action_bins, batch.action_residual, mask)
    loss = ce + policy.config.residual_weight * res
    with torch.no_grad():
        acc = ((logits.argmax(-1) == batch.action_bins) & mask).sum() / mask.sum().clamp(min=1)
    logs = {"bin_ce": ce.item(), "residual": res.item(), "bin_acc": acc.item()}
    if forecast is not None:
        if batch.actor_future is None:
            raise ValueError("this policy forecasts actors (forecast_weight > 0) but the batch has no actor_future")
        fc = ACTION_LOSSES["forecast"](forecast, batch.actor_future, batch.actor_future_mask)
        loss = loss + policy.config.forecast_weight * fc
        logs["forecast"] = fc.item()
    if command is not None:
        if batch.command_label is None:
            raise ValueError("this policy names the heard command (command_label_weight > 0) but the batch has "
                             "no command_label")
        ce_label = torch.nn.functional.cross_entropy(command.float(), batch.command_label)
        loss = loss + policy.config.command_label_weight * ce_label
        logs["command_ce"] = ce_label.item()
        logs["command_acc"] = (command.argmax(-1) == batch.command_label).float().mean().item()
    return loss, {"loss": loss.item(), **logs}


@torch.no_grad()
def bins_predict(policy: VLAPolicy, model: VLAModel, inputs: PolicyInputs, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """(B, H, 2) physical actions decoded token by token (greedy at temperature 0)."""
    return bins_actions(policy, model.generate_chunk(inputs, temperature=temperature, generator=generator))


def bins_actions(policy: VLAPolicy, out: ChunkOutput) -> np.ndarray:
    """(B, H, 2) physical actions of decoded bins and residuals."""
    return policy.action_tokenizer.decode(out.bins.cpu().numpy(), out.residual.float().cpu().numpy())


def bins_log_prob(policy: VLAPolicy, batch: PolicyInputs, residual_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) teacher-forced log-probability of the batch's chunks and (B,) their valid tokens."""
    logits, residuals = policy.model(batch)
    return chunk_log_prob(logits, residuals, batch.action_bins, batch.action_residual, batch.action_mask,
                          residual_scale)


def bins_weighted_loss(policy: VLAPolicy, batch: PolicyInputs, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted bin CE + residual loss (advantage-weighted regression for IQL)."""
    logits, residuals = policy.model(batch)
    mask = batch.action_mask[..., None].expand_as(batch.action_bins)
    ce = ACTION_LOSSES["weighted_bin_ce"](logits, batch.action_bins, mask, weights)
    res = ACTION_LOSSES["weighted_residual"](residuals, batch.action_bins, batch.action_residual, mask, weights)
    return ce + policy.config.residual_weight * res


def bins_logits(policy: VLAPolicy, batch: PolicyInputs) -> torch.Tensor:
    """(B, H, D, n_bins) teacher-forced bin logits (e.g. the KL between a policy and its reference)."""
    return policy.model(batch)[0]


def _no_likelihood(what: str) -> Callable[..., object]:
    def refuse(policy: VLAPolicy, *args, **kwargs):
        raise ValueError(f"{what} needs a token likelihood; action head {policy.config.head!r} has none "
                         "(train the policy with --head bins)")
    return refuse


@dataclass(frozen=True)
class PolicyHead:
    """How one action head trains and predicts (``PolicyConfig.head`` picks it). Every training
    method goes through these: BC (``loss``), DPO and its kin (``log_prob``, ``logits``), the
    offline-RL transformer actor (``weighted_loss``), best-of-N and evaluation (``predict``). A
    head without a token likelihood refuses the methods that need one, by name."""

    loss: Callable[..., tuple[torch.Tensor, dict[str, float]]]
    """(policy, batch) -> (loss, logs)."""
    predict: Callable[..., np.ndarray]
    """(policy, model, inputs, temperature, generator) -> (B, H, 2) physical actions."""
    ema: bool
    """Keep an EMA of the weights for inference (when PolicyConfig.ema_decay > 0)."""
    log_prob: Callable[..., tuple[torch.Tensor, torch.Tensor]] = _no_likelihood("a chunk log-probability")
    """(policy, batch, residual_scale) -> ((B,) log pi(chunk | inputs), (B,) valid tokens)."""
    weighted_loss: Callable[..., torch.Tensor] = _no_likelihood("a weighted likelihood loss")
    """(policy, batch, weights (B,)) -> scalar loss."""
    logits: Callable[..., torch.Tensor] = _no_likelihood("token logits")
    """(policy, batch) -> (B, H, D, n_bins) teacher-forced bin logits."""
    likelihood: bool = False
    """Whether ``log_prob`` / ``weighted_loss`` / ``logits`` exist (else they refuse by name)."""


POLICY_HEADS = {
    "bins": PolicyHead(bins_loss, bins_predict, ema=False, log_prob=bins_log_prob, weighted_loss=bins_weighted_loss,
                       logits=bins_logits, likelihood=True),
    "diffusion": PolicyHead(diffusion_loss, diffusion_predict, ema=True),
}
