"""The spoken-command corpus: phrasing table, fixed held-out split, files, determinism, CLI."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sim.scenarios import HIGHWAY_GOAL_LABELS
from tokenizers_mm import corpus
from tokenizers_mm.corpus import LABELS, PHRASINGS, build_corpus, load_audio, plan, read_items
from tokenizers_mm.ipa import to_ipa
from app.commands import make_speech


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "corpus"
    build_corpus(out, size="tiny", seed=0, progress=False)
    return out


def test_phrasing_table_covers_every_goal_in_both_languages():
    assert set(HIGHWAY_GOAL_LABELS) | {"turn_left", "turn_straight", "turn_right", "none"} == set(LABELS)
    for label in LABELS:
        for lang, (n_min, n_max) in {"en": (6, 10), "zh": (4, 6)}.items():
            ph = [p for p in PHRASINGS if p.label == label and p.lang == lang]
            assert n_min <= len(ph) <= n_max
            held = sum(p.heldout for p in ph)
            assert held / len(ph) == pytest.approx(0.25)


def test_heldout_phrasings_never_in_train_split():
    heldout = {(p.text, p.lang) for p in PHRASINGS if p.heldout}
    specs = plan("full", seed=0)
    assert {s.phrasing.split for s in specs} == {"train", "heldout"}
    assert all(((s.phrasing.text, s.phrasing.lang) in heldout) == (s.phrasing.split == "heldout")
               for s in specs)
    assert Counter(s.phrasing for s in specs) == Counter({p: 20 for p in PHRASINGS})


def test_plan_is_deterministic_under_the_seed():
    assert plan("small", 3) == plan("small", 3)
    assert plan("small", 3) != plan("small", 4)
    assert plan(5, 0) == plan("tiny", 0)[:5]
    with pytest.raises(ValueError, match="size"):
        plan("huge", 0)
    with pytest.raises(ValueError, match="seed"):
        plan("tiny", -1)


def test_tiny_build_writes_consistent_files(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    items = read_items(tiny)
    assert manifest["items"] == len(items) == corpus.SIZES["tiny"]
    assert sum(manifest["counts"]["label"].values()) == len(items)
    assert sorted(p.name for p in (tiny / "audio").iterdir()) == sorted(Path(r["audio"]).name for r in items)
    assert not list(tiny.glob(".*.tmp")) and not list((tiny / "audio").glob(".*"))
    for r in items:
        audio = load_audio(tiny, r)
        assert audio.size == r["num_samples"] and audio.dtype == np.float32
        s0, s1 = r["speech_span"]
        assert 0 < s0 < s1 < r["num_samples"]
        assert r["ipa"] == list(to_ipa(r["text"], r["lang"]))
        heldout = any(p.heldout and p.text == r["text"] for p in PHRASINGS)
        assert r["split"] == ("heldout" if heldout else "train")
        kinds = [e["kind"] for e in r["vad"]]
        assert kinds and kinds[0] == "vad_on" and kinds[-1] == "vad_off"
        for e in r["vad"]:
            assert e["frame"] == int(np.floor(e["sample"] / 24000 * 75))
        assert r["codes"] is None


def test_build_is_deterministic_and_codes_hook_is_used(tiny, tmp_path):
    calls = []

    def codes_fn(audio: np.ndarray) -> np.ndarray:
        calls.append(audio.size)
        return np.zeros((2, int(np.ceil(audio.size / 320))), dtype=np.int64)

    out = tmp_path / "again"
    build_corpus(out, size="tiny", seed=0, codes_fn=codes_fn, progress=False)
    first, second = read_items(tiny), read_items(out)
    assert len(calls) == len(second) and all(r["codes"] is not None for r in second)
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if k != "codes"} == {k: v for k, v in b.items() if k != "codes"}
        assert (tiny / a["audio"]).read_bytes() == (out / b["audio"]).read_bytes()
    assert len(second[0]["codes"]) == 2
    assert json.loads((out / "manifest.json").read_text())["has_codes"] is True


def test_bad_out_is_one_clear_error(tiny, tmp_path):
    file = tmp_path / "afile"
    file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        build_corpus(file, size="tiny", progress=False)
    with pytest.raises(ValueError, match="is a file"):
        build_corpus(file / "sub", size="tiny", progress=False)
    with pytest.raises(ValueError, match="already holds"):
        build_corpus(tiny, size="tiny", progress=False)


def test_make_speech_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    make_speech.configure(parser)
    args = parser.parse_args(["--out", str(tmp_path / "c"), "--size", "tiny", "--seed", "1"])
    assert make_speech.run(args) == 0
    out = capsys.readouterr().out
    assert "label" in out and "en/heldout" in out and "10 items" in out
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["seed"] == 1
