"""``vla train-ear``: train the ear (``tokenizers_mm.ear``) on a spoken-command corpus.

::

    vla make-speech --out runs/audio/corpus_full --size full
    vla train-ear --corpus runs/audio/corpus_full --out runs/audio/ear --steps 3000
    vla make-speech --reading 6000 --out runs/audio/reading        # sentences that are not commands
    vla train-ear --corpus runs/audio/corpus_full --reading runs/audio/reading --out runs/audio/ear_read

Trains on the corpus's training phrasings spoken in training voices only (the clips and IPA of
``items.jsonl``; the same split as ``vla train-codec``), plus every clip of the ``--reading``
corpora (``tokenizers_mm.reading``: other sentences, training voices only), so the figures below
are on speech the ear never heard. Writes ``OUT/`` (``ear.json``, ``ear.safetensors``), then ``OUT/report.json``:
the phone error rate (edit distance over reference phones, boundaries and stress marks not
counted) on up to ``--holdout`` clips of each held-out kind: training phrasings in held-out
voices, held-out phrasings in training voices, held-out phrasings in held-out voices, English
and Mandarin apart. The last line printed is that report as JSON.

A long training can be killed: every ``--checkpoint-every`` steps the whole training state goes
to ``OUT/train_state.pt``, and the same command run again resumes from it and ends with the ear
an uninterrupted run would have made (``--seed`` fixes the first weights and the batches). The
file is removed once the ear is saved; one left by other flags or clips is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vla.errors import VLAError

STATE_FILE = "train_state.pt"
"""The training state ``train_ear`` checkpoints into OUT/ while it runs; removed once the ear is saved."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="spoken-command corpus directory (vla make-speech)")
    parser.add_argument("--out", required=True, help="ear directory (created; an older ear there is replaced)")
    parser.add_argument("--reading", nargs="+", default=[], metavar="DIR",
                        help="reading corpora (vla make-speech --reading N) whose clips train the ear too: "
                             "sentences that are not commands, in no held-out voice (nor its accent or variant)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="clips per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=128, help="GRU width per direction (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=2, help="GRU layers (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=1, choices=(1, 2, 3, 4),
                        help="time subsampling by a conv front end before the GRU; 1 = none, the GRU reads "
                             "every log-mel frame (default: %(default)s)")
    parser.add_argument("--no-augment", action="store_true", help="no band / frame masking in training")
    parser.add_argument("--holdout", type=int, default=100,
                        help="held-out clips scored per kind (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=250,
                        help=f"steps between saves of the training state to OUT/{STATE_FILE}; a run killed "
                             "and started again with the same flags resumes from it (default: %(default)s)")


def _records(corpus: str, flag: str = "--corpus") -> list[dict]:
    from app.commands.train_codec import corpus_records

    if not Path(corpus).is_dir():
        raise VLAError(f"{flag} {corpus} is not a directory")
    if not (Path(corpus) / "items.jsonl").is_file():
        raise VLAError(f"{flag} {corpus} has no items.jsonl (build one with `vla make-speech`)")
    records = corpus_records(corpus, needs=("audio", "ipa", "split", "voice", "lang"))
    if not records:
        raise VLAError(f"{Path(corpus) / 'items.jsonl'} holds no item")
    return records


def _reading_records(directory: str) -> list[dict]:
    """The items of a reading corpus; one that is not (a command corpus, an item in a held-out
    voice, in its variant or its accent, or with a held-out phrasing) is a VLAError naming it."""
    from tokenizers_mm.audio_command import touches_heldout
    from tokenizers_mm.reading import READING_LABEL, heldout_in

    records = _records(directory, "--reading")
    for r in records:
        if r.get("label") != READING_LABEL:
            raise VLAError(f"--reading {directory}: item {r.get('id')} is a {r.get('label')!r} item, not reading "
                           "(build a reading corpus with `vla make-speech --reading N`)")
        if (kind_of(r) != "train" or touches_heldout(str(r["voice"]), str(r["lang"]))
                or heldout_in(str(r.get("text", ""))) is not None):
            raise VLAError(f"--reading {directory}: item {r.get('id')} is held out (voice {r['voice']!r}, "
                           f"text {r.get('text')!r}); the ear must not train on it")
    return records


def kind_of(record: dict) -> str:
    """train | heldout_voice | heldout_phrasing | heldout_both, from the phrasing's split and the
    voice split of ``tokenizers_mm.audio_command.VOICE_SPLITS``."""
    from tokenizers_mm.audio_command import VOICE_SPLITS

    new_voice = record["voice"] in {v for vs in VOICE_SPLITS["heldout"].values() for v in vs}
    new_words = record["split"] != "train"
    return {(False, False): "train", (True, False): "heldout_voice", (False, True): "heldout_phrasing",
            (True, True): "heldout_both"}[(new_voice, new_words)]


def run(args: argparse.Namespace) -> int:
    for name, value, minimum in (("--steps", args.steps, 1), ("--batch", args.batch, 1), ("--hidden", args.hidden, 1),
                                 ("--layers", args.layers, 1), ("--holdout", args.holdout, 0),
                                 ("--seed", args.seed, 0), ("--threads", args.threads, 1),
                                 ("--checkpoint-every", args.checkpoint_every, 1)):
        if value < minimum:
            raise VLAError(f"{name} must be >= {minimum}, got {value}")
    if not 0 < args.lr < 1:
        raise VLAError(f"--lr must be in (0, 1), got {args.lr}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VLAError(f"--out {args.out} is a file, not a directory")
    if (out.is_dir() and any(f.name not in (STATE_FILE, f".{STATE_FILE}.tmp") for f in out.iterdir())
            and not (out / "ear.json").is_file()):
        raise VLAError(f"--out {args.out} is a non-empty directory that holds no ear: not overwriting it")
    records = _records(args.corpus)
    import torch

    from app.commands.train_codec import read_wav
    from benchmarks.reports import write_json
    from tokenizers_mm.ear import SAMPLE_RATE, PhoneRecognizer, phone_error_report, train_ear

    torch.set_num_threads(args.threads)
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(kind_of(r), []).append(r)
    train = by_kind.get("train", [])
    if not train:
        raise VLAError(f"--corpus {args.corpus} has no training phrasing in a training voice to train on")
    # every reading corpus is checked before any audio is loaded
    reading_sets = [(directory, _reading_records(directory)) for directory in args.reading]
    root = Path(args.corpus)
    wavs = [read_wav(root / r["audio"], SAMPLE_RATE) for r in train]
    transcripts = [r["ipa"] for r in train]
    reading_clips = 0
    for directory, extra in reading_sets:
        wavs += [read_wav(Path(directory) / r["audio"], SAMPLE_RATE) for r in extra]
        transcripts += [r["ipa"] for r in extra]
        reading_clips += len(extra)
    print(f"train-ear: {len(wavs)} training clips ({sum(map(len, wavs)) / SAMPLE_RATE:.0f} s, {reading_clips} of them "
          "reading); held out: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(by_kind.items()) if k != "train"),
          flush=True)
    torch.manual_seed(args.seed)  # the ear's first weights too (torch's own start seed differs per process)
    ear = PhoneRecognizer(hidden=args.hidden, layers=args.layers, stride=args.stride)
    try:
        metrics = train_ear(ear, wavs, transcripts, steps=args.steps, batch=args.batch, lr=args.lr,
                            seed=args.seed, augment=not args.no_augment,
                            log=lambda line: print(line, file=sys.stderr), checkpoint=out / STATE_FILE,
                            checkpoint_every=args.checkpoint_every)
    except ValueError as e:
        raise VLAError(str(e)) from None
    ear.save(out, extra={"training": metrics, "corpus": str(args.corpus), "reading": list(args.reading)})
    (out / STATE_FILE).unlink(missing_ok=True)  # the ear is whole: the state it was resumable from is not needed
    report: dict = {"corpus": str(args.corpus), "reading": list(args.reading), "train_clips": len(wavs),
                    "reading_clips": reading_clips, "training": metrics, "phone_error_rate": {}}
    rng = np.random.default_rng(args.seed)
    for kind in ("heldout_voice", "heldout_phrasing", "heldout_both"):
        pool = by_kind.get(kind, [])
        if not pool or args.holdout == 0:
            continue
        picked = [pool[i] for i in sorted(rng.permutation(len(pool))[: args.holdout])]
        for lang in ("en", "zh"):
            rs = [r for r in picked if r["lang"] == lang]
            if rs:
                figures = phone_error_report(ear, [read_wav(root / r["audio"], SAMPLE_RATE) for r in rs],
                                             [r["ipa"] for r in rs])
                report["phone_error_rate"][f"{kind}_{lang}"] = figures
                print(f"{kind:>16} {lang}: phone error rate {figures['phone_error_rate']:.3f} "
                      f"({figures['clips']} clips)", flush=True)
    write_json(out / "report.json", report)
    print(f"wrote {args.out} ({metrics['train_seconds']:.0f} s of training)")
    print(json.dumps(report, sort_keys=True, default=float))
    return 0
