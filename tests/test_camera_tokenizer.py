"""CameraTokenizer: shapes and ids, pose features / rays from the extrinsics, validation, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sim.cameras import CameraSpec, default_rig, pixel_rays_ego, quat_from_rpy
from tokenizers_mm.camera import (
    CameraTokenizer,
    CameraTokens,
    bench_camera_tokenizer,
    patch_rays,
    pose_features,
)

torch.set_num_threads(1)
RIG = default_rig(96, 64)
NAMES = [c.name for c in RIG]


def make(seed: int = 0, **kw) -> CameraTokenizer:
    torch.manual_seed(seed)
    return CameraTokenizer(RIG, **{"patch": 16, "dim": 32, **kw})


def frames(b: int = 2, t: int | None = 3, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (b, n, 64, 96, 3) if t is None else (b, t, n, 64, 96, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def test_shapes_and_ids():
    tok = make()
    out = tok(frames(b=2, t=3))
    p = (64 // 16) * (96 // 16)
    L = 3 * 6 * p
    assert isinstance(out, CameraTokens)
    assert out.patch_emb.shape == (2, L, 32) and out.pose_emb.shape == (2, 3 * 6, 32)
    assert out.camera_ids.shape == out.time_ids.shape == out.patch_index.shape == (L,)
    # order: time-major, then camera, then patch
    assert out.time_ids[: 6 * p].eq(0).all() and out.time_ids[-1] == 2
    assert out.camera_ids[:p].eq(0).all() and out.camera_ids[p] == 1
    assert out.patch_index[:p].tolist() == list(range(p))
    assert out.pose_camera_ids.tolist() == list(range(6)) * 3
    assert out.pose_time_ids.tolist() == [t for t in range(3) for _ in range(6)]
    assert tok.tokens_per_step() == 6 * (p + 1)
    single = tok(frames(b=2, t=None))  # (B, N, H, W, 3): T = 1
    assert single.patch_emb.shape == (2, 6 * p, 32) and single.pose_emb.shape == (2, 6, 32)
    arr = tok(frames(b=1, t=1).numpy())  # numpy input works too
    assert arr.patch_emb.shape == (1, 6 * p, 32)


def test_pose_features_and_rays_differ_with_yaw():
    a = CameraSpec("a", (1.0, 0.0, 1.5), quat_from_rpy(0.0, 0.0, 0.0))
    b = CameraSpec("b", (1.0, 0.0, 1.5), quat_from_rpy(0.0, 0.0, math.radians(30)))
    fa, fb = pose_features(a), pose_features(b)
    assert fa.shape == (9,) and not np.allclose(fa, fb)
    assert np.allclose(fa, [1.0, 0.0, 1.5, 1, 0, 0, 0, 1, 0])  # identity: x and y columns
    assert np.allclose(fb[3:6], [math.cos(math.radians(30)), math.sin(math.radians(30)), 0.0])
    ra, rb = patch_rays(a, 16), patch_rays(b, 16)
    assert ra.shape == (24, 3) and np.allclose(np.linalg.norm(ra, axis=1), 1.0)
    assert not np.allclose(ra, rb)
    torch.manual_seed(0)
    two = CameraTokenizer((a, b), patch=16, dim=16)
    emb = two.ray_embed(two.rays)  # (2, P, dim)
    assert not torch.allclose(emb[0], emb[1])
    pose = two.pose_mlp(two.poses)
    assert not torch.allclose(pose[0], pose[1])


def test_rays_point_where_the_camera_looks():
    rays = {c.name: patch_rays(c, 16).reshape(4, 6, 3) for c in RIG}
    # the patch just right/below of the image centre of a 6 x 4 grid
    front, back = rays["front"][2, 3], rays["back"][2, 3]
    assert front[0] > 0.95 and back[0] < -0.95
    assert rays["front_left"][2, 3][1] > 0.5 and rays["front_right"][2, 3][1] < -0.5
    # left columns of the front camera look left (+y), lower rows look down (pitched 5 deg)
    assert rays["front"][2, 0][1] > 0 and rays["front"][3, 3][2] < rays["front"][0, 3][2]
    # patch = 1 is exactly the per-pixel rays of sim.cameras
    assert np.allclose(patch_rays(RIG[0], 1).reshape(64, 96, 3), pixel_rays_ego(RIG[0]))


@pytest.mark.parametrize("n", [5, 7])
def test_wrong_camera_count(n):
    with pytest.raises(ValueError) as e:
        make()(frames(b=1, t=1, n=n))
    assert str(e.value) == f"got {n} cameras, the rig has 6 ({', '.join(NAMES)})"


def test_validation_errors():
    tok = make()
    with pytest.raises(ValueError, match="uint8"):
        tok(frames(b=1, t=1).float())
    with pytest.raises(ValueError, match="uint8"):
        tok(frames(b=1, t=1).numpy().astype(np.float32))
    with pytest.raises(ValueError, match="not divisible by patch 16"):
        tok(torch.zeros((1, 1, 6, 60, 96, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match="rig's cameras are 96x64"):
        tok(torch.zeros((1, 1, 6, 64, 128, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, T, N, H, W, 3\)"):
        tok(torch.zeros((6, 64, 96, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match="time steps"):
        make(max_time=2)(frames(b=1, t=3))
    with pytest.raises(ValueError, match="not divisible by patch 10"):
        CameraTokenizer(RIG, patch=10)
    with pytest.raises(ValueError, match="one resolution"):
        CameraTokenizer((*default_rig(96, 64)[:3], *default_rig(128, 64)[3:]))


def test_identical_frames_in_two_slots_differ():
    tok = make()
    x = frames(b=1, t=1)
    x[:, :, 3] = x[:, :, 0]  # the back camera sees exactly what the front one sees
    out = tok(x).patch_emb.reshape(1, 6, 24, 32)
    assert not torch.allclose(out[0, 0], out[0, 3])
    # ... and the difference is exactly the camera-id + ray embedding difference
    extra = tok.camera_embed.weight[:, None] + tok.ray_embed(tok.rays)  # (N, P, dim)
    assert torch.allclose(out[0, 0] - out[0, 3], extra[0] - extra[3], atol=1e-5)


def test_deterministic_under_seed():
    x = frames(b=1, t=2)
    a, b, c = make(seed=3)(x), make(seed=3)(x), make(seed=4)(x)
    assert torch.equal(a.patch_emb, b.patch_emb) and torch.equal(a.pose_emb, b.pose_emb)
    assert not torch.allclose(a.patch_emb, c.patch_emb)


def test_gradients_reach_every_parameter():
    tok = make()
    out = tok(frames(b=2, t=2))
    (out.patch_emb.square().mean() + out.pose_emb.square().mean()).backward()
    for name, p in tok.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert tok.patch_embed.weight.grad.shape == (32, 3, 16, 16)
    assert "rays" not in tok.state_dict()  # derived from the rig, not saved


def test_bench_runs():
    out = bench_camera_tokenizer(batch=1, dim=16, repeats=2)
    assert out["tokens_per_s"] > 0 and out["tokens_per_batch"] == 6 * 25


def test_patchify_is_the_conv_of_the_patch_embedding():
    """forward patchifies with one GEMM over the Conv2d's own weights: the same numbers as the
    convolution (what checkpoints were trained with)."""
    tok = make()
    f = frames(b=2, t=1)
    with torch.no_grad():
        out = tok(f).patch_emb.reshape(2, 6, -1, 32)
        x = f.reshape(12, 64, 96, 3).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        conv = tok.patch_embed(x).flatten(2).transpose(1, 2).reshape(2, 6, -1, 32)
        rest = tok.ray_embed(tok.rays)[None] + tok.camera_embed.weight[None, :, None] + tok.time_embed.weight[0]
    assert torch.allclose(out, conv + rest, atol=1e-5)


def _reference(tok: CameraTokenizer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The module docstring's definition, term by term, with the library's Conv2d."""
    b, t, n, h, w, _ = x.shape
    pixels = x.reshape(b * t * n, h, w, 3).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    conv = tok.patch_embed(pixels).flatten(2).transpose(1, 2).reshape(b, t, n, -1, tok.dim)  # row-major patches
    cam, tim = tok.camera_embed.weight, tok.time_embed.weight[:t]
    patch = conv + tok.ray_embed(tok.rays)[None, None] + cam[None, None, :, None] + tim[None, :, None, None]
    pose = tok.pose_mlp(tok.poses)[None] + cam[None] + tim[:, None]
    return patch.reshape(b, -1, tok.dim), pose.reshape(1, t * n, tok.dim).expand(b, -1, -1)


def test_tokens_equal_the_definition_and_follow_weight_updates():
    """Patchify-as-matmul plus the pixel-free terms (kept between calls when driving) equal the
    Conv2d definition; after an optimizer step (in-place updates) the kept terms are new."""
    tok = make()
    x = frames(b=2, t=2)
    with torch.no_grad():
        for _ in range(2):  # the second call reads the kept terms
            out, want = tok(x), _reference(tok, x)
            torch.testing.assert_close(out.patch_emb, want[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.pose_emb, want[1], atol=1e-5, rtol=1e-5)
    opt = torch.optim.SGD(tok.parameters(), lr=0.5)
    out = tok(x)
    (out.patch_emb.square().mean() + out.pose_emb.square().mean()).backward()
    for module in (tok.ray_embed, tok.camera_embed, tok.time_embed, tok.pose_mlp, tok.patch_embed):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    opt.step()
    with torch.no_grad():
        out, want = tok(x), _reference(tok, x)
    torch.testing.assert_close(out.patch_emb, want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pose_emb, want[1], atol=1e-5, rtol=1e-5)
