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

One sequence decoding token by token (a policy driving, on the CPU in float32) goes one step
further: each new token runs through ``_numpy_step``, the same math in numpy, whose per-call
cost (~1 us) is a quarter of torch's at these sizes; greedy decoding (``greedy_numpy``) keeps
the whole token loop there, output head and argmax included. Batches, padded caches, autograd,
other dtypes and devices, and passes of several tokens stay in torch.

The KV cache (``KVCache``) is preallocated for the prefix plus the tokens still to decode and
holds a key mask, so padded prefixes (commands of different lengths in one batch) decode with
the same positions and visibility as when the policy drives alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    stepper: _NumpyStep | None = None  # the single-token CPU step's views of this cache (``_numpy_step``)

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


@dataclass(frozen=True)
class _NumpyBlock:
    """One block's weights as numpy views for ``_numpy_step``, laid out for ``h @ W``: q, k, v,
    then q and k with RoPE's rotate-half folded in (its rows permuted and negated per head), so
    one product gives everything the rotation needs."""

    norm1: np.ndarray
    qkv_w: np.ndarray  # (d, (2 H + 3 H_kv) * d_head): q, k, v, rotated q, rotated k
    qkv_b: np.ndarray | None
    o_w: np.ndarray
    o_b: np.ndarray | None
    norm2: np.ndarray
    gate_up_w: np.ndarray
    gate_up_b: np.ndarray | None
    down_w: np.ndarray
    down_b: np.ndarray | None
    eps: float


@dataclass
class _NumpyStep:
    """What ``_numpy_step`` reads for one cache: the blocks, numpy views of the cache's keys,
    values and key mask (the same memory), RoPE tables tiled over the q and k heads, and how far
    the cache is known to hold only real tokens."""

    blocks: list[_NumpyBlock]
    keys: list[np.ndarray]  # per block (H_kv, L_max, d_head), views of the cache's tensors
    values: list[np.ndarray]
    key_mask: np.ndarray  # (L_max,) view
    cos: np.ndarray  # (L_max, (H + H_kv) * d_head)
    sin: np.ndarray
    norm: np.ndarray
    norm_eps: float
    heads: int
    kv_heads: int
    head_dim: int
    dense_upto: int  # cache.length when every key before it was checked real


def _rotate_rows(w: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Rows of a projection so that ``W' h = rotate_half(W h)`` in every head."""
    w = w.reshape(heads, head_dim, -1)
    half = head_dim // 2
    return torch.cat([-w[:, half:], w[:, :half]], 1).reshape(heads * head_dim, -1)


def _rotate_bias(b: torch.Tensor | None, heads: int, head_dim: int) -> torch.Tensor | None:
    return None if b is None else _rotate_rows(b[:, None], heads, head_dim)[:, 0]


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t.detach().numpy())


def _numpy_blocks(backbone, blocks: list[_Block]) -> list[_NumpyBlock]:
    """``blocks`` for ``_numpy_step``, cached on the backbone while ``_blocks`` returns the same
    list (that is, while no weight changed)."""
    cached = getattr(backbone, "_vla_numpy_blocks", None)
    if cached is not None and cached[0] is blocks:
        return cached[1]
    cfg = backbone.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    q_end, k_end = heads * head_dim, (heads + kv_heads) * head_dim
    out = []
    for blk in blocks:
        w, b = blk.qkv_w, blk.qkv_b
        rot_w = torch.cat([_rotate_rows(w[:q_end], heads, head_dim), _rotate_rows(w[q_end:k_end], kv_heads, head_dim)])
        rot_b = None if b is None else torch.cat([_rotate_bias(b[:q_end], heads, head_dim),
                                                 _rotate_bias(b[q_end:k_end], kv_heads, head_dim)])
        out.append(_NumpyBlock(
            norm1=_np(blk.norm1), qkv_w=_np(torch.cat([w, rot_w]).T), qkv_b=None if b is None else _np(torch.cat([b, rot_b])),
            o_w=_np(blk.o_w.T), o_b=_np(blk.o_b), norm2=_np(blk.norm2), gate_up_w=_np(blk.gate_up_w.T),
            gate_up_b=_np(blk.gate_up_b), down_w=_np(blk.down_w.T), down_b=_np(blk.down_b), eps=blk.eps))
    backbone._vla_numpy_blocks = (blocks, out)
    return out


def _np_rms_norm(weight: np.ndarray, eps: float, h: np.ndarray) -> np.ndarray:
    return weight * (h / np.sqrt(np.dot(h, h) / h.shape[0] + eps))


def _stepper(backbone, cache: KVCache, x: torch.Tensor) -> _NumpyStep | None:
    """The cache's ``_NumpyStep``, or None where the single-token numpy step does not apply:
    anything but a batch of one float32 sequence on the CPU without autograd, after a pass
    that filled the default RoPE table; or a cache holding padding (its keys need a mask)."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[0] != 1 or torch.is_grad_enabled()
            or cache.rope is None or cache.blocks is None or cache.blocks[0].qkv_w.dtype != torch.float32):
        return None
    step = cache.stepper
    if step is None:
        cfg = backbone.config
        heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        norm = backbone.norm
        cos, sin = (t.detach().numpy() for t in cache.rope)
        step = cache.stepper = _NumpyStep(
            blocks=_numpy_blocks(backbone, cache.blocks),
            keys=[k.detach().numpy()[0] for k in cache.keys], values=[v.detach().numpy()[0] for v in cache.values],
            key_mask=cache.key_mask.numpy()[0], cos=np.tile(cos, (1, heads + kv_heads)),
            sin=np.tile(sin, (1, heads + kv_heads)), norm=_np(norm.weight),
            norm_eps=float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))), heads=heads,
            kv_heads=kv_heads, head_dim=head_dim, dense_upto=-1)
    if step.dense_upto != cache.length:
        if not step.key_mask[:cache.length].all():
            return None
        step.dense_upto = cache.length
    return step


def _numpy_step(step: _NumpyStep, x: torch.Tensor, position: int, cache: KVCache) -> torch.Tensor:
    """``run`` for ONE new token of ONE sequence after the tokens in ``cache``, in numpy: the
    same math (equal to float tolerance, tested) at about half the cost at the policy's size,
    where torch's per-op dispatch (~4 us) outweighs the arithmetic (a 96 x 480 product).
    Decoding an action chunk is one such step per token after the prefix's pass. Longer passes
    stay in torch: for a prefix its attention kernel is as fast as numpy, and a few teacher-
    forced tokens (commitment's scores) gain too little to keep a second numpy path."""
    return torch.from_numpy(_np_token(step, x.detach().numpy().reshape(-1), position, cache)).view(1, 1, -1)


def _np_token(step: _NumpyStep, h: np.ndarray, position: int, cache: KVCache) -> np.ndarray:
    """``_numpy_step`` on a (d,) numpy embedding -> its (d,) final hidden state."""
    heads, kv_heads, head_dim = step.heads, step.kv_heads, step.head_dim
    start = cache.length
    if start + 1 > step.key_mask.shape[0]:
        raise ValueError(f"KV cache holds {step.key_mask.shape[0]} tokens; {start} + 1 do not fit")
    q_end, k_end = heads * head_dim, (heads + kv_heads) * head_dim
    v_end = k_end + kv_heads * head_dim
    cos, sin = step.cos[position], step.sin[position]
    scale = head_dim ** -0.5
    for i, blk in enumerate(step.blocks):
        y = _np_rms_norm(blk.norm1, blk.eps, h) @ blk.qkv_w
        if blk.qkv_b is not None:
            y += blk.qkv_b
        qk = y[:k_end] * cos + y[v_end:] * sin  # RoPE: q and k, with their rotated halves
        keys, values = step.keys[i], step.values[i]
        keys[:, start] = qk[q_end:].reshape(kv_heads, head_dim)
        values[:, start] = y[k_end:v_end].reshape(kv_heads, head_dim)
        q = qk[:q_end].reshape(kv_heads, heads // kv_heads, head_dim)  # query heads grouped by key head
        scores = (q @ keys[:, :start + 1].transpose(0, 2, 1)) * scale
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        h = h + (scores @ values[:, :start + 1]).reshape(-1) @ blk.o_w
        if blk.o_b is not None:
            h += blk.o_b
        gate_up = _np_rms_norm(blk.norm2, blk.eps, h) @ blk.gate_up_w
        if blk.gate_up_b is not None:
            gate_up += blk.gate_up_b
        half = gate_up.shape[0] // 2
        gate, up = gate_up[:half], gate_up[half:]
        h = h + (gate / (1.0 + np.exp(-gate)) * up) @ blk.down_w
        if blk.down_b is not None:
            h += blk.down_b
    step.key_mask[start] = True
    cache.length = step.dense_upto = start + 1
    return _np_rms_norm(step.norm, step.norm_eps, h)


def greedy_numpy(backbone, cache: KVCache, h: torch.Tensor, position: int, heads: list[np.ndarray],
                 inputs: list[np.ndarray], steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Greedy decoding of ``steps`` tokens of ONE sequence, wholly in numpy: the token loop of
    ``VLAModel.generate_chunk`` at temperature 0 without a torch call per token (the output
    head, its argmax and the next input's row cost more in torch's dispatch than in arithmetic).
    ``h`` (1, d): the hidden state predicting the first token, after the ``cache.length`` tokens
    in ``cache``; the token j is read from ``heads[j % D]`` (n, d) rows of the output head and,
    chosen, goes in as ``inputs[j % D][bin]`` (n, d) at RoPE position ``position + j``.
    Returns (steps,) bins, (steps, n) logits and (steps, d) hidden states (each the state that
    predicted its token), or None where ``_numpy_step`` does not apply (``_stepper``); the
    caller then decodes with ``run``. The same numbers as that loop to float tolerance (tested)."""
    if not cache.length:
        return None
    step = _stepper(backbone, cache, h)
    if step is None:
        return None
    dims, n = len(heads), heads[0].shape[0]
    x = h.detach().numpy().reshape(-1)
    bins = np.empty(steps, dtype=np.int64)
    logits = np.empty((steps, n), dtype=np.float32)
    hidden = np.empty((steps, x.shape[0]), dtype=np.float32)
    for j in range(steps):
        row = heads[j % dims] @ x
        choice = int(row.argmax())
        bins[j], logits[j], hidden[j] = choice, row, x
        if j == steps - 1:
            break
        x = _np_token(step, inputs[j % dims][choice], position + j, cache)
    return bins, logits, hidden


def run(backbone, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
        cache: KVCache | None = None, last: int = 0) -> torch.Tensor:
    """(B, L, d) token embeddings -> (B, L, d) final hidden states.

    ``mask`` (B, L) bool marks real tokens (padding is never attended to); ``positions`` (B, L)
    int64 are the RoPE positions. Without ``cache`` attention is causal within ``x``; with one,
    ``x`` comes after the ``cache.length`` tokens already there, which it also attends to, and
    its keys / values are appended (the cache must have room).

    ``last`` > 0: only the last ``last`` positions' states are wanted, (B, last, d). The final
    block then computes every position's keys and values (the cache needs them) but attention,
    output projection and MLP only for those rows: the same numbers with a quarter less
    arithmetic for a 3-block prefix whose last state alone is read (a policy's decision)."""
    b, n = x.shape[:2]
    if last < 0 or last > n:
        raise ValueError(f"last must be in 0..{n} (the positions passed), got {last}")
    if cache is not None and n == 1 and cache.length and bool(mask.all()):  # after a pass that filled it
        step = _stepper(backbone, cache, x)
        if step is not None:
            return _numpy_step(step, x, int(positions), cache)
    cfg = backbone.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"vla.decoder runs SiLU-gated MLPs; this backbone uses {cfg.hidden_act!r}")
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
        rows = n
        if last and last < n and i == len(blocks) - 1:  # the wanted rows only, from here on
            rows, q, h = last, q[:, :, n - last:], h[:, n - last:]
            if attend is None:  # no padding: the rows' causal band, now a rectangle
                attend = torch.ones(last, start + n, dtype=torch.bool, device=x.device).tril(diagonal=start + n - last)
                is_causal = False
            else:
                attend = attend[:, :, n - last:]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=is_causal, scale=head_dim ** -0.5)
        h = h + F.linear(out.transpose(1, 2).reshape(b, rows, heads * head_dim), blk.o_w, blk.o_b)
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
