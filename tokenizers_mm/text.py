"""Byte-level text tokenizer: UTF-8 bytes -> the vocabulary's ``text`` range.

Choice
------
Text is tokenized as its UTF-8 bytes, one token per byte, each byte ``b`` mapped to the global
id ``layout.ids("text", b)`` (the 256-id ``text`` range of ``tokenizers_mm.vocab``).

Why bytes rather than a trained BPE / SentencePiece model:

* nothing to train, ship or version: the mapping is fixed by UTF-8 itself, so a checkpoint never
  depends on a tokenizer file that could drift;
* no out-of-vocabulary input is possible: every string (English, Mandarin, IPA, emoji, control
  characters) encodes, and ``<unk>`` is never needed;
* decoding is exact: ``decode(encode(s)) == s`` for every string without lone surrogates.

The price is length: ASCII costs one token per character and Mandarin three per character
(a BPE would be ~3-4x shorter on English). Passenger commands, thoughts and replies are short,
so this is acceptable for now. A BPE can be added later behind the same ``TextTokenizer``
interface (``encode(str) -> ids``, ``decode(ids) -> str``) with its own vocabulary range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tokenizers_mm.vocab import VocabLayout

__all__ = ["ByteTextTokenizer", "TextDecodeError", "TextTokenizer", "decode", "encode"]

_DEFAULT_LAYOUT = VocabLayout()


class TextDecodeError(ValueError):
    """Token ids that do not decode to text; ``position`` is the index of the offending id."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"position {position}: {message}")
        self.position = position


class TextTokenizer(Protocol):
    """What every text tokenizer offers (byte-level today, maybe BPE later)."""

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: np.ndarray) -> str: ...


@dataclass(frozen=True)
class ByteTextTokenizer:
    """UTF-8 byte tokenizer bound to one vocabulary layout (only its ``text`` range is used)."""

    layout: VocabLayout = field(default_factory=lambda: _DEFAULT_LAYOUT)

    def encode(self, text: str) -> np.ndarray:
        return encode(text, self.layout)

    def decode(self, ids: np.ndarray) -> str:
        return decode(ids, self.layout)


def encode(text: str, layout: VocabLayout | None = None) -> np.ndarray:
    """``text`` -> (len(utf8 bytes),) int64 global token ids in the ``text`` range."""
    if not isinstance(text, str):
        raise TypeError(f"encode needs a str, got {type(text).__name__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"character {e.start} ({text[e.start]!r}) cannot be encoded as UTF-8 (lone surrogate)"
        ) from None
    start = (layout or _DEFAULT_LAYOUT).ranges["text"][0]
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64) + start


def decode(ids: np.ndarray | list[int], layout: VocabLayout | None = None) -> str:
    """Global token ids -> text; ``TextDecodeError`` names the first bad position."""
    layout = layout or _DEFAULT_LAYOUT
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"decode needs a 1-D sequence of ids, got shape {arr.shape}")
    start, end = layout.ranges["text"]
    bad = np.flatnonzero((arr < start) | (arr >= end))
    if bad.size:
        pos = int(bad[0])
        tok = int(arr[pos])
        try:
            where = f"it is in range {layout.range_of(tok)!r}"
        except ValueError:
            where = "it is outside the vocabulary"
        raise TextDecodeError(pos, f"token id {tok} is not in the text range [{start}, {end}) ({where})")
    data = (arr - start).astype(np.uint8).tobytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextDecodeError(e.start, f"invalid UTF-8 at byte 0x{data[e.start]:02x} ({e.reason})") from None
