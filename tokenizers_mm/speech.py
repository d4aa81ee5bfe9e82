"""Spoken passenger commands: espeak-ng synthesis and background-noise mixing.

Synthesis calls libespeak-ng's C API through ``ctypes`` (no subprocess, no system package):
the library and its voice data come from the ``espeakng-loader`` wheel, or from the path in
``$ESPEAK_NG_LIBRARY`` (+ ``$ESPEAK_NG_DATA``, the directory *containing* ``espeak-ng-data``)
when set. espeak keeps global state (current voice, rate, pitch, synthesis statics), so every
call takes one process-wide lock, loads a fresh copy of the library and sets all of them:
calls are deterministic (same text and settings give bit-identical audio, whatever was spoken
before), EXCEPT with voice variants that add ``breath`` noise (``+f2``, ``+f3``, ``+f5``, ...),
which draws on libc ``rand()`` and other process-wide state; avoid them where reproducibility
matters (``+f1``, ``+f4``, ``+m1``..``+m7`` are reproducible). Native output is 16-bit mono
at 22050 Hz; ``synthesize`` resamples it with ``scipy.signal.resample_poly``.

Noise: ``colored_noise`` draws white / pink (1/f power) / brown (1/f^2) noise by shaping the
spectrum of white Gaussian noise; ``mix_at_snr`` scales it so that
``10 log10(P_ref / P_noise) == snr_db`` exactly, where ``P_ref`` is the mean power of the
speech (passed in, so leading/trailing silence padding does not dilute it).
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import shutil
import tempfile
import threading
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ESPEAK_NATIVE_RATE = 22050
NOISE_COLORS = ("white", "pink", "brown")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_RATE_RANGE, _PITCH_RANGE = (80, 450), (0, 100)
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()
VOICE_ALIASES = {"en-gb": "en"}
"""Voice names that ``espeak_SetVoiceByName`` does not resolve itself (the British English voice
file is called ``en``; the espeak command line maps ``en-gb`` by language, the C call does not)."""


class SpeechError(RuntimeError):
    """espeak-ng is missing or refused a request (unknown voice, internal error)."""


def espeak_paths() -> tuple[str, str]:
    """(library file, directory containing ``espeak-ng-data``) of the espeak-ng to use."""
    lib, data = os.environ.get("ESPEAK_NG_LIBRARY"), os.environ.get("ESPEAK_NG_DATA")
    if lib:
        return lib, data or ""
    try:
        import espeakng_loader
    except ImportError as e:
        raise SpeechError("espeak-ng not found: `pip install espeakng-loader` (or set "
                          "ESPEAK_NG_LIBRARY to a libespeak-ng.so)") from e
    return espeakng_loader.get_library_path(), str(Path(espeakng_loader.get_data_path()).parent)


class _Espeak:
    """One private copy of libespeak-ng, freshly loaded for every utterance.

    espeak-ng keeps synthesis state in C statics (e.g. the pitch-flutter phase in
    ``wavegen.c``) that survive between calls, so the same request gives slightly different
    audio depending on what was spoken before. Loading a private copy of the library
    (``dlopen``), synthesizing, then ``espeak_Terminate`` + ``dlclose`` resets every static and
    makes each call a pure function of its arguments (~6 ms overhead per call).
    """

    def __init__(self) -> None:
        lib_path, self.data_dir = espeak_paths()
        self._tmp = tempfile.TemporaryDirectory(prefix="espeak-")
        self.lib_path = str(Path(self._tmp.name) / Path(lib_path).name)
        shutil.copyfile(lib_path, self.lib_path)  # private copy: nobody else holds this handle
        self.sample_rate = ESPEAK_NATIVE_RATE

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self.lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     self.data_dir.encode() if self.data_dir else None, 0)
        if rate <= 0:
            raise SpeechError(f"espeak_Initialize failed ({rate}) with data in {self.data_dir!r}")
        self.sample_rate = int(rate)
        return lib

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at ``self.sample_rate``; caller holds ``_LOCK``."""
        chunks: list[np.ndarray] = []

        def collect(wav, n: int, _events) -> int:
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        callback = _CALLBACK(collect)  # must outlive the synthesis
        lib = self._load()
        try:
            lib.espeak_SetSynthCallback(callback)
            base, plus, variant = voice.partition("+")
            name = VOICE_ALIASES.get(base.lower(), base) + plus + variant
            if lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise SpeechError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            data = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise SpeechError(f"espeak_Synth failed with code {err} for {text!r}")
        finally:
            lib.espeak_Terminate()
            handle = lib._handle
            del lib
            _ctypes.dlclose(handle)
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@lru_cache(maxsize=1)
def _engine() -> _Espeak:
    return _Espeak()


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (``resample_poly``) of a mono float signal; float32 out."""
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio.copy()
    g = gcd(int(from_rate), int(to_rate))
    return resample_poly(audio, int(to_rate) // g, int(from_rate) // g).astype(np.float32)


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               sample_rate: int = 24000) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float32 mono in [-1, 1] at ``sample_rate`` Hz.

    ``voice`` is an espeak voice name (``en-us``, ``en-gb``, ``en-gb-scotland``, ``cmn``, with an
    optional variant such as ``en-us+f3``); ``rate`` in words per minute (80..450); ``pitch``
    0..100 (50 = the voice's normal). Raises ``ValueError`` on bad arguments and
    ``SpeechError`` for an unknown voice or a missing espeak-ng.
    """
    if not text.strip():
        raise ValueError("synthesize needs non-empty text")
    if not _RATE_RANGE[0] <= rate <= _RATE_RANGE[1]:
        raise ValueError(f"rate must be in {_RATE_RANGE} words/min, got {rate}")
    if not _PITCH_RANGE[0] <= pitch <= _PITCH_RANGE[1]:
        raise ValueError(f"pitch must be in {_PITCH_RANGE}, got {pitch}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    with _LOCK:
        engine = _engine()
        pcm = engine.synth(text, voice, rate, pitch)
    audio = resample(pcm.astype(np.float32) / 32768.0, engine.sample_rate, sample_rate)
    return np.clip(audio, -1.0, 1.0)


# ----------------------------------------------------------------------------- noise
def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of zero-mean unit-power noise; ``color`` in ``NOISE_COLORS``.

    Pink has power spectral density ~ 1/f, brown ~ 1/f^2 (amplitude 1/sqrt(f), 1/f), made by
    scaling the rFFT of white Gaussian noise; the DC bin is zeroed.
    """
    if color not in NOISE_COLORS:
        raise ValueError(f"unknown noise color {color!r}; choose one of {NOISE_COLORS}")
    if n <= 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if color != "white":
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = np.inf  # zero the DC bin
        spec = spec / (np.sqrt(f) if color == "pink" else f)
        white = np.fft.irfft(spec, n)
    white = white - white.mean()
    power = float(np.mean(white**2))
    return (white / np.sqrt(power) if power > 0 else white).astype(np.float32)


def power(audio: np.ndarray) -> float:
    """Mean power (mean square) of a signal."""
    audio = np.asarray(audio, dtype=np.float64)
    return float(np.mean(audio**2)) if audio.size else 0.0


def snr_db(reference_power: float, noise: np.ndarray) -> float:
    """``10 log10(P_ref / P_noise)``."""
    return float(10.0 * np.log10(reference_power / power(noise)))


def mix_at_snr(audio: np.ndarray, snr: float, color: str, rng: np.random.Generator,
               reference_power: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add noise at ``snr`` dB; returns ``(mixed, noise)`` with ``mixed == audio + noise``.

    ``reference_power`` is the speech power the SNR refers to (default: the power of
    ``audio``; pass the power of the un-padded utterance so silence does not count). The
    result is NOT clipped here; ``peak_normalize`` both parts by the same gain afterwards if
    needed, which keeps the SNR.
    """
    audio = np.asarray(audio, dtype=np.float32)
    ref = power(audio) if reference_power is None else float(reference_power)
    if ref <= 0:
        raise ValueError("cannot mix at an SNR: the reference signal is silent")
    noise = colored_noise(audio.size, color, rng).astype(np.float64)
    noise *= np.sqrt(ref / 10.0 ** (snr / 10.0) / power(noise))
    noise32 = noise.astype(np.float32)
    return (audio + noise32).astype(np.float32), noise32


def peak_normalize(audio: np.ndarray, peak: float = 0.95) -> tuple[np.ndarray, float]:
    """Scale down (never up) so ``max|audio| <= peak``; returns ``(scaled, gain)``."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    gain = min(1.0, peak / top) if top > 0 else 1.0
    return (np.asarray(audio, np.float32) * np.float32(gain)).astype(np.float32), gain


def trim_silence(audio: np.ndarray, rel_threshold: float = 0.005) -> np.ndarray:
    """``audio`` without the leading / trailing samples quieter than ``rel_threshold`` x peak
    (espeak adds a few tens of ms of near-silence around an utterance)."""
    audio = np.asarray(audio, np.float32)
    loud = np.nonzero(np.abs(audio) > rel_threshold * float(np.max(np.abs(audio), initial=0.0)))[0]
    return audio[loud[0]: loud[-1] + 1].copy() if loud.size else audio[:0].copy()


def pad_silence(audio: np.ndarray, lead_s: float, trail_s: float, sample_rate: int) -> np.ndarray:
    """``audio`` with ``lead_s`` / ``trail_s`` seconds of digital silence before / after."""
    lead, trail = int(round(lead_s * sample_rate)), int(round(trail_s * sample_rate))
    return np.concatenate([np.zeros(lead, np.float32), np.asarray(audio, np.float32),
                           np.zeros(trail, np.float32)])
