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
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (L_max, d_head) cos / sin per position
    blocks: list | None = None  # the blocks' weights (``_blocks``) as of the first pass: a cache
    # lives for one decoding, during which the weights do not change

    @staticmethod
    def empty(batch: int, blocks: int, kv_heads: int, head_dim: int, max_len: int,
              like: torch.Tensor) -> KVCache:
        shape = (batch, kv_heads, max_len, head_dim)
        return KVCache([like.new_zeros(shape) for _ in range(blocks)],
                       [like.new_zeros(shape) for _ in range(blocks)],
                       torch.zeros(batch, max_len, dtype=torch.bool, device=like.device))


@dataclass(frozen=True)
class _Block:
    """One decoder block's weights, laid out for the forward below: q / k / v as one matrix and
    gate / up as one (same numbers as the library's modules, concatenated)."""

    norm1: torch.Tensor
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    o_b: torch.Tensor | None
    norm2: torch.Tensor
    gate_up_w: torch.Tensor
    gate_up_b: torch.Tensor | None
    down_w: torch.Tensor
    down_b: torch.Tensor | None
    eps: float


def _cat(*tensors):
    return None if tensors[0] is None else torch.cat(tensors)


def _layer_weights(layer) -> tuple:
    """Every tensor a block of ``_blocks`` is made from (None for an absent bias), read from
    the modules directly (``Module.parameters()`` walks the module tree: too slow per token)."""
    attn, mlp = layer.self_attn, layer.mlp
    return (layer.input_layernorm.weight, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight,
            attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias, attn.o_proj.weight, attn.o_proj.bias,
            layer.post_attention_layernorm.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
            mlp.gate_proj.bias, mlp.up_proj.bias, mlp.down_proj.weight, mlp.down_proj.bias)


def _blocks(backbone) -> list[_Block]:
    """The blocks' weights. Concatenating is differentiable, so training goes through the same
    code; without autograd the result is cached on the backbone until a weight changes: every
    in-place update bumps a tensor's version counter, a move (``.to``) changes its storage, and
    a replaced parameter is another object."""
    weights = [_layer_weights(layer) for layer in backbone.layers]
    key = tuple((id(t), t._version, t.data_ptr()) for ws in weights for t in ws if t is not None)
    cached = getattr(backbone, "_vla_blocks", None)
    if not torch.is_grad_enabled() and cached is not None and cached[0] == key:
        return cached[1]
    blocks = []
    for layer, (norm1, q_w, k_w, v_w, q_b, k_b, v_b, o_w, o_b, norm2, g_w, u_w, g_b, u_b, d_w, d_b) in zip(
            backbone.layers, weights):
        norm = layer.input_layernorm
        blocks.append(_Block(
            norm1=norm1, eps=float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))),
            qkv_w=torch.cat([q_w, k_w, v_w]), qkv_b=_cat(q_b, k_b, v_b), o_w=o_w, o_b=o_b, norm2=norm2,
            gate_up_w=torch.cat([g_w, u_w]), gate_up_b=_cat(g_b, u_b), down_w=d_w, down_b=d_b))
    if not torch.is_grad_enabled():
        backbone._vla_blocks = (key, blocks)
    return blocks


def _rms_norm(weight: torch.Tensor, eps: float, h: torch.Tensor) -> torch.Tensor:
    if h.dtype == torch.float32 and weight.dtype == torch.float32:  # one op, the same numbers
        return F.rms_norm(h, weight.shape, weight, eps)
    h32 = h.float()
    return weight * (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)


def _rope(backbone, x: torch.Tensor, positions: torch.Tensor,
          cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos / sin (B, 1, L, d_head) at ``positions``. With a cache and the default RoPE the
    table for every position the cache can hold is computed once and indexed (decoding calls
    this once per token); other RoPE types scale with the positions seen, so they are computed
    per call as the library does."""
    rotary = backbone.rotary_emb
    if cache is None or getattr(rotary, "rope_type", None) != "default":
        cos, sin = rotary(x, positions)
        return cos[:, None], sin[:, None]
    if cache.rope is None or cache.rope[0].dtype != x.dtype:
        table = torch.arange(cache.key_mask.shape[1], device=x.device)[None]
        cos, sin = rotary(x, table)
        cache.rope = (cos[0], sin[0])
    return cache.rope[0][positions][:, None], cache.rope[1][positions][:, None]


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
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"vla.decoder runs SiLU-gated MLPs; this backbone uses {cfg.hidden_act!r}")
    b, n = x.shape[:2]
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    cos, sin = _rope(backbone, x, positions, cache)  # (B, 1, L, d_head) each
    start = 0 if cache is None else cache.length
    if cache is not None:
        if start + n > cache.key_mask.shape[1]:
            raise ValueError(f"KV cache holds {cache.key_mask.shape[1]} tokens; {start} + {n} do not fit")
        cache.key_mask[:, start:start + n] = mask
        keys_visible = cache.key_mask[:, :start + n]
    else:
        keys_visible = mask
    # On the CPU without padding (one policy driving) there is no mask to build: attention takes
    # its causal path (or none for a single new token). Not on a GPU: reading the mask would wait.
    is_causal = False
    if x.device.type == "cpu" and (n == 1 or start == 0) and bool(keys_visible.all()):
        attend, is_causal = None, n > 1
    elif n == 1:  # one new token sees every visible key: nothing to make causal
        attend = keys_visible[:, None, None, :]
    else:
        causal = torch.ones(n, start + n, dtype=torch.bool, device=x.device).tril(diagonal=start)
        attend = causal[None, None] & keys_visible[:, None, None, :]  # (B, 1, L, L_keys)
    if cache is None:
        blocks = _blocks(backbone)
    else:
        if cache.blocks is None:
            cache.blocks = _blocks(backbone)
        blocks = cache.blocks
    h = x
    for i, blk in enumerate(blocks):
        qkv = F.linear(_rms_norm(blk.norm1, blk.eps, h), blk.qkv_w, blk.qkv_b)
        qkv = qkv.view(b, n, heads + 2 * kv_heads, head_dim).transpose(1, 2)
        qk = _rotate(qkv[:, :heads + kv_heads], cos, sin)  # q and k in one rotation
        q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:]
        if cache is not None:
            cache.keys[i][:, :, start:start + n] = k
            cache.values[i][:, :, start:start + n] = v
            k, v = cache.keys[i][:, :, :start + n], cache.values[i][:, :, :start + n]
        if kv_heads != heads:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=is_causal, scale=head_dim ** -0.5)
        h = h + F.linear(out.transpose(1, 2).reshape(b, n, heads * head_dim), blk.o_w, blk.o_b)
        gate, up = F.linear(_rms_norm(blk.norm2, blk.eps, h), blk.gate_up_w, blk.gate_up_b).chunk(2, dim=-1)
        h = h + F.linear(F.silu(gate) * up, blk.down_w, blk.down_b)
    if cache is not None:
        cache.length = start + n
    norm = backbone.norm
    return _rms_norm(norm.weight, float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))), h)


def new_cache(backbone, batch: int, max_len: int, like: torch.Tensor) -> KVCache:
    """An empty cache for ``max_len`` tokens of ``batch`` sequences (dtype / device of ``like``)."""
    cfg = backbone.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return KVCache.empty(batch, len(backbone.layers), cfg.num_key_value_heads, head_dim, max_len, like)
