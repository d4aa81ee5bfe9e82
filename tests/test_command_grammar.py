"""tokenizers_mm.command_grammar: many training wordings per goal, never a held-out one; the
dataset draws them when asked."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizers_mm.command_grammar import grammar_phrasings
from tokenizers_mm.corpus import LABELS, PHRASINGS


def test_every_label_has_many_wordings_in_both_languages_and_none_held_out():
    heldout = {(p.text, p.lang) for p in PHRASINGS if p.heldout}
    for label in LABELS:
        g = grammar_phrasings(label)
        assert len(g) >= 15 and len(set(g)) == len(g)
        assert {lang for _, lang in g} == {"en", "zh"}
        assert not heldout & set(g) and not {(p.text, p.lang) for p in PHRASINGS} & set(g)
    assert all("left" in t or "左" in t for t, _ in grammar_phrasings("lane_left"))
    with pytest.raises(ValueError, match="unknown goal label"):
        grammar_phrasings("fly")


def test_the_dataset_hears_grammar_phrasings_only_when_asked():
    from sim.backends import make_env
    from sim.rollout import ExpertPolicy, run_episode
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False)
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins))
    env = make_env("embedded", "highway", "light")
    ep = run_episode(env, ExpertPolicy(env), 0, record_frames=False)
    label = ep.goal.label
    pad = policy.layout.special("<pad>")
    generated = {tuple(policy.encode_command(t, lang)) for t, lang in grammar_phrasings(label)}

    def heard(data: DemoDataset) -> list[tuple]:
        np.random.seed(0)
        rows = data.batch(np.arange(len(data))).command.numpy()
        return [tuple(int(v) for v in r if v != pad) for r in rows]

    plain, rich = DemoDataset(policy, augment_commands=1.0), DemoDataset(policy, augment_commands=1.0,
                                                                         command_grammar=True)
    plain.add_episode(ep), rich.add_episode(ep)
    assert not any(c in generated for c in heard(plain))
    share = np.mean([c in generated for c in heard(rich)])
    assert 0.3 < share < 0.7  # half of the swaps draw from the grammar


def test_the_main_job_hears_the_grammar_by_default_and_can_turn_it_off(tmp_path):
    """vla dagger (the README's main job) trains with the grammar unless told not to; vla train bc
    only when asked (its recipes in the docs pass --command-grammar)."""
    import argparse

    from app.commands.train import configure_dagger
    from methods.session_options import dagger_config

    p = argparse.ArgumentParser()
    configure_dagger(p)
    on = p.parse_args(["--out", str(tmp_path / "run")])
    off = p.parse_args(["--out", str(tmp_path / "run"), "--no-command-grammar"])
    assert dagger_config(on, on.scenario, on.density, on.seed).command_grammar is True
    assert dagger_config(off, off.scenario, off.density, off.seed).command_grammar is False
    from app.cli import build_parser

    argv = ["train", "bc", "--data", "d", "--out", "o"]
    assert build_parser(argv).parse_args(argv).command_grammar is False
    argv.append("--command-grammar")
    assert build_parser(argv).parse_args(argv).command_grammar is True


def test_the_main_job_names_the_heard_command_by_default(tmp_path):
    """vla dagger's policies train the command-label loss (weight 1) unless told otherwise; a
    policy that hears nothing gets none; vla train bc only when asked."""
    import argparse

    from app.cli import build_parser
    from app.commands.train import configure_dagger
    from methods.session_options import dagger_config

    p = argparse.ArgumentParser()
    configure_dagger(p)

    def weight(*extra):
        args = p.parse_args(["--out", str(tmp_path / "run"), *extra])
        return dagger_config(args, args.scenario, args.density, args.seed).policy.command_label_weight

    assert weight() == 1.0
    assert weight("--command-label-weight", "0") == 0.0
    assert weight("--command", "none") == 0.0
    argv = ["train", "bc", "--data", "d", "--out", "o"]
    assert build_parser(argv).parse_args(argv).command_label_weight == 0.0


def test_the_dev_phrasings_are_neither_corpus_nor_grammar_wordings():
    """docs/dev_phrasings.tsv screens language changes on dev seeds; a wording that training can
    hear would make the screen measure memory."""
    from pathlib import Path

    from vla.speech_commands import read_phrasings_tsv

    docs = Path(__file__).resolve().parents[1] / "docs"
    trained = {p.text for p in PHRASINGS} | {t for label in LABELS for t, _ in grammar_phrasings(label)}
    for name in ("dev_phrasings.tsv", "dev_hearing.tsv"):  # the second: dev chit-chat + commands
        dev = read_phrasings_tsv(docs / name)
        assert len(dev) >= 15 and not {p.text for p in dev} & trained, name
    assert sum(p.label == "none" for p in read_phrasings_tsv(docs / "dev_hearing.tsv")) >= 20


def test_command_thought_flags_reach_the_config_and_refuse_a_policy_without_the_head(tmp_path):
    import argparse

    import pytest

    from app.commands.train import configure_dagger
    from methods.session_options import dagger_config
    from vla.errors import VLAError

    p = argparse.ArgumentParser()
    configure_dagger(p)

    def policy(*extra):
        args = p.parse_args(["--out", str(tmp_path / "run"), *extra])
        return dagger_config(args, args.scenario, args.density, args.seed).policy

    assert not policy().command_thought
    cfg = policy("--command-thought", "--command-thought-noise", "0.3")
    assert cfg.command_thought and cfg.command_thought_noise == 0.3
    for bad in (["--command-thought", "--command-label-weight", "0"], ["--command-thought", "--command", "none"]):
        with pytest.raises(VLAError, match="--command-thought .* needs --command-label-weight > 0"):
            policy(*bad)


def test_dagger_takes_dart_speed_bursts_only_with_dart(tmp_path):
    import argparse

    import pytest

    from app.commands.train import configure_dagger
    from methods.dagger import DaggerConfig
    from methods.session_options import dagger_config

    p = argparse.ArgumentParser()
    configure_dagger(p)
    args = p.parse_args(["--out", str(tmp_path / "run"), "--dart-speed", "0.01"])
    assert dagger_config(args, args.scenario, args.density, args.seed).dart_speed == 0.01  # the main job has --dart
    with pytest.raises(ValueError, match="dart_speed needs dart"):
        DaggerConfig(dart=False, dart_speed=0.01)
    with pytest.raises(ValueError, match=r"dart_speed \(--dart-speed\) must be"):
        DaggerConfig(dart=True, dart_speed=2.0)


def test_audio_voices_reach_dagger_and_bad_ones_are_refused(tmp_path):
    import argparse

    import pytest

    from app.commands.train import configure_dagger
    from methods.dagger import DaggerConfig
    from methods.session_options import dagger_config

    p = argparse.ArgumentParser()
    configure_dagger(p)
    args = p.parse_args(["--out", str(tmp_path / "run"), "--audio-voices", "wide"])
    assert dagger_config(args, args.scenario, args.density, args.seed).audio_voices == "wide"
    assert DaggerConfig().audio_voices == "train"
    with pytest.raises(ValueError, match=r"audio_voices \(--audio-voices\) must be"):
        DaggerConfig(audio_voices="heldout")
    with pytest.raises(SystemExit):
        p.parse_args(["--out", str(tmp_path / "run"), "--audio-voices", "heldout"])
