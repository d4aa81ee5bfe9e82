"""Text -> IPA phoneme symbols, and the fixed IPA inventory that gives each symbol its token id.

``to_ipa(text, lang)`` returns a tuple of symbols:

* English (``lang="en"``): espeak-ng (General American voice ``en-us``) through phonemizer's
  ``EspeakBackend`` with stress marks and no punctuation. A *symbol* is one espeak phone as
  espeak segments it, so affricates (``tʃ``), diphthongs (``eɪ``), long vowels (``ɑː``),
  r-coloured vowels (``ɑːɹ``) and syllabic consonants (``n̩``) are single symbols: a base letter
  keeps its combining marks, length mark and tie bar. Stress marks ``ˈ`` / ``ˌ`` are separate
  symbols placed before the stressed vowel, exactly where espeak puts them.
* Mandarin (``lang="zh"``): pypinyin (``Style.TONE3``, lexical tones, no tone sandhi, so a
  syllable always maps the same way) then ``pinyin_to_ipa`` (first variant of each syllable).
  Phones are kept as that library segments them (``tsʰ``, ``ai̯``, ``ɻ̩``). The tone contour is
  ONE separate symbol (``˥`` 1, ``˧˥`` 2, ``˧˩˧`` 3, ``˥˩`` 4) right after the vowel that carries
  it; neutral-tone syllables have no tone symbol. espeak's own ``cmn`` phonemes are wrong and
  are not used here (espeak ``cmn`` still *speaks* Mandarin in ``tokenizers_mm.speech``).

``|`` separates words (English) or syllables (Mandarin, which writes no spaces); there is none
at the start or end. Punctuation and whitespace only ever become boundaries; any other
character the language cannot phonemize (Latin letters or digits in Mandarin) is a
``ValueError``.

``INVENTORY`` is the frozen, versioned symbol table: every symbol of every corpus phrasing
(``tokenizers_mm.corpus.PHRASINGS``, both languages) plus the full espeak en-us / en-gb phone
set and every phone and tone ``pinyin_to_ipa`` can produce. Its order IS the token order in
the vocabulary's ``ipa`` range (``tokenizers_mm.vocab``): never reorder or remove, only append
and bump ``IPA_INVENTORY_VERSION``. ``IpaInventory.encode`` never drops a symbol silently:
``unknown="error"`` raises a ``ValueError`` naming the symbol and its position,
``unknown="unk"`` maps it to the ``<unk>`` special token.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tokenizers_mm.vocab import VocabLayout

WORD_BOUNDARY = "|"
STRESS_MARKS = ("ˈ", "ˌ")
TONE_LETTERS = "˥˦˧˨˩"
LANGS = ("en", "zh")
ENGLISH_VOICE = "en-us"
_PINYIN_RE = re.compile(r"^[a-zü]+[1-5]$")
_PUNCT_OR_SPACE = re.compile(r"^[\s\W_]*$")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

IPA_INVENTORY_VERSION = 1
IPA_SYMBOLS: tuple[str, ...] = (
    # structure
    "|", "ˈ", "ˌ", "ː",
    # English consonants (espeak en-us / en-gb)
    "p", "b", "t", "d", "k", "ɡ", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "x", "tʃ", "dʒ",
    "m", "n", "ŋ", "l", "ɹ", "r", "w", "ʍ", "j", "ɾ", "ʔ", "n̩", "l̩", "m̩", "əl",
    # English vowels (espeak en-us / en-gb)
    "i", "iː", "ɪ", "ᵻ", "e", "eɪ", "ɛ", "æ", "a", "aɪ", "aʊ", "ɑ", "ɑː", "ɒ", "ɔ", "ɔː", "ɔɪ",
    "o", "oʊ", "əʊ", "ʊ", "u", "uː", "ʌ", "ə", "ɐ", "ɜ", "ɜː", "ɚ",
    "ɪɹ", "ɛɹ", "ʊɹ", "ɑːɹ", "ɔːɹ", "oːɹ", "aɪɚ", "aɪə", "iə", "eə", "ʊə",
    # Mandarin consonants (pinyin_to_ipa)
    "pʰ", "tʰ", "kʰ", "ts", "tsʰ", "ʈʂ", "ʈʂʰ", "tɕ", "tɕʰ", "ʂ", "ɕ", "ɻ", "ʐ", "ɥ",
    # Mandarin vowels and syllabic consonants (pinyin_to_ipa, tone removed)
    "ai̯", "au̯", "ei̯", "ou̯", "ɤ", "y", "ɻ̩", "ʐ̩", "ɹ̩", "z̩", "aɚ̯",
    # Mandarin tones (one symbol per contour)
    "˥", "˧˥", "˧˩˧", "˥˩",
)
"""Frozen: the position of a symbol is its index in the ``ipa`` vocabulary range."""


@dataclass(frozen=True)
class IpaInventory:
    """A fixed, versioned tuple of IPA symbols with index lookup and token encoding."""

    symbols: tuple[str, ...]
    version: int
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols):
            dup = next(s for s in self.symbols if self.symbols.count(s) > 1)
            raise ValueError(f"IPA inventory repeats the symbol {dup!r}")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.symbols)})

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    def index(self, symbol: str) -> int:
        """Local index of ``symbol`` (its offset in the vocabulary's ``ipa`` range)."""
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(f"IPA symbol {symbol!r} is not in inventory v{self.version}") from None

    def check_trained_on(self, version, n_symbols, what: str) -> None:
        """A ValueError naming ``what`` when a model trained on inventory ``version`` of
        ``n_symbols`` symbols (its saved config) cannot be read with this inventory."""
        if version != self.version or n_symbols != len(self.symbols):
            raise ValueError(f"{what} was trained on IPA inventory v{version} ({n_symbols} symbols); this "
                             f"code has v{self.version} ({len(self.symbols)})")

    def symbol(self, i: int) -> str:
        """The symbol at local index ``i``."""
        if not 0 <= i < len(self.symbols):
            raise ValueError(f"IPA index {i} outside inventory v{self.version} of size {len(self)}")
        return self.symbols[i]

    def layout(self) -> VocabLayout:
        """A vocabulary layout with this inventory (the ``ipa`` range does not depend on the
        audio / action ranges, which come after it)."""
        return VocabLayout(ipa_symbols=self.symbols)

    def _check_layout(self, layout: VocabLayout | None) -> VocabLayout:
        layout = layout or self.layout()
        if layout.ipa_symbols != self.symbols:
            raise ValueError("vocabulary layout was built with a different IPA inventory")
        return layout

    def encode(self, symbols: Sequence[str], unknown: str = "error",
               layout: VocabLayout | None = None) -> np.ndarray:
        """Global token ids (int64) of ``symbols``.

        ``unknown="error"``: a symbol outside the inventory raises ``ValueError`` naming it and
        its position. ``unknown="unk"``: it becomes the ``<unk>`` special token id.
        """
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown= must be 'error' or 'unk', got {unknown!r}")
        layout = self._check_layout(layout)
        unk = layout.special("<unk>")
        start = layout.ranges["ipa"][0]
        out = np.empty(len(symbols), dtype=np.int64)
        for pos, sym in enumerate(symbols):
            i = self._index.get(sym)
            if i is None:
                if unknown == "error":
                    raise ValueError(f"IPA symbol {sym!r} at position {pos} is not in inventory "
                                     f"v{self.version} (pass unknown='unk' to map it to <unk>)")
                out[pos] = unk
            else:
                out[pos] = start + i
        return out

    def decode(self, ids: Iterable[int], layout: VocabLayout | None = None) -> tuple[str, ...]:
        """Symbols of global token ids; ``<unk>`` stays ``"<unk>"``, other ids raise."""
        layout = self._check_layout(layout)
        unk = layout.special("<unk>")
        out = []
        for token in ids:
            token = int(token)
            out.append("<unk>" if token == unk else self.symbols[int(layout.local("ipa", [token])[0])])
        return tuple(out)


INVENTORY = IpaInventory(symbols=IPA_SYMBOLS, version=IPA_INVENTORY_VERSION)


# ----------------------------------------------------------------------------- English
@lru_cache(maxsize=1)
def _english_backend():
    """phonemizer's EspeakBackend on the espeak-ng of ``espeakng-loader`` (unless
    ``PHONEMIZER_ESPEAK_LIBRARY`` points phonemizer at another one)."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    if not os.environ.get("PHONEMIZER_ESPEAK_LIBRARY"):
        try:
            import espeakng_loader
        except ImportError:
            pass  # let phonemizer find a system libespeak-ng
        else:
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    return EspeakBackend(ENGLISH_VOICE, with_stress=True, preserve_punctuation=False,
                         language_switch="remove-flags")


def _english(text: str) -> list[str]:
    from phonemizer.separator import Separator

    out = _english_backend().phonemize([text], separator=Separator(phone=" ", word="|"),
                                       strip=True, njobs=1)[0]
    symbols: list[str] = []
    for word in out.split("|"):
        phones: list[str] = []
        for phone in word.split():
            while phone and phone[0] in STRESS_MARKS:
                phones.append(phone[0])
                phone = phone[1:]
            if phone:
                phones.append(phone)
        if phones:
            if symbols:
                symbols.append(WORD_BOUNDARY)
            symbols.extend(phones)
    return symbols


# ----------------------------------------------------------------------------- Mandarin
def _split_tone(phone: str) -> list[str]:
    """``'a˥˩'`` -> ``['a', '˥˩']``; a phone without tone letters stays whole."""
    base = phone.rstrip(TONE_LETTERS)
    tone = phone[len(base):]
    return [p for p in (base, tone) if p]


def _mandarin(text: str) -> list[str]:
    from pinyin_to_ipa import pinyin_to_ipa
    from pypinyin import Style, lazy_pinyin

    symbols: list[str] = []
    for syl in lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, v_to_u=True):
        if _PUNCT_OR_SPACE.match(syl):
            continue  # punctuation / spaces: the boundary is added anyway
        if not _PINYIN_RE.match(syl):
            raise ValueError(f"cannot phonemize {syl.strip()!r} in {text!r} as Mandarin "
                             "(only Chinese characters, punctuation and spaces)")
        try:
            variant = next(iter(pinyin_to_ipa(syl)))
        except (ValueError, StopIteration) as e:
            raise ValueError(f"pinyin_to_ipa cannot transcribe syllable {syl!r} of {text!r}: {e}") from None
        if symbols:
            symbols.append(WORD_BOUNDARY)
        for phone in variant:
            symbols.extend(_split_tone(phone))
    return symbols


def to_ipa(text: str, lang: str = "en") -> tuple[str, ...]:
    """IPA symbols of ``text`` in ``lang`` (``"en"`` or ``"zh"``); see the module docstring."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; choose one of {LANGS}")
    if not text.strip():
        return ()
    if lang == "en" and _HAN.search(text):
        raise ValueError(f"{text!r} contains Chinese characters: phonemize it with lang='zh'")
    symbols = _english(text) if lang == "en" else _mandarin(text)
    return tuple(unicodedata.normalize("NFC", s) for s in symbols)


def uncovered(texts: Iterable[tuple[str, str]],
              inventory: IpaInventory = INVENTORY) -> dict[str, tuple[str, str]]:
    """Symbols of ``(text, lang)`` pairs missing from ``inventory``, each with an example."""
    missing: dict[str, tuple[str, str]] = {}
    for text, lang in texts:
        for sym in to_ipa(text, lang):
            if sym not in inventory and sym not in missing:
                missing[sym] = (text, lang)
    return missing


def bench_ipa(min_time: float = 0.3) -> dict[str, float]:
    """Throughput of ``to_ipa`` (IPA symbols/s, English and Mandarin, uncached) and of
    ``INVENTORY.encode`` (tokens/s) on the corpus phrasings. For ``vla bench tokenizers``."""
    import time

    from tokenizers_mm.corpus import PHRASINGS

    def rate(fn, n_items: int) -> float:
        fn()  # warm-up (loads espeak / the pinyin dictionaries)
        done, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < min_time or done == 0:
            fn()
            done += n_items
        return done / elapsed

    results: dict[str, float] = {}
    for lang in LANGS:
        texts = [p.text for p in PHRASINGS if p.lang == lang]
        n_symbols = sum(len(to_ipa(t, lang)) for t in texts)
        results[f"to_ipa_{lang}_symbols_per_s"] = rate(
            lambda texts=texts, lang=lang: [to_ipa(t, lang) for t in texts], n_symbols)
    symbols = [s for p in PHRASINGS for s in to_ipa(p.text, p.lang)]
    results["encode_tokens_per_s"] = rate(lambda: INVENTORY.encode(symbols), len(symbols))
    results["inventory_size"] = float(len(INVENTORY))
    return results
