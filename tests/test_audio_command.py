"""The command stream the policy hears (tokenizers_mm.audio_command): deterministic for a seed,
VAD events from the mixed audio (noise alone gives no vad_on), ids in their vocabulary ranges
and grouped as the model reads them, voices split between training and testing."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizers_mm import audio_command as ac
from tokenizers_mm import corpus
from tokenizers_mm.codec import AudioCodec
from tokenizers_mm.vad import detect
from tokenizers_mm.vocab import VocabLayout


@pytest.fixture(scope="module")
def codec(tiny_codec) -> AudioCodec:
    return tiny_codec  # tests/conftest.py


@pytest.fixture(scope="module")
def layout(codec) -> VocabLayout:
    return VocabLayout(audio_codebooks=codec.n_q, audio_codebook_size=codec.codebook_size)


def _phrasing(label: str = "lane_left", lang: str = "en") -> corpus.Phrasing:
    return next(p for p in corpus.PHRASINGS if p.label == label and p.lang == lang and not p.heldout)


def test_a_rendition_and_its_stream_are_deterministic_for_a_seed(codec, layout):
    a = ac.draw_rendition(_phrasing(), np.random.default_rng([7, 1]))
    b = ac.draw_rendition(_phrasing(), np.random.default_rng([7, 1]))
    assert a == b
    ids_a, rec_a = ac.render_command(a, codec, layout, n_q=2, group=4)
    ids_b, rec_b = ac.render_command(b, codec, layout, n_q=2, group=4)
    np.testing.assert_array_equal(ids_a, ids_b)
    other = ac.draw_rendition(_phrasing(), np.random.default_rng([7, 2]))
    assert other != a


def test_stream_layout_groups_frames_and_places_vad_events(codec, layout):
    spec = ac.draw_rendition(_phrasing(), np.random.default_rng(3), snrs=(None,))
    ids, record = ac.render_command(spec, codec, layout, n_q=2, group=4)
    g = 8
    assert ids.size % g == 0
    rows = ids.reshape(-1, g)
    on, off, pad = (layout.special(t) for t in ("<vad_on>", "<vad_off>", "<pad>"))
    kinds = [e["kind"] for e in record["vad"]]
    assert kinds[:1] == ["vad_on"] and kinds[-1:] == ["vad_off"]  # clean speech: heard, then ended
    event_rows = rows[np.isin(rows[:, 0], [on, off])]
    assert list(event_rows[:, 0]) == [on if k == "vad_on" else off for k in kinds]
    assert (event_rows[:, 1:] == pad).all()
    audio_rows = rows[~np.isin(rows[:, 0], [on, off])]
    frames = len(record["codes"][0])
    assert len(audio_rows) == -(-frames // 4)
    lo0, hi0 = layout.ranges["audio_q0"]
    lo1, hi1 = layout.ranges["audio_q1"]
    real = audio_rows[:-1]  # the last group may be padded
    assert ((real[:, 0::2] >= lo0) & (real[:, 0::2] < hi0)).all()
    assert ((real[:, 1::2] >= lo1) & (real[:, 1::2] < hi1)).all()
    # the vad_on row comes before the group holding its frame
    first_on = record["vad"][0]["frame"]
    position = int(np.flatnonzero(rows[:, 0] == on)[0])
    assert (rows[:position, 0] != on).all() and position == first_on // 4


def test_vad_runs_on_the_mixed_audio_noise_alone_is_not_speech():
    rng = np.random.default_rng(0)
    for color in corpus.speech.NOISE_COLORS:
        noise = corpus.speech.colored_noise(corpus.SAMPLE_RATE * 2, color, rng).astype(np.float32)
        noise *= np.float32(0.3 / np.max(np.abs(noise)))
        assert [e for e in detect(noise, corpus.SAMPLE_RATE) if e.kind == "vad_on"] == [], color
    # and the rendered stream's events are those of the stored, mixed samples
    spec = ac.draw_rendition(_phrasing(), np.random.default_rng(5), snrs=(5.0,))
    record, pcm = corpus.render_item(spec)
    again = detect(pcm.astype(np.float32) / 32768.0, corpus.SAMPLE_RATE, frame_rate=corpus.CODEC_FRAME_RATE)
    assert record["vad"] == [e.to_dict() for e in again] and record["snr_db"] == 5.0


def test_voice_splits_are_disjoint_and_drawn_from_their_split():
    for lang in ("en", "zh"):
        assert not set(ac.VOICE_SPLITS["train"][lang]) & set(ac.VOICE_SPLITS["heldout"][lang])
        assert set(ac.VOICE_SPLITS["train"][lang]) | set(ac.VOICE_SPLITS["heldout"][lang]) <= set(corpus.VOICES[lang])
    rng = np.random.default_rng(0)
    voices = {ac.draw_rendition(_phrasing(), rng, voices="heldout").voice for _ in range(30)}
    assert voices == set(ac.VOICE_SPLITS["heldout"]["en"])
    with pytest.raises(ValueError, match="voices must be one of"):
        ac.draw_rendition(_phrasing(), rng, voices="mine")


def test_the_wide_pool_holds_the_training_voices_and_nothing_of_a_held_out_one():
    for lang in ("en", "zh"):
        wide = ac.VOICE_SPLITS["wide"][lang]
        assert len(set(wide)) == len(wide) and set(ac.VOICE_SPLITS["train"][lang]) <= set(wide)
        assert not any(ac.touches_heldout(v, lang) for v in wide)
        assert not set(wide) & set(ac.VOICE_SPLITS["heldout"][lang])
    assert len(ac.VOICE_SPLITS["wide"]["en"]) == 623 and len(ac.VOICE_SPLITS["wide"]["zh"]) == 90
    english = ac.VOICE_SPLITS["wide"]["en"]
    assert not [v for v in english if v.endswith(("+f4", "+m3")) or v.startswith("en-us-nyc")]
    # the held-out voice, its variant in another accent, its accent in another variant
    assert ac.touches_heldout("en-gb+f4", "en") and ac.touches_heldout("en-029+f4", "en")
    assert ac.touches_heldout("en-us-nyc", "en") and ac.touches_heldout("en-us-nyc+m1", "en")
    # a training voice's accent (en-gb) and Mandarin's training variant (cmn+m3) are not held out
    assert not ac.touches_heldout("en-gb+m1", "en") and not ac.touches_heldout("cmn+m3", "zh")
    assert ac.touches_heldout("cmn+f4", "zh") and not ac.touches_heldout("cmn+f1", "zh")


def test_wide_voices_synthesize_the_same_samples_every_call():
    from tokenizers_mm.speech import synthesize

    for voice in ("en-029+klatt3", "en-gb-x-rp+RicishayMax2", "cmn+grandma", "en-gb-x-gbcwmd+iven2"):
        text = "向左变道" if voice.startswith("cmn") else "move over please"
        first = synthesize(text, voice)
        assert first.size > 1000 and np.array_equal(first, synthesize(text, voice)), voice


def test_bad_codes_are_refused(layout):
    with pytest.raises(ValueError, match="codes must have shape"):
        ac.command_tokens(np.zeros((1, 10)), [], layout, n_q=2, group=4)


def test_the_codec_never_trains_on_test_voices_or_phrasings(tmp_path):
    import json

    from app.commands.train_codec import split_clips

    records = [{"audio": "audio/a.wav", "split": "train", "voice": "en-us"},
               {"audio": "audio/b.wav", "split": "train", "voice": ac.VOICE_SPLITS["heldout"]["en"][0]},
               {"audio": "audio/c.wav", "split": "heldout", "voice": "en-us"},
               {"audio": "audio/d.wav", "split": "train", "voice": "cmn"}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    files = [tmp_path / "audio" / f"{n}.wav" for n in "abcd"]
    train, held = split_clips(str(tmp_path), files, holdout=5, seed=0)
    assert [f.name for f in train] == ["a.wav", "d.wav"]
    assert sorted(f.name for f in held) == ["b.wav", "c.wav"]
