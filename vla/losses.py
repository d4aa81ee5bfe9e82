"""Action-chunk losses as small pure functions, picked by name from ``ACTION_LOSSES``.

Shapes: logits / residual predictions ``(B, H, D, n_bins)``; target bins ``(B, H, D)`` int64;
target residuals ``(B, H, D)`` in [-0.5, 0.5] bin widths; mask ``(B, H, D)`` bool.

* ``bin_ce``: mean over valid entries of ``-log softmax(logits)[target bin]``.
* ``residual``: mean over valid entries of ``smooth_l1(pred[target bin], target residual)``
  (BeT: only the target bin's offset is regressed; beta 0.05 bin widths).
* ``weighted_bin_ce``: ``bin_ce`` with a per-sample weight ``(B,)`` (advantage-weighted
  regression for IQL; DAgger could weight recovery states).
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


ACTION_LOSSES = {"bin_ce": bin_ce, "residual": residual_loss, "weighted_bin_ce": weighted_bin_ce}
