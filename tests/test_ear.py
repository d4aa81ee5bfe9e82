"""The ear (tokenizers_mm.ear, vla train-ear) and the policy that reads what it hears
(PolicyConfig.command == 'heard'): tiny models, synthetic 'phones' (tones) and the real espeak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenizers_mm.ear import PhoneRecognizer, mel_features, phone_error_report, train_ear

SR = 24_000


@pytest.fixture(scope="module")
def tones(tone_clip):
    rng = np.random.default_rng(0)
    seqs = [[str(s) for s in rng.choice(["m", "a", "s"], size=int(rng.integers(2, 5)))] for _ in range(24)]
    return [tone_clip(rng, s) for s in seqs], seqs


@pytest.fixture(scope="module")
def trained_ear(tones):
    wavs, seqs = tones
    torch.manual_seed(0)
    ear = PhoneRecognizer(hidden=32, layers=1)
    train_ear(ear, wavs[:16], seqs[:16], steps=150, batch=8, lr=1e-2, augment=False, progress=False)
    return ear


def test_the_ear_learns_to_transcribe_phones_it_was_taught(tones, trained_ear):
    """CTC training reaches the transcriptions of its clips (a mechanics check: how well the ear
    hears speech it never heard is measured by `vla train-ear`'s report, not here)."""
    wavs, seqs = tones
    untrained = phone_error_report(PhoneRecognizer(hidden=32, layers=1), wavs[:16], seqs[:16])
    trained = phone_error_report(trained_ear, wavs[:16], seqs[:16])
    assert untrained["phone_error_rate"] >= 0.9
    assert trained["phone_error_rate"] <= 0.1, trained


def test_the_ear_saves_loads_and_hears_identically(tones, trained_ear, tmp_path):
    wavs, _ = tones
    trained_ear.save(tmp_path / "ear", extra={"note": "x"})
    loaded = PhoneRecognizer.load(tmp_path / "ear")
    for w in wavs[:4]:
        assert loaded.transcribe(w) == trained_ear.transcribe(w)
    with pytest.raises(ValueError, match="is not an ear"):
        PhoneRecognizer.load(tmp_path / "nowhere")
    config = json.loads((tmp_path / "ear" / "ear.json").read_text())
    (tmp_path / "ear" / "ear.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ValueError, match="IPA inventory v99"):
        PhoneRecognizer.load(tmp_path / "ear")
    (tmp_path / "ear" / "ear.json").write_text(json.dumps({**config, "hidden": 8}))
    with pytest.raises(ValueError, match="does not match"):
        PhoneRecognizer.load(tmp_path / "ear")


def test_a_strided_ear_learns_saves_and_loads_identically(tones, tmp_path):
    """The conv front end (stride 2) halves the frames the GRU reads and still learns the clips;
    it round-trips through save/load, and an ear saved before the front end existed (no
    'stride' in ear.json) loads as stride 1."""
    wavs, seqs = tones
    torch.manual_seed(0)
    ear = PhoneRecognizer(hidden=32, layers=1, stride=2)
    mels = mel_features(wavs[0])[None]
    assert ear(mels).shape[1] == (mels.shape[1] + 1) // 2
    assert ear.out_lengths(torch.tensor([1, 2, 3, 10])).tolist() == [1, 1, 2, 5]
    # a padded batch gives each row the log-probs it gets alone, over its own output frames
    short, long_ = mel_features(wavs[1]), mel_features(wavs[2])
    batch = torch.nn.utils.rnn.pad_sequence([short, long_], batch_first=True)
    together = ear(batch, torch.tensor([len(short), len(long_)]))
    alone = ear(short[None])[0]
    assert torch.allclose(together[0, :len(alone)], alone, atol=1e-5)
    train_ear(ear, wavs[:16], seqs[:16], steps=150, batch=8, lr=1e-2, augment=False, progress=False)
    assert phone_error_report(ear, wavs[:16], seqs[:16])["phone_error_rate"] <= 0.1
    ear.save(tmp_path / "ear")
    loaded = PhoneRecognizer.load(tmp_path / "ear")
    assert loaded.config["stride"] == 2
    for w in wavs[:4]:
        assert loaded.transcribe(w) == ear.transcribe(w)
    old = PhoneRecognizer(hidden=8, layers=1)
    old.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "ear.json").read_text())
    del config["stride"]
    (tmp_path / "old" / "ear.json").write_text(json.dumps(config))
    assert PhoneRecognizer.load(tmp_path / "old").config["stride"] == 1
    with pytest.raises(ValueError, match="stride in 1..4"):
        PhoneRecognizer(hidden=8, layers=1, stride=5)
    with pytest.raises(ValueError, match="too short .* at stride 2"):
        train_ear(PhoneRecognizer(hidden=8, layers=1, stride=2), [np.zeros(2000, np.float32)], [["m"] * 5],
                  steps=1, progress=False)


def test_bad_input_to_the_ear(tones):
    wavs, seqs = tones
    ear = PhoneRecognizer(hidden=8, layers=1)
    with pytest.raises(ValueError, match="one transcript per clip"):
        train_ear(ear, wavs[:3], seqs[:2], steps=1, progress=False)
    with pytest.raises(ValueError, match="too short"):
        train_ear(ear, [np.zeros(300, np.float32)], [["m"] * 10], steps=1, progress=False)
    with pytest.raises(ValueError, match="not in inventory"):
        train_ear(ear, wavs[:1], [["§"]], steps=1, progress=False)
    with pytest.raises(ValueError, match="finite"):
        mel_features(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        mel_features(np.zeros((2, 100), np.float32))


def _corpus(tmp_path: Path, tones, n: int = 6) -> Path:
    import soundfile as sf

    wavs, seqs = tones
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    lines = []
    for i in range(n):
        sf.write(corpus / "audio" / f"{i:03d}.wav", wavs[i], SR, subtype="PCM_16")
        held_voice = i % 3 == 2
        lines.append(json.dumps({"audio": f"audio/{i:03d}.wav", "ipa": seqs[i], "lang": "en",
                                 "split": "heldout" if i == 4 else "train",
                                 "voice": "en-gb+f4" if held_voice else "en-us"}))
    (corpus / "items.jsonl").write_text("\n".join(lines) + "\n")
    return corpus


def test_cli_trains_an_ear_and_reports_phone_error_per_held_out_kind(tones, tmp_path, capsys):
    from app import cli

    corpus = _corpus(tmp_path, tones)
    out = tmp_path / "ear"
    assert cli.main(["train-ear", "--corpus", str(corpus), "--out", str(out), "--steps", "3", "--hidden", "8",
                     "--layers", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["train_clips"] == 3  # items 0, 1, 3: training phrasings in training voices
    assert set(report["phone_error_rate"]) == {"heldout_voice_en", "heldout_phrasing_en"}  # items 2, 5 and 4
    assert PhoneRecognizer.load(out).config["hidden"] == 8
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    bad = [(["--corpus", str(tmp_path / "none")], "not a directory"),
           (["--corpus", str(tmp_path)], "no items.jsonl"),
           (["--corpus", str(corpus), "--steps", "0"], "--steps must be >= 1"),
           (["--corpus", str(corpus), "--lr", "2"], "--lr must be in"),
           (["--corpus", str(corpus), "--out", str(tmp_path / "mine")], "holds no ear")]
    for flags, message in bad:
        argv = ["train-ear", "--out", str(tmp_path / "e2"), *flags] if "--out" not in flags else ["train-ear", *flags]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    (corpus / "items.jsonl").write_text('{"audio": "audio/000.wav"}\n')
    assert cli.main(["train-ear", "--corpus", str(corpus), "--out", str(tmp_path / "e3")]) == 2
    assert "lacks one of audio, ipa" in capsys.readouterr().err


def _fresh_ear() -> PhoneRecognizer:
    torch.manual_seed(1)
    return PhoneRecognizer(hidden=8, layers=1)


def test_ear_training_resumes_from_its_checkpoint_to_the_same_weights(tones, tmp_path):
    """Stopped after its step-10 checkpoint and run again, training ends where an uninterrupted
    run ends: same weights, same reported loss. The checkpoint holds the optimizer, schedule and
    batch sampler too (without any of them the weights would differ)."""
    wavs, seqs = tones
    kw = dict(steps=20, batch=4, lr=1e-2, seed=3, progress=False)
    whole = _fresh_ear()
    expected = train_ear(whole, wavs[:8], seqs[:8], **kw)

    class Stop(Exception):
        pass

    def stop_at_12(line: str) -> None:
        if line.startswith("step 12/"):
            raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train_ear(_fresh_ear(), wavs[:8], seqs[:8], checkpoint=state, checkpoint_every=5, log=stop_at_12, **kw)
    assert torch.load(state, weights_only=True)["step"] == 10
    lines: list[str] = []
    cut = _fresh_ear()
    resumed = train_ear(cut, wavs[:8], seqs[:8], checkpoint=state, checkpoint_every=5, log=lines.append, **kw)
    assert lines[0] == f"resumed from {state} at step 10/20"
    assert resumed["ctc"] == expected["ctc"]
    for (name, a), b in zip(whole.state_dict().items(), cut.state_dict().values()):
        assert torch.equal(a, b), name


def test_an_ear_checkpoint_of_another_run_or_a_broken_one_is_refused(tones, tmp_path):
    wavs, seqs = tones
    state = tmp_path / "state.pt"
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_ear(_fresh_ear(), wavs[:4], seqs[:4], steps=2, checkpoint=state, checkpoint_every=0, progress=False)
    train_ear(_fresh_ear(), wavs[:4], seqs[:4], steps=6, batch=2, checkpoint=state, checkpoint_every=3,
              progress=False)
    for change in (dict(steps=7), dict(seed=1)):
        with pytest.raises(ValueError, match="another training run"):
            train_ear(_fresh_ear(), wavs[:4], seqs[:4], **{"steps": 6, "batch": 2, **change},
                      checkpoint=state, progress=False)
    with pytest.raises(ValueError, match="another training run"):  # other clips
        train_ear(_fresh_ear(), wavs[1:5], seqs[1:5], steps=6, batch=2, checkpoint=state, progress=False)
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        train_ear(_fresh_ear(), wavs[:4], seqs[:4], steps=6, batch=2, checkpoint=state, progress=False)


def test_cli_train_ear_killed_and_rerun_gives_the_same_ear(tones, tmp_path):
    """``kill -9`` after the first checkpoint, then the same command again: the ear and its report
    equal those of a run never killed (the training time aside), and no state file is left."""
    from safetensors.numpy import load_file
    from test_kill_resume import kill_rerun_and_whole

    corpus = _corpus(tmp_path, tones)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", "train-ear",
                "--corpus", str(corpus), "--out", str(out), "--steps", "300", "--hidden", "8", "--layers", "1",
                "--batch", "2", "--checkpoint-every", "10", "--holdout", "2"]

    cut, whole = kill_rerun_and_whole(command, lambda out: (out / "train_state.pt").is_file(), tmp_path)
    a, b = load_file(str(cut / "ear.safetensors")), load_file(str(whole / "ear.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    reports = [json.loads((d / "report.json").read_text()) for d in (cut, whole)]
    for r in reports:
        r["training"].pop("train_seconds")
    assert reports[0] == reports[1]
    assert not (cut / "train_state.pt").exists() and not (whole / "train_state.pt").exists()


# ----------------------------------------------------------------------------- the 'heard' policy
def _heard_policy(ear_dir: Path):
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, command="heard", audio_ear=str(ear_dir),
                          action="plan", observation="lane_frame")
    torch.manual_seed(0)
    return VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))


def test_a_heard_policy_reads_its_ears_ipa_saves_loads_and_acts_identically(trained_ear, tmp_path):
    from sim.backends import make_env
    from tokenizers_mm.ipa import INVENTORY
    from vla.policy import Hearing, VLAPolicy

    trained_ear.save(tmp_path / "ear")
    policy = _heard_policy(tmp_path / "ear")
    assert not any("ear" in name for name, _ in policy.named_parameters())  # BC never updates the ear
    ids = policy.encode_command("change to the left lane", "en", seed=3)
    ipa_range = policy.layout.ranges["ipa"]
    assert ids.size > 0 and all(ipa_range[0] <= i < ipa_range[1] or i == policy.layout.special("<unk>") for i in ids)
    assert INVENTORY.decode(ids, layout=policy.layout) == policy.ear.transcribe(
        _rendition(policy, "change to the left lane", "en", 3))[: policy.config.command_ids_max]
    policy._command_cache.clear()
    np.testing.assert_array_equal(policy.encode_command("change to the left lane", "en", seed=3), ids)
    policy.save(tmp_path / "policy")
    assert (tmp_path / "policy" / "ear" / "ear.json").is_file()
    loaded = VLAPolicy.load(tmp_path / "policy")
    assert Path(loaded.config.audio_ear) == tmp_path / "policy" / "ear"
    env = make_env("embedded", "highway", "light")
    obs, _ = env.reset(seed=11)
    for p in (policy, loaded):
        p.hearing = Hearing("heldout", (10.0,))
        p.reset()
        p.hear(env.goal.command, env.goal.lang, seed=11)
    np.testing.assert_array_equal(loaded._command, policy._command)
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))


def _rendition(policy, text: str, lang: str, seed: int) -> np.ndarray:
    """The mixed audio a spoken-command policy hears for ``seed`` (as ``VLAPolicy._render`` draws it)."""
    import zlib

    from tokenizers_mm.audio_command import draw_rendition
    from tokenizers_mm.corpus import Phrasing, render_audio
    from vla.policy import AUDIO_SEED

    rng = np.random.default_rng([zlib.crc32(f"{lang}:{text}".encode()), seed, AUDIO_SEED])
    spec = draw_rendition(Phrasing(text, lang, "unknown", False), rng, policy.hearing.voices)
    return render_audio(spec)[0].astype(np.float32) / 32768.0


def test_cli_heard_options(trained_ear, light_episode, tmp_path, capsys):
    from app import cli

    trained_ear.save(tmp_path / "ear")
    base = ["train", "bc", "--data", str(light_episode), "--no-cameras", "--size", "tiny", "--steps", "2",
            "--batch-size", "4", "--augment-commands", "0"]
    assert cli.main([*base, "--out", str(tmp_path / "ok"), "--command", "heard", "--audio-ear", str(tmp_path / "ear")]) == 0
    assert (tmp_path / "ok" / "policy" / "ear" / "ear.json").is_file()
    for flags, message in ((["--command", "heard"], "--command heard needs --audio-ear"),
                           (["--command", "heard", "--audio-ear", str(tmp_path / "nowhere")], "not an ear directory"),
                           (["--audio-ear", str(tmp_path / "ear")], "--audio-ear is for --command heard")):
        assert cli.main([*base, "--out", str(tmp_path / "bad"), *flags]) == 2
        assert message in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["bench", "speech", "--policy", str(tmp_path / "ok" / "policy"), "--renditions", "1",
                     "--repeats", "2", "--snrs", "clean", "--talk-episodes", "0"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # no command-label head: its accuracy is not measured, and says why
    assert out["command_accuracy_head_clean"] is None and "command_label_weight 0" in out["not_measured"]["command_accuracy_head_zh"]
    assert out["act_within_1s_rate"] is None and "--talk-episodes 0" in out["not_measured"]["act_within_1s_rate"]
    assert out["command"] == "heard" and 0.0 <= out["ipa_phone_error_rate"] == out["ipa_phone_error_rate_clean"]
    assert "ipa_phone_error_rate" not in out["not_measured"]


def test_phone_errors_corrupt_only_ipa_tokens_at_the_asked_rate(light_episode):
    from sim.storage import read_episodes
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    clean = DemoDataset(policy)
    noisy = DemoDataset(policy, phone_errors=0.5)
    for ep in read_episodes(light_episode, load_frames=False):
        clean.add_episode(ep)
        noisy.add_episode(ep)
    ids = np.asarray(clean._episodes[0].command)
    lo, hi = policy.layout.ranges["ipa"]
    assert ids.size > 5 and ((ids >= lo) & (ids < hi)).all()
    np.random.seed(0)
    changed = [not np.array_equal(noisy._with_phone_errors(ids), ids) for _ in range(50)]
    assert all(changed)  # 0.5 per token over > 5 tokens: practically always some error
    np.random.seed(0)
    outs = [noisy._with_phone_errors(ids) for _ in range(200)]
    assert all(((o >= lo) & (o < hi)).all() for o in outs)
    mean_len = np.mean([len(o) for o in outs])  # drops (1/8 per token) and insertions (1/8) balance
    assert abs(mean_len - len(ids)) < 0.15 * len(ids)
    pad = policy.layout.special("<pad>")
    np.testing.assert_array_equal(noisy._with_phone_errors(np.array([pad, pad])), [pad, pad])
    with pytest.raises(ValueError, match="phone_errors must be in"):
        DemoDataset(policy, phone_errors=1.5)
    blind_config = PolicyConfig(**SIZES["tiny"], cameras=False, command="none")
    blind = VLAPolicy(blind_config, default_action_tokenizer(blind_config.n_bins))
    with pytest.raises(ValueError, match="for ipa / heard policies"):
        DemoDataset(blind, phone_errors=0.1)


def test_training_commands_are_rendered_in_the_asked_voice_pool(trained_ear, light_episode, tmp_path):
    """--audio-voices wide: the training phrasings (and an episode's own command) are heard in
    the wide pool; the policy's own hearing is back to what it was afterwards."""
    from dataclasses import replace

    from sim.storage import read_episodes
    from tokenizers_mm.audio_command import TRAINING_POOLS, VOICE_SPLITS
    from tokenizers_mm.corpus import PHRASINGS
    from tokenizers_mm.ipa import INVENTORY
    from vla.data import AUDIO_VOICES, DemoDataset

    assert AUDIO_VOICES == TRAINING_POOLS  # the training loop's copy of the pools

    trained_ear.save(tmp_path / "ear")
    policy = _heard_policy(tmp_path / "ear")
    before = policy.hearing
    train = DemoDataset(policy, augment_commands=0.5, audio_renditions=1)
    wide = DemoDataset(policy, augment_commands=0.5, audio_renditions=1, audio_voices="wide")
    assert policy.hearing == before and before.voices == "train"
    first = next(p for p in PHRASINGS if p.split == "train" and p.label == "lane_left")
    heard = INVENTORY.decode(wide._phrasings["lane_left"][0], layout=policy.layout)
    policy.hearing = replace(before, voices="wide")
    assert _voice(policy, first.text, first.lang, 0) not in VOICE_SPLITS["train"][first.lang]  # so it tests something
    assert heard == policy.ear.transcribe(_rendition(policy, first.text, first.lang, 0))[: policy.config.command_ids_max]
    policy.hearing = before
    assert _voice(policy, first.text, first.lang, 0) in VOICE_SPLITS["train"][first.lang]
    for ep in read_episodes(light_episode, load_frames=False):
        wide.add_episode(ep)
        policy.hearing = replace(before, voices="wide")
        expected = policy.encode_command(ep.goal.command, ep.goal.lang, seed=ep.seed)
        policy.hearing = before
        np.testing.assert_array_equal(wide._episodes[-1].command, expected)
    assert policy.hearing == before
    with pytest.raises(ValueError, match="audio_voices must be one of"):
        DemoDataset(policy, audio_voices="heldout")


def _voice(policy, text: str, lang: str, seed: int) -> str:
    """The voice ``VLAPolicy._render`` draws for ``seed`` under the policy's hearing."""
    import zlib

    from tokenizers_mm.audio_command import draw_rendition
    from tokenizers_mm.corpus import Phrasing
    from vla.policy import AUDIO_SEED

    rng = np.random.default_rng([zlib.crc32(f"{lang}:{text}".encode()), seed, AUDIO_SEED])
    return draw_rendition(Phrasing(text, lang, "unknown", False), rng, policy.hearing.voices).voice
