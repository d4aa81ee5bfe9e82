"""Text -> IPA symbols (espeak-ng via phonemizer; pypinyin + pinyin_to_ipa) and the inventory."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tokenizers_mm.corpus import PHRASINGS
from tokenizers_mm.ipa import (
    INVENTORY,
    IPA_INVENTORY_VERSION,
    STRESS_MARKS,
    WORD_BOUNDARY,
    IpaInventory,
    to_ipa,
    uncovered,
)
from tokenizers_mm.vocab import VocabLayout

FROZEN_V1 = "f3366971dd21f6b8a02c0bd81febdd2eed6a68249f3022fe1c2d22d2701ffea6"


def test_english_stop():
    syms = to_ipa("stop")
    phones = [s for s in syms if s not in STRESS_MARKS]
    assert phones[:2] == ["s", "t"] and phones[-1] == "p"
    assert phones[2][0] in "ɑɒ"
    assert "ˈ" in syms


def test_english_words_stress_and_boundaries():
    syms = to_ipa("Turn right, at the intersection!")
    assert syms.count(WORD_BOUNDARY) == 4
    assert syms[0] != WORD_BOUNDARY and syms[-1] != WORD_BOUNDARY
    assert "ˌ" in syms and "ˈ" in syms
    assert "tʃ" in to_ipa("change") and "eɪ" in to_ipa("lane")  # espeak's phone units kept whole


def test_mandarin_tones():
    syms = to_ipa("左转", "zh")
    assert syms == ("ts", "w", "o", "˧˩˧", "|", "ʈʂ", "w", "a", "˧˩˧", "n")
    assert set(to_ipa("加速", "zh")) >= {"˥", "˥˩"}
    assert to_ipa("左转，谢谢！", "zh")[:10] == syms  # punctuation only separates


def test_bad_input_raises():
    with pytest.raises(ValueError, match="Mandarin"):
        to_ipa("左转 abc", "zh")
    with pytest.raises(ValueError, match="lang='zh'"):
        to_ipa("左转", "en")
    with pytest.raises(ValueError, match="language"):
        to_ipa("stop", "fr")
    assert to_ipa("  ") == ()


def test_inventory_covers_every_corpus_phrasing():
    assert uncovered((p.text, p.lang) for p in PHRASINGS) == {}


def test_inventory_covers_every_pinyin_syllable():
    from pinyin_to_ipa import pinyin_to_ipa
    from pypinyin.contrib.tone_convert import to_tone3
    from pypinyin.pinyin_dict import pinyin_dict

    from tokenizers_mm.ipa import _split_tone

    syllables = {to_tone3(p, neutral_tone_with_five=True, v_to_u=True)
                 for v in pinyin_dict.values() for p in v.split(",")}
    missing = {s for syl in syllables for ph in next(iter(pinyin_to_ipa(syl)))
               for s in _split_tone(ph) if s not in INVENTORY}
    assert missing == set()


def test_inventory_is_frozen():
    """Ids must never move: changing the tuple needs a new version (and a new hash here)."""
    digest = hashlib.sha256("\n".join(INVENTORY.symbols).encode()).hexdigest()
    assert (IPA_INVENTORY_VERSION, digest) == (1, FROZEN_V1)
    assert len(set(INVENTORY.symbols)) == len(INVENTORY)
    with pytest.raises(ValueError, match="repeats"):
        IpaInventory(("a", "b", "a"), 0)


def test_index_symbol_encode_decode():
    syms = to_ipa("keep your lane")
    layout = VocabLayout(ipa_symbols=INVENTORY.symbols, audio_codebooks=2, audio_codebook_size=16)
    ids = INVENTORY.encode(syms, layout=layout)
    start, end = layout.ranges["ipa"]
    assert ids.dtype == np.int64 and np.all((ids >= start) & (ids < end))
    assert np.array_equal(ids, INVENTORY.encode(syms))  # ipa range precedes audio/action ranges
    assert INVENTORY.decode(ids, layout) == syms
    assert all(INVENTORY.symbol(INVENTORY.index(s)) == s for s in syms)
    with pytest.raises(ValueError, match="not in inventory"):
        INVENTORY.index("ʘ")
    with pytest.raises(ValueError, match="outside"):
        INVENTORY.symbol(len(INVENTORY))


def test_unknown_symbols_are_never_dropped():
    syms = ("s", "ʘ", "p")
    with pytest.raises(ValueError, match=r"'ʘ' at position 1"):
        INVENTORY.encode(syms)
    ids = INVENTORY.encode(syms, unknown="unk")
    layout = INVENTORY.layout()
    assert ids.size == 3 and ids[1] == layout.special("<unk>")
    assert INVENTORY.decode(ids) == ("s", "<unk>", "p")
    with pytest.raises(ValueError, match="unknown="):
        INVENTORY.encode(syms, unknown="drop")
    with pytest.raises(ValueError, match="different IPA inventory"):
        INVENTORY.encode(("s",), layout=VocabLayout(ipa_symbols=("s",)))
