"""A policy that hears the command as audio (PolicyConfig.command == 'audio'): it renders the
utterance per episode seed (deterministic), reads codec tokens + VAD events grouped into
positions, trains, saves with its codec, loads and acts identically; bad options are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def codec_dir(tiny_codec, tmp_path_factory) -> Path:
    return tiny_codec.save(tmp_path_factory.mktemp("codec") / "codec")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(light_episode) -> Path:
    return light_episode  # tests/conftest.py


def _policy(codec_dir: Path):
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, command="audio", audio_codec=str(codec_dir),
                          action="plan", observation="lane_frame")
    torch.manual_seed(0)
    return VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))


def test_hearing_is_deterministic_per_seed_and_grouped(codec_dir):
    from vla.policy import Hearing

    policy = _policy(codec_dir)
    g = policy.config.command_group
    assert g == 8 and policy.config.audio_codebook_size == 64
    a = policy.encode_command("change to the left lane", "en", seed=3)
    policy._command_cache.clear()
    np.testing.assert_array_equal(policy.encode_command("change to the left lane", "en", seed=3), a)
    assert a.size % g == 0 and a.size > 0
    assert not np.array_equal(policy.encode_command("change to the left lane", "en", seed=4), a)
    policy.hearing = Hearing("heldout", (10.0,))
    assert not np.array_equal(policy.encode_command("change to the left lane", "en", seed=3), a)
    on = policy.layout.special("<vad_on>")
    assert on in a.reshape(-1, g)[:, 0]  # the utterance was heard as speech


def test_an_audio_policy_trains_saves_loads_and_acts_identically(codec_dir, data, tmp_path):
    from methods.bc import BCConfig, BCMethod
    from sim.backends import make_env
    from sim.storage import read_episodes
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy

    policy = _policy(codec_dir)
    dataset = DemoDataset(policy, augment_commands=0.0)
    for ep in read_episodes(data, load_frames=False):
        dataset.add_episode(ep)
    batch = dataset.batch(np.arange(8))
    assert batch.command.shape[1] % policy.config.command_group == 0
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=10))
    losses = [method.update(batch)["loss"] for _ in range(10)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert policy.model.command_slot.grad is not None and policy.model.command_slot.grad.abs().sum() > 0
    policy.save(tmp_path / "policy")
    assert (tmp_path / "policy" / "codec" / "config.json").is_file()
    loaded = VLAPolicy.load(tmp_path / "policy")
    assert Path(loaded.config.audio_codec) == tmp_path / "policy" / "codec"
    env = make_env("embedded", "highway", "light")
    obs, _ = env.reset(seed=11)
    for p in (policy, loaded):
        p.reset()
        p.hear(env.goal.command, env.goal.lang, seed=11)
    np.testing.assert_array_equal(loaded._command, policy._command)
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))


def test_cli_options(codec_dir, data, tmp_path, capsys):
    from app import cli

    base = ["train", "bc", "--data", str(data), "--no-cameras", "--size", "tiny", "--steps", "2",
            "--batch-size", "4", "--augment-commands", "0"]
    assert cli.main([*base, "--out", str(tmp_path / "ok"), "--command", "audio", "--audio-codec", str(codec_dir)]) == 0
    assert (tmp_path / "ok" / "policy" / "codec").is_dir()
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--command", "audio"]) == 2
    assert "--command audio needs --audio-codec" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--command", "audio", "--audio-codec",
                     str(tmp_path / "nowhere")]) == 2
    assert "not a codec checkpoint" in capsys.readouterr().err
    ev = ["eval", "--policy", str(tmp_path / "ok" / "policy"), "--episodes", "1", "--density", "light", "--no-gif",
          "--out", str(tmp_path / "ev")]
    assert cli.main([*ev, "--snr-db", "loud"]) == 2
    assert "--snr-db must be a number of dB or clean" in capsys.readouterr().err
    assert cli.main([*ev, "--snr-db", "clean", "--voices", "heldout"]) == 0


def test_bench_speech_probes_held_out_phrasings_and_voices(codec_dir, data, tmp_path, capsys):
    import json

    from app import cli

    base = ["train", "bc", "--data", str(data), "--no-cameras", "--size", "tiny", "--steps", "2",
            "--batch-size", "4", "--augment-commands", "0", "--out", str(tmp_path / "p"),
            "--command", "audio", "--audio-codec", str(codec_dir), "--command-label-weight", "1.0"]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main(["bench", "speech", "--policy", str(tmp_path / "p" / "policy"), "--renditions", "1",
                     "--repeats", "2", "--snrs", "clean,5", "--talk-episodes", "1", "--out", str(tmp_path / "bench")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # one closed-loop episode ran; an untrained policy may leave the road before anyone speaks
    assert "act_within_1s_rate" not in out["not_measured"] and out["talk_episodes"] in (0, 1)
    assert out["act_within_1s_rate"] in ((None,) if out["talk_episodes"] == 0 else (0.0, 1.0))
    assert out["act_within_1s_cf_rate"] in ((None,) if out["talk_episodes"] == 0 else (0.0, 1.0))
    for key in ("command_accuracy_clean", "command_accuracy_5db", "command_accuracy_zh", "hearing_ms_per_step",
                "command_accuracy_head_clean", "command_accuracy_head_5db", "command_accuracy_head_zh"):
        assert isinstance(out[key], float) and (0.0 <= out[key] <= 1.0 or key == "hearing_ms_per_step")
    assert out["ipa_phone_error_rate"] is None and "ipa_phone_error_rate" in out["not_measured"]
    assert out["command"] == "audio" and out["command_positions"] > 0
    assert set(out["command_accuracy_by_label"]) == {"lane_left", "lane_right", "speed_up", "slow_down", "keep_lane",
                                                     "turn_left", "turn_straight", "turn_right", "none"}
    assert all(0.0 <= v <= 1.0 for v in out["command_accuracy_by_label"].values())
    assert (tmp_path / "bench" / "confusion.png").stat().st_size > 0
    saved = json.loads((tmp_path / "bench" / "speech.json").read_text())
    assert np.array(saved["confusion"]).sum() == 2 * 27  # 27 held-out phrasings at 2 noise levels
    assert cli.main(["bench", "speech", "--policy", str(tmp_path / "p" / "policy"), "--snrs", "loud"]) == 2


def test_the_command_label_head_learns_what_each_sample_heard(data):
    """With command_label_weight > 0 a batch carries the label each sample heard (the episode's,
    or the other goal's for a relabelled sample) and the head learns to name it."""
    from methods.bc import BCConfig, BCMethod
    from sim.storage import read_episodes
    from tokenizers_mm.corpus import LABELS
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, command_label_weight=1.0, action="plan",
                          observation="lane_frame")
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    dataset = DemoDataset(policy, augment_commands=1.0)
    episodes = list(read_episodes(data, load_frames=False))
    for ep in episodes:
        dataset.add_episode(ep)
    batch = dataset.batch(np.arange(16))
    assert batch.command_label.tolist() == [LABELS.index(episodes[0].goal.label)] * 16
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=30))
    logs = [method.update(batch) for _ in range(30)]
    assert logs[-1]["command_ce"] < 0.5 * logs[0]["command_ce"] and logs[-1]["command_acc"] == 1.0
    plain = VLAPolicy(PolicyConfig(**SIZES["tiny"], cameras=False), default_action_tokenizer(32, "control"))
    assert plain.model.command_head is None
