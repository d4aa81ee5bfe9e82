"""A diffusion action head on the policy's transformer (Diffusion Policy, Chi et al. 2023).

The head models the whole action chunk ``A`` (H steps x 2, normalized to [-1, 1] by the
simulator's limits ``sim.interface.ACTION_LOW/HIGH``) as denoising from Gaussian noise,
conditioned on the transformer's hidden state ``c`` at the ``<action>`` token (the same
backbone and the same prefix the binned head reads; ``VLAModel.action_features``).

Training (DDPM, ``PolicyConfig.diffusion_train_steps`` noise levels, squared-cosine betas)::

    k ~ U{0..K-1},  eps ~ N(0, I),  A_k = sqrt(abar_k) A + sqrt(1 - abar_k) eps
    L = || eps - eps_theta(A_k, k, c) ||^2                      (mean over the chunk)

Inference: ``diffusion_inference_steps`` steps of DDIM (eta 0) or DPM-Solver++ from
``A_K ~ N(0, s^2 I)`` drawn from a ``torch.Generator``, so a seed fixes the chunk; the schedulers
are diffusers'. ``s = diffusion_noise``: 1 samples the learned distribution; 0 maps the zero
latent deterministically, which in closed loop drove far more smoothly (fresh noise at every
re-plan is what made sampled chunks jerky; see README "Diffusion action head"). The denoiser ``eps_theta`` is a small 1-D temporal conv net over the H steps: its
residual blocks are FiLM-modulated by ``c`` + a sinusoidal embedding of ``k`` (diffusers'
``UNet1DModel`` defaults do not fit 2 action channels, and H is 4-8 steps: no down-sampling).

``EMA`` keeps an exponential moving average of the WHOLE model (backbone and heads); the policy
predicts with it once it has been updated (``VLAPolicy.after_optimizer_step``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sim.interface import ACTION_HIGH, ACTION_LOW
from vla.config import PolicyConfig

ACTION_DIM = 2
BETA_SCHEDULE = "squaredcos_cap_v2"
"""DDPM beta schedule (the cosine schedule of Nichol & Dhariwal; Diffusion Policy's)."""


def normalize_actions(actions: np.ndarray) -> np.ndarray:
    """(..., 2) physical actions -> [-1, 1] by the simulator's limits (clipped)."""
    low, high = ACTION_LOW.astype(np.float64), ACTION_HIGH.astype(np.float64)
    return np.clip(2.0 * (np.asarray(actions, np.float64) - low) / (high - low) - 1.0, -1.0, 1.0)


def denormalize_actions(x: np.ndarray) -> np.ndarray:
    """(..., 2) normalized actions in [-1, 1] -> physical units."""
    low, high = ACTION_LOW.astype(np.float64), ACTION_HIGH.astype(np.float64)
    return low + (np.clip(np.asarray(x, np.float64), -1.0, 1.0) + 1.0) * 0.5 * (high - low)


def _ddim(train_steps: int):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=train_steps, beta_schedule=BETA_SCHEDULE, clip_sample=True,
                         prediction_type="epsilon", timestep_spacing="trailing", set_alpha_to_one=True)


def _dpmsolver(train_steps: int):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(num_train_timesteps=train_steps, beta_schedule=BETA_SCHEDULE,
                                       prediction_type="epsilon", algorithm_type="dpmsolver++",
                                       solver_order=2, timestep_spacing="trailing")


INFERENCE_SCHEDULERS = {"ddim": _ddim, "dpmsolver": _dpmsolver}
"""``PolicyConfig.diffusion_scheduler`` -> factory(train timesteps) of a diffusers scheduler."""


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) diffusion timesteps -> (B, dim) sinusoidal embedding (Transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(1, half))
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


class FiLMBlock(nn.Module):
    """conv -> norm -> Mish -> FiLM(cond) -> conv -> norm -> Mish, plus the skip connection."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, width)
        self.film = nn.Linear(width, 2 * width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, W, H), cond (B, W) -> (B, W, H)."""
        h = F.mish(self.norm1(self.conv1(x)))
        scale, shift = self.film(cond).chunk(2, dim=-1)
        h = h * (1.0 + scale[..., None]) + shift[..., None]
        return x + F.mish(self.norm2(self.conv2(h)))


class TemporalDenoiser(nn.Module):
    """eps_theta(A_k, k, c): (B, H, D) noisy chunk, (B,) timesteps, (B, C) features -> (B, H, D)."""

    def __init__(self, cond_dim: int, horizon: int, width: int, blocks: int, action_dim: int = ACTION_DIM) -> None:
        super().__init__()
        groups = math.gcd(8, width)
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.Mish(), nn.Linear(width, width))
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, width), nn.Mish(), nn.Linear(width, width))
        self.inp = nn.Conv1d(action_dim, width, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, width, horizon))
        self.blocks = nn.ModuleList(FiLMBlock(width, groups) for _ in range(blocks))
        self.out_norm = nn.GroupNorm(groups, width)
        self.out = nn.Conv1d(width, action_dim, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = F.mish(self.cond_mlp(cond) + self.time_mlp(timestep_embedding(t, self.width)))
        h = self.inp(x.transpose(1, 2)) + self.pos
        for block in self.blocks:
            h = block(h, c)
        return self.out(F.mish(self.out_norm(h))).transpose(1, 2)


class DiffusionHead(nn.Module):
    """The denoiser and its DDPM schedule; reads (B, d_model) transformer features."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        self.horizon, self.train_steps = config.horizon, config.diffusion_train_steps
        self.denoiser = TemporalDenoiser(config.d_model, config.horizon, config.diffusion_width,
                                         config.diffusion_blocks)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=self.train_steps, beta_schedule=BETA_SCHEDULE,
                                             clip_sample=True, prediction_type="epsilon")
        self.sampler = INFERENCE_SCHEDULERS[config.diffusion_scheduler](self.train_steps)
        self.sampler_name = config.diffusion_scheduler

    def loss(self, features: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Noise-prediction MSE for (B, H, D) normalized target chunks; noise and timesteps from
        ``generator`` (None: torch's global RNG, which the training loop saves for resume)."""
        b = target.shape[0]
        noise = torch.randn(target.shape, generator=generator, device="cpu").to(target.device)
        k = torch.randint(0, self.train_steps, (b,), generator=generator, device="cpu").to(target.device)
        noisy = self.noise_scheduler.add_noise(target, noise, k)
        return F.mse_loss(self.denoiser(noisy, k, features), noise)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, steps: int, scheduler: str | None = None,
               generator: torch.Generator | None = None, noise: float = 1.0) -> torch.Tensor:
        """(B, H, D) normalized chunks denoised in ``steps`` steps from N(0, noise^2 I)."""
        if int(steps) < 1 or int(steps) > self.train_steps:
            raise ValueError(f"diffusion inference steps must be in [1, {self.train_steps}], got {steps}")
        name = scheduler or self.sampler_name
        if name != self.sampler_name:
            self.sampler, self.sampler_name = INFERENCE_SCHEDULERS[name](self.train_steps), name
        b = features.shape[0]
        x = torch.randn((b, self.horizon, ACTION_DIM), generator=generator, device="cpu").to(features) * noise
        self.sampler.set_timesteps(int(steps), device=features.device)
        for t in self.sampler.timesteps:
            eps = self.denoiser(x, t.expand(b).to(features.device), features)
            x = self.sampler.step(eps, t, x).prev_sample
        return x.clamp(-1.0, 1.0)


class EMA:
    """Exponential moving average of a module's weights, in a frozen copy of the module (not a
    registered submodule, so optimizers and ``parameters()`` never see it).

    Update t (0-based) blends with ``d_t = min(decay, (1 + t) / (10 + t))``; update 0 copies the
    weights (d = 0), so an EMA started from a warm start or a fresh init is the trained model."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay, self.step = float(decay), 0
        self.model = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = 0.0 if self.step == 0 else min(self.decay, (1.0 + self.step) / (10.0 + self.step))
        for ema_p, p in zip(self.model.parameters(), module.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), module.buffers()):
            ema_b.copy_(b)
        self.step += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {**state, "_step": torch.tensor(self.step, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.step = int(state.pop("_step"))
        self.model.load_state_dict(state)


# ---------------------------------------------------------------------- the policy head
def diffusion_loss(policy, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """``VLAPolicy.compute_loss`` of the diffusion head: noise-prediction MSE on the expert's
    chunk (decoded exactly from the batch's bins + residuals; past an episode's end the last
    action repeats, as ``ActionTokenizer.chunk`` pads, and is trained on like Diffusion Policy)."""
    if batch.action_bins is None or batch.action_residual is None:
        raise ValueError("the diffusion loss needs target actions (action_bins and action_residual)")
    actions = policy.action_tokenizer.decode(batch.action_bins.cpu().numpy(), batch.action_residual.cpu().numpy())
    features = policy.model.action_features(batch)
    target = torch.as_tensor(normalize_actions(actions), dtype=features.dtype, device=features.device)
    loss = policy.model.diffusion_head.loss(features, target)
    return loss, {"loss": loss.item(), "noise_mse": loss.item()}


@torch.no_grad()
def diffusion_predict(policy, model, inputs, temperature: float = 0.0,
                      generator: torch.Generator | None = None) -> np.ndarray:
    """(B, H, 2) physical actions sampled by ``model`` (the policy's EMA or raw model).
    ``temperature`` is unused: the head's randomness is its initial noise, drawn from
    ``generator`` (None: torch's global RNG)."""
    config = policy.config
    features = model.action_features(inputs)
    x = model.diffusion_head.sample(features, config.diffusion_inference_steps, config.diffusion_scheduler,
                                    generator=generator, noise=config.diffusion_noise)
    return denormalize_actions(x.float().cpu().numpy())
