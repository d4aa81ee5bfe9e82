"""Voice-activity events from silero-vad (its shipped ONNX model on onnxruntime; no torch).

``StreamingVad.feed(chunk)`` takes audio in chunks of ANY size and returns the ``VadEvent``s
that became certain; ``flush()`` ends the stream. ``detect(audio, sample_rate)`` is exactly
``StreamingVad(...).feed(audio) + flush()``, so offline and streaming give identical events for
every chunking: the input is cut into fixed blocks, each resampled to 16 kHz and scored with
arrays of the same shape whatever the chunk boundaries were.

Pipeline per 32 ms window (512 samples at 16 kHz):

1. Resampling: input at rate ``r`` is processed in blocks of ``m`` windows whose input length
   ``512 m r / 16000`` is an integer; each block is resampled with
   ``scipy.signal.resample_poly`` from a slice with ``margin`` extra input samples on both sides
   (zeros before the stream start and after ``flush``), keeping the exact centre. So a block is
   scored only once ``margin`` samples past it have arrived (2 ms at 24 kHz).
2. silero-vad: input = last 64 samples of context + the 512-sample window, recurrent state
   carried from window to window (as silero's ``OnnxWrapper`` does). Output: speech probability.
3. State machine with hysteresis (silero's ``VADIterator`` rules, plus a minimum speech length):
   speech *starts* at the first window with ``p >= threshold``; it is confirmed, and ``vad_on``
   emitted, once it has lasted ``min_speech_ms`` without a window ``p < threshold - 0.15``
   (which cancels the candidate). During speech, the first window with ``p < threshold - 0.15``
   marks a tentative end; a window ``p >= threshold`` cancels it; ``min_silence_ms`` after it
   ``vad_off`` is emitted. Boundaries are widened by ``speech_pad_ms``. ``flush()`` closes an
   open segment at the end of the audio and resets the stream (a new utterance can follow).

Event samples are indices in the INPUT sample rate; ``frame = floor(sample / sample_rate *
frame_rate)`` aligns them to codec frames (75 Hz for EnCodec at 24 kHz) when a frame rate is
given (``frame_rate=`` or ``align_to_frames``).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import firwin, resample_poly

VAD_RATE = 16000
WINDOW = 512  # samples per silero window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window silero prepends
HYSTERESIS = 0.15  # off threshold = threshold - HYSTERESIS
EVENT_KINDS = ("vad_on", "vad_off")


@dataclass(frozen=True)
class VadEvent:
    """Speech started (``vad_on``) or ended (``vad_off``) at ``sample`` (input rate)."""

    kind: str  # "vad_on" | "vad_off"
    sample: int  # sample index at ``sample_rate``
    sample_rate: int
    frame: int | None = None  # codec frame index, floor(time_s * frame_rate); None: not aligned

    @property
    def time_s(self) -> float:
        return self.sample / self.sample_rate

    def to_dict(self) -> dict:
        return {"kind": self.kind, "sample": self.sample, "time_s": round(self.time_s, 6),
                "frame": self.frame}


def frame_index(sample: int, sample_rate: int, frame_rate: float) -> int:
    """Codec frame containing ``sample``: ``floor(sample / sample_rate * frame_rate)``."""
    return int(math.floor(sample * frame_rate / sample_rate + 1e-9))


def align_to_frames(events: list[VadEvent], frame_rate: float) -> list[VadEvent]:
    """The same events with ``frame`` set for a codec running at ``frame_rate`` Hz."""
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    return [replace(e, frame=frame_index(e.sample, e.sample_rate, frame_rate)) for e in events]


def model_path() -> Path:
    """The ONNX model shipped inside the ``silero-vad`` wheel (found without importing it,
    which would import torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ImportError("silero-vad is not installed: pip install 'silero-vad[onnx-cpu]'")
    path = Path(spec.origin).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"silero-vad ships no ONNX model at {path}")
    return path


@lru_cache(maxsize=1)
def _session():
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model_path()), sess_options=opts,
                                        providers=["CPUExecutionProvider"])


class _BlockResampler:
    """Chunk-invariant resampling to 16 kHz in fixed blocks of whole VAD windows."""

    def __init__(self, rate: int) -> None:
        g = math.gcd(rate, VAD_RATE)
        self.up, self.down = VAD_RATE // g, rate // g
        self.windows = self.up // math.gcd(WINDOW * self.down, self.up)  # windows per block
        self.block_in = WINDOW * self.windows * self.down // self.up
        half = 10 * max(self.up, self.down) // self.up + 2  # resample_poly filter reach (input)
        self.margin = 0 if self.up == self.down else self.down * math.ceil(max(32, half) / self.down)
        self.margin_out = self.margin * self.up // self.down
        # resample_poly's own default filter, designed once instead of on every block
        max_rate = max(self.up, self.down)
        self.taps = None if max_rate == 1 else firwin(
            2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)

    def block(self, padded: np.ndarray) -> np.ndarray:
        """``padded`` = margin + block_in + margin input samples -> ``windows * 512`` samples."""
        if self.up == self.down:
            return padded
        out = resample_poly(padded, self.up, self.down, window=self.taps)
        return out[self.margin_out: self.margin_out + WINDOW * self.windows]


class StreamingVad:
    """silero-vad over a stream of arbitrary chunks; see the module docstring."""

    def __init__(self, sample_rate: int = VAD_RATE, threshold: float = 0.5,
                 min_silence_ms: float = 300.0, min_speech_ms: float = 100.0,
                 speech_pad_ms: float = 30.0, frame_rate: float | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not HYSTERESIS < threshold < 1:
            raise ValueError(f"threshold must be in ({HYSTERESIS}, 1), got {threshold}")
        if min_silence_ms < 0 or min_speech_ms < 0 or speech_pad_ms < 0:
            raise ValueError("min_silence_ms, min_speech_ms and speech_pad_ms must be >= 0")
        if speech_pad_ms > min_silence_ms:
            raise ValueError("speech_pad_ms must not exceed min_silence_ms")
        if frame_rate is not None and frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate}")
        self.sample_rate, self.threshold, self.frame_rate = int(sample_rate), threshold, frame_rate
        ms = VAD_RATE / 1000.0
        self._min_silence = int(round(min_silence_ms * ms))
        self._min_speech = int(round(min_speech_ms * ms))
        self._pad = int(round(speech_pad_ms * ms))
        self._resampler = _BlockResampler(self.sample_rate)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: model state, buffers, position and any open segment."""
        self._buf = np.zeros(self._resampler.margin, np.float32)  # zeros before the start
        self._consumed = 0  # input samples of the stream that have been scored
        self._received = 0  # input samples received
        self._pos16 = 0  # 16 kHz samples scored
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._active = False
        self._candidate: int | None = None  # 16 kHz sample where unconfirmed speech began
        self._silence_start: int | None = None  # 16 kHz sample of a tentative end
        self._end16: int | None = None  # set by flush: events never point past the audio
        self.probs: list[float] = []  # speech probability of every window so far

    def feed(self, chunk: np.ndarray) -> list[VadEvent]:
        """Add samples (any length, mono float in [-1, 1]); returns the new events."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._received += chunk.size
        self._buf = np.concatenate([self._buf, chunk])
        return self._drain()

    def flush(self) -> list[VadEvent]:
        """End of stream: score the tail (zero-padded), close an open segment, reset."""
        rs = self._resampler
        end16 = int(round(self._received * rs.up / rs.down))
        missing = (-(self._received - self._consumed)) % rs.block_in
        self._buf = np.concatenate([self._buf, np.zeros(missing + rs.margin, np.float32)])
        self._end16 = end16
        events = self._drain()
        if self._active:
            end = end16 if self._silence_start is None else self._silence_start + self._pad
            events.append(self._event("vad_off", end))
        self.reset()
        return events

    # ------------------------------------------------------------------ internals
    def _drain(self) -> list[VadEvent]:
        rs, events = self._resampler, []
        need = rs.block_in + 2 * rs.margin
        start = 0
        while self._buf.size - start >= need:
            samples16 = rs.block(self._buf[start: start + need])
            for w in range(rs.windows):
                events.extend(self._window(samples16[w * WINDOW: (w + 1) * WINDOW]))
            start += rs.block_in
            self._consumed += rs.block_in
        self._buf = self._buf[start:]
        return events

    def _window(self, x: np.ndarray) -> list[VadEvent]:
        inp = np.concatenate([self._context, x.reshape(1, WINDOW).astype(np.float32)], axis=1)
        out, self._state = _session().run(
            None, {"input": inp, "state": self._state, "sr": np.array(VAD_RATE, dtype=np.int64)})
        self._context = inp[:, -CONTEXT:]
        p = float(out[0, 0])
        self.probs.append(p)
        begin, self._pos16 = self._pos16, self._pos16 + WINDOW
        return self._step(p, begin, self._pos16)

    def _step(self, p: float, begin: int, end: int) -> list[VadEvent]:
        """One window ``[begin, end)`` (16 kHz samples) with speech probability ``p``."""
        off = self.threshold - HYSTERESIS
        if not self._active:
            if p >= self.threshold and self._candidate is None:
                self._candidate = begin
            elif p < off:
                self._candidate = None
            if self._candidate is not None and end - self._candidate >= self._min_speech:
                self._active, start = True, max(0, self._candidate - self._pad)
                self._candidate = None
                return [self._event("vad_on", start)]
            return []
        if p >= self.threshold:
            self._silence_start = None
        elif p < off:
            if self._silence_start is None:
                self._silence_start = begin
            if end - self._silence_start >= self._min_silence:
                stop = self._silence_start + self._pad
                self._active, self._silence_start = False, None
                return [self._event("vad_off", stop)]
        return []

    def _event(self, kind: str, sample16: int) -> VadEvent:
        rs = self._resampler
        if self._end16 is not None:
            sample16 = min(sample16, self._end16)
        sample = int(round(sample16 * rs.down / rs.up))
        frame = None if self.frame_rate is None else frame_index(sample, self.sample_rate, self.frame_rate)
        return VadEvent(kind=kind, sample=sample, sample_rate=self.sample_rate, frame=frame)


def detect(audio: np.ndarray, sample_rate: int, frame_rate: float | None = None,
           **kwargs) -> list[VadEvent]:
    """Offline VAD: the streaming state machine run over the whole signal in one chunk."""
    vad = StreamingVad(sample_rate=sample_rate, frame_rate=frame_rate, **kwargs)
    return vad.feed(audio) + vad.flush()


def bench_vad(seconds: float = 10.0, chunk_ms: float = 20.0) -> dict[str, float]:
    """Milliseconds of compute per second of audio: offline ``detect`` at 24 kHz (with the
    resampling) and 16 kHz, and streaming in ``chunk_ms`` chunks at 24 kHz, on espeak speech
    with silences. For ``vla bench tokenizers``."""
    import time

    from tokenizers_mm.speech import pad_silence, resample, synthesize

    rate = 24000
    speech = synthesize("change to the left lane, then slow down", sample_rate=rate)
    speech = pad_silence(speech, 0.5, 0.5, rate)
    audio = np.tile(speech, int(np.ceil(seconds * rate / speech.size)))[: int(seconds * rate)]
    audio16 = resample(audio, rate, VAD_RATE)
    detect(audio[:rate], rate)  # warm-up: loads the model

    def ms_per_s(fn, n_seconds: float) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000.0 / n_seconds

    def stream() -> None:
        vad, step = StreamingVad(rate), int(rate * chunk_ms / 1000)
        for i in range(0, audio.size, step):
            vad.feed(audio[i:i + step])
        vad.flush()

    return {"audio_seconds": float(seconds),
            "offline_24k_ms_per_s": ms_per_s(lambda: detect(audio, rate), seconds),
            "offline_16k_ms_per_s": ms_per_s(lambda: detect(audio16, VAD_RATE), seconds),
            f"streaming_{chunk_ms:g}ms_chunks_24k_ms_per_s": ms_per_s(stream, seconds)}
