"""Synonyms for training commands, from WordNet, and paraphrases made with them (TRAINING only).

Why: the spoken-command corpus has 6 English training phrasings per goal, and a policy that
learns those sentences follows a new wording of the same command far less often (held-out
phrasings: 0.5-0.74 goal success against 0.92 with the canonical words). A policy with no
pretrained language model cannot know that "remain" means "stay" or "quicker" means
"faster"; a thesaurus can. Replacing words of the training phrasings by their synonyms
(the synonym-replacement operation of "easy data augmentation", Wei and Zou 2019) shows the
policy many wordings that share a meaning, drawn from a lexical database instead of from
whoever writes the phrasings.

The table (``data/thesaurus_en.json``, shipped) maps each content word and multi-word
expression of the English training phrasings (the corpus's train split and
``tokenizers_mm.command_grammar``) to the other lemmas of its most frequent WordNet sense:
the part of speech with the most sense-tagged occurrences (WordNet's ``cntlist.rev``), then
that part of speech's first synset. Closed-class words (articles, pronouns, prepositions,
auxiliaries; ``STOPWORDS``) are never replaced: their WordNet senses are nouns like
"angstrom" or "astatine". No held-out phrasing was used to build or tune it.

Rebuild it (needs WordNet 3.0's database files, e.g. Debian's ``wordnet-base`` package)::

    python -m tokenizers_mm.thesaurus --wordnet /usr/share/wordnet

WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved; the license and
disclaimer are in ``data/WORDNET_LICENSE`` and travel with the table.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np

TABLE_PATH = Path(__file__).with_name("data") / "thesaurus_en.json"
TABLE_VERSION = 1
MAX_NGRAM = 3
"""Longest multi-word expression looked up ("speed up", "a little", "step on it")."""

STOPWORDS = frozenset("""
a an the this that these those i me my we us our you your he she it its they them their
am is are was were be been being do does did can could will would shall should may might must
to of in on at by for with from into onto over under up down off out about as than then
and or but if so not no nor too very just here there please
one two three
""".split())
"""Closed-class words never replaced on their own (they may still be part of an expression
such as "slow down", which is looked up whole). Numerals are closed-class too: WordNet's first
synset of "one" is the letter "i"."""

_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_SS_TYPE_POS = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}  # cntlist sense keys; 5 = adjective satellite


def _clean(lemma: str) -> str:
    return re.sub(r"\(.*\)$", "", lemma).replace("_", " ").lower()


class WordNet:
    """The few parts of WordNet 3.0's database files this module needs: first synsets per
    part of speech and sense-tagged counts. ``root`` holds ``index.noun``, ``data.noun``, ...,
    ``cntlist.rev``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        needed = [f for p in _POS_FILES.values() for f in (f"index.{p}", f"data.{p}")] + ["cntlist.rev"]
        missing = [f for f in needed if not (self.root / f).is_file()]
        if missing:
            raise ValueError(f"{self.root}: not a WordNet 3.0 database directory (missing {', '.join(missing)})")
        self._offsets: dict[tuple[str, str], list[int]] = {}
        for pos, name in _POS_FILES.items():
            for line in (self.root / f"index.{name}").read_text(encoding="latin-1").splitlines():
                if line.startswith(" ") or not line.strip():
                    continue  # the license header
                f = line.split()
                p_cnt = int(f[3])
                offsets = f[4 + p_cnt + 2:]  # after the pointer symbols, sense_cnt and tagsense_cnt
                self._offsets[(f[0], pos)] = [int(o) for o in offsets]
        self._tagged: dict[tuple[str, str], int] = defaultdict(int)
        for line in (self.root / "cntlist.rev").read_text(encoding="latin-1").splitlines():
            key, _sense, count = line.split()
            lemma, rest = key.split("%", 1)
            self._tagged[(lemma, _SS_TYPE_POS[rest[0]])] += int(count)

    def _synset(self, pos: str, offset: int) -> list[str]:
        with open(self.root / f"data.{_POS_FILES[pos]}", encoding="latin-1") as fh:
            fh.seek(offset)
            f = fh.readline().split()
        return [_clean(f[4 + 2 * i]) for i in range(int(f[3], 16))]

    def synonyms(self, phrase: str) -> list[str]:
        """The other lemmas of ``phrase``'s most frequent sense (its most sense-tagged part of
        speech, that part's first synset); [] when WordNet has no tagged sense of it."""
        lemma = phrase.lower().replace(" ", "_")
        counts = {pos: self._tagged.get((lemma, pos), 0) for pos in _POS_FILES if (lemma, pos) in self._offsets}
        if not counts or max(counts.values()) == 0:
            return []
        pos = max(counts, key=lambda p: (counts[p], p == "v"))
        own = phrase.lower()
        return sorted({s for s in self._synset(pos, self._offsets[(lemma, pos)][0]) if s != own})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def expressions(texts: Iterable[str]) -> list[str]:
    """Every word and 2..``MAX_NGRAM``-word expression of ``texts`` that a paraphrase may
    replace (single closed-class words excluded)."""
    out: set[str] = set()
    for text in texts:
        words = _words(text)
        for n in range(1, MAX_NGRAM + 1):
            for i in range(len(words) - n + 1):
                if n == 1 and words[i] in STOPWORDS:
                    continue
                out.add(" ".join(words[i:i + n]))
    return sorted(out)


def training_texts() -> list[str]:
    """The English training commands the table covers: the corpus's train split and the
    command grammar (never a held-out phrasing)."""
    from tokenizers_mm.command_grammar import grammar_phrasings
    from tokenizers_mm.corpus import LABELS, PHRASINGS

    texts = [p.text for p in PHRASINGS if p.lang == "en" and not p.heldout]
    texts += [t for label in LABELS for t, lang in grammar_phrasings(label) if lang == "en"]
    return texts


def build_table(wordnet: WordNet, texts: Iterable[str]) -> dict[str, list[str]]:
    """expression -> synonyms, for the expressions of ``texts`` that have any."""
    table = {}
    for phrase in expressions(texts):
        syns = [s for s in wordnet.synonyms(phrase) if _words(s) and " ".join(_words(s)) == s]
        if syns:
            table[phrase] = syns
    return table


def write_table(table: dict[str, list[str]], path: str | Path = TABLE_PATH) -> Path:
    """Write the table atomically (``sim.atomic.atomic_output``: temp file, fsync, rename)."""
    from sim.atomic import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": TABLE_VERSION, "source": "WordNet 3.0 (Princeton University), see WORDNET_LICENSE",
           "table": table}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=0, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return path


@cache
def load_table(path: str | Path = TABLE_PATH) -> dict[str, tuple[str, ...]]:
    """The shipped table; ``ValueError`` naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: thesaurus table not readable ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("version") != TABLE_VERSION or not isinstance(doc.get("table"), dict):
        raise ValueError(f"{path}: not a version-{TABLE_VERSION} thesaurus table")
    table = doc["table"]
    if not all(isinstance(v, list) and v and all(isinstance(s, str) and s for s in v) for v in table.values()):
        raise ValueError(f"{path}: every entry must be a non-empty list of synonyms")
    return {k: tuple(v) for k, v in table.items()}


def paraphrase(text: str, rng: np.random.Generator, table: dict[str, tuple[str, ...]] | None = None,
               p_replace: float = 0.5) -> str:
    """``text`` with each expression found in the table (longest first, left to right)
    replaced by one of its synonyms with probability ``p_replace``; other words kept.
    Punctuation is dropped (the IPA of a command carries none)."""
    if not 0.0 <= p_replace <= 1.0:
        raise ValueError(f"p_replace must be in [0, 1], got {p_replace}")
    table = load_table() if table is None else table
    words, out, i = _words(text), [], 0
    while i < len(words):
        for n in range(min(MAX_NGRAM, len(words) - i), 0, -1):
            phrase = " ".join(words[i:i + n])
            if phrase in table:
                if rng.random() < p_replace:
                    syns = table[phrase]
                    out.append(syns[int(rng.integers(len(syns)))])
                else:
                    out.append(phrase)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def paraphrases(text: str, n: int, seed: int = 0, table: dict[str, tuple[str, ...]] | None = None,
                p_replace: float = 0.5) -> list[str]:
    """Up to ``n`` distinct paraphrases of ``text`` (never ``text`` itself), deterministic for
    ``seed``; fewer when the table offers fewer."""
    import zlib

    rng = np.random.default_rng([zlib.crc32(text.encode()), seed])
    own, seen, out = " ".join(_words(text)), set(), []
    for _ in range(8 * n):
        p = paraphrase(text, rng, table, p_replace)
        if p != own and p not in seen:
            seen.add(p)
            out.append(p)
            if len(out) == n:
                break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tokenizers_mm.thesaurus",
                                 description="Rebuild the training-command thesaurus from WordNet 3.0's database files.")
    ap.add_argument("--wordnet", required=True, help="directory with index.noun, data.noun, ..., cntlist.rev")
    ap.add_argument("--out", default=str(TABLE_PATH), help="where to write the table (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        wordnet = WordNet(args.wordnet)
    except ValueError as e:
        ap.exit(2, f"error: {e}\n")
    table = build_table(wordnet, training_texts())
    path = write_table(table, args.out)
    print(f"wrote {path}: {len(table)} expressions, {sum(map(len, table.values()))} synonyms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
