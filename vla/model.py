"""The one transformer: pure network math over the interleaved token sequence.

Sequence of one decision step (prefix, then the action chunk)::

    [camera patch tokens (N*P)] [camera pose tokens (N)] [ego] [actors (K)] [command (Lc)]
    [<action>] a(0,accel) a(0,steer) a(1,accel) ... a(H-1,steer)

With ``PolicyConfig.command_thought`` one token sits between ``<action>`` and the first action
token: the command label the head names at ``<action>`` (the true label, sometimes swapped, when
teacher-forced), so the actions are decoded after the policy has said what it understood.

Camera tokens come from ``tokenizers_mm.camera.CameraTokenizer`` (patches + per-patch ego-frame
rays + pose tokens), ego/actor tokens from small MLPs over ``vla.inputs`` features, command and
action tokens from the ONE vocabulary embedding (``tokenizers_mm.vocab``). A learned segment
embedding tells the token kinds apart. The decoder is a transformers ``LlamaModel`` built from
config and fed ``inputs_embeds`` (RoPE positions, ``attn_implementation`` sdpa / flash), so a
local pretrained small Llama-family model can replace the random init (``backbone_dir``).

Heads, read at the position BEFORE each action token (next-token prediction):
* ``lm_head``: logits over the whole vocabulary (the text head for text / thought / special
  tokens); the action bin logits of dimension d are its slice ``layout.ranges["action_d"]``;
* ``residual_head``: for every bin of every dimension, the offset inside that bin (BeT-style
  per-bin residual); the one of the chosen / target bin is used.
* ``diffusion_head`` (``PolicyConfig.head == "diffusion"`` only): denoises the whole chunk,
  conditioned on the hidden state AT <action> (``action_features``; ``vla.diffusion_head``).
Inference decodes the H*D action tokens one by one with the KV cache (``generate_chunk``).

Positions: a batch pads its commands (in the middle of the sequence) to its longest one. RoPE
positions count real tokens only (``positions``), so a sample sees the same positions whether
it is alone (closed-loop inference) or padded in a batch (training). With plain 0..L-1
positions the <action> token moved by the batch's padding: a policy trained on padded batches
fitted its labels (steering correlation 0.98 when padded) but predicted almost unrelated
steering alone (0.18), which is how it drove in closed loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel

from sim.cameras import CameraSpec
from tokenizers_mm.camera import CameraTokenizer
from tokenizers_mm.vocab import ACTION_DIMS, VocabLayout
from vla import decoder
from vla.config import PolicyConfig
from vla.inputs import FORECAST_STEPS, OBSERVATIONS, PolicyInputs

SEGMENTS = ("camera", "pose", "ego", "actor", "command", "action")
SEG = {name: i for i, name in enumerate(SEGMENTS)}

NGRAM_ORDERS = (1, 2, 3)
"""The n-grams of the command bag (``PolicyConfig.command_bag``)."""
_NGRAM_PRIMES = (1_000_003, 998_244_353, 754_974_721, 167_772_161)
"""Multipliers of the n-gram hash: one per position in the window, the last for the order."""


def command_ngrams(command: torch.Tensor, mask: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Lc) right-padded ids and their mask -> (B, M) hash buckets of every 1-, 2- and 3-gram
    of the real ids with a boundary before the first and after the last, and (B, M) whether each
    is one: it holds a real id and at most one boundary (the boundary is id 0 here, real ids are
    shifted by one; pads count as boundaries, so 'x <end> <end>' is not a trigram)."""
    z = torch.where(mask, command + 1, torch.zeros_like(command))
    z = torch.nn.functional.pad(z, (1, 1))  # a boundary before the first and after the last id
    ids, valid = [], []
    for n in NGRAM_ORDERS:
        win = z.unfold(1, n, 1)  # (B, Lc + 3 - n, n)
        ok = (win == 0).sum(-1) <= (0 if n == 1 else 1)  # so every valid window holds a real id
        h = sum(win[..., k] * _NGRAM_PRIMES[k] for k in range(n)) + n * _NGRAM_PRIMES[-1]
        ids.append(torch.remainder(h, buckets))
        valid.append(ok)
    return torch.cat(ids, dim=1), torch.cat(valid, dim=1)


@dataclass(frozen=True)
class ChunkOutput:
    bins: torch.Tensor  # (B, H, D) int64 chosen bins
    residual: torch.Tensor  # (B, H, D) float32 residual of the chosen bins
    logprob: torch.Tensor  # (B, H, D) log-probability of the chosen bins
    bin_logits: torch.Tensor  # (B, H, D, n_bins)
    prefix: Prefix | None = None  # the prefix pass, kept with ``generate_chunk(keep_prefix=True)``
    scored_logits: torch.Tensor | None = None  # (B, H, D, n_bins) of ``generate_chunk(score=...)``


@dataclass(frozen=True)
class Prefix:
    """A decoding's prefix pass, kept so that other chunks can be scored after the same
    observation without running it again (``VLAModel.continuation_logits``)."""

    cache: decoder.KVCache  # keys / values of the prefix in its first ``length`` places
    length: int  # prefix tokens, ending with <action> (and the thought token, ``command_thought``)
    last: torch.Tensor  # (B, d) final hidden state at the last of them: it predicts the first action token
    real: torch.Tensor  # (B, 1) real prefix tokens: the first action token's RoPE position


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) attention mask -> (B, L) RoPE position ids counting real tokens only (a pad
    shares its predecessor's position; it is masked out anyway)."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


def _mlp(n_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, d), nn.GELU(), nn.Linear(d, d))


class VLAModel(nn.Module):
    def __init__(self, config: PolicyConfig, layout: VocabLayout, rig: Sequence[CameraSpec] = ()) -> None:
        super().__init__()
        if tuple(layout.action_bins) != (config.n_bins,) * len(ACTION_DIMS):
            raise ValueError(f"vocabulary has action bins {layout.action_bins}, config wants {config.n_bins}")
        self.config, self.layout = config, layout
        d = config.d_model
        self.embed = nn.Embedding(layout.size, d)
        self.segment = nn.Embedding(len(SEGMENTS), d)
        self.camera = CameraTokenizer(rig, patch=config.camera_patch, dim=d) if config.cameras else None
        obs = OBSERVATIONS[config.observation]
        self.ego_proj = _mlp(len(obs.ego_fields), d)
        self.actor_proj = _mlp(len(obs.actor_fields), d)
        self.backbone = self._backbone(config)
        self.lm_head = nn.Linear(d, layout.size, bias=False)
        self.residual_head = nn.Linear(d, len(ACTION_DIMS) * config.n_bins)
        starts = [layout.ranges[f"action_{dim}"][0] for dim in ACTION_DIMS]
        self.register_buffer("action_starts", torch.tensor(starts, dtype=torch.long), persistent=False)
        self.action_token = layout.special("<action>")
        self.diffusion_head = None
        if config.head == "diffusion":  # built last: the binned model's init stays the same
            from vla.diffusion_head import DiffusionHead

            self.diffusion_head = DiffusionHead(config)
        self.forecast_head = None
        if config.forecast_weight > 0:  # after everything else, for the same reason
            self.forecast_head = nn.Linear(d, 2 * len(FORECAST_STEPS))
        self.command_head = None
        if config.command_label_weight > 0:  # built after the others, for the same reason
            from tokenizers_mm.corpus import LABELS

            self.command_head = nn.Linear(d, len(LABELS))
        self.command_bag = None
        if config.command_bag > 0:  # after the others, for the same reason
            self.command_bag = nn.Embedding(config.command_bag, d)
        self.thought = None
        if config.command_thought:  # after the others, for the same reason
            from tokenizers_mm.corpus import LABELS

            self.thought = nn.Embedding(len(LABELS), d)
        self.command_group = config.command_group
        self.command_slot = None
        if self.command_group > 1:  # audio: one learned vector per id slot of a position
            self.command_slot = nn.Parameter(torch.randn(self.command_group, d) * 0.02)

    @staticmethod
    def _backbone(config: PolicyConfig) -> LlamaModel:
        if config.backbone_dir:
            model = LlamaModel.from_pretrained(config.backbone_dir, attn_implementation=config.attn_implementation)
            if model.config.hidden_size != config.d_model:
                raise ValueError(f"backbone {config.backbone_dir} has hidden size {model.config.hidden_size}, "
                                 f"config d_model is {config.d_model}")
            return model
        cfg = LlamaConfig(
            hidden_size=config.d_model, intermediate_size=int(config.d_model * config.mlp_ratio),
            num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads, vocab_size=1, max_position_embeddings=4096,
            attn_implementation=config.attn_implementation, tie_word_embeddings=False,
            bos_token_id=None, eos_token_id=None, pad_token_id=None,
        )
        return LlamaModel(cfg)

    # ------------------------------------------------------------------ sequence building
    def prefix(self, x: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lp, d) prefix embeddings ending with <action>, and its (B, Lp) attention mask."""
        b, parts, masks = x.batch_size, [], []

        def add(emb: torch.Tensor, mask: torch.Tensor | None, seg: str) -> None:
            parts.append(emb + self.segment.weight[SEG[seg]])
            masks.append(torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device) if mask is None else mask)

        if self.camera is not None:
            if x.frames is None:
                raise ValueError("this policy reads cameras but the inputs have no frames")
            cam = self.camera(x.frames)
            add(cam.patch_emb, None, "camera")
            add(cam.pose_emb, None, "pose")
        add(self.ego_proj(x.ego)[:, None], None, "ego")
        add(self.actor_proj(x.actors), None, "actor")
        add(*self.embed_command(x.command, x.command_mask), "command")
        action = torch.full((b, 1), self.action_token, dtype=torch.long, device=x.ego.device)
        add(self.embed(action), None, "action")
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def action_token_ids(self, bins: torch.Tensor) -> torch.Tensor:
        """(B, H, D) bins -> (B, H*D) vocabulary ids, dimension-interleaved per step."""
        return (bins + self.action_starts).reshape(bins.shape[0], -1)

    def _bin_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, J, d) at prediction positions j -> (B, J, n_bins) bin logits for the dimension j % D."""
        n, dims = self.config.n_bins, len(ACTION_DIMS)
        j = torch.arange(h.shape[1], device=h.device) % dims
        cols = self.action_starts[j][:, None] + torch.arange(n, device=h.device)  # (J, n)
        return torch.einsum("bjd,jnd->bjn", h, self.lm_head.weight[cols])

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, J, d) at prediction positions j -> bin logits and residuals for the dimension
        j % D, each (B, J, n_bins)."""
        n, dims = self.config.n_bins, len(ACTION_DIMS)
        j = torch.arange(h.shape[1], device=h.device) % dims
        logits = self._bin_logits(h)
        res = self.residual_head(h).view(h.shape[0], h.shape[1], dims, n)
        res = res.gather(2, j.view(1, -1, 1, 1).expand(h.shape[0], -1, 1, n)).squeeze(2)
        return logits, torch.tanh(res) * 0.5

    # ------------------------------------------------------------------ training
    def forward(self, x: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced action chunk: (bin logits, residuals per bin), each (B, H, D, n_bins)."""
        logits, res, _, _ = self.forward_with_forecast(x)
        return logits, res

    def embed_command(self, command: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lc) command ids and mask -> (B, P, d) embeddings and (B, P) mask. One id per
        position for ipa / text; audio sums each position's ``command_group`` ids (codec codes of
        consecutive frames, or a VAD event and pads: ``tokenizers_mm.audio_command``), each plus
        its slot's vector, over the real ids. With the command bag (``PolicyConfig.command_bag``):
        ONE position, the mean of the command's n-gram vectors (``command_ngrams``)."""
        if self.command_bag is not None:
            buckets, valid = command_ngrams(command, mask, self.command_bag.num_embeddings)
            real = valid.any(1, keepdim=True)
            if self.training and self.config.command_bag_dropout > 0:
                kept = valid & (torch.rand(valid.shape, device=valid.device) >= self.config.command_bag_dropout)
                valid = torch.where(kept.any(1, keepdim=True), kept, valid)  # never all of them
            w = valid.to(self.command_bag.weight.dtype)[..., None]
            emb = (self.command_bag(buckets) * w).sum(1) / w.sum(1).clamp(min=1.0)
            return emb[:, None], real
        if self.command_slot is None:
            return self.embed(command), mask
        b, g = command.shape[0], self.command_group
        short = -command.shape[1] % g  # an empty command is padded to one id: fill the position
        if short:
            command = torch.nn.functional.pad(command, (0, short))
            mask = torch.nn.functional.pad(mask, (0, short))  # False: not real
        ids, real = command.reshape(b, -1, g), mask.reshape(b, -1, g)
        emb = ((self.embed(ids) + self.command_slot) * real[..., None]).sum(2)
        return emb, real.any(-1)

    def forward_with_forecast(self, x: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                                torch.Tensor | None]:
        """``forward`` plus, with a forecasting head, (B, K, F, 2) predicted displacements of the
        actor tokens' cars read at their own positions, and with a command-label head (B, 9)
        logits of the heard command's label read at ``<action>`` (None without them)."""
        if x.action_bins is None:
            raise ValueError("forward needs target action bins (teacher forcing)")
        emb, mask = self.prefix(x)
        tokens = self.action_token_ids(x.action_bins)[:, :-1]  # the last token predicts nothing
        act = self.embed(tokens) + self.segment.weight[SEG["action"]]
        parts, masks = [emb], [mask]
        if self.thought is not None:  # the label it names, then the actions (command_thought)
            parts.append(self.thought_embedding(self.thought_labels(x, emb, mask)))
            masks.append(torch.ones((x.batch_size, 1), dtype=torch.bool, device=mask.device))
        seq = torch.cat([*parts, act], dim=1)
        full_mask = torch.cat([*masks, torch.ones(tokens.shape, dtype=torch.bool, device=mask.device)], dim=1)
        h_all = self.run_backbone(seq, full_mask)
        h = h_all[:, seq.shape[1] - tokens.shape[1] - 1:]  # positions predicting the H*D action tokens
        logits, res = self._heads(h)
        shape = (*x.action_bins.shape, self.config.n_bins)
        forecast = None
        if self.forecast_head is not None:
            first = (self.camera.tokens_per_step() if self.camera is not None else 0) + 1  # after the ego token
            k = x.actors.shape[1]
            forecast = self.forecast_head(h_all[:, first:first + k]).view(x.batch_size, k, len(FORECAST_STEPS), 2)
        command = None if self.command_head is None else self.command_head(h_all[:, emb.shape[1] - 1])
        return logits.view(shape), res.view(shape), forecast, command

    def thought_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) label indices -> (B, 1, d) the thought token's embeddings (``command_thought``)."""
        return (self.thought(labels) + self.segment.weight[SEG["command"]])[:, None]

    def thought_labels(self, x: PolicyInputs, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) the labels a ``command_thought`` model's thought token holds when teacher-forced:
        the batch's ``command_label``, each replaced by a uniform label with probability
        ``command_thought_noise`` in training; without labels (a batch scored for DPO, say),
        the head's own reading of the prefix ``emb`` / ``mask``, as at test time."""
        if x.command_label is None:
            with torch.no_grad():
                return self.command_head(self.run_backbone(emb, mask, last=1)[:, -1]).argmax(-1)
        labels = x.command_label
        p = self.config.command_thought_noise
        if self.training and p > 0:
            swap = torch.rand(labels.shape, device=labels.device) < p
            labels = torch.where(swap, torch.randint_like(labels, self.thought.num_embeddings), labels)
        return labels

    def action_features(self, x: PolicyInputs) -> torch.Tensor:
        """(B, d) hidden state at the <action> token (the last prefix position): what the
        diffusion head is conditioned on."""
        emb, mask = self.prefix(x)
        return self.run_backbone(emb, mask, last=1)[:, -1]

    def run_backbone(self, emb: torch.Tensor, mask: torch.Tensor, last: int = 0) -> torch.Tensor:
        """(B, L, d) embeddings with their (B, L) mask -> (B, L, d) final hidden states, causal,
        positions counting real tokens only; ``last`` > 0: only the last ``last`` positions'
        states, (B, last, d), computed as such (``vla.decoder.run``). ``flash_attention_2`` (a
        GPU kernel) goes through the library's forward; everything else through
        ``vla.decoder.run`` (same math, no overhead)."""
        if self.config.attn_implementation == "flash_attention_2":
            out = self.backbone(inputs_embeds=emb, attention_mask=mask.long(),
                                position_ids=positions(mask)).last_hidden_state
            return out[:, out.shape[1] - last:] if last else out
        return decoder.run(self.backbone, emb, mask, positions(mask), last=last)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate_chunk(self, x: PolicyInputs, temperature: float = 0.0,
                       generator: torch.Generator | None = None, keep_prefix: bool = False,
                       score: torch.Tensor | None = None) -> ChunkOutput:
        """Decode the H*D action tokens with the KV cache (``vla.decoder``); greedy at
        temperature 0. ``keep_prefix``: the output keeps the prefix pass (``Prefix``).
        ``score`` (B, H, D) bins of another chunk: its teacher-forced logits come back in
        ``scored_logits``, from the prefix's own pass (its tokens ride along after the prefix;
        the decoding then overwrites their cache places), which costs a fraction of a second
        pass (``continuation_logits``). Not with the thought token (``command_thought``)."""
        h_steps, dims = self.config.horizon, len(ACTION_DIMS)
        emb, mask = self.prefix(x)
        steps, n, b = h_steps * dims, self.config.n_bins, x.batch_size
        extra = 0 if self.thought is None else 1
        length = emb.shape[1]
        cache = decoder.new_cache(self.backbone, b, length + extra + steps - 1, emb)
        scored = None
        if score is not None:
            if self.thought is not None:
                raise ValueError("generate_chunk(score=...) does not go with the thought token (command_thought)")
            if score.shape != (b, h_steps, dims):
                raise ValueError(f"score must be (B, H, D) = {(b, h_steps, dims)} bins, got {tuple(score.shape)}")
            tokens = self.action_token_ids(score)[:, :-1]  # the last token predicts nothing
            seq = torch.cat([emb, self.embed(tokens) + self.segment.weight[SEG["action"]]], 1)
            seq_mask = torch.cat([mask, torch.ones(tokens.shape, dtype=torch.bool, device=mask.device)], 1)
            out = decoder.run(self.backbone, seq, seq_mask, positions(seq_mask), cache, last=tokens.shape[1] + 1)
            scored = self._bin_logits(out).view(b, h_steps, dims, n)
            cache.length = length  # the decoding's tokens go where these were
            cache.key_mask[:, length:] = False
            h = out[:, 0]
        else:
            h = decoder.run(self.backbone, emb, mask, positions(mask), cache, last=1)[:, -1]
        real = mask.long().sum(1, keepdim=True)  # real tokens so far: the next one's position + 1
        one = torch.ones_like(mask[:, :1])
        if self.thought is not None:  # say what it understood (the head's argmax), then act on it
            said = self.thought_embedding(self.command_head(h).argmax(-1))
            h = decoder.run(self.backbone, said, one, real, cache)[:, -1]
            real = real + 1
        kept = Prefix(cache, length + extra, h, real) if keep_prefix else None
        starts = [int(s) for s in self.action_starts]
        # per dimension: its rows of the output head, and its tokens' input embeddings (+ segment)
        head_rows = [self.lm_head.weight[s:s + n] for s in starts]
        inputs = [self.embed.weight[s:s + n] + self.segment.weight[SEG["action"]] for s in starts]
        fast = None
        if (temperature <= 0 and b == 1 and h.device.type == "cpu"  # one greedy float32 sequence on the CPU:
                and h.dtype == self.lm_head.weight.dtype == self.residual_head.weight.dtype == torch.float32):
            # the whole loop in numpy where the numpy step applies (decoder._stepper)
            fast = decoder.greedy_numpy(self.backbone, cache, h, int(real[0, 0]),
                                        [r.detach().numpy() for r in head_rows],
                                        [r.detach().numpy() for r in inputs], steps)
        if fast is not None:
            return self._numpy_chunk_output(*fast, kept, scored)
        hidden, bins, all_logits = [], [], []
        for j in range(steps):  # per token only what the next one needs; the rest after the loop
            logits = torch.nn.functional.linear(h, head_rows[j % dims])
            if temperature > 0:
                choice = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
            else:
                choice = logits.argmax(-1)
            hidden.append(h)
            bins.append(choice)
            all_logits.append(logits)
            if j == steps - 1:
                break
            h = decoder.run(self.backbone, inputs[j % dims][choice][:, None], one, real + j, cache)[:, -1]
        return self._chunk_output(torch.stack(bins, 1), torch.stack(all_logits, 1), torch.stack(hidden, 1), kept, scored)

    def _numpy_chunk_output(self, chosen: np.ndarray, logits: np.ndarray, hidden: np.ndarray, kept: Prefix | None,
                            scored: torch.Tensor | None) -> ChunkOutput:
        """``_chunk_output`` of ONE sequence's numpy decoding (``decoder.greedy_numpy``): the
        residual head read for the chosen bins' rows only, in numpy."""
        steps, (h_steps, dims, n) = len(chosen), (self.config.horizon, len(ACTION_DIMS), self.config.n_bins)
        rows = (np.arange(steps) % dims) * n + chosen  # each token's dimension, then its bin
        weight, bias = self.residual_head.weight.detach().numpy(), self.residual_head.bias.detach().numpy()
        res = np.tanh(np.einsum("jd,jd->j", weight[rows], hidden) + bias[rows]) * 0.5
        top = logits.max(-1)
        logp = logits[np.arange(steps), chosen] - top - np.log(np.exp(logits - top[:, None]).sum(-1))
        shape = (1, h_steps, dims)
        return ChunkOutput(
            bins=torch.from_numpy(chosen).view(shape),
            residual=torch.from_numpy(res.astype(np.float32)).view(shape),
            logprob=torch.from_numpy(logp.astype(np.float32)).view(shape),
            bin_logits=torch.from_numpy(logits).view(*shape, n),
            prefix=kept,
            scored_logits=scored,
        )

    def _chunk_output(self, chosen: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor, kept: Prefix | None,
                      scored: torch.Tensor | None) -> ChunkOutput:
        """A decoding's (B, J) chosen bins, (B, J, n) logits and (B, J, d) hidden states (each
        the state that predicted its token) -> ``ChunkOutput``, residuals read for the chosen bins."""
        b, steps = chosen.shape
        h_steps, dims, n = self.config.horizon, len(ACTION_DIMS), self.config.n_bins
        dim_of = torch.arange(steps, device=chosen.device) % dims
        res = self.residual_head(hidden).view(b, steps, dims, n)
        res = torch.tanh(res[:, torch.arange(steps, device=res.device), dim_of].gather(-1, chosen[..., None])[..., 0]) * 0.5
        logp = torch.log_softmax(logits, -1).gather(-1, chosen[..., None])[..., 0]
        return ChunkOutput(
            bins=chosen.view(b, h_steps, dims),
            residual=res.view(b, h_steps, dims),
            logprob=logp.view(b, h_steps, dims),
            bin_logits=logits.view(b, h_steps, dims, -1),
            prefix=kept,
            scored_logits=scored,
        )

    @torch.no_grad()
    def continuation_logits(self, prefix: Prefix, bins: torch.Tensor) -> torch.Tensor:
        """(P, H, D, n_bins) teacher-forced bin logits of P chunks ``bins`` (P, H, D) after the
        kept prefix of ONE observation: what ``forward`` gives for that observation with each
        chunk as its target (equal to float tolerance), with one decoder pass of the H*D - 1
        action tokens instead of the whole sequence. The prefix's cache is copied, not changed."""
        if prefix.last.shape[0] != 1:
            raise ValueError(f"continuation_logits scores chunks after one observation's prefix, not {prefix.last.shape[0]}")
        p, length = bins.shape[0], prefix.length
        tokens = self.action_token_ids(bins)[:, :-1]  # the last token predicts nothing
        src = prefix.cache
        cache = decoder.KVCache([k[:, :, :length + tokens.shape[1]].repeat(p, 1, 1, 1) for k in src.keys],
                                [v[:, :, :length + tokens.shape[1]].repeat(p, 1, 1, 1) for v in src.values],
                                src.key_mask[:, :length + tokens.shape[1]].repeat(p, 1), length, src.rope, src.blocks)
        step = self.embed(tokens) + self.segment.weight[SEG["action"]]
        pos = prefix.real + torch.arange(tokens.shape[1], device=tokens.device)
        h = decoder.run(self.backbone, step, torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device),
                        pos.expand(p, -1), cache)
        h = torch.cat([prefix.last[:, None].expand(p, 1, -1), h], dim=1)
        return self._bin_logits(h).view(*bins.shape, self.config.n_bins)

    def _heads_at(self, h: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads for the single prediction position j (h: (B, 1, d)) -> (B, n_bins) each."""
        dims, n = len(ACTION_DIMS), self.config.n_bins
        start = int(self.action_starts[j % dims])
        logits = torch.nn.functional.linear(h[:, 0], self.lm_head.weight[start:start + n])
        res = self.residual_head(h[:, 0]).view(-1, dims, n)[:, j % dims]
        return logits, torch.tanh(res) * 0.5
