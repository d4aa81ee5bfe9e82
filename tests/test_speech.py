"""espeak-ng synthesis (real library, a handful of short utterances) and noise mixing."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizers_mm import speech
from tokenizers_mm.speech import SpeechError, mix_at_snr, synthesize

TEXT = "change to the left lane"


@pytest.fixture(scope="module")
def default_audio() -> np.ndarray:
    return synthesize(TEXT)


def test_synthesize_returns_plausible_speech(default_audio):
    a = default_audio
    assert a.dtype == np.float32 and a.ndim == 1
    assert np.all(np.abs(a) <= 1.0)
    assert 0.8 < a.size / 24000 < 3.0  # five words at 175 wpm
    assert np.sqrt(np.mean(a**2)) > 0.01  # not silent


def test_sample_rate_is_respected(default_audio):
    a16 = synthesize(TEXT, sample_rate=16000)
    assert abs(a16.size * 24000 / 16000 - default_audio.size) <= 3


def test_voices_and_rates_differ(default_audio):
    gb = synthesize(TEXT, voice="en-gb-scotland")
    assert gb.size != default_audio.size or not np.allclose(gb, default_audio)
    fast, slow = synthesize(TEXT, rate=300), synthesize(TEXT, rate=100)
    assert fast.size < default_audio.size < slow.size
    high = synthesize(TEXT, pitch=90)
    assert high.size != default_audio.size or not np.allclose(high, default_audio)
    zh = synthesize("向左变道", voice="cmn")
    assert zh.size > 0.3 * 24000


def test_synthesis_is_deterministic_whatever_came_before(default_audio):
    synthesize("something else entirely", voice="en-gb+f4", rate=250, pitch=20)
    assert np.array_equal(synthesize(TEXT), default_audio)


def test_bad_requests_raise():
    with pytest.raises(SpeechError, match="no voice"):
        synthesize("hello", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="rate"):
        synthesize("hello", rate=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize("hello", pitch=101)
    with pytest.raises(ValueError, match="non-empty"):
        synthesize("   ")


@pytest.mark.parametrize("color", speech.NOISE_COLORS)
@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0])
def test_mix_hits_requested_snr(default_audio, color, snr):
    rng = np.random.default_rng(0)
    ref = speech.power(default_audio)
    padded = speech.pad_silence(default_audio, 0.5, 0.5, 24000)
    mixed, noise = mix_at_snr(padded, snr, color, rng, reference_power=ref)
    assert np.allclose(mixed - padded, noise, atol=1e-6)
    assert abs(speech.snr_db(ref, mixed - padded) - snr) < 0.1
    scaled, gain = speech.peak_normalize(mixed, 0.5)
    assert np.max(np.abs(scaled)) <= 0.5 + 1e-6
    assert abs(speech.snr_db(ref * gain**2, scaled - padded * gain) - snr) < 0.1


def test_noise_colors_have_their_spectral_tilt():
    rng = np.random.default_rng(1)
    lows = {}
    for color in speech.NOISE_COLORS:
        n = speech.colored_noise(48000, color, rng)
        assert abs(speech.power(n) - 1.0) < 1e-3 and abs(float(n.mean())) < 1e-3
        spec = np.abs(np.fft.rfft(n)) ** 2
        lows[color] = spec[1:spec.size // 20].sum() / spec.sum()  # share below 5% of Nyquist
    assert lows["white"] < lows["pink"] < lows["brown"]
    with pytest.raises(ValueError, match="noise color"):
        speech.colored_noise(10, "purple", rng)


def test_trim_and_pad():
    a = np.concatenate([np.zeros(100), np.ones(50) * 0.5, np.zeros(70)]).astype(np.float32)
    t = speech.trim_silence(a)
    assert t.size == 50
    p = speech.pad_silence(t, 0.01, 0.02, 1000)
    assert p.size == 10 + 50 + 20 and p[:10].sum() == 0
