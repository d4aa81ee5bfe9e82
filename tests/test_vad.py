"""silero-vad events: speech vs silence/noise, and streaming == offline for any chunking."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizers_mm.speech import pad_silence, synthesize, trim_silence
from tokenizers_mm.vad import StreamingVad, VadEvent, align_to_frames, detect, frame_index

SR = 24000
LEAD, TRAIL = 0.7, 0.9
TOLERANCE_S = 0.12


@pytest.fixture(scope="module")
def utterance() -> tuple[np.ndarray, float, float]:
    """Speech padded with silence, and the true start / end of the speech in seconds."""
    speech = trim_silence(synthesize("change to the left lane", sample_rate=SR))
    return pad_silence(speech, LEAD, TRAIL, SR), LEAD, LEAD + speech.size / SR


def _stream(audio: np.ndarray, sizes: np.ndarray, **kwargs) -> list[VadEvent]:
    vad, events, i = StreamingVad(**kwargs), [], 0
    for n in sizes:
        events += vad.feed(audio[i:i + int(n)])
        i += int(n)
    events += vad.feed(audio[i:])
    return events + vad.flush()


def test_speech_gives_one_segment_at_the_speech(utterance):
    audio, start, end = utterance
    events = detect(audio, SR, frame_rate=75.0)
    assert [e.kind for e in events] == ["vad_on", "vad_off"]
    on, off = events
    assert abs(on.time_s - start) < TOLERANCE_S and abs(off.time_s - end) < TOLERANCE_S
    assert on.frame == int(np.floor(on.sample / SR * 75.0)) and off.frame == frame_index(off.sample, SR, 75.0)


def test_silence_and_quiet_noise_give_no_events():
    assert detect(np.zeros(3 * SR, np.float32), SR) == []
    noise = np.random.default_rng(0).standard_normal(3 * SR) * 10 ** (-50 / 20)  # -50 dBFS white
    assert detect(noise.astype(np.float32), SR) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_offline_for_random_chunks(utterance, seed):
    audio = utterance[0]
    offline = detect(audio, SR, frame_rate=75.0)
    sizes = np.random.default_rng(seed).integers(1, 3000, size=audio.size // 1000)
    sizes = sizes[np.cumsum(sizes) < audio.size]
    assert _stream(audio, sizes, sample_rate=SR, frame_rate=75.0) == offline


def test_streaming_equals_offline_for_tiny_chunks_at_16k():
    audio = pad_silence(trim_silence(synthesize("go faster", sample_rate=16000)), 0.3, 0.6, 16000)
    offline = detect(audio, 16000)
    assert [e.kind for e in offline] == ["vad_on", "vad_off"]
    sizes = np.random.default_rng(3).integers(1, 7, size=audio.size // 4)
    sizes = sizes[np.cumsum(sizes) < audio.size]
    assert _stream(audio, sizes, sample_rate=16000) == offline


def test_flush_closes_open_speech_and_resets(utterance):
    audio = utterance[0]
    cut = int((LEAD + 0.5) * SR)  # mid-utterance
    vad = StreamingVad(SR)
    events = vad.feed(audio[:cut]) + vad.flush()
    assert [e.kind for e in events] == ["vad_on", "vad_off"] and events[1].sample <= cut
    assert vad.feed(audio) + vad.flush() == detect(audio, SR)  # a fresh stream after flush


def test_align_to_frames_and_validation():
    events = [VadEvent("vad_on", 24000, SR), VadEvent("vad_off", 36319, SR)]
    aligned = align_to_frames(events, 75.0)
    assert [e.frame for e in aligned] == [75, 113]
    assert aligned[0].to_dict() == {"kind": "vad_on", "sample": 24000, "time_s": 1.0, "frame": 75}
    with pytest.raises(ValueError):
        align_to_frames(events, 0)
    with pytest.raises(ValueError, match="threshold"):
        StreamingVad(threshold=0.1)
    with pytest.raises(ValueError, match="speech_pad_ms"):
        StreamingVad(min_silence_ms=10, speech_pad_ms=30)
