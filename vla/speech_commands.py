"""What the passenger says: each episode's canonical command replaced by a phrasing of the
spoken-command corpus (``tokenizers_mm.corpus.PHRASINGS``), English or Mandarin.

Training rollouts draw from the ``train`` phrasings, evaluation from the fixed ``heldout``
ones, so closed-loop goal success is measured on phrasings the policy never heard. A user's
own phrasings come from a TSV file (``--phrasings FILE.tsv``: goal, language, phrasing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from sim.interface import Goal
from tokenizers_mm.corpus import LABELS, PHRASINGS, Phrasing

SPLITS = ("train", "heldout", "canonical")


TSV_COLUMNS = ("goal", "language", "phrasing")
"""Columns of a user's phrasings file (``vla eval --phrasings FILE.tsv``), tab-separated, with
this header line; ``goal`` is a goal label (``tokenizers_mm.corpus.LABELS``), ``language`` is
``en`` or ``zh``."""


def read_phrasings_tsv(path: str | Path) -> list[Phrasing]:
    """A user's phrasings file -> phrasings (all in the held-out split: never trained on).
    Raises ``ValueError`` naming the file and line of the first problem."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable as UTF-8 text ({type(e).__name__}: {e})") from None
    if not lines or tuple(c.strip().lower() for c in lines[0].split("\t")) != TSV_COLUMNS:
        raise ValueError(f"{path}: line 1 must be the header {chr(9).join(TSV_COLUMNS)!r} (tab-separated)")
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != 3:
            raise ValueError(f"{path}:{n}: expected 3 tab-separated columns (goal, language, phrasing), got {len(cells)}")
        goal, lang, text = cells
        if goal not in LABELS:
            raise ValueError(f"{path}:{n}: unknown goal {goal!r}; expected one of {list(LABELS)}")
        if lang not in ("en", "zh"):
            raise ValueError(f"{path}:{n}: unknown language {lang!r}; expected en or zh")
        if not text:
            raise ValueError(f"{path}:{n}: empty phrasing")
        out.append(Phrasing(text, lang, goal, True))
    if not out:
        raise ValueError(f"{path}: no phrasings after the header")
    return out


def check_phrasings(phrasings: str) -> None:
    """Raise ``ValueError`` unless ``phrasings`` is a split name or a readable phrasings file."""
    if phrasings not in SPLITS:
        if not phrasings.endswith(".tsv"):
            raise ValueError(f"--phrasings must be one of {SPLITS} or a .tsv file, got {phrasings!r}")
        read_phrasings_tsv(phrasings)


def rephraser(split: str, langs: tuple[str, ...] = ("en", "zh")) -> Callable[[Goal, np.random.Generator], Goal] | None:
    """A hook for ``sim.backends.make_env(rephrase=...)``; None for the canonical commands.
    ``split``: ``train`` / ``heldout`` / ``canonical``, or the path of a phrasings file
    (``read_phrasings_tsv``): each episode hears one of that file's phrasings of its goal."""
    if split.endswith(".tsv"):  # the file's phrasings; a goal it does not cover keeps the corpus's held-out ones
        own = read_phrasings_tsv(split)
        covered = {p.label for p in own}
        phrasings, split = own + [p for p in PHRASINGS if p.label not in covered], "heldout"
    elif split not in SPLITS:
        raise ValueError(f"phrasing split must be one of {SPLITS} or a .tsv file, got {split!r}")
    else:
        phrasings = list(PHRASINGS)
    if split == "canonical":
        return None
    table: dict[str, list] = {}
    for p in phrasings:
        if p.split == split and p.lang in langs:
            table.setdefault(p.label, []).append(p)

    def rephrase(goal: Goal, rng: np.random.Generator) -> Goal:
        options = table.get(goal.label)
        if not options:
            raise ValueError(f"no {split} phrasing for goal {goal.label!r} in {langs}")
        p = options[int(rng.integers(len(options)))]
        return replace(goal, command=p.text, lang=p.lang)

    return rephrase
