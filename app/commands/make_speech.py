"""``vla make-speech``: build the spoken-command corpus (see ``tokenizers_mm.corpus``).

::

    vla make-speech --out data/speech --size small --seed 0

writes OUT/items.jsonl, OUT/audio/*.wav and OUT/manifest.json, shows a progress bar on
stderr and prints a table of item counts per label, language and split. Problems the user can
fix (OUT is a file, OUT already holds a corpus, a negative seed) raise ``ValueError`` before
anything is written; ``app.cli`` prints them as one line.
"""

from __future__ import annotations

import argparse
import time

from tokenizers_mm.corpus import SIZES


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``vla make-speech`` to ``parser``."""
    parser.add_argument("--out", required=True,
                        help="corpus directory (created; refuses one that already holds a corpus "
                             "unless --overwrite)")
    parser.add_argument("--size", choices=list(SIZES), default=None,
                        help="items to render: " + ", ".join(f"{k} = {v}" for k, v in SIZES.items())
                             + " (default: small)")
    parser.add_argument("--reading", type=int, default=None, metavar="N",
                        help="build a reading corpus for the ear instead: N sentences that are not commands "
                             "(Python's bundled English prose and the command grammar's training wordings), "
                             "in training voices only (tokenizers_mm.reading)")
    parser.add_argument("--reading-text", default=None, metavar="FILE",
                        help="with --reading: read the lines of this UTF-8 file instead of the default texts")
    parser.add_argument("--reading-voices", choices=["train", "wide"], default=None,
                        help="with --reading: the voices it is read in: train (the 4 English and 2 Mandarin "
                             "training voices, the default) or wide (espeak's accents x voice variants, 713 "
                             "voices, none of a held-out voice's accent or variant)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random choice; same seed, same corpus (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild into an OUT that already holds a corpus (its files are replaced)")


def summary_table(manifest: dict) -> str:
    """Item counts per label (rows) x language/split (columns), with totals."""
    cells = manifest["counts"]["label/lang/split"]
    cols = [f"{lang}/{split}" for lang in ("en", "zh") for split in ("train", "heldout")]
    width = max(len(lab) for lab in manifest["labels"] + ["label"])
    lines = [f"{'label':<{width}}  " + "  ".join(f"{c:>10}" for c in cols) + f"  {'total':>6}"]
    totals = [0] * len(cols)
    for label in manifest["labels"]:
        row = [cells.get(f"{label}/{c}", 0) for c in cols]
        totals = [t + n for t, n in zip(totals, row, strict=True)]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{n:>10}" for n in row) + f"  {sum(row):>6}")
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{n:>10}" for n in totals) + f"  {sum(totals):>6}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the corpus described by ``args``; returns the exit code."""
    from tokenizers_mm.corpus import build_corpus

    reading = getattr(args, "reading", None)
    text_file = getattr(args, "reading_text", None)
    if reading is not None and args.size is not None:
        raise ValueError("--size and --reading cannot be combined: a reading corpus has its own item count")
    reading_voices = getattr(args, "reading_voices", None)
    if text_file is not None and reading is None:
        raise ValueError("--reading-text needs --reading N")
    if reading_voices is not None and reading is None:
        raise ValueError("--reading-voices needs --reading N")
    start = time.perf_counter()
    if reading is not None:
        from tokenizers_mm.reading import reading_plan

        specs = reading_plan(reading, args.seed, text_file, reading_voices or "train")  # validates N, seed, text
        manifest = build_corpus(args.out, size=f"reading:{reading}", seed=args.seed, specs=specs,
                                overwrite=getattr(args, "overwrite", False))
    else:
        manifest = build_corpus(args.out, size=args.size or "small", seed=args.seed,
                                overwrite=getattr(args, "overwrite", False))
    elapsed = time.perf_counter() - start
    print(summary_table(manifest))
    print(f"{manifest['items']} items, {manifest['audio_seconds']:.1f} s of audio, seed "
          f"{manifest['seed']}, written to {args.out} in {elapsed:.1f} s", flush=True)
    return 0
