"""Networks shared by IQL, CQL and the MLP BC baseline: batched critic ensembles, a value net
and two actors, all over flat state vectors (``sim.features.state_vector`` for driving data).

* ``VectorizedLinear``: ``E`` independent linear layers as ONE batched matmul
  (``torch.bmm``): ``x (E, N, in) -> (E, N, out)``, weights ``(E, in, out)``.
* ``EnsembleMLP``: ``E`` MLPs of ReLU hidden layers made of ``VectorizedLinear``s. The twin
  critics are ``E = 2`` (one call evaluates both); the value net is ``E = 1``.
* ``StateActionCritic``: ``Q_e(s, a)`` for ``K`` action samples per state without repeating
  the state: the first layer is split, ``W1 [s; a] = W1_s s + W1_a a``, so ``W1_s s`` is
  computed once per state and broadcast over the samples.
* ``GaussianActor`` (IQL, BC): ``N(tanh(mu(s)), diag(exp(log_std)))`` with a state-independent
  learned ``log_std``, as in the IQL paper; acts with the mean.
* ``TanhGaussianActor`` (CQL / SAC): ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``; ``sample``
  draws ``K`` actions per state from ONE forward pass (the distribution is computed once per
  state, then ``K`` noises are drawn), with the exact tanh change-of-variables log-density.

Actions are normalized to ``[-1, 1]`` per dimension (``offline_rl.replay`` does it), so the
actors' ranges and CQL's uniform proposal need no scale.

Precision: ``compute_dtype=torch.bfloat16`` runs the hidden layers' matmuls on bf16 inputs
(fp32 accumulation inside oneDNN, outputs rounded to bf16; parameters, gradients, optimizer
state and the losses stay fp32), the CPU counterpart of TF32 on GPUs / JAX's default bf16 matmul passes on TPUs.
``float32`` (default everywhere but where a method's config asks) is exact.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Clamp of the tanh-Gaussian actor's log std (SAC / CQL reference implementations)."""
IQL_LOG_STD_MIN, IQL_LOG_STD_MAX = -5.0, 2.0
"""Clamp of the IQL Gaussian actor's state-independent log std."""


class VectorizedLinear(nn.Module):
    """``E`` linear layers evaluated with one ``torch.bmm`` (+ bias): ``(E, N, in) -> (E, N, out)``.

    Each member is initialized like ``nn.Linear`` (uniform in +-1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.ensemble_size = in_features, out_features, ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def params(self, detach: bool = False, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        return (w, b) if dtype == torch.float32 else (w.to(dtype), b.to(dtype))

    def forward(self, x: torch.Tensor, detach: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        # bmm, then the bias: not baddbmm, which first copies the broadcast bias into the whole
        # output for the GEMM to accumulate onto. Compiled, the add fuses with the next ReLU and
        # cast into one pass: +8% IQL, +3.5% CQL steps/s (bf16 + compile, one thread); eager,
        # the same speed either way.
        w, b = self.params(detach, dtype)
        return torch.bmm(x.to(dtype), w) + b


SKINNY_HEAD_ROWS, SKINNY_HEAD_PAD = 2048, 16
"""``EnsembleMLP`` heads narrower than ``SKINNY_HEAD_PAD`` outputs over at least
``SKINNY_HEAD_ROWS`` rows run as a GEMM zero-padded to that width (``padded_head``)."""


def padded_head(layer: VectorizedLinear, h: torch.Tensor, detach: bool, dtype: torch.dtype) -> torch.Tensor:
    """``layer(h)`` with the weight zero-padded to ``SKINNY_HEAD_PAD`` output columns and the
    result sliced back: the same values (the padded columns are discarded and get zero
    gradient). For CQL's penalty (2 x 7680 rows of Q(s, a_k)), inductor otherwise lowers the
    1-column head's backward to element-wise reductions over the rows, ~10% of a compiled
    bf16 CQL step on one CPU thread; as a 16-column GEMM the same work is a library call
    (CQL +6.6% steps/s measured with ``vla bench offline-rl``'s setup). Below a few thousand
    rows the fused reduction is the faster one (IQL's 256-row heads: -10% padded)."""
    w, b = layer.params(detach, dtype)
    m = w.shape[-1]
    w = F.pad(w, (0, SKINNY_HEAD_PAD - m))
    b = F.pad(b, (0, SKINNY_HEAD_PAD - m))
    return (torch.bmm(h.to(dtype), w) + b)[..., :m]


class EnsembleMLP(nn.Module):
    """``E`` MLPs ``in -> hidden x n_hidden (ReLU) -> out``; ``forward`` maps ``(N, in)`` (shared
    by every member) or ``(E, N, in)`` to ``(E, N, out)``. ``detach=True`` evaluates with
    detached parameters (gradients reach the input only: an actor's loss through a critic)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, n_hidden: int = 2,
                 ensemble_size: int = 1) -> None:
        super().__init__()
        if n_hidden < 1 or hidden < 1 or ensemble_size < 1:
            raise ValueError(f"EnsembleMLP needs hidden, n_hidden, ensemble_size >= 1, got "
                             f"{hidden}, {n_hidden}, {ensemble_size}")
        dims = [in_dim] + [hidden] * n_hidden
        self.hidden = nn.ModuleList(VectorizedLinear(i, o, ensemble_size) for i, o in itertools.pairwise(dims))
        self.out = VectorizedLinear(hidden, out_dim, ensemble_size)
        self.ensemble_size = ensemble_size

    def first_layer(self, x: torch.Tensor, detach: bool, dtype: torch.dtype) -> torch.Tensor:
        layer = self.hidden[0]
        if x.dim() == 2:  # shared input: one matmul against every member's weights
            w, b = layer.params(detach, dtype)
            return torch.matmul(x.to(dtype), w) + b
        return layer(x, detach, dtype)

    def body(self, h: torch.Tensor, detach: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Hidden layers after the first (``h``: first layer's pre-activation) and the head."""
        h = torch.relu_(h)
        for layer in self.hidden[1:]:
            h = torch.relu_(layer(h, detach, dtype))
        if h.shape[-2] >= SKINNY_HEAD_ROWS and self.out.out_features < SKINNY_HEAD_PAD:
            return padded_head(self.out, h, detach, dtype).float()
        return self.out(h, detach, dtype).float()

    def forward(self, x: torch.Tensor, detach: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.body(self.first_layer(x, detach, dtype), detach, dtype)


class StateActionCritic(nn.Module):
    """An ensemble of ``E`` Q-functions ``Q_e(s, a)``.

    ``forward(obs (N, S), actions (N, A))`` -> ``(E, N)``; ``actions (N, K, A)`` (K samples per
    state) -> ``(E, N, K)``, with ``W1_s s`` computed once per state."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, n_hidden: int = 2,
                 ensemble_size: int = 2) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.net = EnsembleMLP(obs_dim + action_dim, 1, hidden, n_hidden, ensemble_size)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach: bool = False,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        w, b = self.net.hidden[0].params(detach, dtype)
        w_s, w_a = w[:, : self.obs_dim], w[:, self.obs_dim:]
        hs = torch.matmul(obs.to(dtype), w_s) + b  # (E, N, H)
        if actions.dim() == 2:
            h = hs + torch.matmul(actions.to(dtype), w_a)
            return self.net.body(h, detach, dtype)[..., 0]
        n, k = actions.shape[:2]
        ha = torch.matmul(actions.reshape(n * k, -1).to(dtype), w_a).view(-1, n, k, hs.shape[-1])
        h = (hs[:, :, None] + ha).view(-1, n * k, hs.shape[-1])
        return self.net.body(h, detach, dtype)[..., 0].view(-1, n, k)


class ValueNet(nn.Module):
    """``V(s)``: ``(N, S) -> (N,)``."""

    def __init__(self, obs_dim: int, hidden: int = 256, n_hidden: int = 2) -> None:
        super().__init__()
        self.net = EnsembleMLP(obs_dim, 1, hidden, n_hidden, 1)

    def forward(self, obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.net(obs, dtype=dtype)[0, :, 0]


class GaussianActor(nn.Module):
    """IQL's policy: mean ``tanh(f(s))`` in ``[-1, 1]``, state-independent learned log std."""

    kind = "gaussian"

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, n_hidden: int = 2) -> None:
        super().__init__()
        self.net = EnsembleMLP(obs_dim, action_dim, hidden, n_hidden, 1)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def mean(self, obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tanh(self.net(obs, dtype=dtype)[0])

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``log pi(a|s)``, ``(N,)``, for dataset actions ``(N, A)`` in ``[-1, 1]``."""
        log_std = self.log_std.clamp(IQL_LOG_STD_MIN, IQL_LOG_STD_MAX)
        z = (actions - self.mean(obs, dtype)) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action (the mean), ``(N, A)`` in ``[-1, 1]``."""
        return self.mean(obs)


def _tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(u)^2)`` computed stably: ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class TanhGaussianActor(nn.Module):
    """SAC's policy (CQL's actor): ``a = tanh(u)``, ``u ~ N(mu(s), exp(log_std(s)))``."""

    kind = "tanh_gaussian"

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, n_hidden: int = 3) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = EnsembleMLP(obs_dim, 2 * action_dim, hidden, n_hidden, 1)

    def dist(self, obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_std)``, each ``(N, A)``."""
        out = self.net(obs, dtype=dtype)[0]
        mu, log_std = out[:, : self.action_dim], out[:, self.action_dim:]
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` reparameterized samples per state from one forward pass: actions ``(N, k, A)``
        in ``(-1, 1)`` and their log-densities ``(N, k)``."""
        mu, log_std = self.dist(obs, dtype)
        eps = torch.randn(mu.shape[0], k, mu.shape[1], dtype=mu.dtype, device=mu.device)
        u = mu[:, None] + log_std.exp()[:, None] * eps
        logp = (-0.5 * eps.pow(2) - log_std[:, None] - 0.5 * math.log(2 * math.pi) - _tanh_log_det(u)).sum(-1)
        return torch.tanh(u), logp

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``log pi(a|s)`` of dataset actions ``(N, A)`` (clipped into the open interval)."""
        mu, log_std = self.dist(obs, dtype)
        a = actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        u = torch.atanh(a)
        z = (u - mu) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi) - _tanh_log_det(u)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mu(s))``, ``(N, A)``."""
        return torch.tanh(self.dist(obs)[0])


ACTORS = {"gaussian": GaussianActor, "tanh_gaussian": TanhGaussianActor}
"""MLP actor kinds by name (the ``actor`` field of an MLP policy checkpoint)."""


def polyak_update(target: nn.Module, online: nn.Module, rate: float) -> None:
    """``target <- (1 - rate) target + rate online``, one fused foreach call."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), rate)


def compiled(fn):
    """``torch.compile`` of a method's loss computation (inductor, static shapes: the batch
    size is fixed for a run). Forward and backward are compiled together; the first call
    compiles (seconds), later calls run the fused kernels. CPU figures: ``vla bench offline-rl``."""
    return torch.compile(fn, dynamic=False)


def native_bf16_matmul() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), on which bf16
    matmul inputs run ~2x float32's speed (oneDNN; ``vla bench offline-rl``). Elsewhere bf16
    is emulated and gains nothing."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    except RuntimeError:
        return False


def cpp_compiler_available() -> bool:
    """Whether inductor finds a C++ compiler, which ``torch.compile`` needs on CPU."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # no compiler found (inductor raises its own error types), or no inductor
        return False


def resolve_precision(choice: str) -> str:
    """``auto`` -> ``bfloat16`` where :func:`native_bf16_matmul`, else ``float32``; an explicit
    ``float32`` / ``bfloat16`` as given."""
    if choice == "auto":
        return "bfloat16" if native_bf16_matmul() else "float32"
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of auto, {', '.join(PRECISION_CHOICES)}; got {choice!r}")
    return choice


def resolve_compile(choice: str) -> bool:
    """``auto`` -> compile where :func:`cpp_compiler_available`; ``on`` / ``off`` as given."""
    if choice == "auto":
        return cpp_compiler_available()
    if choice not in ("on", "off"):
        raise ValueError(f"compile must be auto, on or off; got {choice!r}")
    return choice == "on"


PRECISION_CHOICES = ("float32", "bfloat16")
"""The explicit matmul input precisions (``auto`` picks one, :func:`resolve_precision`)."""


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` with a shorter step: the same update (same state
    layout, same kernel), but the per-group lists of parameters and Adam state are built once
    and each step is one ``_foreach_add_`` on the step counters plus one fused Adam kernel
    per group. ``Adam.step`` re-walks every parameter, re-reads its state and regroups the
    tensors by device and dtype on every call: ~0.1-0.2 ms of Python per step for the ~20
    tensors of IQL's four MLPs, ~4% of a compiled bf16 IQL step on one CPU thread (0.5-8% over
    in-process A/B runs of ``vla bench offline-rl``'s setup). Steps that the short path cannot
    take (a parameter gaining a gradient for the first time, amsgrad, a closure, a grad scaler)
    go through ``Adam.step`` and refresh the lists."""

    def __init__(self, groups: list[dict]) -> None:
        super().__init__(groups, fused=True)
        self._groups: list[tuple[dict, list]] | None = None

    def _build(self) -> None:
        self._groups = [(g, [(p, self.state[p]) for p in g["params"] if p in self.state])
                        for g in self.param_groups]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._groups = None

    @torch.no_grad()
    def step(self, closure=None):
        special = (getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None
                   or any(g["amsgrad"] or g.get("decoupled_weight_decay") or g.get("differentiable")
                          for g in self.param_groups))
        if closure is not None or self._groups is None or special:
            loss = super().step(closure)
            self._build()
            return loss
        work = []
        for group, entries in self._groups:
            live = [(p, st) for p, st in entries if p.grad is not None]
            if len(live) != sum(p.grad is not None for p in group["params"]):
                loss = super().step()  # a parameter without state has a gradient now
                self._build()
                return loss
            if live:
                work.append((group, live))
        for group, live in work:
            steps = [st["step"] for _, st in live]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                [p for p, _ in live], [p.grad for p, _ in live], [st["exp_avg"] for _, st in live],
                [st["exp_avg_sq"] for _, st in live], [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
                weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                maximize=group["maximize"])
        return None


def make_adam(groups: list[dict]) -> torch.optim.Adam:
    """One Adam over param groups (each with its own lr): ``LeanAdam`` (the fused kernel)
    where the fused kernel exists, else the multi-tensor Adam.

    One optimizer with per-group learning rates is the same update as one Adam per network:
    Adam's state and step are per parameter."""
    try:
        return LeanAdam(groups)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, foreach=True)


class MethodState:
    """``state_dict`` / ``load_state_dict`` of a training method from its ``modules()`` dict
    plus its ``optimizer`` and ``scheduler`` (what the shared training loop checkpoints)."""

    def state_dict(self) -> dict:
        return {**{k: m.state_dict() for k, m in self.modules().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key, module in self.modules().items():
            module.load_state_dict(state[key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
