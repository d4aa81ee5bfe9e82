"""vla.decoder: the plain-torch forward equals transformers' LlamaModel forward on the same
weights (padding in the middle, RoPE positions counting real tokens, GQA), and KV-cached
decoding equals one causal pass over the whole sequence."""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from vla import decoder
from vla.model import positions


def _backbone(kv_heads: int = 4) -> LlamaModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv_heads, vocab_size=1, max_position_embeddings=256,
                      attn_implementation="sdpa", tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaModel(cfg).eval()


def _padded_batch(b: int = 3, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(b, n, 32)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 4:7] = False  # padding in the middle, as a batch's shorter command
    mask[2, 5:6] = False
    return x, mask


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_run_matches_the_library_forward(kv_heads):
    model = _backbone(kv_heads)
    x, mask = _padded_batch()
    pos = positions(mask)
    with torch.no_grad():
        ref = model(inputs_embeds=x, attention_mask=mask.long(), position_ids=pos).last_hidden_state
        ours = decoder.run(model, x, mask, pos)
    assert torch.allclose(ref[mask], ours[mask], atol=1e-5), (ref[mask] - ours[mask]).abs().max()


def test_cached_decoding_equals_one_causal_pass():
    model = _backbone()
    x, mask = _padded_batch(n=10)
    extra = torch.randn(3, 4, 32)
    full_x = torch.cat([x, extra], 1)
    full_mask = torch.cat([mask, torch.ones(3, 4, dtype=torch.bool)], 1)
    with torch.no_grad():
        ref = decoder.run(model, full_x, full_mask, positions(full_mask))
        cache = decoder.new_cache(model, 3, 14, x)
        prefix = decoder.run(model, x, mask, positions(mask), cache)
        steps = []
        real = mask.long().sum(1, keepdim=True)
        for j in range(4):
            steps.append(decoder.run(model, extra[:, j:j + 1], torch.ones(3, 1, dtype=torch.bool), real, cache))
            real = real + 1
    assert cache.length == 14
    assert torch.allclose(prefix[mask], ref[:, :10][mask], atol=1e-5)
    assert torch.allclose(torch.cat(steps, 1), ref[:, 10:], atol=1e-5)


def test_a_full_cache_is_refused():
    model = _backbone()
    x, mask = _padded_batch(n=6)
    cache = decoder.new_cache(model, 3, 6, x)
    with torch.no_grad():
        decoder.run(model, x, mask, positions(mask), cache)
        with pytest.raises(ValueError, match="KV cache holds 6 tokens"):
            decoder.run(model, x[:, :1], mask[:, :1], positions(mask)[:, :1], cache)


def test_cached_inference_weights_follow_an_optimizer_step():
    """Inference caches the concatenated block weights; an optimizer step (in-place updates)
    must invalidate them, or a policy evaluated between DAgger updates would act stale."""
    model = _backbone()
    x, mask = _padded_batch()
    pos = positions(mask)
    with torch.no_grad():
        before = decoder.run(model, x, mask, pos)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    decoder.run(model, x, mask, pos).sum().backward()
    opt.step()
    with torch.no_grad():
        after = decoder.run(model, x, mask, pos)
        ref = model(inputs_embeds=x, attention_mask=mask.long(), position_ids=pos).last_hidden_state
    assert not torch.allclose(before, after)
    assert torch.allclose(after[mask], ref[mask], atol=1e-5)


def test_unpadded_inputs_take_the_maskless_path_with_the_same_numbers():
    """Without padding (one policy driving) the prefix runs as plain causal attention and each
    decoded token with no mask at all; both must equal the library's forward / one causal pass.
    A block of several tokens after a cached prefix still needs its causal mask."""
    model = _backbone()
    x = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    extra = torch.randn(2, 5, 32)
    full_x = torch.cat([x, extra], 1)
    full_mask = torch.ones(2, 15, dtype=torch.bool)
    with torch.no_grad():
        ref = model(inputs_embeds=full_x, attention_mask=full_mask.long(),
                    position_ids=positions(full_mask)).last_hidden_state
        assert torch.allclose(decoder.run(model, full_x, full_mask, positions(full_mask)), ref, atol=1e-5)
        cache = decoder.new_cache(model, 2, 15, x)
        outs = [decoder.run(model, x, mask, positions(mask), cache)]
        real = torch.full((2, 1), 10)
        outs.append(decoder.run(model, extra[:, :1], torch.ones(2, 1, dtype=torch.bool), real, cache))
        pos = 11 + torch.arange(4).expand(2, 4)  # then 4 tokens in one call: causal among themselves
        outs.append(decoder.run(model, extra[:, 1:], torch.ones(2, 4, dtype=torch.bool), pos, cache))
    assert torch.allclose(torch.cat(outs, 1), ref, atol=1e-5)


def test_inference_weights_follow_a_new_cache_and_a_dtype_move():
    """A decoding keeps the weights it started with (they are read once per cache); a new cache
    after an update reads the new ones, and moving the model (``.double()``, ``.to(device)``:
    new storage, same parameter objects) invalidates the cached concatenations."""
    model = _backbone()
    x, mask = _padded_batch(n=6)
    with torch.no_grad():
        decoder.run(model, x, mask, positions(mask), decoder.new_cache(model, 3, 6, x))
        for p in model.parameters():
            p.mul_(1.5)
        ours = decoder.run(model, x, mask, positions(mask), decoder.new_cache(model, 3, 6, x))
        ref = model(inputs_embeds=x, attention_mask=mask.long(), position_ids=positions(mask)).last_hidden_state
        assert torch.allclose(ours[mask], ref[mask], atol=1e-5)
        model.double()
        out = decoder.run(model, x.double(), mask, positions(mask))
    assert out.dtype == torch.float64
    assert torch.allclose(out[mask].float(), ref[mask], atol=1e-5)


def _biased_backbone() -> LlamaModel:
    """GQA and biased projections (as Qwen-style checkpoints have), biases drawn non-zero."""
    torch.manual_seed(1)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1, max_position_embeddings=256, attention_bias=True,
                      mlp_bias=True, attn_implementation="sdpa", tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("make", [_backbone, _biased_backbone])
def test_one_sequence_decodes_in_numpy_with_the_same_numbers(make, monkeypatch):
    """One sequence decoding token by token after its prefix (a policy driving) takes the numpy
    step (``_numpy_step``); a block of several tokens in between goes through torch and reads
    the keys the numpy steps wrote. Everything equals the library's forward over the whole
    sequence, with GQA and biased projections too."""
    model = make()
    x = torch.randn(1, 20, 32)
    full_mask = torch.ones(1, 20, dtype=torch.bool)
    steps = []
    original = decoder._numpy_step
    monkeypatch.setattr(decoder, "_numpy_step", lambda *a: steps.append(1) or original(*a))
    with torch.no_grad():
        ref = model(inputs_embeds=x, attention_mask=full_mask.long(), position_ids=positions(full_mask)).last_hidden_state
        cache = decoder.new_cache(model, 1, 20, x)
        outs = [decoder.run(model, x[:, :12], full_mask[:, :12], positions(full_mask[:, :12]), cache)]
        for j in range(12, 20):
            if j == 15:  # three tokens at once: torch
                outs.append(decoder.run(model, x[:, 15:18], full_mask[:, :3], torch.arange(15, 18)[None], cache))
            if 15 <= j < 18:
                continue
            outs.append(decoder.run(model, x[:, j:j + 1], full_mask[:, :1], torch.tensor([[j]]), cache))
    assert len(steps) == 5 and cache.length == 20
    torch.testing.assert_close(torch.cat(outs, 1), ref, atol=1e-5, rtol=1e-5)


def test_padding_autograd_and_batches_keep_the_torch_path(monkeypatch):
    """The numpy step is for one unpadded sequence without autograd: a padded prefix (its keys
    need the mask), a gradient to keep, or a batch go through torch with the same numbers."""
    model = _backbone()
    monkeypatch.setattr(decoder, "_numpy_step", lambda *a: pytest.fail("the numpy step ran"))
    x, mask = _padded_batch(b=3, n=8)
    extra = torch.randn(3, 1, 32)
    full_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], 1)
    ref = decoder.run(model, torch.cat([x, extra], 1), full_mask, positions(full_mask))[:, -1:]
    for b, grad in ((slice(1, 2), False), (slice(0, 1), True), (slice(0, 3), False)):  # padded / grad / batch
        with torch.set_grad_enabled(grad):
            cache = decoder.new_cache(model, x[b].shape[0], 9, x)
            decoder.run(model, x[b], mask[b], positions(mask[b]), cache)
            out = decoder.run(model, extra[b], torch.ones_like(mask[b, :1]), mask[b].long().sum(1, keepdim=True), cache)
        torch.testing.assert_close(out, ref[b], atol=1e-5, rtol=1e-5)
        assert out.requires_grad == grad


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_the_last_rows_alone_are_computed_with_the_same_numbers(kv_heads, monkeypatch):
    """``run(..., last=m)``: the last m positions' states equal the full pass's, with padding,
    with GQA and after a cached prefix; the cache gets every position's keys; and the final
    block's MLP really runs on m rows only (the saving it exists for)."""
    model = _backbone(kv_heads)
    x, mask = _padded_batch(n=10)
    with torch.no_grad():
        full = decoder.run(model, x, mask, positions(mask))
        rows = []
        silu = decoder.F.silu
        monkeypatch.setattr(decoder.F, "silu", lambda t: rows.append(t.shape[1]) or silu(t))
        for m in (1, 3, 10):
            torch.testing.assert_close(decoder.run(model, x, mask, positions(mask), last=m), full[:, -m:],
                                       atol=1e-5, rtol=1e-5)
        assert rows == [10, 1, 10, 3, 10, 10]  # block 1 on every row, the final block on the wanted ones
        one = torch.ones(1, 10, dtype=torch.bool)
        ref = decoder.run(model, torch.cat([x[:1], x[1:2]], 1), torch.ones(1, 20, dtype=torch.bool),
                          positions(torch.ones(1, 20, dtype=torch.bool)))
        cache = decoder.new_cache(model, 1, 20, x)
        decoder.run(model, x[:1], one, positions(one), cache, last=1)
        got = decoder.run(model, x[1:2], one, positions(one) + 10, cache, last=4)
        full_cache = decoder.new_cache(model, 1, 20, x)
        decoder.run(model, torch.cat([x[:1], x[1:2]], 1), torch.ones(1, 20, dtype=torch.bool),
                    positions(torch.ones(1, 20, dtype=torch.bool)), full_cache)
    torch.testing.assert_close(got, ref[:, -4:], atol=1e-5, rtol=1e-5)
    for a, b in zip(cache.keys + cache.values, full_cache.keys + full_cache.values):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="last must be"):
        decoder.run(model, x, mask, positions(mask), last=11)


@pytest.mark.parametrize("make", [_backbone, _biased_backbone])
def test_greedy_decoding_in_numpy_equals_the_torch_loop(make):
    """``greedy_numpy`` (a driving policy's token loop, output head and argmax in numpy) picks
    the same tokens with the same logits and hidden states as the loop through ``run``, and
    declines (None, cache untouched) where the numpy step does not apply."""
    model = make()
    gen = torch.Generator().manual_seed(3)
    heads = [torch.randn(16, 32, generator=gen) for _ in range(2)]
    inputs = [torch.randn(16, 32, generator=gen) for _ in range(2)]
    x = torch.randn(1, 12, 32, generator=gen)
    mask = torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        cache = decoder.new_cache(model, 1, 19, x)
        h = decoder.run(model, x, mask, positions(mask), cache)[:, -1]
        bins, logits, hidden = decoder.greedy_numpy(model, cache, h, 12, [t.numpy() for t in heads],
                                                    [t.numpy() for t in inputs], 8)
        ref_cache = decoder.new_cache(model, 1, 19, x)
        g = decoder.run(model, x, mask, positions(mask), ref_cache)[:, -1]
        want = []
        for j in range(8):
            row = g @ heads[j % 2].T
            want.append((int(row.argmax()), row[0], g[0]))
            if j < 7:
                g = decoder.run(model, inputs[j % 2][want[-1][0]].view(1, 1, -1), mask[:, :1],
                                torch.tensor([[12 + j]]), ref_cache)[:, -1]
    assert bins.tolist() == [w[0] for w in want] and len(set(bins.tolist())) > 1
    torch.testing.assert_close(torch.from_numpy(logits), torch.stack([w[1] for w in want]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(hidden), torch.stack([w[2] for w in want]), atol=1e-5, rtol=1e-5)
    assert cache.length == ref_cache.length == 19
    with torch.no_grad():  # a padded prefix: no numpy step, nothing written
        xp, mp = _padded_batch(n=12)
        padded = decoder.new_cache(model, 1, 19, x)
        hp = decoder.run(model, xp[1:2], mp[1:2], positions(mp[1:2]), padded)[:, -1]
        before = [k.clone() for k in padded.keys]
        assert decoder.greedy_numpy(model, padded, hp, 9, [t.numpy() for t in heads],
                                    [t.numpy() for t in inputs], 8) is None
    assert padded.length == 12 and all(torch.equal(a, b) for a, b in zip(before, padded.keys))
