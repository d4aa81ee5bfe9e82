"""Preference losses as small pure functions, picked by name from ``PREFERENCE_LOSSES``.

Trajectory log-probability
--------------------------
A chunk's log-probability log pi(y | x) comes from the policy's action head
(``VLAPolicy.chunk_log_prob``; for the binned head ``vla.losses.chunk_log_prob``: bin log-softmax
plus a Laplace term on the in-bin residual, its normalizer dropped so that every per-token term
is <= 0 and exp(average) is a probability, as ORPO's odds need).

Losses, per pair, with h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))
---------------------------------------------------------------------------------------
* ``dpo``  (Rafailov et al. 2023):  -log sigmoid(beta h)
* ``cdpo`` (conservative DPO, labels flipped with probability eps = ``label_smoothing``):
  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
* ``ipo``  (Azar et al. 2023): (h - 1 / (2 beta))^2, on the summed chunk log-ratios
* ``orpo`` (Hong et al. 2024, reference-free): with the per-token average a = log pi(y) / n,
  odds(y) = exp(a) / (1 - exp(a)):
  -a_w + beta * -log sigmoid(log odds(y_w) - log odds(y_l))   (NLL of the chosen + odds ratio)

Each loss takes a ``PreferenceLogps`` and returns the (B,) per-pair loss; ``beta > 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ORPO_MAX_AVG_LOGP = -1e-6
"""ORPO's log-odds diverge at average log-prob 0; averages are clamped below it."""


@dataclass(frozen=True)
class PreferenceLogps:
    """Log-probabilities of a batch of pairs (w = chosen, l = rejected)."""

    policy_chosen: torch.Tensor  # (B,) log pi(y_w | x), summed over the chunk
    policy_rejected: torch.Tensor  # (B,) log pi(y_l | x)
    ref_chosen: torch.Tensor | None = None  # (B,) log ref(y_w | x); None for reference-free losses
    ref_rejected: torch.Tensor | None = None  # (B,) log ref(y_l | x)
    tokens_chosen: torch.Tensor | None = None  # (B,) valid action tokens of y_w (ORPO's average)
    tokens_rejected: torch.Tensor | None = None  # (B,) valid action tokens of y_l


def _log_ratio_margin(x: PreferenceLogps) -> torch.Tensor:
    if x.ref_chosen is None or x.ref_rejected is None:
        raise ValueError("this loss needs the reference log-probabilities")
    return (x.policy_chosen - x.ref_chosen) - (x.policy_rejected - x.ref_rejected)


def dpo_loss(x: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return -F.logsigmoid(beta * _log_ratio_margin(x))


def cdpo_loss(x: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    h = beta * _log_ratio_margin(x)
    return -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)


def ipo_loss(x: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return (_log_ratio_margin(x) - 1.0 / (2.0 * beta)) ** 2


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    a = avg_logp.clamp(max=ORPO_MAX_AVG_LOGP)
    return a - torch.log(-torch.expm1(a))  # log(p / (1 - p)), p = exp(a)


def average_logps(x: PreferenceLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) per-token average log-probabilities of chosen and rejected."""
    if x.tokens_chosen is None or x.tokens_rejected is None:
        raise ValueError("this loss needs the token counts")
    return (x.policy_chosen / x.tokens_chosen.clamp(min=1.0),
            x.policy_rejected / x.tokens_rejected.clamp(min=1.0))


def orpo_loss(x: PreferenceLogps, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    avg_w, avg_l = average_logps(x)
    return -avg_w - beta * F.logsigmoid(log_odds(avg_w) - log_odds(avg_l))


PREFERENCE_LOSSES: dict[str, Callable[[PreferenceLogps, float, float], torch.Tensor]] = {
    "dpo": dpo_loss,
    "cdpo": cdpo_loss,
    "ipo": ipo_loss,
    "orpo": orpo_loss,
}
"""name -> loss(logps, beta, label_smoothing) -> (B,) per-pair loss."""
REFERENCE_FREE = frozenset({"orpo"})
"""Losses that never read the reference log-probabilities."""


def check_loss(name: str, beta: float, label_smoothing: float = 0.0) -> None:
    """One-line ValueError for an unknown loss or a bad beta / label smoothing."""
    if name not in PREFERENCE_LOSSES:
        raise ValueError(f"unknown preference loss {name!r}; choose one of {', '.join(PREFERENCE_LOSSES)}")
    if not (isinstance(beta, (int, float)) and beta > 0 and beta < float("inf")):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
