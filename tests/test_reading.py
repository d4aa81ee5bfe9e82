"""The reading corpus for the ear (tokenizers_mm.reading, `vla make-speech --reading`, `vla
train-ear --reading`): other sentences, training voices only, held-out phrasings never heard."""

from __future__ import annotations

import json

import pytest

from tokenizers_mm.audio_command import VOICE_SPLITS
from tokenizers_mm.corpus import PHRASINGS, read_items
from tokenizers_mm.ipa import INVENTORY, to_ipa
from tokenizers_mm.reading import MANDARIN_SHARE, READING_LABEL, check_texts, heldout_in, reading_plan, reading_texts


def test_default_texts_are_many_readable_and_hold_no_held_out_phrasing():
    texts = reading_texts()
    assert len(texts) > 3000 and {lang for _, lang in texts} == {"en", "zh"}
    mandarin = sum(lang == "zh" for _, lang in texts) / len(texts)
    assert abs(mandarin - MANDARIN_SHARE) < 0.02  # the command corpus's share, not the 2% prose leaves
    assert len(set(texts)) == len(texts)
    heldout = [p.text.lower() for p in PHRASINGS if p.heldout]
    for text, lang in texts:
        assert heldout_in(text) is None and not any(h in text.lower() for h in heldout if len(h.split()) > 2)
    for text, lang in texts[::200]:  # a sample; every text was checked when it was kept
        assert all(s in INVENTORY for s in to_ipa(text, lang))


def test_held_out_phrasings_are_found_as_whole_words_in_any_language():
    assert heldout_in("well, Take the lane on your LEFT now") == "take the lane on your left"
    assert heldout_in("请变到左侧车道吧") == "变到左侧车道"
    assert heldout_in("take the lane on your leftmost side") is None  # not as whole words
    assert heldout_in("turn the fan down") is None
    with pytest.raises(ValueError, match="held-out phrasing 'hold this lane'"):
        check_texts([("a sentence", "en"), ("please hold this lane", "en")])
    with pytest.raises(ValueError, match="unknown language"):
        check_texts([("a sentence", "fr")])


def test_the_plan_is_deterministic_in_training_voices_only():
    a, b, c = reading_plan(40, seed=3), reading_plan(40, seed=3), reading_plan(40, seed=4)
    assert a == b and a != c
    train_voices = {v for vs in VOICE_SPLITS["train"].values() for v in vs}
    assert {s.voice for s in a} <= train_voices
    assert all(s.phrasing.label == READING_LABEL and s.phrasing.split == "train" for s in a)
    assert len({s.phrasing.text for s in a}) == 40  # one pass visits each text at most once
    assert len({s.id for s in a}) == 40
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="positive count"):
            reading_plan(bad)


def test_the_wide_pool_reads_the_same_texts_in_many_voices_none_held_out():
    train, wide = reading_plan(300, seed=3), reading_plan(300, seed=3, voices="wide")
    assert wide == reading_plan(300, seed=3, voices="wide")
    # only the voice differs: the texts, rates, pitches, levels and noise are the same draws
    assert [(a.phrasing, a.rate, a.pitch, a.snr_db, a.noise_seed) for a in train] == \
           [(b.phrasing, b.rate, b.pitch, b.snr_db, b.noise_seed) for b in wide]
    voices = {s.voice for s in wide}
    assert len(voices) > 100 and voices <= set(VOICE_SPLITS["wide"]["en"] + VOICE_SPLITS["wide"]["zh"])
    assert all(s.voice in VOICE_SPLITS["wide"][s.phrasing.lang] for s in wide)
    with pytest.raises(ValueError, match="reading voices must be one of"):
        reading_plan(3, voices="heldout")


def test_a_users_text_file(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("the quick brown fox\n\n今天路上车很多\n", encoding="utf-8")
    assert reading_texts(str(good)) == (("the quick brown fox", "en"), ("今天路上车很多", "zh"))
    leak = tmp_path / "leak.txt"
    leak.write_text("the quick brown fox\nnow hold this lane please\n", encoding="utf-8")
    with pytest.raises(ValueError, match="held-out phrasing"):
        reading_texts(str(leak))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no line of text"):
        reading_texts(str(empty))
    with pytest.raises(ValueError, match="is not a file"):
        reading_texts(str(tmp_path / "missing.txt"))


def test_cli_builds_a_reading_corpus_and_the_ear_trains_on_it(tmp_path, capsys):
    from app import cli

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps\nover the lazy dog\nsix small birds sing\n")
    out = tmp_path / "reading"
    assert cli.main(["make-speech", "--reading", "4", "--reading-text", str(text), "--out", str(out)]) == 0
    capsys.readouterr()
    items = read_items(out)
    assert len(items) == 4 and {r["label"] for r in items} == {READING_LABEL}
    assert {r["text"] for r in items} == {"the quick brown fox jumps", "over the lazy dog", "six small birds sing"}
    assert all(r["ipa"] == list(to_ipa(r["text"], "en")) for r in items)
    assert json.loads((out / "manifest.json").read_text())["counts"]["label"] == {READING_LABEL: 4}
    for flags, message in ((["--reading", "4", "--size", "tiny"], "cannot be combined"),
                           (["--reading-text", str(text), "--size", "tiny"], "needs --reading"),
                           (["--reading", "0"], "positive count")):
        assert cli.main(["make-speech", "--out", str(tmp_path / "r2"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err

    commands = tmp_path / "commands"
    assert cli.main(["make-speech", "--size", "tiny", "--out", str(commands)]) == 0
    capsys.readouterr()
    ear = tmp_path / "ear"
    assert cli.main(["train-ear", "--corpus", str(commands), "--reading", str(out), "--out", str(ear),
                     "--steps", "2", "--hidden", "8", "--layers", "1", "--holdout", "0"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reading_clips"] == 4 and report["reading"] == [str(out)]
    trained_on = sum(1 for r in read_items(commands) if r["split"] == "train"
                     and r["voice"] in {v for vs in VOICE_SPLITS["train"].values() for v in vs})
    assert report["train_clips"] == trained_on + 4
    # a command corpus, or a reading corpus with an item in a held-out voice, is refused
    assert cli.main(["train-ear", "--corpus", str(commands), "--reading", str(commands), "--out", str(ear)]) == 2
    assert "not reading" in capsys.readouterr().err
    lines = (out / "items.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["voice"] = VOICE_SPLITS["heldout"]["en"][0]
    (out / "items.jsonl").write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    assert cli.main(["train-ear", "--corpus", str(commands), "--reading", str(out), "--out", str(ear)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is held out" in err and len(err.splitlines()) == 1
    # so is one in another accent with a held-out voice's variant (en-gb+f4 -> any +f4)
    record["voice"] = "en-029+f4"
    (out / "items.jsonl").write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    assert cli.main(["train-ear", "--corpus", str(commands), "--reading", str(out), "--out", str(ear)]) == 2
    assert "is held out" in capsys.readouterr().err
    assert cli.main(["make-speech", "--size", "tiny", "--reading-voices", "wide", "--out", str(tmp_path / "x")]) == 2
    assert "--reading-voices needs --reading N" in capsys.readouterr().err
