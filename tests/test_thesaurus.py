"""The training-command thesaurus (tokenizers_mm.thesaurus) and paraphrase augmentation
(vla.data.DemoDataset(paraphrase=...))."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenizers_mm import thesaurus as th

LICENSE_LINE = "  1 This software and database is being provided to you\n"


def _fake_wordnet(root: Path) -> Path:
    """A WordNet-format directory with a handful of senses: "stay" is mostly a verb (first verb
    synset: stay, remain, rest), rarely a noun (a corset part); "slow down" a verb; "lane" has
    no tagged sense; data-file offsets are real byte offsets, as WordNet's are."""
    synsets = {  # pos -> list of (lemmas)
        "noun": [["stay"], ["lane", "road"]],
        "verb": [["stay", "remain", "rest"], ["slow_down", "decelerate", "slow(a)"]],
        "adj": [["quick", "fast"]],
        "adv": [["quicker", "faster"]],
    }
    root.mkdir(parents=True, exist_ok=True)
    offsets: dict[tuple[str, str], list[int]] = {}
    for name, sets in synsets.items():
        text = LICENSE_LINE
        for n, lemmas in enumerate(sets):
            offset = len(text.encode("latin-1"))
            words = " ".join(f"{w} 0" for w in lemmas)
            text += f"{offset:08d} 00 {name[0]} {len(lemmas):02x} {words} 000 | gloss {n}\n"
            for w in lemmas:
                offsets.setdefault((w.split("(")[0], name), []).append(offset)
        (root / f"data.{name}").write_text(text, encoding="latin-1")
        index = LICENSE_LINE + "".join(
            f"{w} {name[0]} {len(o)} 0 {len(o)} {len(o)} " + " ".join(f"{x:08d}" for x in o) + "\n"
            for (w, pos), o in sorted(offsets.items()) if pos == name)
        (root / f"index.{name}").write_text(index, encoding="latin-1")
    (root / "cntlist.rev").write_text(
        "stay%2:42:00:: 1 40\nstay%1:06:00:: 1 2\nslow_down%2:30:00:: 1 5\nquicker%4:02:00:: 1 3\n"
        "quick%3:00:00:: 1 9\n", encoding="latin-1")
    return root


def test_wordnet_reader_takes_the_most_tagged_part_of_speech_and_its_first_sense(tmp_path):
    wn = th.WordNet(_fake_wordnet(tmp_path / "wn"))
    assert wn.synonyms("stay") == ["remain", "rest"]  # the verb (40 tagged) over the noun (2)
    assert wn.synonyms("slow down") == ["decelerate", "slow"]  # a multi-word expression; "(a)" marker dropped
    assert wn.synonyms("quicker") == ["faster"]
    assert wn.synonyms("lane") == []  # no sense-tagged occurrence: too rare to trust
    assert wn.synonyms("zebra") == []
    table = th.build_table(wn, ["please stay in this lane", "slow down a bit"])
    assert table == {"slow down": ["decelerate", "slow"], "stay": ["remain", "rest"]}


def test_a_missing_wordnet_directory_is_named(tmp_path):
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "index.noun").write_text("")
    with pytest.raises(ValueError, match="not a WordNet 3.0 database directory.*data.noun.*cntlist.rev"):
        th.WordNet(tmp_path / "wn")
    with pytest.raises(SystemExit) as e:
        th.main(["--wordnet", str(tmp_path / "nowhere")])
    assert e.value.code == 2


def test_rebuilding_writes_an_atomic_table_that_loads(tmp_path, monkeypatch):
    _fake_wordnet(tmp_path / "wn")
    monkeypatch.setattr(th, "training_texts", lambda: ["stay in the lane", "go faster"])
    out = tmp_path / "t" / "table.json"
    assert th.main(["--wordnet", str(tmp_path / "wn"), "--out", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["table.json"]  # no temp file left
    assert th.load_table(out) == {"stay": ("remain", "rest")}  # "faster" is only in an adverb synset of "quicker"


def test_the_shipped_table_covers_only_training_words_and_no_closed_class_word():
    from tokenizers_mm.corpus import PHRASINGS

    table = th.load_table()
    assert len(table) >= 50
    training = set(th.expressions(th.training_texts()))
    assert set(table) <= training
    assert not set(table) & th.STOPWORDS
    held_out_only = set(th.expressions(p.text for p in PHRASINGS if p.heldout and p.lang == "en")) - training
    assert not set(table) & held_out_only
    assert table["stay"] == ("remain", "rest")  # WordNet's first verb sense
    assert (Path(th.__file__).parent / "data" / "WORDNET_LICENSE").read_text().count("Princeton University") >= 2


@pytest.mark.parametrize("doc", ["{oops", json.dumps({"version": 99, "table": {}}),
                                 json.dumps({"version": th.TABLE_VERSION, "table": {"stay": []}})])
def test_a_damaged_table_is_a_one_line_error(tmp_path, doc):
    path = tmp_path / "bad.json"
    path.write_text(doc)
    with pytest.raises(ValueError, match="bad.json"):
        th.load_table(path)


def test_paraphrases_replace_whole_expressions_and_are_deterministic():
    table = {"slow down": ("decelerate",), "slow": ("tardy",), "stay": ("remain", "rest")}
    rng = np.random.default_rng(0)
    assert th.paraphrase("Slow down, please!", rng, table, p_replace=1.0) == "decelerate please"  # longest first
    assert th.paraphrase("Slow down, please!", rng, table, p_replace=0.0) == "slow down please"
    outs = th.paraphrases("stay slow", 10, seed=3, table=table, p_replace=0.5)
    assert set(outs) == {"remain slow", "rest slow", "stay tardy", "remain tardy", "rest tardy"}  # never the original
    assert outs == th.paraphrases("stay slow", 10, seed=3, table=table, p_replace=0.5)
    assert th.paraphrases("go left", 5, table=table) == []
    with pytest.raises(ValueError, match="p_replace"):
        th.paraphrase("stay", rng, table, p_replace=2.0)


def test_the_dataset_hears_paraphrases_of_english_training_phrasings_only(light_episode):
    from sim.storage import read_episodes
    from tokenizers_mm.corpus import PHRASINGS
    from tokenizers_mm.text import decode
    from vla.config import SIZES, PolicyConfig
    from vla.data import PARAPHRASES, DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame", command="text")
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    plain = DemoDataset(policy, augment_commands=1.0)
    para = DemoDataset(policy, augment_commands=1.0, paraphrase=1.0)
    for ep in read_episodes(light_episode, load_frames=False):
        plain.add_episode(ep)
        para.add_episode(ep)
    ours = {p.text for p in PHRASINGS}

    def heard(data, n=256):
        np.random.seed(0)
        batch = data.batch(np.arange(n) % len(data))
        return [decode(ids[mask].numpy(), policy.layout) for ids, mask in zip(batch.command, batch.command_mask)]

    assert set(heard(plain)) <= ours  # without paraphrases: corpus phrasings only
    texts = heard(para)
    new = [t for t in texts if t not in ours]
    english = [t for t in texts if t.isascii()]
    assert new and len(new) > 0.6 * len(english)  # English commands are paraphrased (a few have no synonym)
    assert all(t.isascii() for t in new)  # Mandarin phrasings are left as they are
    assert all(len(v) <= PARAPHRASES for vs in para._variants.values() for v in vs)
    with pytest.raises(ValueError, match="paraphrase must be in"):
        DemoDataset(policy, paraphrase=-0.1)
