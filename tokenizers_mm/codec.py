"""Neural-codec audio tokens: EnCodec (``transformers.EncodecModel``) as ``n_q`` code streams.

A passenger's speech reaches the policy as residual-vector-quantized codes: the SEANet
encoder turns 24 kHz mono audio into one ``codebook_dim`` vector per ``hop_length`` samples
(75 frames/s), and ``n_q`` residual codebooks of ``codebook_size`` entries each quantize it:
level 0 picks the nearest code to the frame, level k the nearest to what levels < k left
over. ``encode`` gives ``codes[k, t]`` (int64, ``[n_q, T]``, ``T = ceil(S / hop_length)``),
``decode`` sums the chosen code vectors and runs the decoder back to ``T * hop_length``
samples (trimmed to ``length`` when given). ``to_token_ids`` places level k in the vocabulary
range ``audio_q{k}`` (``tokenizers_mm.vocab``); ``ids.T.reshape(-1)`` is the frame-major
order (q0 q1 .. q{n_q-1} of frame 0, then frame 1, ...).

Two sources of weights:

* ``AudioCodec.small(seed)``: the CPU-sized config ``SMALL_CONFIG`` (8 base filters, 64-dim
  latent, 4 codebooks x 256 codes = 2.4 kbit/s at 75 Hz, ~0.73 M parameters), trained here by
  ``tokenizers_mm.codec_train`` / ``vla train-codec``.
* ``AudioCodec.from_pretrained_dir(path)``: a local EnCodec checkpoint (``config.json`` +
  ``model.safetensors``). Nothing is ever downloaded. On a machine with internet save one with::

      from transformers import EncodecModel
      EncodecModel.from_pretrained("facebook/encodec_24khz").save_pretrained("codecs/encodec_24khz")

  and pass ``n_q`` (the 24 kHz model has 32 codebooks of 1024; 2 of them = 1.5 kbit/s).

Codebooks must be initialized before codes mean anything. transformers builds every
codebook as zeros (the original EnCodec k-means-initializes them on the first training
batch; transformers only ships inference), so a fresh quantizer maps every frame to code 0:
constant codes. ``init_codebooks(wavs)`` fills each level by k-means on the encoder outputs
(level 0) and the residuals left by the levels before (level k) on real audio; ``encode``
refuses an uninitialized codec instead of returning constant tokens.

A codec may carry a **phone head** (``PhoneHead``, trained by ``tokenizers_mm.codec_train``
with ``content_weight > 0``): a small local conv net that reads only the level-0 code vectors
and emits CTC log-probabilities over the phones of ``tokenizers_mm.ipa.INVENTORY``. Training it
through the codes (straight-through) is what makes level 0 carry phones, the content a command
is made of, rather than only what reconstruction needs. ``transcribe(audio)`` is its greedy CTC
decoding: the IPA phones the codec hears (``phones_of`` says which symbols count as phones).

``save(dir)`` writes ``save_pretrained``'s files plus ``vla_codec.json`` (and the phone head's
``phone_head.safetensors``) into a temp directory beside ``dir`` and renames it onto ``dir``, so
``dir`` holds a whole checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tokenizers_mm.vocab import VocabLayout

if TYPE_CHECKING:
    from transformers import EncodecModel

SMALL_CONFIG: dict = dict(
    sampling_rate=24_000, audio_channels=1, num_filters=8, hidden_size=64,
    upsampling_ratios=[8, 5, 4, 2], num_residual_layers=1, num_lstm_layers=1,
    codebook_size=256, target_bandwidths=[2.4], norm_type="weight_norm", use_causal_conv=True,
)
"""EncodecConfig fields of ``AudioCodec.small``: hop 8*5*4*2 = 320 samples -> 75 frames/s;
n_q = 2400 bit/s // (75 Hz * 8 bit) = 4 codebooks of 256."""
META_FILE = "vla_codec.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
PHONE_HEAD_FILE = "phone_head.safetensors"
NOT_PHONES = frozenset({"|", "ˈ", "ˌ"})
"""IPA symbols that are not sounds of their own (word / syllable boundaries, stress marks): the
phone head neither predicts nor is scored on them. Tones and length marks are kept."""


def phones_of(symbols: Sequence[str]) -> tuple[str, ...]:
    """The phones of an IPA symbol sequence (``tokenizers_mm.ipa.to_ipa``): ``NOT_PHONES`` dropped."""
    return tuple(s for s in symbols if s not in NOT_PHONES)


class PhoneHead(torch.nn.Module):
    """CTC phone classifier on level-0 code vectors ``(B, D, T)`` -> log-probs ``(B, T, 1 + P)``,
    index 0 the CTC blank and index ``1 + i`` symbol ``i`` of the IPA inventory (``version``).
    Deliberately small and local (one conv of ``kernel`` frames, 67 ms at 75 Hz for 5, then a
    1x1 conv): what it reads must be in the codes themselves, not assembled by the head."""

    def __init__(self, dim: int, n_symbols: int, kernel: int = 5, hidden: int = 128, version: int = 1) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"phone head kernel must be odd and >= 1, got {kernel}")
        self.config = {"dim": int(dim), "n_symbols": int(n_symbols), "kernel": int(kernel),
                       "hidden": int(hidden), "version": int(version)}
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(dim, hidden, kernel, padding=kernel // 2), torch.nn.GELU(),
            torch.nn.Conv1d(hidden, 1 + n_symbols, 1))

    def forward(self, code_vectors: torch.Tensor) -> torch.Tensor:
        return self.net(code_vectors).transpose(1, 2).log_softmax(-1)


def ctc_phone_loss(log_probs: torch.Tensor, frames: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean CTC loss (per target symbol) of log-probs ``(B, T, 1 + P)`` (class 0 the blank,
    class ``1 + i`` symbol ``i``), ``frames`` valid frames per row, against symbol indices
    ``targets``; impossible alignments count 0 instead of inf."""
    import torch.nn.functional as F

    flat = torch.tensor([i + 1 for t in targets for i in t], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return F.ctc_loss(log_probs.transpose(0, 1), flat, frames, lengths, blank=0, reduction="mean",
                      zero_infinity=True)


def ctc_greedy(log_probs: torch.Tensor) -> list[int]:
    """Greedy CTC decoding of ``(T, 1 + P)`` log-probs: best class per frame, repeats merged,
    blanks (0) dropped; returns symbol indices (class - 1)."""
    best = log_probs.argmax(-1).tolist()
    out, prev = [], 0
    for c in best:
        if c != prev and c != 0:
            out.append(c - 1)
        prev = c
    return out


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load/save chatter for one call."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_checkpoint_dir(path: Path) -> dict:
    """The parsed config.json of an EnCodec checkpoint directory, or a clear error."""
    if not path.exists():
        raise FileNotFoundError(
            f"codec directory {path} does not exist; train one with `vla train-codec`, or save "
            "facebook/encodec_24khz there on a machine with internet (see tokenizers_mm.codec)")
    if not path.is_dir():
        raise ValueError(f"codec path {path} is a file, not a checkpoint directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not an EnCodec checkpoint: it has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_file} is not readable JSON: {e}") from e
    if not isinstance(config, dict) or config.get("model_type") != "encodec":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"{path} is not an EnCodec checkpoint (model_type {found!r})")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{path} has an EnCodec config.json but no weights ({', '.join(WEIGHT_FILES)})")
    return config


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished ``tmp`` directory onto ``dest`` (an older checkpoint is removed)."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, old / dest.name)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


class AudioCodec:
    """An ``EncodecModel`` used as an audio tokenizer with a fixed number of codebooks ``n_q``."""

    def __init__(self, model: EncodecModel, n_q: int | None = None) -> None:
        cfg = model.config
        if cfg.audio_channels != 1 or cfg.chunk_length_s is not None or cfg.normalize:
            raise ValueError("only mono EnCodec configs without chunking or normalization are "
                             "supported (e.g. facebook/encodec_24khz)")
        n_q = cfg.num_quantizers if n_q is None else int(n_q)
        if not 1 <= n_q <= len(model.quantizer.layers):
            raise ValueError(f"n_q must be in [1, {len(model.quantizer.layers)}], got {n_q}")
        self.model = model.eval()
        self._n_q = n_q
        self.phone_head: PhoneHead | None = None

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def small(cls, seed: int = 0, **overrides) -> AudioCodec:
        """A fresh (untrained, codebooks NOT initialized) codec of ``SMALL_CONFIG``; keyword
        overrides replace config fields (tests use ``num_filters=4`` and the like)."""
        from transformers import EncodecConfig, EncodecModel

        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            model = EncodecModel(EncodecConfig(**{**SMALL_CONFIG, **overrides}))
            unit_gain_init(model)
        return cls(model)

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, n_q: int | None = None) -> AudioCodec:
        """Load a local EnCodec checkpoint (ours or a saved ``facebook/encodec_24khz``);
        ``n_q`` defaults to the value saved with it, else all codebooks of the config."""
        from transformers import EncodecModel

        path = Path(path)
        _check_checkpoint_dir(path)
        meta_file = path / META_FILE
        if n_q is None and meta_file.is_file():
            n_q = int(json.loads(meta_file.read_text())["n_q"])
        with _quiet_transformers():
            model, info = EncodecModel.from_pretrained(path, local_files_only=True,
                                                       output_loading_info=True)
        missing = [k for k in info.get("missing_keys", ()) if k]
        if missing:
            raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights, e.g. {sorted(missing)[0]}")
        codec = cls(model.float(), n_q)
        head_config = json.loads(meta_file.read_text()).get("phone_head") if meta_file.is_file() else None
        if head_config:
            codec.phone_head = _load_phone_head(path, head_config)
        return codec

    load = from_pretrained_dir

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write the checkpoint into directory ``path`` atomically; ``extra`` (JSON-able) is
        stored in ``vla_codec.json``. An existing non-codec, non-empty directory is refused."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir())
                                                     and not (path / "config.json").is_file())):
            raise ValueError(f"{path} exists and is not a codec checkpoint directory: not overwriting it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            with _quiet_transformers():
                self.model.save_pretrained(tmp)
            meta = {"n_q": self.n_q, "frame_rate": self.frame_rate, "codebook_size": self.codebook_size,
                    "sample_rate": self.sample_rate, **(extra or {})}
            if self.phone_head is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in self.phone_head.state_dict().items()},
                          str(tmp / PHONE_HEAD_FILE))
                meta["phone_head"] = self.phone_head.config
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            tmp.chmod(0o755)
            _replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(self.model.config.hop_length)

    @property
    def frame_rate(self) -> float:
        """Code frames per second (75.0 for 24 kHz audio and hop 320)."""
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        return self._n_q

    @property
    def codebook_size(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def codebooks(self) -> list:
        """The ``EncodecEuclideanCodebook`` of each used level (buffers embed, embed_avg,
        cluster_size)."""
        return [layer.codebook for layer in self.model.quantizer.layers[: self.n_q]]

    @property
    def codebooks_initialized(self) -> bool:
        return all(bool(cb.embed.abs().sum() > 0) for cb in self.codebooks())

    # ------------------------------------------------------------------ codes
    def _check_audio(self, audio: np.ndarray, sample_rate: int | None) -> torch.Tensor:
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"audio at {sample_rate} Hz; this codec takes {self.sample_rate} Hz "
                             "(resample first, e.g. scipy.signal.resample_poly)")
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"audio must be 1-D mono samples, got shape {audio.shape}")
        if audio.size == 0:
            raise ValueError("audio is empty")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
        if not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or inf")
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).view(1, 1, -1)

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(codes ``(n_q, B, T)``, the residual each level quantized, each ``(B, D, T)``)
        of encoder output ``latent`` ``(B, D, T)``; the same codes as transformers' RVQ."""
        residual, codes, inputs = latent, [], []
        for layer in self.model.quantizer.layers[: self.n_q]:
            idx = layer.encode(residual)
            inputs.append(residual)
            codes.append(idx)
            residual = residual - layer.decode(idx)
        return torch.stack(codes), inputs

    @torch.no_grad()
    def encode(self, audio: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Codes ``[n_q, ceil(S / hop_length)]`` (int64) of float mono audio ``(S,)``."""
        x = self._check_audio(audio, sample_rate)
        if not self.codebooks_initialized:
            raise ValueError("codec codebooks are not initialized (all zero: every frame would get "
                             "code 0); call init_codebooks(wavs) or load a trained codec")
        codes, _ = self.quantize(self.model.encoder(x))
        return codes[:, 0].numpy().astype(np.int64)

    def level0_vectors(self, latent: torch.Tensor) -> torch.Tensor:
        """Level-0 code vectors ``(B, D, T)`` of encoder output ``latent`` (what the phone head reads)."""
        layer = self.model.quantizer.layers[0]
        return layer.decode(layer.encode(latent))

    @torch.no_grad()
    def transcribe(self, audio: np.ndarray, sample_rate: int | None = None) -> tuple[str, ...]:
        """The IPA phones the phone head hears in float mono ``audio`` (greedy CTC decoding of
        the level-0 codes; see ``phones_of``). A codec without a phone head is a ValueError."""
        from tokenizers_mm.ipa import INVENTORY

        if self.phone_head is None:
            raise ValueError("this codec has no phone head: train one with `vla train-codec "
                             "--content-weight W` (W > 0)")
        x = self._check_audio(audio, sample_rate)
        if not self.codebooks_initialized:
            raise ValueError("codec codebooks are not initialized; load a trained codec")
        log_probs = self.phone_head(self.level0_vectors(self.model.encoder(x)))[0]
        return tuple(INVENTORY.symbol(i) for i in ctc_greedy(log_probs))

    def _check_codes(self, codes: np.ndarray) -> torch.Tensor:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.n_q or codes.shape[1] == 0:
            raise ValueError(f"codes must have shape [n_q={self.n_q}, T>0], got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got "
                             f"[{codes.min()}, {codes.max()}]")
        return torch.from_numpy(codes.astype(np.int64))

    @torch.no_grad()
    def decode(self, codes: np.ndarray, length: int | None = None) -> np.ndarray:
        """Audio (float32, ``T * hop_length`` samples, or the first ``length``) of ``codes``."""
        c = self._check_codes(codes)[:, None, :]
        audio = self.model.decoder(self.model.quantizer.decode(c))[0, 0]
        return audio[:length].numpy().astype(np.float32)

    def reconstruct(self, audio: np.ndarray) -> np.ndarray:
        """``decode(encode(audio))`` trimmed to ``len(audio)``."""
        return self.decode(self.encode(audio), length=len(audio))

    def _check_layout(self, layout: VocabLayout) -> None:
        if layout.audio_codebooks != self.n_q or layout.audio_codebook_size != self.codebook_size:
            raise ValueError(
                f"vocabulary has {layout.audio_codebooks} audio codebooks of {layout.audio_codebook_size}"
                f" but the codec has {self.n_q} of {self.codebook_size}: build the VocabLayout with "
                f"audio_codebooks={self.n_q}, audio_codebook_size={self.codebook_size}")

    def to_token_ids(self, codes: np.ndarray, layout: VocabLayout) -> np.ndarray:
        """Global token ids ``[n_q, T]``: level k in range ``audio_q{k}`` of ``layout``."""
        self._check_layout(layout)
        c = self._check_codes(codes).numpy()
        return np.stack([layout.ids(f"audio_q{k}", c[k]) for k in range(self.n_q)])

    def from_token_ids(self, ids: np.ndarray, layout: VocabLayout) -> np.ndarray:
        """Inverse of ``to_token_ids`` (a ValueError names the level whose ids are off-range)."""
        self._check_layout(layout)
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != self.n_q:
            raise ValueError(f"token ids must have shape [n_q={self.n_q}, T], got {ids.shape}")
        return np.stack([layout.local(f"audio_q{k}", ids[k]) for k in range(self.n_q)])

    # ------------------------------------------------------------------ codebook init
    @torch.no_grad()
    def init_codebooks(self, wavs: Sequence[np.ndarray], max_vectors: int = 20_000,
                       iters: int = 20, seed: int = 0) -> None:
        """k-means each level on real audio: level 0 on encoder outputs, level k on the residuals
        left by levels < k (at most ``max_vectors`` random frames). Resets the EMA state
        (``embed_avg = embed``, ``cluster_size = 1``)."""
        if len(wavs) == 0:
            raise ValueError("init_codebooks needs at least one clip of audio")
        frames = [self.model.encoder(self._check_audio(w, None))[0].T for w in wavs]
        vectors = torch.cat(frames)
        gen = torch.Generator().manual_seed(seed)
        if len(vectors) > max_vectors:
            vectors = vectors[torch.randperm(len(vectors), generator=gen)[:max_vectors]]
        for cb in self.codebooks():
            embed = kmeans(vectors, self.codebook_size, iters, gen)
            cb.embed.copy_(embed)
            cb.embed_avg.copy_(embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
            vectors = vectors - embed[cb.quantize(vectors)]


def _load_phone_head(path: Path, config: dict) -> PhoneHead:
    """The phone head saved in checkpoint ``path`` with its ``vla_codec.json`` ``config``."""
    from safetensors.torch import load_file

    from tokenizers_mm.ipa import INVENTORY

    file = path / PHONE_HEAD_FILE
    if not file.is_file():
        raise ValueError(f"{path}: vla_codec.json describes a phone head but {PHONE_HEAD_FILE} is missing")
    try:
        head = PhoneHead(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad phone_head entry in {META_FILE}: {e}") from None
    INVENTORY.check_trained_on(config.get("version"), config.get("n_symbols"), f"{path}: the phone head")
    try:
        head.load_state_dict(load_file(str(file)))
    except (RuntimeError, OSError) as e:
        raise ValueError(f"{path}: {PHONE_HEAD_FILE} does not match its config: {str(e).splitlines()[0]}") from None
    return head.eval()


@torch.no_grad()
def unit_gain_init(model: torch.nn.Module) -> None:
    """Redraw every (weight-normed) conv of ``model`` as N(0, 1 / fan_in) with zero bias.

    transformers builds the convs with PyTorch's default init (kaiming-uniform, a = sqrt(5):
    variance gain 1/3 per layer, plus uniform biases), which attenuates the input through
    SEANet's ~30 layers: a fresh decoder's output is nearly independent of the audio
    (SI-SNR about -40 dB) and a short CPU run stalls at the "output silence" minimum of the
    L1 loss. Unit-gain weights keep the signal's variance along the path (measured: a fixed
    batch then reaches +11 dB SI-SNR in 150 steps instead of staying at -25 dB). A transposed
    conv's fan-in is in_channels * kernel / stride (inputs reaching one output sample)."""
    for module in model.modules():
        if not isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            continue
        kernel, stride = module.kernel_size[0], module.stride[0]
        if isinstance(module, torch.nn.ConvTranspose1d):
            fan_in = module.in_channels * kernel / stride
        else:
            fan_in = module.in_channels // module.groups * kernel
        module.weight = torch.randn_like(module.weight) / fan_in ** 0.5  # weight_norm: sets g, v
        if module.bias is not None:
            module.bias.zero_()


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` centroids ``(k, D)`` of rows ``x`` ``(N, D)`` by Lloyd's algorithm from random rows;
    an emptied cluster is reseeded with a random row. With N < k rows are repeated with a
    little jitter so every code is distinct."""
    n = len(x)
    idx = torch.randperm(n, generator=gen)[:k] if n >= k else torch.randint(n, (k,), generator=gen)
    centers = x[idx].clone()
    if n < k:
        scale = x.std().clamp_min(1e-6) * 1e-2
        centers += torch.randn(centers.shape, generator=gen) * scale
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None])
        if empty.any() and n >= k:
            centers[empty] = x[torch.randint(n, (int(empty.sum()),), generator=gen)]
    return centers


def bench_codec(seconds: float = 10.0, codec_dir: str | Path | None = None) -> dict[str, float]:
    """Encode / decode speed of the codec at ``codec_dir`` (default: a fresh ``small()`` codec,
    codebooks k-means-initialized on the bench audio; the same architecture runs at the same
    speed trained or not) on ``seconds`` of harmonic audio, in the current torch thread
    setting. For ``vla bench tokenizers`` (which runs it on one thread)."""
    import time

    codec = AudioCodec.small() if codec_dir is None else AudioCodec.from_pretrained_dir(codec_dir)
    n = int(seconds * codec.sample_rate)
    t = np.arange(n) / codec.sample_rate
    audio = (0.1 * np.sin(2 * np.pi * 150 * t * (1 + 0.2 * np.sin(2 * np.pi * t)))).astype(np.float32)
    if not codec.codebooks_initialized:
        codec.init_codebooks([audio[: codec.sample_rate]], iters=2)
    codec.encode(audio[: codec.sample_rate])  # warm-up

    def best_of_3(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    codes = codec.encode(audio)
    encode_s = best_of_3(lambda: codec.encode(audio))
    decode_s = best_of_3(lambda: codec.decode(codes))
    return {"encode_audio_s_per_s": seconds / encode_s, "decode_audio_s_per_s": seconds / decode_s,
            "tokens_per_s": codes.size / encode_s, "tokens_per_audio_s": codec.n_q * codec.frame_rate,
            "n_q": float(codec.n_q), "codebook_size": float(codec.codebook_size)}
