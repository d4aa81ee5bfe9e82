"""Multi-camera frames -> patch tokens that know which camera looked where, + one pose token
per camera per time step.

Token layout (what ``CameraTokenizer.forward`` returns in ``CameraTokens``)
---------------------------------------------------------------------------
Input: uint8 frames ``(B, T, N, H, W, 3)`` (or ``(B, N, H, W, 3)`` for T = 1), N = the rig's
cameras in rig order, H x W = the rig's resolution, both divisible by ``patch``.

* ``patch_emb (B, L, dim)``, ``L = T * N * P``, ``P = (H / patch) * (W / patch)``, ordered
  time-major, then camera, then patch row-major (``patch_index = row * (W / patch) + col``).
  Each token is the sum of
  - ``Conv2d(3, dim, kernel=stride=patch)`` of the pixels scaled to [-1, 1] (ViT patchify),
  - ``Linear(3, dim)`` of the unit ray through the patch centre in the EGO frame
    (``patch_rays``: the camera intrinsics + extrinsics of ``sim.cameras``). This is what lets
    the model tell at patch level where a camera looks: the same pixels seen by the front
    and the back camera get different tokens, and overlapping cameras agree on direction,
  - a learned camera-id embedding and a learned time-step embedding.
* ``pose_emb (B, T * N, dim)``, ordered (time, camera): ``MLP(pose_features(spec))`` + the same
  camera-id and time embeddings. ``pose_features`` = position xyz (m, ego frame) + the
  rotation in the 6D representation (Zhou et al. 2019): the first two columns of the
  camera -> ego rotation matrix. 6D is continuous over SO(3) and unique per rotation, unlike a
  quaternion (q and -q are the same rotation: a double cover, so nearby poses can have far
  apart features) or Euler angles (wrap-around and gimbal lock).
* ``camera_ids`` / ``time_ids`` / ``patch_index`` ``(L,)`` int64 say where each patch token
  came from; ``pose_camera_ids`` / ``pose_time_ids`` ``(T * N,)`` the same for pose tokens.

The rays and pose features are buffers derived from the rig (not saved in the state dict):
save the rig (``CameraSpec.to_dict``) with the checkpoint config and rebuild from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sim.cameras import CameraSpec, default_rig

POSE_DIM = 9
"""position (3) + first two rotation-matrix columns (6)."""


def pose_features(spec: CameraSpec) -> np.ndarray:
    """(9,) [x, y, z, R[:, 0], R[:, 1]] of a camera, R = camera -> ego rotation (6D rotation)."""
    r = spec.rotation_matrix
    return np.concatenate([np.asarray(spec.position, dtype=np.float64), r[:, 0], r[:, 1]])


def patch_grid(spec: CameraSpec, patch: int) -> tuple[int, int]:
    """(rows, cols) of patches; ValueError when the image is not divisible by ``patch``."""
    if patch < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    if spec.height % patch or spec.width % patch:
        raise ValueError(f"camera {spec.name!r}: {spec.width}x{spec.height} (W x H) is not divisible "
                         f"by patch {patch}")
    return spec.height // patch, spec.width // patch


def patch_rays(spec: CameraSpec, patch: int) -> np.ndarray:
    """(P, 3) unit rays in the ego frame through each patch centre, patches row-major.

    Same pinhole model as ``sim.cameras.pixel_rays_ego`` (identical to it for ``patch = 1``):
    body ray ``(1, (cx - u) / f, (cy - v) / f)`` at the patch centre ``(u, v)`` in pixels.
    """
    rows, cols = patch_grid(spec, patch)
    u = (np.arange(cols) + 0.5) * patch
    v = (np.arange(rows) + 0.5) * patch
    uu, vv = np.meshgrid(u, v)  # (rows, cols)
    f = spec.focal
    body = np.stack([np.ones_like(uu), (spec.width / 2.0 - uu) / f, (spec.height / 2.0 - vv) / f], -1)
    rays = body.reshape(-1, 3) @ spec.rotation_matrix.T
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


@dataclass(frozen=True)
class CameraTokens:
    """Output of ``CameraTokenizer``; see the module docstring for the order of tokens."""

    patch_emb: torch.Tensor  # (B, T*N*P, dim)
    pose_emb: torch.Tensor  # (B, T*N, dim)
    camera_ids: torch.Tensor  # (T*N*P,) int64, index into the rig
    time_ids: torch.Tensor  # (T*N*P,) int64
    patch_index: torch.Tensor  # (T*N*P,) int64, row * cols + col
    pose_camera_ids: torch.Tensor  # (T*N,) int64
    pose_time_ids: torch.Tensor  # (T*N,) int64

    def to(self, device: torch.device | str) -> CameraTokens:
        return CameraTokens(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


def _check_rig(rig: Sequence[CameraSpec], patch: int) -> tuple[int, int]:
    if not rig:
        raise ValueError("the camera rig is empty")
    names = [c.name for c in rig]
    if len(set(names)) != len(names):
        raise ValueError(f"camera names must be unique, got {names}")
    sizes = {(c.width, c.height) for c in rig}
    if len(sizes) != 1:
        raise ValueError(f"all cameras must share one resolution to stack frames, got {sorted(sizes)} (W, H)")
    return patch_grid(rig[0], patch)


class CameraTokenizer(nn.Module):
    """Conv patch embedding + ego-frame ray, camera and time embeddings; pose tokens from the
    extrinsics. See the module docstring."""

    def __init__(self, rig: Sequence[CameraSpec], patch: int = 16, dim: int = 128,
                 max_time: int = 16, pose_hidden: int = 64) -> None:
        super().__init__()
        self.rig = tuple(rig)
        self.grid = _check_rig(self.rig, patch)
        if dim < 1 or max_time < 1:
            raise ValueError(f"dim and max_time must be >= 1, got {dim}, {max_time}")
        self.patch, self.dim, self.max_time = patch, dim, max_time
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.ray_embed = nn.Linear(3, dim)
        self.camera_embed = nn.Embedding(len(self.rig), dim)
        self.time_embed = nn.Embedding(max_time, dim)
        self.pose_mlp = nn.Sequential(nn.Linear(POSE_DIM, pose_hidden), nn.GELU(), nn.Linear(pose_hidden, dim))
        nn.init.normal_(self.camera_embed.weight, std=0.02)
        nn.init.normal_(self.time_embed.weight, std=0.02)
        rays = np.stack([patch_rays(c, patch) for c in self.rig])  # (N, P, 3)
        poses = np.stack([pose_features(c) for c in self.rig])  # (N, 9)
        self.register_buffer("rays", torch.tensor(rays, dtype=torch.float32), persistent=False)
        self.register_buffer("poses", torch.tensor(poses, dtype=torch.float32), persistent=False)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.rig)

    def tokens_per_step(self) -> int:
        """Patch + pose tokens per time step: N * (P + 1)."""
        return len(self.rig) * (self.num_patches + 1)

    def _check_frames(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate and return (B, T, N, H, W, 3) uint8 frames as a tensor."""
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8:
                raise ValueError(f"frames must be uint8, got numpy {frames.dtype}")
            frames = torch.from_numpy(frames)
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
            raise ValueError(f"frames must be a uint8 tensor or array, got {getattr(frames, 'dtype', type(frames))}")
        if frames.ndim == 5:
            frames = frames.unsqueeze(1)
        if frames.ndim != 6 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, T, N, H, W, 3) or (B, N, H, W, 3), got {tuple(frames.shape)}")
        _, t, n, h, w, _ = frames.shape
        if n != len(self.rig):
            raise ValueError(f"got {n} cameras, the rig has {len(self.rig)} ({', '.join(self.camera_names)})")
        if h % self.patch or w % self.patch:
            raise ValueError(f"frame size {w}x{h} (W x H) is not divisible by patch {self.patch}")
        spec = self.rig[0]
        if (h, w) != (spec.height, spec.width):
            raise ValueError(f"frames are {w}x{h} (W x H), the rig's cameras are {spec.width}x{spec.height}")
        if not 1 <= t <= self.max_time:
            raise ValueError(f"got {t} time steps, this tokenizer has embeddings for 1..{self.max_time}")
        return frames

    def forward(self, frames: torch.Tensor | np.ndarray) -> CameraTokens:
        frames = self._check_frames(frames)
        b, t, n, h, w, _ = frames.shape
        p, dev = self.num_patches, self.patch_embed.weight.device
        # The conv's patchify as one matmul (same weights and result; a 32x32-kernel conv2d
        # call costs several times more on a CPU thread than this reshape + GEMM). The pixels are
        # laid out per patch while still bytes, then scaled to [-1, 1] in place.
        rows, cols, k = h // self.patch, w // self.patch, self.patch
        x = frames.to(dev).reshape(b * t * n, rows, k, cols, k, 3).permute(0, 1, 3, 5, 2, 4)
        patches = x.reshape(-1, p, 3 * k * k).to(self.patch_embed.weight.dtype).div_(127.5).sub_(1.0)
        weight = self.patch_embed.weight.reshape(self.dim, -1)
        emb = torch.nn.functional.linear(patches, weight).reshape(b, t, n, p, self.dim)
        fixed, pose, ids = self._fixed_terms(t)
        return CameraTokens(patch_emb=(emb + fixed).reshape(b, t * n * p, self.dim),
                            pose_emb=pose.reshape(1, t * n, self.dim).expand(b, -1, -1), **ids)

    def _fixed_terms(self, t: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """What does not depend on the pixels, for T = t: (T, N, P, dim) the patch conv's bias +
        ray + camera + time embeddings, (T, N, dim) pose tokens, and the id tensors. Without
        autograd (driving) they are kept until a weight changes (an in-place update bumps a
        tensor's version; a move changes its storage); with it they are computed each call."""
        params = (self.patch_embed.bias, self.ray_embed.weight, self.ray_embed.bias, self.camera_embed.weight,
                  self.time_embed.weight, *self.pose_mlp.parameters())
        key = (t, *((id(q), q._version, q.data_ptr()) for q in params))
        cached = getattr(self, "_fixed_cache", None)
        if not torch.is_grad_enabled() and cached is not None and cached[0] == key:
            return cached[1]
        n, p, dev = len(self.rig), self.num_patches, self.patch_embed.weight.device
        cam = self.camera_embed.weight  # (N, dim)
        tim = self.time_embed.weight[:t]  # (T, dim)
        fixed = (self.patch_embed.bias + self.ray_embed(self.rays)[None] + cam[None, :, None]
                 + tim[:, None, None])  # (T, N, P, dim)
        pose = self.pose_mlp(self.poses)[None] + cam[None] + tim[:, None]  # (T, N, dim)
        cams, steps = torch.arange(n, device=dev), torch.arange(t, device=dev)
        ids = {"camera_ids": cams.repeat_interleave(p).repeat(t), "time_ids": steps.repeat_interleave(n * p),
               "patch_index": torch.arange(p, device=dev).repeat(t * n), "pose_camera_ids": cams.repeat(t),
               "pose_time_ids": steps.repeat_interleave(n)}
        if not torch.is_grad_enabled():
            self._fixed_cache = (key, (fixed, pose, ids))
        return fixed, pose, ids


def bench_camera_tokenizer(batch: int = 8, width: int = 96, height: int = 64, patch: int = 16,
                           dim: int = 128, repeats: int = 20, seed: int = 0) -> dict:
    """Tokens per second on CPU with one thread, default 6-camera rig, T = 1.

    ``tokens_per_s`` counts patch + pose tokens of ``forward`` under ``no_grad``;
    ``train_tokens_per_s`` the same for forward + backward of a sum of the outputs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        rig = default_rig(width, height)
        tok = CameraTokenizer(rig, patch=patch, dim=dim)
        frames = torch.randint(0, 256, (batch, len(rig), height, width, 3), dtype=torch.uint8)
        tokens = batch * tok.tokens_per_step()
        with torch.no_grad():
            tok(frames)
            t0 = time.perf_counter()
            for _ in range(repeats):
                tok(frames)
            infer = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for _ in range(max(1, repeats // 4)):
            out = tok(frames)
            (out.patch_emb.sum() + out.pose_emb.sum()).backward()
        train = (time.perf_counter() - t0) / max(1, repeats // 4)
    finally:
        torch.set_num_threads(threads)
    return {
        "batch": batch, "cameras": len(rig), "width": width, "height": height, "patch": patch, "dim": dim,
        "tokens_per_batch": tokens, "ms_per_batch": 1e3 * infer, "tokens_per_s": tokens / infer,
        "camera_frames_per_s": batch * len(rig) / infer, "train_tokens_per_s": tokens / train,
    }
