"""Reading speech for the ear: many sentences that are not the commands, spoken in training voices.

Why: the ear (``tokenizers_mm.ear``) trained on the spoken-command corpus hears 54 English
training sentences, over and over. It learns those sentences rather than English phones, and on
a held-out phrasing in a held-out voice it gets about half of the phones wrong (phone error
0.51), which is what keeps a policy that hears from following new words. A recognizer carries to
new words when it has heard its phones in many words and contexts; that is what this corpus
gives it, and nothing about the commands it will be tested on.

Texts (``reading_texts``):

* English prose that ships with every CPython: the help topics of the language reference
  (``pydoc_data.topics``), cut at punctuation into chunks of 3-12 words, lower-cased, kept
  when every word is letters only (no code, numbers or symbols) and at most one was
  capitalized (no lists of names). Technical English, but about 4,500 distinct chunks over
  2,200 words, read aloud by espeak-ng exactly as it reads a passenger;
* Mandarin word sequences (``_mandarin_chunks``): 2-3 words of 2-4 characters each, drawn from
  the phrase dictionary that ships with pypinyin (about 46,000 words; the same package gives
  the IPA), as many as keep Mandarin at ``MANDARIN_SHARE`` of the texts, the share it has in
  the command corpus. No Mandarin prose ships with Python; without these the reading corpus
  was 2% Mandarin and the ear got worse at it (docs/audio_policy.md). Word lists, not
  sentences: they carry the phones and tones in many contexts, not the prosody of a sentence;
* the command grammar's training wordings (``tokenizers_mm.command_grammar``, English and
  Mandarin, chit-chat included): driving words in many contexts;
* or, instead of both, the lines of a text file the user gives (``--reading-text``).

A chunk that contains a held-out phrasing of the corpus (as whole words) is dropped, and
``check_texts`` refuses a text list that has one: held-out phrasings stay unheard. Single words
of held-out phrasings ("current", "remain") may occur in the prose, as they would in any speech a
recognizer is trained on. Chunks whose IPA has a symbol outside the inventory are dropped.

Items (``reading_plan``): each item draws a text and a rendition (voice, rate, pitch, level,
silence, noise at the corpus's SNRs) from ``(seed, index)`` with
``tokenizers_mm.audio_command.draw_rendition`` on the TRAINING voices only (``voices="train"``),
or on the ``wide`` pool (``--reading-voices wide``: espeak's 7 English accents and Mandarin, each
bare and with its deterministic voice variants, 713 voices), which leaves out the held-out voices
and everything they are made of, so the held-out voices stay unheard too. ``vla make-speech
--reading N`` renders them with the corpus's own writer (``tokenizers_mm.corpus.build_corpus``: resumable, atomic); their records have label
``reading`` and split ``train``. ``vla train-ear --reading DIR`` adds them to the ear's
training clips.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np

from tokenizers_mm.corpus import PHRASINGS, ItemSpec, Phrasing, shuffled_passes

READING_LABEL = "reading"
MIN_WORDS, MAX_WORDS = 3, 12
MANDARIN_SHARE = 1 / 3
"""Share of the default reading texts that are Mandarin (the command corpus's training items: 350 of 1054)."""
_WORD = re.compile(r"[A-Za-z']+")
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"\n]+")


def _prose_chunks(text: str) -> list[str]:
    out = []
    for piece in _BREAK.split(text):
        words = piece.split()
        if (MIN_WORDS <= len(words) <= MAX_WORDS and all(_WORD.fullmatch(w) for w in words)
                and sum(w[0].isupper() for w in words) <= 1 and not any(w.strip("'") == "" for w in words)):
            out.append(" ".join(w.lower() for w in words))
    return out


def _mandarin_chunks(count: int) -> list[str]:
    """``count`` distinct texts, each 2-3 distinct words of 2-4 Chinese characters from pypinyin's
    phrase dictionary, drawn with a fixed seed (the same texts for one pypinyin version)."""
    from pypinyin.phrases_dict import phrases_dict

    words = sorted(w for w in phrases_dict if re.fullmatch(r"[\u4e00-\u9fff]{2,4}", w))
    rng = np.random.default_rng(0x2A1)
    out: set[str] = set()
    while len(out) < count:
        out.add("".join(words[i] for i in rng.choice(len(words), int(rng.integers(2, 4)), replace=False)))
    return sorted(out)


def _norm(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z']+|[^\x00-\x7f]", text.lower())) + " "


@cache
def _heldout_normed() -> tuple[tuple[str, str], ...]:
    return tuple((_norm(p.text), p.text) for p in PHRASINGS if p.heldout)


def heldout_in(text: str) -> str | None:
    """The held-out phrasing of the corpus that ``text`` contains as whole words, else None."""
    padded = _norm(text)
    for normed, original in _heldout_normed():
        if normed in padded:
            return original
    return None


def check_texts(texts: list[tuple[str, str]]) -> None:
    """ValueError naming the first text that is empty, in an unknown language or holds a held-out phrasing."""
    for text, lang in texts:
        if lang not in ("en", "zh"):
            raise ValueError(f"reading text {text!r}: unknown language {lang!r} (en or zh)")
        if not text.strip():
            raise ValueError("a reading text is empty")
        leaked = heldout_in(text)
        if leaked is not None:
            raise ValueError(f"reading text {text!r} contains the held-out phrasing {leaked!r}")


@cache
def reading_texts(source: str | None = None) -> tuple[tuple[str, str], ...]:
    """(text, lang) pairs to read, sorted and deduplicated: the default sources (module
    docstring) or the non-empty lines of the UTF-8 file ``source`` (a line with a Chinese
    character is Mandarin; a line with a held-out phrasing is a ValueError). Default chunks with a
    held-out phrasing, and any text with an IPA symbol outside the inventory, are dropped."""
    from tokenizers_mm.ipa import INVENTORY, to_ipa

    if source is None:
        import pydoc_data.topics

        from tokenizers_mm.command_grammar import grammar_phrasings
        from tokenizers_mm.corpus import LABELS

        raw = [(c, "en") for c in _prose_chunks("\n".join(pydoc_data.topics.topics.values()))]
        raw += [item for label in LABELS for item in grammar_phrasings(label)]
        unique = set(raw)
        english = sum(lang == "en" for _, lang in unique)
        missing = round(english * MANDARIN_SHARE / (1 - MANDARIN_SHARE)) - (len(unique) - english)
        raw += [(c, "zh") for c in _mandarin_chunks(max(missing, 0))]
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"--reading-text {source} is not a file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--reading-text {source}: cannot read it as UTF-8 text ({e})") from None
        raw = [(line.strip(), "zh" if re.search(r"[\u4e00-\u9fff]", line) else "en")
               for line in lines if line.strip()]
        if not raw:
            raise ValueError(f"--reading-text {source} holds no line of text")
        check_texts(raw)  # a user's file with a held-out phrasing is refused, not filtered
    kept = []
    for text, lang in sorted(set(raw)):
        if heldout_in(text) is not None:
            continue
        try:
            symbols = to_ipa(text, lang)
        except ValueError:
            continue
        if symbols and all(s in INVENTORY for s in symbols):
            kept.append((text, lang))
    if not kept:
        raise ValueError(f"no readable text in {source or 'the default sources'}")
    return tuple(kept)


def reading_plan(items: int, seed: int = 0, source: str | None = None, voices: str = "train") -> list[ItemSpec]:
    """``items`` renditions: each a text drawn from ``reading_texts(source)`` (every text once
    per pass, shuffled) in a voice of ``voices`` (``train``, or ``wide``: the training voices and
    espeak's accents x variants, nothing of a held-out voice), from ``(seed, index)``. The texts,
    rates, pitches, levels and noise are the same for both pools."""
    from tokenizers_mm.audio_command import TRAINING_POOLS, draw_rendition

    if voices not in TRAINING_POOLS:
        raise ValueError(f"reading voices must be one of {list(TRAINING_POOLS)}, got {voices!r}")
    if isinstance(items, bool) or not isinstance(items, int) or items < 1:
        raise ValueError(f"reading items must be a positive count, got {items!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    texts = reading_texts(source)
    specs = []
    for i, t in enumerate(shuffled_passes(items, len(texts), np.random.default_rng([seed, 0x5EAD]))):
        text, lang = texts[t]
        spec = draw_rendition(Phrasing(text, lang, READING_LABEL, False), np.random.default_rng([seed, 1, i]),
                              voices=voices, item_id=f"r{i:06d}")
        specs.append(spec)
    return specs
