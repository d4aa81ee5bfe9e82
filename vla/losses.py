"""Action-chunk losses as small pure functions, picked by name from ``ACTION_LOSSES``.

Shapes: logits / residual predictions ``(B, H, D, n_bins)``; target bins ``(B, H, D)`` int64;
target residuals ``(B, H, D)`` in [-0.5, 0.5] bin widths; mask ``(B, H, D)`` bool.

* ``bin_ce``: mean over valid entries of ``-log softmax(logits)[target bin]``.
* ``residual``: mean over valid entries of ``smooth_l1(pred[target bin], target residual)``
  (BeT: only the target bin's offset is regressed; beta 0.05 bin widths).
* ``weighted_bin_ce``: ``bin_ce`` with a per-sample weight ``(B,)`` (advantage-weighted
  regression for IQL; DAgger could weight recovery states); ``weighted_residual`` likewise.
* ``chunk_log_prob``: the teacher-forced log-probability of a whole chunk (bins + residuals),

      log pi(y | x) = sum_{h,d} [ log softmax(logits_{h,d})[b_{h,d}]  -  |r_{h,d} - r^_{h,d}(b)| / s ]

  with r^(b) the residual predicted for the TARGET bin and s (``residual_scale``, bin widths) the
  scale of a Laplace density on the residual, its normalizer ``-log(2 s)`` dropped (a constant
  that cancels in every difference the preference losses take; without it each token's term is
  <= 0, so exp(average) is a probability, as ORPO's odds need). Masked steps count nothing.
  Returns ((B,) log-prob, (B,) valid tokens). The binned head's likelihood for DPO and its kin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def bin_ce(logits: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    nll = F.cross_entropy(logits.flatten(0, -2), bins.flatten(), reduction="none").view(bins.shape)
    return _masked_mean(nll, mask)


def residual_loss(pred: torch.Tensor, bins: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    chosen = pred.gather(-1, bins[..., None])[..., 0]
    return _masked_mean(F.smooth_l1_loss(chosen, target, reduction="none", beta=0.05), mask)


def weighted_bin_ce(logits: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor:
    nll = F.cross_entropy(logits.flatten(0, -2), bins.flatten(), reduction="none").view(bins.shape)
    w = weight.view(-1, *([1] * (bins.dim() - 1))).expand_as(nll)
    return _masked_mean(nll * w, mask)





def weighted_residual(pred: torch.Tensor, bins: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    chosen = pred.gather(-1, bins[..., None])[..., 0]
    loss = F.smooth_l1_loss(chosen, target, reduction="none", beta=0.05)
    m = mask.to(loss.dtype) * weight.view(-1, *([1] * (loss.dim() - 1)))
    return (loss * m).sum() / mask.to(loss.dtype).sum().clamp(min=1.0)


def chunk_log_prob(logits: torch.Tensor, residuals: torch.Tensor, bins: torch.Tensor,
                   residual_target: torch.Tensor, mask: torch.Tensor,
                   residual_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) teacher-forced log-probability of each chunk and (B,) its valid tokens; ``mask`` is
    (B, H) (see the module docstring)."""
    if residual_scale <= 0:
        raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
    token_mask = mask[..., None].expand_as(bins).to(logits.dtype)
    bin_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, bins[..., None])[..., 0]
    predicted = residuals.float().gather(-1, bins[..., None])[..., 0]
    residual_logp = -(residual_target.float() - predicted).abs() / residual_scale
    per_token = (bin_logp + residual_logp) * token_mask
    return per_token.flatten(1).sum(1), token_mask.flatten(1).sum(1)


def forecast_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 between predicted and recorded (scaled) actor displacements (B, K, F, 2), mean
    over the (B, K, F) entries where the car was still seen (PlanT's auxiliary forecasting)."""
    per = F.smooth_l1_loss(pred, target, reduction="none", beta=0.1).sum(-1)
    return _masked_mean(per, mask)


ACTION_LOSSES = {"bin_ce": bin_ce, "residual": residual_loss, "weighted_bin_ce": weighted_bin_ce,
                 "weighted_residual": weighted_residual, "forecast": forecast_loss}
