"""``vla train-codec``: train the small audio codec on a spoken-command corpus.

::

    vla train-codec --corpus data/commands --out codecs/small --steps 1000

Reads every ``CORPUS/audio/*.wav`` (soundfile; stereo is averaged to mono, other rates are
resampled to 24 kHz with ``scipy.signal.resample_poly``), holds out ``--holdout`` clips
(from the corpus's own held-out split when ``items.jsonl`` marks one, see ``split_clips``,
else a seeded shuffle of the sorted file names), k-means-initializes the codebooks of a fresh
``AudioCodec.small(--seed)`` on the rest and trains it (``tokenizers_mm.codec_train``: no
adversarial discriminator, so expect intelligible-but-buzzy audio). Writes the checkpoint
``OUT/`` (config.json, model.safetensors, vla_codec.json) atomically, then ``OUT/report.json``:
SI-SNR and log-mel distance on the held-out clips for the codec before training (random
weights, k-means codebooks) and after. The last line printed is that report as JSON.

``--content-weight W`` (W > 0) also trains a phone head on the level-0 codes with CTC against
each clip's IPA (the ``ipa`` of its ``items.jsonl`` record; a clip without one is an error), so
that level 0 carries phones; the report then adds the held-out clips' ``phone_error_rate``
(``tokenizers_mm.codec_train``).
"""

from __future__ import annotations

import argparse
import json
import sys
from math import gcd
from pathlib import Path

import numpy as np

from vla.errors import VLAError


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``vla train-codec`` to ``parser``."""
    parser.add_argument("--corpus", required=True,
                        help="spoken-command corpus directory; its audio/*.wav are the training clips")
    parser.add_argument("--out", required=True,
                        help="codec checkpoint directory (created; an older codec there is replaced)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=0.25,
                        help="length of each random training crop in seconds (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, split and crops (default: %(default)s)")
    parser.add_argument("--holdout", type=int, default=10,
                        help="clips held out of training for report.json; 0: no report (default: %(default)s)")
    parser.add_argument("--content-weight", type=float, default=0.0,
                        help="weight of the content term: a phone head on the level-0 codes, CTC "
                             "against each clip's IPA from the corpus's items.jsonl (0: off; "
                             "see tokenizers_mm.codec_train) (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is fastest for this small model when the cores "
                             "are shared (default: %(default)s)")


def _wav_files(corpus: str) -> list[Path]:
    root = Path(corpus)
    if not root.is_dir():
        raise VLAError(f"--corpus {corpus} is not a directory")
    files = sorted((root / "audio").glob("*.wav"))
    if not files:
        raise VLAError(f"--corpus {corpus} has no audio/*.wav clips (a spoken-command corpus "
                       "holds items.jsonl and audio/*.wav)")
    return files


def _check(args: argparse.Namespace, n_files: int) -> None:
    for name, value, minimum in (("--steps", args.steps, 1), ("--batch", args.batch, 1),
                                 ("--holdout", args.holdout, 0), ("--threads", args.threads, 1),
                                 ("--seed", args.seed, 0)):
        if value < minimum:
            raise VLAError(f"{name} must be >= {minimum}, got {value}")
    if not 0.05 <= args.seconds <= 30:
        raise VLAError(f"--seconds must be in [0.05, 30], got {args.seconds}")
    if not 0 < args.lr < 1:
        raise VLAError(f"--lr must be in (0, 1), got {args.lr}")
    if not (args.content_weight >= 0 and np.isfinite(args.content_weight)):
        raise VLAError(f"--content-weight must be a finite number >= 0, got {args.content_weight}")
    if args.holdout >= n_files:
        raise VLAError(f"--holdout {args.holdout} leaves no training clip: the corpus has {n_files}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VLAError(f"--out {args.out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise VLAError(f"--out {args.out} is a non-empty directory that holds no codec: not overwriting it")


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Float32 mono samples of ``path`` at ``sample_rate`` (averaged channels, resampled)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise VLAError(f"cannot read {path}: {e}") from e
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        g = gcd(int(rate), sample_rate)
        audio = resample_poly(audio, sample_rate // g, int(rate) // g).astype(np.float32)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise VLAError(f"{path} is empty or holds NaN/inf samples")
    return audio


def corpus_records(corpus: str, needs: tuple[str, ...] = ()) -> list[dict]:
    """The records of ``CORPUS/items.jsonl`` (``vla make-speech``); a missing file, a line that is
    not a JSON object, or one without a field of ``needs`` is a VLAError naming it."""
    items = Path(corpus) / "items.jsonl"
    if not items.is_file():
        raise VLAError(f"{items} does not exist (build the corpus with `vla make-speech`)")
    records = []
    for n, line in enumerate(items.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise VLAError(f"{items} line {n} is not JSON: {e}") from None
        if not isinstance(record, dict) or not all(k in record for k in needs):
            raise VLAError(f"{items} line {n} lacks one of {', '.join(needs)}" if needs
                           else f"{items} line {n} is not a JSON object")
        records.append(record)
    return records


def transcripts_of(corpus: str, files: list[Path]) -> list[list[str]]:
    """The IPA symbols of each file from the corpus's ``items.jsonl`` (``ipa`` of the record
    whose ``audio`` names the file); a file without one is a VLAError naming it."""
    if not (Path(corpus) / "items.jsonl").is_file():
        raise VLAError(f"--content-weight needs transcripts: {Path(corpus) / 'items.jsonl'} does not exist "
                       "(build the corpus with `vla make-speech`)")
    by_name = {Path(str(r.get("audio", ""))).name: r["ipa"] for r in corpus_records(corpus)
               if isinstance(r.get("ipa"), list) and all(isinstance(s, str) for s in r["ipa"])}
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise VLAError(f"--content-weight needs an IPA transcript for every training clip; "
                       f"{Path(corpus) / 'items.jsonl'} has none for {len(missing)} of them, e.g. {missing[0]}")
    return [by_name[f.name] for f in files]


def split_clips(corpus: str, files: list[Path], holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files). With ``items.jsonl`` records that carry a ``split``
    (``tokenizers_mm.corpus``), only ``train`` items spoken in a training voice
    (``tokenizers_mm.audio_command.VOICE_SPLITS``) train, so neither the codec nor a policy
    reading its tokens ever heard the phrasings or voices they are tested on, and ``holdout``
    of the others (a seeded draw) are held out; otherwise ``holdout`` of all files are (a
    seeded shuffle)."""
    from tokenizers_mm.audio_command import VOICE_SPLITS

    test_voices = {v for voices in VOICE_SPLITS["heldout"].values() for v in voices}
    rng = np.random.default_rng(seed)
    items = Path(corpus) / "items.jsonl"
    if items.is_file():
        try:
            records = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise VLAError(f"{items} is not JSON lines: {e}") from e
        by_name = {f.name: f for f in files}
        splits = {Path(r.get("audio", "")).name: ("heldout_voice" if r.get("voice") in test_voices else r.get("split"))
                  for r in records if isinstance(r, dict)}
        train = [f for name, f in by_name.items() if splits.get(name) == "train"]
        others = [f for name, f in by_name.items() if splits.get(name) not in (None, "train")]
        if train and others:
            picked = sorted(int(i) for i in rng.permutation(len(others))[:holdout])
            return train, [others[i] for i in picked]
    order = rng.permutation(len(files))
    return [files[i] for i in sorted(order[holdout:])], [files[i] for i in sorted(order[:holdout])]


def run(args: argparse.Namespace) -> int:
    """Train, save, judge; returns the exit code."""
    files = _wav_files(args.corpus)
    _check(args, len(files))
    import torch

    from benchmarks.reports import write_json
    from tokenizers_mm.codec import AudioCodec
    from tokenizers_mm.codec_train import reconstruction_report, train_codec, transcription_report

    torch.set_num_threads(args.threads)
    codec = AudioCodec.small(seed=args.seed)
    train_files, held_files = split_clips(args.corpus, files, args.holdout, args.seed)
    train = [read_wav(f, codec.sample_rate) for f in train_files]
    held = [read_wav(f, codec.sample_rate) for f in held_files]
    content = args.content_weight > 0
    train_ipa = transcripts_of(args.corpus, train_files) if content else None
    held_ipa = transcripts_of(args.corpus, held_files) if content else None
    print(f"train-codec: {len(train)} training clips ({sum(map(len, train)) / codec.sample_rate:.1f} s), "
          f"{len(held)} held out; n_q {codec.n_q} x {codec.codebook_size} codes at "
          f"{codec.frame_rate:g} Hz, {codec.num_parameters / 1e6:.2f} M parameters", flush=True)
    codec.init_codebooks(train, seed=args.seed)
    report: dict = {"corpus": str(args.corpus), "heldout_files": [f.name for f in held_files],
                    "train_clips": len(train), "n_q": codec.n_q, "codebook_size": codec.codebook_size,
                    "frame_rate": codec.frame_rate, "parameters": codec.num_parameters}
    if held:
        report["untrained"] = reconstruction_report(codec, held)
    metrics = train_codec(codec, train, steps=args.steps, batch=args.batch, seconds=args.seconds,
                          lr=args.lr, seed=args.seed, log=lambda line: print(line, file=sys.stderr),
                          transcripts=train_ipa, content_weight=args.content_weight)
    report["training"] = metrics
    codec.save(args.out, extra={"training": metrics})
    if held:
        report["trained"] = reconstruction_report(codec, held)
        for name in ("untrained", "trained"):
            r = report[name]
            print(f"{name:>9}: SI-SNR {r['si_snr_db']:7.2f} dB   log-mel distance {r['mel_distance']:6.2f} dB")
        if content:
            report["trained"].update(transcription_report(codec, held, held_ipa))
            print(f"  trained: phone error rate {report['trained']['phone_error_rate']:.3f} on the held-out clips")
    write_json(Path(args.out) / "report.json", report)
    print(f"wrote {args.out} ({metrics['train_seconds']:.0f} s of training)")
    print(json.dumps(report, sort_keys=True, default=float))
    return 0


if __name__ == "__main__":  # python -m app.commands.train_codec ... (until the CLI wires it)
    p = argparse.ArgumentParser(prog="vla train-codec")
    configure(p)
    try:
        raise SystemExit(run(p.parse_args()))
    except VLAError as e:
        print(f"vla train-codec: error: {e}", file=sys.stderr)
        raise SystemExit(2)
