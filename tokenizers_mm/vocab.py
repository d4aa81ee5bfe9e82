"""The one vocabulary every modality shares: special tokens and contiguous id ranges.

Layout (ids are stable: a range never moves once a checkpoint has been saved with it, and new
special tokens are only ever appended to ``SPECIAL_TOKENS``)::

    [0, n_special)                 special / structure / control tokens, in SPECIAL_TOKENS order
    text:     256 ids              one per byte (UTF-8 byte-level text, see tokenizers_mm.text)
    ipa:      len(ipa_symbols)     one per IPA symbol of the inventory (tokenizers_mm.ipa)
    audio_q{k}: codebook_size ids  one range per codec codebook level k = 0..n_q-1
    action_{dim}: n_bins ids       one range per action dimension (accel, steer)

``ids(range_name, local)`` maps a local index (a byte, a symbol index, a code, a bin) to its
global id and ``local(range_name, ids)`` back, with a ``ValueError`` naming the range when an
index falls outside it. ``range_of(id)`` tells which range an id belongs to. The whole layout
round-trips through ``to_dict`` / ``from_dict`` and is saved beside every checkpoint; loading
a checkpoint with a different layout is an error, not a silent remap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.atomic import atomic_output

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<unk>", "<sep>",
    "<system>", "</system>", "<obs>", "</obs>", "<camera>", "</camera>", "<ego>", "</ego>",
    "<audio>", "</audio>", "<text>", "</text>", "<ipa>", "</ipa>", "<thought>", "</thought>",
    "<reply>", "</reply>", "<action>", "</action>", "<control_lon>", "<control_lat>",
    "<vad_on>", "<vad_off>", "<interrupt_and_listen>",
    "<pitch=low>", "<pitch=mid>", "<pitch=high>", "<rate=slow>", "<rate=normal>", "<rate=fast>",
    "<lang=en>", "<lang=zh>",
)
"""Append-only. Their ids are their positions."""

TEXT_SIZE = 256
ACTION_DIMS = ("accel", "steer")


@dataclass(frozen=True)
class VocabLayout:
    ipa_symbols: tuple[str, ...] = ()
    audio_codebooks: int = 0  # n_q
    audio_codebook_size: int = 0
    action_bins: tuple[int, ...] = (256, 256)  # per ACTION_DIMS
    specials: tuple[str, ...] = SPECIAL_TOKENS
    _ranges: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.specials)) != len(self.specials):
            raise ValueError("special tokens must be unique")
        if self.specials[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS[: len(self.specials)]:
            raise ValueError("special tokens changed order: ids would move; only append new ones")
        if len(set(self.ipa_symbols)) != len(self.ipa_symbols):
            raise ValueError("IPA symbols must be unique")
        if len(self.action_bins) != len(ACTION_DIMS) or min(self.action_bins) < 2:
            raise ValueError(f"action_bins needs {len(ACTION_DIMS)} sizes >= 2, got {self.action_bins}")
        if self.audio_codebooks < 0 or (self.audio_codebooks > 0 and self.audio_codebook_size < 2):
            raise ValueError("audio needs codebook_size >= 2 when codebooks > 0")
        sizes = [("special", len(self.specials)), ("text", TEXT_SIZE), ("ipa", len(self.ipa_symbols))]
        sizes += [(f"audio_q{k}", self.audio_codebook_size) for k in range(self.audio_codebooks)]
        sizes += [(f"action_{d}", n) for d, n in zip(ACTION_DIMS, self.action_bins)]
        start, ranges = 0, {}
        for name, n in sizes:
            ranges[name] = (start, start + n)
            start += n
        object.__setattr__(self, "_ranges", ranges)

    @property
    def size(self) -> int:
        return max(end for _, end in self._ranges.values())

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return dict(self._ranges)

    def special(self, token: str) -> int:
        try:
            return self.specials.index(token)
        except ValueError:
            raise ValueError(f"unknown special token {token!r}") from None

    def ids(self, range_name: str, local) -> np.ndarray:
        start, end = self._range(range_name)
        local = np.asarray(local, dtype=np.int64)
        if local.size and (local.min() < 0 or local.max() >= end - start):
            bad = local[(local < 0) | (local >= end - start)].flat[0]
            raise ValueError(f"index {int(bad)} outside range {range_name!r} of size {end - start}")
        return local + start

    def local(self, range_name: str, ids) -> np.ndarray:
        start, end = self._range(range_name)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < start or ids.max() >= end):
            bad = ids[(ids < start) | (ids >= end)].flat[0]
            raise ValueError(f"token id {int(bad)} is not in range {range_name!r} [{start}, {end})")
        return ids - start

    def range_of(self, token_id: int) -> str:
        for name, (start, end) in self._ranges.items():
            if start <= token_id < end:
                return name
        raise ValueError(f"token id {token_id} outside the vocabulary of size {self.size}")

    def _range(self, name: str) -> tuple[int, int]:
        if name not in self._ranges:
            raise ValueError(f"unknown vocabulary range {name!r}; have {list(self._ranges)}")
        return self._ranges[name]

    def to_dict(self) -> dict:
        return {
            "specials": list(self.specials),
            "ipa_symbols": list(self.ipa_symbols),
            "audio_codebooks": self.audio_codebooks,
            "audio_codebook_size": self.audio_codebook_size,
            "action_bins": list(self.action_bins),
            "ranges": {k: list(v) for k, v in self._ranges.items()},
        }

    @staticmethod
    def from_dict(d: dict) -> VocabLayout:
        layout = VocabLayout(
            ipa_symbols=tuple(d["ipa_symbols"]),
            audio_codebooks=int(d["audio_codebooks"]),
            audio_codebook_size=int(d["audio_codebook_size"]),
            action_bins=tuple(int(n) for n in d["action_bins"]),
            specials=tuple(d["specials"]),
        )
        saved = {k: tuple(v) for k, v in d.get("ranges", {}).items()}
        if saved and saved != layout._ranges:
            raise ValueError("saved vocabulary ranges differ from the ones they imply: file is inconsistent")
        return layout

    def save(self, path: str | Path) -> None:
        with atomic_output(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

    @staticmethod
    def load(path: str | Path) -> VocabLayout:
        return VocabLayout.from_dict(json.loads(Path(path).read_text()))
