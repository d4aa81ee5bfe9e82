"""The decoder's forward pass in plain torch, over a transformers ``LlamaModel``'s own weights.

The policy keeps its transformer in a ``LlamaModel`` (checkpoints stay compatible, and
``PolicyConfig.backbone_dir`` can start it from a pretrained Llama-family model), but runs it
with this ~80-line function instead of the library's ``forward``. The math is the same (tested
against it to float tolerance):

    h = x
    for each block:   h = h + Attn(RMSNorm(h));   h = h + MLP(RMSNorm(h))
    out = RMSNorm(h)
    Attn: q, k, v = Wq h, Wk h, Wv h (per head); q, k rotated by RoPE at ``positions``;
          softmax(q k^T / sqrt(d_head) + mask) v, heads concatenated, Wo
    MLP:  W_down (silu(W_gate h) * W_up h)
    RMSNorm(h) = w * h / sqrt(mean(h^2) + eps)   (in float32)

Why not the library's forward: at the policy's size (d = 96, 3 blocks, ~60 tokens) one call of
``LlamaModel.forward`` on a CPU thread costs milliseconds of Python around microseconds of
arithmetic (mask construction, cache objects, config lookups, kernel-hub wrappers). Decoding an
action chunk calls the decoder once per action token, so that overhead made the policy, not
the simulator, the bottleneck of closed-loop driving (``vla bench policy``).

The KV cache (``KVCache``) is preallocated for the prefix plus the tokens still to decode and
holds a key mask, so padded prefixes (commands of different lengths in one batch) decode with
the same positions and visibility as when the policy drives alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class KVCache:
    """Keys and values of every block for the tokens seen so far (preallocated)."""

    keys: list[torch.Tensor]  # per block (B, H_kv, L_max, d_head)
    values: list[torch.Tensor]  # per block (B, H_kv, L_max, d_head)
    key_mask: torch.Tensor  # (B, L_max) bool, True = a real token already in the cache
    length: int = 0  # tokens written so far

    @staticmethod
    def empty(batch: int, blocks: int, kv_heads: int, head_dim: int, max_len: int,
              like: torch.Tensor) -> KVCache:
        shape = (batch, kv_heads, max_len, head_dim)
        return KVCache([like.new_zeros(shape) for _ in range(blocks)],
                       [like.new_zeros(shape) for _ in range(blocks)],
                       torch.zeros(batch, max_len, dtype=torch.bool, device=like.device))


def _rms_norm(norm, h: torch.Tensor) -> torch.Tensor:
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    h32 = h.float()
    return norm.weight * (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def run(backbone, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
        cache: KVCache | None = None) -> torch.Tensor:
    """(B, L, d) token embeddings -> (B, L, d) final hidden states.

    ``mask`` (B, L) bool marks real tokens (padding is never attended to); ``positions`` (B, L)
    int64 are the RoPE positions. Without ``cache`` attention is causal within ``x``; with one,
    ``x`` comes after the ``cache.length`` tokens already there, which it also attends to, and
    its keys / values are appended (the cache must have room)."""
    cfg = backbone.config
    b, n = x.shape[:2]
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    cos, sin = backbone.rotary_emb(x, positions)  # (B, L, d_head) each
    cos, sin = cos[:, None], sin[:, None]
    start = 0 if cache is None else cache.length
    if cache is not None:
        if start + n > cache.key_mask.shape[1]:
            raise ValueError(f"KV cache holds {cache.key_mask.shape[1]} tokens; {start} + {n} do not fit")
        cache.key_mask[:, start:start + n] = mask
        keys_visible = cache.key_mask[:, :start + n]
    else:
        keys_visible = mask
    causal = torch.ones(n, start + n, dtype=torch.bool, device=x.device).tril(diagonal=start)
    attend = causal[None, None] & keys_visible[:, None, None, :]  # (B, 1, L, L_keys)
    h = x
    for i, layer in enumerate(backbone.layers):
        attn = layer.self_attn
        a = _rms_norm(layer.input_layernorm, h)
        q = attn.q_proj(a).view(b, n, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(a).view(b, n, kv_heads, head_dim).transpose(1, 2)
        v = attn.v_proj(a).view(b, n, kv_heads, head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            cache.keys[i][:, :, start:start + n] = k
            cache.values[i][:, :, start:start + n] = v
            k, v = cache.keys[i][:, :, :start + n], cache.values[i][:, :, :start + n]
        if kv_heads != heads:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=head_dim ** -0.5)
        h = h + attn.o_proj(out.transpose(1, 2).reshape(b, n, heads * head_dim))
        m = _rms_norm(layer.post_attention_layernorm, h)
        mlp = layer.mlp
        h = h + mlp.down_proj(F.silu(mlp.gate_proj(m)) * mlp.up_proj(m))
    if cache is not None:
        cache.length = start + n
    return _rms_norm(backbone.norm, h)


def new_cache(backbone, batch: int, max_len: int, like: torch.Tensor) -> KVCache:
    """An empty cache for ``max_len`` tokens of ``batch`` sequences (dtype / device of ``like``)."""
    cfg = backbone.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return KVCache.empty(batch, len(backbone.layers), cfg.num_key_value_heads, head_dim, max_len, like)
