"""The ear: the IPA phones a passenger's speech holds, recognized from the audio itself.

``PhoneRecognizer`` turns float mono 24 kHz audio into a sequence of IPA phones
(``tokenizers_mm.ipa.INVENTORY`` symbols without word boundaries and stress marks,
``tokenizers_mm.codec.phones_of``): 80-band log-mel frames (``codec_train.log_mel``: n_fft 1024,
hop 256, 93.75 frames/s), standardized per band with the training set's statistics, optionally
subsampled in time by a strided convolution (``stride``), a ``layers``-layer bidirectional GRU,
and a linear layer to CTC log-probabilities over blank + the inventory; ``transcribe`` is greedy
CTC decoding. ``train_ear`` trains it with CTC on clips and their IPA (the corpus of ``vla
make-speech`` gives both), with SpecAugment-style masking (a few mel bands and frame spans
blanked per clip) so it does not lean on one voice's formants.

Why a recognizer on log-mel and not on the codec's tokens: a recognizer on the small codec's
tokens did not carry words from training voices to held-out ones (``benchmarks.codec_words``:
0.09-0.12 command accuracy against 0.57 from log-mel), and a CTC phone head trained through the
codec's level-0 codes stayed on the CTC plateau (per-phone loss about 4 nats after 1500 steps)
where the same CTC on log-mel leaves it within 300 steps. The ear is what an audio policy with
``command='heard'`` reads (``vla.policy``): the IPA it hears, not a transcript it is given.

A saved ear is a directory: ``ear.safetensors`` (weights, band statistics) and ``ear.json``
(config, IPA inventory version, training figures), each written to a temporary file and renamed,
``ear.json`` last, so a directory with ``ear.json`` holds a whole ear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sim.atomic import atomic_output
from tokenizers_mm.codec import ctc_greedy, ctc_phone_loss, phones_of
from tokenizers_mm.ipa import INVENTORY

SAMPLE_RATE = 24_000
N_MELS = 80
CONFIG_FILE, WEIGHTS_FILE = "ear.json", "ear.safetensors"
FREQ_MASKS, FREQ_MASK_MAX = 2, 12
"""SpecAugment: bands blanked per training clip (each span up to this many bands)."""
TIME_MASKS, TIME_MASK_MAX = 2, 10
"""SpecAugment: frame spans blanked per training clip (each up to this many frames, ~107 ms)."""


def mel_features(audio: np.ndarray) -> torch.Tensor:
    """``(frames, N_MELS)`` float32 log-mel (dB) of float mono 24 kHz ``audio`` (unstandardized)."""
    from tokenizers_mm.codec_train import log_mel

    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be non-empty 1-D mono samples, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating) or not np.isfinite(audio).all():
        raise ValueError("audio must be finite floating-point samples in [-1, 1]")
    return torch.from_numpy(np.ascontiguousarray(log_mel(audio, SAMPLE_RATE).T, dtype=np.float32))


class PhoneRecognizer(torch.nn.Module):
    """log-mel -> [conv front, ``stride`` > 1] -> BiGRU -> CTC log-probs ``(B, T', 1 + len(INVENTORY))``
    (index 0 the blank; ``T' = out_lengths(T)``).

    ``stride`` 1 (the first ears): the GRU reads every 10.7 ms frame. ``stride`` s > 1: a 1-D
    convolution over time (kernel 2s - 1, stride s, ``hidden`` channels, GELU, then a layer norm)
    reads the frames first, so the GRU, the part that runs step by step, sees s times fewer of
    them (s = 2: 46.9 per second, still several per phone) with their neighbours mixed in; the
    front end of most CTC recognizers (DeepSpeech 2, the conformers) subsamples the same way. Two
    stacked convolutions with a ``hidden``-wide GELU between them learned the tests' tones several
    times slower than this one."""

    def __init__(self, hidden: int = 128, layers: int = 2, n_symbols: int | None = None,
                 version: int | None = None, stride: int = 1) -> None:
        super().__init__()
        n_symbols = len(INVENTORY.symbols) if n_symbols is None else int(n_symbols)
        version = INVENTORY.version if version is None else int(version)
        if hidden < 1 or layers < 1 or not 1 <= stride <= 4:
            raise ValueError(f"ear hidden and layers must be >= 1 and stride in 1..4, got {hidden}, {layers}, "
                             f"{stride}")
        self.config = {"hidden": int(hidden), "layers": int(layers), "n_symbols": n_symbols, "version": version,
                       "stride": int(stride)}
        self.register_buffer("mean", torch.zeros(N_MELS))
        self.register_buffer("std", torch.ones(N_MELS))
        self.front = None
        if stride > 1:
            self.front = torch.nn.Sequential(
                torch.nn.Conv1d(N_MELS, hidden, 2 * stride - 1, stride=stride, padding=stride - 1), torch.nn.GELU())
            self.front_norm = torch.nn.LayerNorm(hidden)  # the GRU reads unit-scale features, as at stride 1
        self.gru = torch.nn.GRU(N_MELS if stride == 1 else hidden, hidden, num_layers=layers, batch_first=True,
                                bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, 1 + n_symbols)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs ``lengths`` frames long: ``ceil(lengths / stride)``."""
        s = self.config["stride"]
        return (lengths + s - 1) // s

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs of zero-padded log-mel frames ``(B, T, N_MELS)`` (``lengths`` per row)."""
        x = (mels - self.mean) / self.std
        if lengths is not None:
            x = x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        if self.front is not None:
            x = self.front_norm(self.front(x.transpose(1, 2)).transpose(1, 2))
        if lengths is not None:
            lengths = self.out_lengths(lengths)
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                             enforce_sorted=False)
            h, _ = self.gru(packed)
            h, _ = torch.nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        else:
            h, _ = self.gru(x)
        return self.out(h).log_softmax(-1)

    @torch.no_grad()
    def transcribe(self, audio: np.ndarray) -> tuple[str, ...]:
        """The IPA phones heard in float mono 24 kHz ``audio`` (greedy CTC decoding)."""
        was = self.training
        self.eval()
        log_probs = self(mel_features(audio)[None])[0]
        self.train(was)
        return tuple(INVENTORY.symbol(i) for i in ctc_greedy(log_probs))

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"ear directory {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_output(directory / WEIGHTS_FILE) as tmp:
            save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        with atomic_output(directory / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps({**self.config, **(extra or {})}, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PhoneRecognizer:
        """The ear saved in ``directory``; a one-line ValueError says what is wrong."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_file, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not config_file.is_file() or not weights.is_file():
            raise ValueError(f"{directory} is not an ear (needs {CONFIG_FILE} and {WEIGHTS_FILE}; train one "
                             "with `vla train-ear`)")
        try:
            config = json.loads(config_file.read_text())
            ear = cls(**{k: config[k] for k in ("hidden", "layers", "n_symbols", "version")},
                      stride=config.get("stride", 1))  # ears saved before the conv front end have none
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{config_file}: not an ear config ({e})") from None
        INVENTORY.check_trained_on(ear.config["version"], ear.config["n_symbols"], f"{directory}: the ear")
        try:
            ear.load_state_dict(load_file(str(weights)))
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{weights}: does not match {CONFIG_FILE} ({str(e).splitlines()[0]})") from None
        return ear.eval()


# ----------------------------------------------------------------------------- training
def _spec_augment(x: torch.Tensor, fill: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Log-mel frames ``x`` (T, N_MELS) with a few bands and frame spans set to ``fill`` (the
    band means: what standardizes to 0)."""
    x = x.clone()
    for _ in range(FREQ_MASKS):
        w = int(rng.integers(0, FREQ_MASK_MAX + 1))
        f0 = int(rng.integers(0, N_MELS - w + 1))
        x[:, f0:f0 + w] = fill[f0:f0 + w]
    for _ in range(TIME_MASKS):
        w = int(rng.integers(0, min(TIME_MASK_MAX, max(1, len(x) // 10)) + 1))
        t0 = int(rng.integers(0, max(1, len(x) - w + 1)))
        x[t0:t0 + w] = fill
    return x


def _run_fingerprint(wavs: Sequence[np.ndarray], transcripts: Sequence[Sequence[str]], ear: PhoneRecognizer,
                     **settings) -> str:
    """What a resumed ``train_ear`` must share with the run that wrote its checkpoint: the ear's
    config, the settings and the training set (clip count, total samples, the transcripts)."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps({**ear.config, **settings, "clips": len(wavs), "samples": sum(len(w) for w in wavs)},
                        sort_keys=True).encode())
    for t in transcripts:
        h.update(" ".join(t).encode() + b"\n")
    return h.hexdigest()[:16]


def train_ear(ear: PhoneRecognizer, wavs: Sequence[np.ndarray], transcripts: Sequence[Sequence[str]],
              steps: int = 3000, batch: int = 8, lr: float = 3e-3, seed: int = 0, augment: bool = True,
              log: Callable[[str], None] | None = None, progress: bool = True,
              checkpoint: str | Path | None = None, checkpoint_every: int = 250) -> dict[str, float]:
    """Train ``ear`` in place with CTC on clips and their IPA symbols; band statistics are set
    from the clips first. Returns the CTC loss averaged over the last 10% of steps and the time.

    ``checkpoint``: a file where the whole training state (weights, optimizer, schedule, batch
    sampler, losses so far) is written every ``checkpoint_every`` steps (temp file, then rename).
    When it exists at the start, training resumes from it and ends with the same weights an
    uninterrupted run would have; one written by another run (other clips, ear or settings) is
    a ValueError. The caller removes it once the ear is saved."""
    from tokenizers_mm.codec_train import phone_targets

    if steps < 1 or batch < 1 or not 0 < lr < 1 or checkpoint_every < 1:
        raise ValueError(f"need steps >= 1, batch >= 1, 0 < lr < 1, checkpoint_every >= 1; got {steps}, {batch}, "
                         f"{lr}, {checkpoint_every}")
    if not wavs or len(wavs) != len(transcripts):
        raise ValueError(f"train_ear needs one transcript per clip (>= 1 clip): {len(wavs)} clips, "
                         f"{len(transcripts)} transcripts")
    targets = phone_targets(transcripts)
    mels = [mel_features(w) for w in wavs]
    frames = torch.cat(mels)
    ear.mean.copy_(frames.mean(0))
    ear.std.copy_(frames.std(0).clamp_min(1e-3))
    for i, (m, t) in enumerate(zip(mels, targets)):
        if int(ear.out_lengths(torch.tensor(len(m)))) < len(t):
            raise ValueError(f"clip {i} is {len(m)} frames long, too short for its {len(t)} phones at stride "
                             f"{ear.config['stride']}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(ear.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=min(0.75, max(0.05, 1.5 / steps)))
    fingerprint = _run_fingerprint(wavs, transcripts, ear, steps=steps, batch=batch, lr=lr, seed=seed,
                                   augment=augment)
    losses: list[float] = []
    first = 0
    spent = 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        first, losses, spent = _resume(checkpoint, fingerprint, ear, opt, sched, rng)
        if log:
            log(f"resumed from {checkpoint} at step {first}/{steps}")
    ear.train()
    start = time.perf_counter() - spent
    with tqdm(total=steps, initial=first, desc="train ear", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for step in range(first, steps):
            picks = [int(i) for i in rng.integers(len(mels), size=batch)]
            lengths = torch.tensor([len(mels[i]) for i in picks])
            rows = [_spec_augment(mels[i], ear.mean, rng) if augment else mels[i] for i in picks]
            x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
            log_probs = ear(x, lengths)
            loss = ctc_phone_loss(log_probs, ear.out_lengths(lengths), [targets[i] for i in picks])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ear.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix_str(f"ctc {losses[-1]:.3f}", refresh=False)
            bar.update()
            if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _save_state(checkpoint, fingerprint, step + 1, ear, opt, sched, rng, losses,
                            time.perf_counter() - start)
            if log and (step + 1) % max(1, steps // 10) == 0:
                log(f"step {step + 1}/{steps}: ctc {np.mean(losses[-max(1, steps // 10):]):.4f}")
    ear.eval()
    return {"ctc": float(np.mean(losses[-max(1, steps // 10):])), "first_ctc": losses[0], "steps": steps,
            "batch": batch, "lr": lr, "seed": seed, "augment": augment,
            "train_seconds": time.perf_counter() - start}


def _save_state(path: str | Path, fingerprint: str, step: int, ear: PhoneRecognizer, opt, sched,
                rng: np.random.Generator, losses: list[float], seconds: float) -> None:
    """``train_ear``'s whole state after ``step`` steps, to ``path`` (temp file, then rename)."""
    state = {"fingerprint": fingerprint, "step": step, "model": ear.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "rng": json.dumps(rng.bit_generator.state),
             "losses": torch.tensor(losses, dtype=torch.float64), "seconds": float(seconds)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _resume(path: str | Path, fingerprint: str, ear: PhoneRecognizer, opt, sched,
            rng: np.random.Generator) -> tuple[int, list[float], float]:
    """Load ``_save_state``'s file into the live objects; returns (step, losses, seconds)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        same_run = state["fingerprint"] == fingerprint
    except Exception as e:  # a truncated or foreign file: whatever the unpickler raises
        raise ValueError(f"ear checkpoint {path} cannot be read ({type(e).__name__}); remove it to train from "
                         "the start") from None
    if not same_run:
        raise ValueError(f"ear checkpoint {path} was written by another training run (other clips, ear or "
                         "settings); remove it or train into another directory")
    ear.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = json.loads(state["rng"])  # the loop's only randomness (batches, masks)
    return int(state["step"]), [float(x) for x in state["losses"]], float(state["seconds"])


def phone_error_report(ear: PhoneRecognizer, wavs: Sequence[np.ndarray],
                       transcripts: Sequence[Sequence[str]]) -> dict[str, float]:
    """Phone error rate of ``ear.transcribe`` on clips against their IPA (``phones_of`` both)."""
    from tokenizers_mm.codec_train import phone_error_rate

    hyps = [ear.transcribe(w) for w in wavs]
    return {"phone_error_rate": phone_error_rate(transcripts, hyps), "clips": len(wavs),
            "phones": sum(len(phones_of(t)) for t in transcripts)}
