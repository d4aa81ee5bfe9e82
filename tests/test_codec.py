"""Audio codec tokens (tokenizers_mm.codec / codec_train, vla train-codec): tiny configs, synthetic audio."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers.models.encodec.modeling_encodec")  # ~5 s, paid at collection

from tokenizers_mm.codec import AudioCodec, kmeans  # noqa: E402
from tokenizers_mm.codec_train import (  # noqa: E402
    codec_loss, mel_distance, random_crops, reconstruction_report, si_snr, train_codec,
)
from tokenizers_mm.vocab import VocabLayout  # noqa: E402

SR = 24_000
TINY = dict(num_filters=4, hidden_size=16, codebook_size=64, target_bandwidths=[0.9])
"""0.9 kbit/s // (75 Hz * 6 bit) = 2 codebooks of 64."""


def synthetic_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A harmonic chirp (random f0 glide, random harmonic weights) under a random envelope."""
    n = int(seconds * SR)
    f0 = np.linspace(rng.uniform(90, 300), rng.uniform(90, 300), n)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(rng.uniform(0.1, 1.0) / h * np.sin(h * phase) for h in range(1, 9))
    env = np.interp(np.arange(n), np.linspace(0, n, 7), rng.uniform(0.0, 1.0, 7))
    x = x * env + 0.01 * rng.standard_normal(n)
    return (0.4 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convs on 2 shared cores run far faster on one thread (DESIGN.md); module scope so
    it is in force before the module-scoped codec fixture is built."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [synthetic_clip(rng, rng.uniform(0.4, 1.2)) for _ in range(12)]


@pytest.fixture(scope="module")
def codec(clips) -> AudioCodec:
    c = AudioCodec.small(seed=0, **TINY)
    c.init_codebooks(clips, seed=0)
    return c


def test_tiny_config_shape(codec, clips):
    assert (codec.n_q, codec.codebook_size, codec.frame_rate, codec.hop_length) == (2, 64, 75.0, 320)
    for n in (1, 319, 320, 321, 8000, len(clips[0])):
        codes = codec.encode(clips[0][:n] if n <= len(clips[0]) else np.zeros(n, np.float32))
        assert codes.dtype == np.int64 and codes.shape == (2, -(-n // 320))


def test_small_config_is_what_the_docs_say():
    c = AudioCodec.small(seed=0)
    assert (c.n_q, c.codebook_size, c.frame_rate, c.sample_rate) == (4, 256, 75.0, 24_000)
    assert 0.5e6 < c.num_parameters < 1.0e6


def test_fresh_quantizer_gives_constant_codes(clips):
    """transformers builds codebooks as zeros: every frame gets code 0 until they are
    initialized (this is the failure the init test below guards against)."""
    c = AudioCodec.small(seed=0, **TINY)
    assert not c.codebooks_initialized
    x = torch.from_numpy(np.concatenate(clips))[None, None]
    with torch.no_grad():
        codes = c.model.quantizer.encode(c.model.encoder(x))
    assert codes.unique().tolist() == [0]
    with pytest.raises(ValueError, match="not initialized"):
        c.encode(clips[0])


def test_codes_vary_after_codebook_init(codec, clips):
    assert codec.codebooks_initialized
    codes = np.concatenate([codec.encode(w) for w in clips], axis=1)
    for level in codes:
        assert len(np.unique(level)) > 16  # of 64; a constant or near-constant level fails


def test_encode_matches_transformers_rvq(codec, clips):
    x = torch.from_numpy(clips[1])[None, None]
    with torch.no_grad():
        ref = codec.model.encode(x, bandwidth=0.9, return_dict=True).audio_codes[0, 0]
    np.testing.assert_array_equal(codec.encode(clips[1]), ref.numpy())


def test_decode_length(codec, clips):
    w = clips[2][:5000]
    codes = codec.encode(w)
    assert codec.decode(codes).shape == (codes.shape[1] * 320,)
    y = codec.reconstruct(w)
    assert y.shape == w.shape and y.dtype == np.float32 and np.isfinite(y).all()


def test_save_load_round_trip(codec, clips, tmp_path):
    out = codec.save(tmp_path / "codec")
    assert {"config.json", "model.safetensors", "vla_codec.json"} <= {p.name for p in out.iterdir()}
    again = AudioCodec.load(out)
    assert again.n_q == codec.n_q
    for w in clips[:3]:
        np.testing.assert_array_equal(again.encode(w), codec.encode(w))
    codes = codec.encode(clips[0])
    np.testing.assert_allclose(again.decode(codes), codec.decode(codes), atol=1e-6)
    codec.save(out)  # replacing an existing codec checkpoint is fine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_save_refuses_foreign_directory(codec, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a codec checkpoint"):
        codec.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_token_ids_round_trip(codec, clips):
    layout = VocabLayout(audio_codebooks=codec.n_q, audio_codebook_size=codec.codebook_size)
    codes = codec.encode(clips[3])
    ids = codec.to_token_ids(codes, layout)
    assert ids.shape == codes.shape
    for k in range(codec.n_q):
        start, end = layout.ranges[f"audio_q{k}"]
        assert ((ids[k] >= start) & (ids[k] < end)).all()
    np.testing.assert_array_equal(codec.from_token_ids(ids, layout), codes)
    with pytest.raises(ValueError, match="audio_q0"):
        codec.from_token_ids(ids[::-1], layout)  # levels swapped: ids outside their ranges


@pytest.mark.parametrize("n_q, size", [(3, 64), (2, 128), (0, 0)])
def test_token_ids_reject_a_mismatched_layout(codec, clips, n_q, size):
    layout = VocabLayout(audio_codebooks=n_q, audio_codebook_size=size)
    with pytest.raises(ValueError, match="audio_codebooks=2, audio_codebook_size=64"):
        codec.to_token_ids(codec.encode(clips[0]), layout)


@pytest.mark.parametrize("audio, rate, match", [
    (np.full(800, np.nan, np.float32), None, "NaN"),
    (np.zeros((2, 800), np.float32), None, "1-D"),
    (np.zeros(800, np.float32), 16_000, "24000 Hz"),
    (np.zeros(0, np.float32), None, "empty"),
    (np.zeros(800, np.int16), None, "floating"),
])
def test_bad_audio(codec, audio, rate, match):
    with pytest.raises(ValueError, match=match):
        codec.encode(audio, sample_rate=rate)


@pytest.mark.parametrize("codes, match", [
    (np.zeros((3, 4), np.int64), "shape"), (np.full((2, 4), 64), r"\[0, 64\)"),
    (np.zeros((2, 4), np.float32), "integers"),
])
def test_bad_codes(codec, codes, match):
    with pytest.raises(ValueError, match=match):
        codec.decode(codes)


def test_missing_or_foreign_pretrained_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*encodec_24khz"):
        AudioCodec.from_pretrained_dir(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no config.json"):
        AudioCodec.from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not an EnCodec checkpoint"):
        AudioCodec.from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(ValueError, match="no weights"):
        AudioCodec.from_pretrained_dir(tmp_path)


def test_hub_layout_checkpoint_loads(codec, clips, tmp_path):
    """What facebook/encodec_24khz looks like saved locally: a transformers config.json and
    safetensors weights with the older weight_g / weight_v weight-norm names; it loads with
    all codebooks unless n_q is given."""
    from safetensors.torch import load_file, save_file

    with torch.no_grad():
        codec.model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in weights.items()}
    assert any(k.endswith("weight_g") for k in legacy)
    save_file(legacy, tmp_path / "model.safetensors", metadata={"format": "pt"})
    full = AudioCodec.from_pretrained_dir(tmp_path)
    assert full.n_q == 2
    np.testing.assert_array_equal(full.encode(clips[0]), codec.encode(clips[0]))
    one = AudioCodec.from_pretrained_dir(tmp_path, n_q=1)
    np.testing.assert_array_equal(one.encode(clips[0]), codec.encode(clips[0])[:1])
    with pytest.raises(ValueError, match="n_q must be in"):
        AudioCodec.from_pretrained_dir(tmp_path, n_q=3)


def test_kmeans_with_fewer_rows_than_codes_gives_distinct_codes():
    x = torch.randn(10, 4)
    centers = kmeans(x, 32, iters=3, gen=torch.Generator().manual_seed(0))
    assert centers.shape == (32, 4) and len(torch.unique(centers, dim=0)) == 32


def test_training_reduces_loss_on_a_fixed_batch(clips):
    c = AudioCodec.small(seed=0, **TINY)
    c.init_codebooks(clips, seed=0)
    x = random_crops(clips, 2, 4800, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(c.model.parameters(), 3e-3)
    c.model.train()
    losses = []
    for _ in range(12):
        loss = codec_loss(c, x, gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_train_codec_writes_a_checkpoint(clips, tmp_path):
    c = AudioCodec.small(seed=0, **TINY)
    metrics = train_codec(c, clips, steps=3, batch=2, seconds=0.2, seed=0, progress=False,
                          checkpoint=tmp_path / "ck")
    assert metrics["steps"] == 3 and np.isfinite(metrics["loss"])
    meta = json.loads((tmp_path / "ck" / "vla_codec.json").read_text())
    assert meta["n_q"] == 2 and meta["training"]["steps"] == 3
    np.testing.assert_array_equal(AudioCodec.load(tmp_path / "ck").encode(clips[0]), c.encode(clips[0]))


def test_quality_measures(codec, clips):
    w = clips[0]
    assert si_snr(w, 3.0 * w) > 100  # scale-invariant
    assert si_snr(w, w + 0.1 * np.random.default_rng(0).standard_normal(len(w))) < 20
    assert mel_distance(w, w, SR) == 0.0
    assert mel_distance(w, np.roll(w, 1), SR) < mel_distance(w, np.zeros_like(w) + 1e-4, SR)
    report = reconstruction_report(codec, clips[:2])
    assert report["clips"] == 2 and {"si_snr_db", "mel_distance"} <= set(report)


def _cli(argv: list[str]) -> int:
    from app.commands.train_codec import configure, run
    from vla.errors import VLAError

    parser = argparse.ArgumentParser()
    configure(parser)
    try:
        return run(parser.parse_args(argv))
    except VLAError as e:
        raise ValueError(str(e)) from e


def test_cli_rejects_missing_or_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        _cli(["--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "c")])
    (tmp_path / "empty" / "audio").mkdir(parents=True)
    with pytest.raises(ValueError, match="no audio/\\*.wav"):
        _cli(["--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])


def test_cli_trains_saves_and_reports(tmp_path):
    """End to end on a 16 kHz corpus (resampled to 24 kHz on reading), default small config."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    (tmp_path / "corpus" / "audio").mkdir(parents=True)
    for i in range(4):
        sf.write(tmp_path / "corpus" / "audio" / f"{i:03d}.wav", synthetic_clip(rng, 0.5)[::3][:5000],
                 16_000, subtype="PCM_16")
    out = tmp_path / "codec"
    assert _cli(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--steps", "2",
                 "--batch", "2", "--holdout", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train_clips"] == 3 and len(report["heldout_files"]) == 1
    assert {"untrained", "trained", "training"} <= set(report)
    assert AudioCodec.load(out).n_q == 4
    with pytest.raises(ValueError, match="leaves no training clip"):
        _cli(["--corpus", str(tmp_path / "corpus"), "--out", str(out), "--holdout", "4"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds no codec"):
        _cli(["--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "mine"), "--holdout", "1"])


def test_bench_codec_figures():
    from tokenizers_mm.codec import bench_codec

    figures = bench_codec(seconds=1.0)
    assert figures["tokens_per_audio_s"] == 300.0 and figures["encode_audio_s_per_s"] > 0


# ----------------------------------------------------------------------------- phone head
@pytest.fixture(scope="module")
def tone_set(tone_clip):
    rng = np.random.default_rng(3)
    seqs = [[str(s) for s in rng.choice(["m", "a", "s"], size=int(rng.integers(2, 5)))] for _ in range(8)]
    return [tone_clip(rng, s) for s in seqs], seqs


def test_phone_helpers():
    from tokenizers_mm.codec import ctc_greedy, phones_of
    from tokenizers_mm.codec_train import edit_distance, phone_error_rate

    assert phones_of(("ˈ", "s", "|", "a", "˥˩", "ˌ", "m")) == ("s", "a", "˥˩", "m")
    lp = torch.full((7, 4), -10.0)
    for t, c in enumerate([0, 2, 2, 0, 2, 3, 0]):  # blank, s1, s1 (merged), blank, s1 again, s2, blank
        lp[t, c] = 0.0
    assert ctc_greedy(lp) == [1, 1, 2]
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], ["a"]) == 1
    assert phone_error_rate([("a", "|", "b")], [("ˈ", "a", "b")]) == 0.0
    assert phone_error_rate([("a", "b"), ("c", "d")], [("a",), ("c", "x", "d")]) == 0.5
    with pytest.raises(ValueError, match="as many hypotheses"):
        phone_error_rate([("a",)], [])


def test_content_loss_trains_the_encoder_through_level_0(tone_set):
    """The CTC term reaches the encoder (straight through level 0's quantization) and falls on a
    fixed batch; a head reading detached codes would leave the encoder without gradient."""
    from tokenizers_mm.codec import PhoneHead
    from tokenizers_mm.codec_train import content_loss, phone_targets, utterance_batch
    from tokenizers_mm.ipa import INVENTORY

    wavs, seqs = tone_set
    c = AudioCodec.small(seed=0, **TINY)
    c.init_codebooks(wavs, seed=0)
    torch.manual_seed(0)
    c.phone_head = PhoneHead(TINY["hidden_size"], len(INVENTORY.symbols))
    targets = phone_targets(seqs)
    x, lengths, picks = utterance_batch(wavs, range(len(wavs)), 4, np.random.default_rng(0))
    loss = content_loss(c, x, lengths, [targets[i] for i in picks])
    loss.backward()
    enc_grad = sum(float(p.grad.abs().sum()) for p in c.model.encoder.parameters() if p.grad is not None)
    assert enc_grad > 0
    params = list(c.model.encoder.parameters()) + list(c.phone_head.parameters())
    opt = torch.optim.Adam(params, 1e-2)
    losses = []
    for _ in range(25):
        loss = content_loss(c, x, lengths, [targets[i] for i in picks])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_codec_with_content_saves_a_phone_head(tone_set, tmp_path):
    from tokenizers_mm.codec_train import transcription_report

    wavs, seqs = tone_set
    c = AudioCodec.small(seed=0, **TINY)
    metrics = train_codec(c, wavs, steps=3, batch=2, seconds=0.2, seed=0, progress=False,
                          transcripts=seqs, content_weight=1.0, content_batch=2, checkpoint=tmp_path / "ck")
    assert np.isfinite(metrics["ctc"]) and metrics["content_weight"] == 1.0
    meta = json.loads((tmp_path / "ck" / "vla_codec.json").read_text())
    assert meta["phone_head"]["n_symbols"] > 0 and (tmp_path / "ck" / "phone_head.safetensors").is_file()
    loaded = AudioCodec.load(tmp_path / "ck")
    for w in wavs[:3]:
        assert loaded.transcribe(w) == c.transcribe(w)
    report = transcription_report(loaded, wavs[:2], seqs[:2])
    assert report["clips"] == 2 and 0.0 <= report["phone_error_rate"]
    # a damaged checkpoint is a one-line error naming what is wrong
    (tmp_path / "ck" / "phone_head.safetensors").unlink()
    with pytest.raises(ValueError, match="phone_head.safetensors is missing"):
        AudioCodec.load(tmp_path / "ck")
    meta["phone_head"]["n_symbols"] += 1
    (tmp_path / "ck" / "phone_head.safetensors").write_bytes(b"")
    (tmp_path / "ck" / "vla_codec.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="IPA inventory"):
        AudioCodec.load(tmp_path / "ck")


def test_content_training_refuses_bad_transcripts(tone_set, codec):
    wavs, seqs = tone_set
    c = AudioCodec.small(seed=0, **TINY)
    with pytest.raises(ValueError, match="one transcript"):
        train_codec(c, wavs, steps=1, progress=False, content_weight=1.0)
    with pytest.raises(ValueError, match="not in inventory"):
        train_codec(c, wavs, steps=1, progress=False, content_weight=1.0,
                    transcripts=[["m", "§"]] + seqs[1:])
    with pytest.raises(ValueError, match="no phone"):
        train_codec(c, wavs, steps=1, progress=False, content_weight=1.0, transcripts=[["|", "ˈ"]] + seqs[1:])
    with pytest.raises(ValueError, match="content_weight >= 0"):
        train_codec(c, wavs, steps=1, progress=False, content_weight=float("nan"), transcripts=seqs)
    with pytest.raises(ValueError, match="no phone head"):
        codec.transcribe(wavs[0])


def test_cli_content_weight_reads_transcripts(tone_set, tmp_path):
    import soundfile as sf

    wavs, seqs = tone_set
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    lines = []
    for i, (w, s) in enumerate(zip(wavs[:4], seqs[:4])):
        sf.write(corpus / "audio" / f"{i:03d}.wav", w, SR, subtype="PCM_16")
        lines.append(json.dumps({"audio": f"audio/{i:03d}.wav", "ipa": s}))
    out = tmp_path / "codec"
    with pytest.raises(ValueError, match="items.jsonl does not exist"):
        _cli(["--corpus", str(corpus), "--out", str(out), "--steps", "1", "--holdout", "1", "--content-weight", "1"])
    (corpus / "items.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match="none for 1 of them"):
        _cli(["--corpus", str(corpus), "--out", str(out), "--steps", "1", "--holdout", "0", "--content-weight", "1"])
    with pytest.raises(ValueError, match="--content-weight must be"):
        _cli(["--corpus", str(corpus), "--out", str(out), "--content-weight", "-1"])
    (corpus / "items.jsonl").write_text("\n".join(lines) + "\n")
    assert _cli(["--corpus", str(corpus), "--out", str(out), "--steps", "2", "--batch", "2",
                 "--holdout", "1", "--content-weight", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0.0 <= report["trained"]["phone_error_rate"] and AudioCodec.load(out).phone_head is not None


def test_codec_words_reads_what_the_phone_head_hears(tone_set, tmp_path):
    """benchmarks.codec_words gives a phone-head codec's transcriptions to its ``heard`` recognizer."""
    from benchmarks import codec_words
    from tokenizers_mm import audio_command as ac
    from tokenizers_mm import corpus
    from tokenizers_mm.codec import PhoneHead
    from tokenizers_mm.ipa import INVENTORY

    wavs, _ = tone_set
    c = AudioCodec.small(seed=0, **TINY)
    c.init_codebooks(wavs, seed=0)
    c.phone_head = PhoneHead(TINY["hidden_size"], len(INVENTORY.symbols))
    items = codec_words._render(c, corpus.PHRASINGS[:2], 1, "train", ac.TRAIN_SNRS_DB, 0, 2)
    assert all(isinstance(it[4], tuple) for it in items)  # the codec's transcription of each rendition
    x, lengths, y = codec_words._tensors(items, "heard", {}, c.codebook_size)
    assert x.shape[0] == 2 and (lengths >= 1).all() and y.tolist() == [corpus.LABELS.index(p.label)
                                                                       for p in corpus.PHRASINGS[:2]]
