"""Byte-level text tokenizer: exact round trip for any text, ids in the text range, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizers_mm.text import ByteTextTokenizer, TextDecodeError, decode, encode
from tokenizers_mm.vocab import SPECIAL_TOKENS, VocabLayout

LAYOUT = VocabLayout()
T0, T1 = LAYOUT.ranges["text"]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8")))
def test_round_trip_any_text(s: str) -> None:
    ids = encode(s)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert len(ids) == len(s.encode("utf-8"))
    assert ids.size == 0 or (ids.min() >= T0 and ids.max() < T1)
    assert decode(ids) == s


@pytest.mark.parametrize(
    "s, n_tokens",
    [("", 0), ("change to the left lane", 23), ("换到左车道", 15), ("tʃ eɪ ˈn˥˩", 15), ("a\x00\n<>\\", 6)],
)
def test_known_lengths(s: str, n_tokens: int) -> None:
    ids = encode(s)
    assert len(ids) == n_tokens
    assert decode(ids) == s
    assert decode(ids.tolist()) == s


def test_ids_are_bytes_offset_by_the_text_range() -> None:
    assert encode("A").tolist() == [T0 + 65]
    assert T0 == len(SPECIAL_TOKENS)


def test_layout_with_more_specials_shifts_the_range() -> None:
    layout = VocabLayout(specials=SPECIAL_TOKENS + ("<extra>",))
    tok = ByteTextTokenizer(layout)
    ids = tok.encode("hi")
    assert ids.tolist() == [len(SPECIAL_TOKENS) + 1 + ord("h"), len(SPECIAL_TOKENS) + 1 + ord("i")]
    assert tok.decode(ids) == "hi"
    assert decode(ids, LAYOUT) == "ij"  # the layout decides the offset: decode with the right one


def test_id_outside_the_text_range_names_the_position() -> None:
    ids = encode("abc").tolist()
    ids[2] = 0  # <pad>
    with pytest.raises(
        TextDecodeError, match=r"position 2: token id 0 is not in the text range .*'special'"
    ) as e:
        decode(ids)
    assert e.value.position == 2
    with pytest.raises(TextDecodeError, match=r"position 1: token id 99999 .*outside the vocabulary"):
        decode([T0 + 97, 99999])


@pytest.mark.parametrize(
    "raw, position",
    [(b"ab\x80", 2), (b"\xe6\x8d", 0), (b"ok\xff!", 2), (b"\xc0\xaf", 0)],
)
def test_invalid_utf8_names_the_position(raw: bytes, position: int) -> None:
    ids = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) + T0
    with pytest.raises(TextDecodeError, match=rf"position {position}: invalid UTF-8 at byte 0x") as e:
        decode(ids)
    assert e.value.position == position


def test_lone_surrogate_and_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"character 1 .*lone surrogate"):
        encode("a\ud800")
    with pytest.raises(TypeError):
        encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        decode(np.zeros((2, 2), dtype=np.int64) + T0)
