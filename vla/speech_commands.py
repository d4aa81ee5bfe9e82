"""What the passenger says: each episode's canonical command replaced by a phrasing of the
spoken-command corpus (``tokenizers_mm.corpus.PHRASINGS``), English or Mandarin.

Training rollouts draw from the ``train`` phrasings, evaluation from the fixed ``heldout``
ones, so closed-loop goal success is measured on phrasings the policy never heard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from sim.interface import Goal
from tokenizers_mm.corpus import PHRASINGS

SPLITS = ("train", "heldout", "canonical")


def rephraser(split: str, langs: tuple[str, ...] = ("en", "zh")) -> Callable[[Goal, np.random.Generator], Goal] | None:
    """A hook for ``sim.backends.make_env(rephrase=...)``; None for the canonical commands."""
    if split not in SPLITS:
        raise ValueError(f"phrasing split must be one of {SPLITS}, got {split!r}")
    if split == "canonical":
        return None
    table: dict[str, list] = {}
    for p in PHRASINGS:
        if p.split == split and p.lang in langs:
            table.setdefault(p.label, []).append(p)

    def rephrase(goal: Goal, rng: np.random.Generator) -> Goal:
        options = table.get(goal.label)
        if not options:
            raise ValueError(f"no {split} phrasing for goal {goal.label!r} in {langs}")
        p = options[int(rng.integers(len(options)))]
        return replace(goal, command=p.text, lang=p.lang)

    return rephrase
