"""The spoken-command corpus: passenger phrasings of every driving goal, spoken by espeak-ng.

Phrasings (``PHRASINGS``) cover every goal label of ``sim.scenarios`` (highway: lane_left,
lane_right, speed_up, slow_down, keep_lane; intersection: turn_left, turn_straight, turn_right)
plus ``none`` (chit-chat that is not a command), in English (8 per label) and Mandarin (4 per
label). The split is FIXED in the table below, not drawn at build time: per label and language
the last quarter (2 of 8 English, 1 of 4 Mandarin) is held out and never appears in the
``train`` split of any build, so a policy can be tested on phrasings it never heard.

``build_corpus(out, size, seed)`` renders items: phrasing order, voice, rate, pitch, loudness,
leading/trailing silence and background noise (white / pink / brown at 20, 10 or 5 dB SNR, or
clean) all derive from ``(seed, item index)``, so a build is bit-for-bit reproducible. Each
item gets its IPA symbols (``tokenizers_mm.ipa``), its VAD events aligned to 75 Hz codec frames
(``tokenizers_mm.vad``, computed on exactly the samples stored in the wav) and, when a
``codes_fn`` is given, its codec codes. Layout of ``out``::

    items.jsonl      one JSON object per item (no audio), see ``render_item``
    audio/{id}.wav   24 kHz mono 16-bit PCM
    manifest.json    version, seed, size, counts per label / lang / split, held-out phrasings

Every file is written to a temporary name, fsync'ed and renamed, items.jsonl and manifest.json
last, so an interrupted build never leaves a manifest describing missing files. A killed build
resumes when run again with the same arguments: the items it finished (``.items.jsonl.tmp``,
each line written after its wav) are kept and the rest rendered, so the result equals an
uninterrupted build.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from sim.atomic import atomic_output, fsync_path
from sim.scenarios import HIGHWAY_GOAL_LABELS, TURN_COMMANDS
from tokenizers_mm import speech
from tokenizers_mm.ipa import IPA_INVENTORY_VERSION, to_ipa
from tokenizers_mm.vad import detect

CORPUS_VERSION = 1
LABELS: tuple[str, ...] = HIGHWAY_GOAL_LABELS + tuple(f"turn_{t}" for t in TURN_COMMANDS) + ("none",)
SAMPLE_RATE = 24000
CODEC_FRAME_RATE = 75.0  # EnCodec at 24 kHz
SIZES = {"tiny": 10, "small": 216, "full": 2160}
"""Items per build; small and full visit every phrasing 2 and 20 times."""
VOICES = {
    "en": ("en-us", "en-us+f1", "en-gb", "en-gb+f4", "en-gb-scotland", "en-us-nyc+m3"),
    "zh": ("cmn", "cmn+f4", "cmn+m3"),
}
"""espeak voices (+ variants). No variant with ``breath`` (f2, f3, f5, ...): espeak's breath
noise is not reproducible from call to call, and a build must be."""
RATES = (130, 155, 175, 200, 230)  # words per minute
PITCHES = (30, 40, 50, 60, 75)  # espeak pitch 0..100
SNRS_DB: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0)  # None = no noise added
PEAK_RANGE = (0.3, 0.9)  # speech peak level before noise
LEAD_S, TRAIL_S = (0.2, 0.8), (0.3, 0.9)  # silence before / after the speech

# (train phrasings, held-out phrasings) per label and language. Append only: changing a
# phrasing or moving it between the two tuples changes every corpus built after.
_TABLE: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "lane_left": {
        "en": (("change to the left lane", "move over to the left lane", "switch one lane to the left",
                "get into the left lane please", "shift left by one lane", "can you move left a lane"),
               ("go one lane over to the left", "take the lane on your left")),
        "zh": (("向左变道", "换到左边车道", "往左并线"), ("变到左侧车道",)),
    },
    "lane_right": {
        "en": (("change to the right lane", "move over to the right lane", "switch one lane to the right",
                "get into the right lane please", "shift right by one lane", "can you move right a lane"),
               ("go one lane over to the right", "take the lane on your right")),
        "zh": (("向右变道", "换到右边车道", "往右并线"), ("变到右侧车道",)),
    },
    "speed_up": {
        "en": (("speed up", "go faster", "drive a little faster please", "pick up the pace",
                "accelerate a bit", "we are going too slow"),
               ("step on it", "can we go a bit quicker")),
        "zh": (("加速", "开快一点", "再快一些"), ("提一下速度",)),
    },
    "slow_down": {
        "en": (("slow down", "go slower", "drive a little slower please", "ease off the gas",
                "reduce your speed", "we are going too fast"),
               ("take it easy and slow it down", "can we go a bit more gently")),
        "zh": (("减速", "开慢一点", "再慢一些"), ("把速度降下来",)),
    },
    "keep_lane": {
        "en": (("keep your lane", "stay in this lane", "stay in your lane please", "do not change lanes",
                "keep going in this lane", "just keep cruising here"),
               ("hold this lane", "remain in the current lane")),
        "zh": (("保持车道", "别换道", "就在这条道上开"), ("保持当前车道",)),
    },
    "turn_left": {
        "en": (("turn left at the intersection", "take a left here", "turn left at the junction",
                "go left at the crossing", "make a left turn", "hang a left up ahead"),
               ("left at the next intersection", "please turn to the left")),
        "zh": (("在路口左转", "左转", "前面路口向左转"), ("下个路口往左拐",)),
    },
    "turn_straight": {
        "en": (("go straight through the intersection", "keep going straight", "drive straight ahead",
                "continue straight across the junction", "go straight on", "do not turn, just go straight"),
               ("straight through the crossing please", "carry on straight ahead")),
        "zh": (("直行通过路口", "直走", "前面路口一直往前开"), ("下个路口直行",)),
    },
    "turn_right": {
        "en": (("turn right at the intersection", "take a right here", "turn right at the junction",
                "go right at the crossing", "make a right turn", "hang a right up ahead"),
               ("right at the next intersection", "please turn to the right")),
        "zh": (("在路口右转", "右转", "前面路口向右转"), ("下个路口往右拐",)),
    },
    "none": {
        "en": (("what a nice day", "play some music", "how long until we arrive",
                "it is a bit cold in here", "did you see that bird", "tell me a joke"),
               ("what time is it", "I really like this song")),
        "zh": (("今天天气真好", "放点音乐", "我们还有多久到"), ("给我讲个笑话",)),
    },
}


@dataclass(frozen=True)
class Phrasing:
    text: str
    lang: str  # "en" | "zh"
    label: str  # one of LABELS
    heldout: bool  # True: only ever in the "heldout" split

    @property
    def split(self) -> str:
        return "heldout" if self.heldout else "train"


def _phrasings() -> tuple[Phrasing, ...]:
    if tuple(_TABLE) != LABELS:
        raise RuntimeError(f"phrasing table labels {tuple(_TABLE)} differ from {LABELS}")
    out = []
    for label, langs in _TABLE.items():
        for lang, (train, heldout) in langs.items():
            out += [Phrasing(t, lang, label, False) for t in train]
            out += [Phrasing(t, lang, label, True) for t in heldout]
    if len({(p.text, p.lang) for p in out}) != len(out):
        raise RuntimeError("a phrasing appears twice in the table")
    return tuple(out)


PHRASINGS: tuple[Phrasing, ...] = _phrasings()


@dataclass(frozen=True)
class ItemSpec:
    """Everything random about one item, drawn from ``(seed, index)``."""

    id: str
    phrasing: Phrasing
    voice: str
    rate: int
    pitch: int
    peak: float
    lead_s: float
    trail_s: float
    snr_db: float | None
    noise: str | None  # noise colour, None when clean
    noise_seed: int


def shuffled_passes(n: int, pool: int, rng: np.random.Generator) -> list[int]:
    """``n`` indices into a pool of ``pool`` items: pass after pass over the whole pool, each pass
    in a fresh random order from ``rng``, so every item comes once per pass."""
    order: list[int] = []
    while len(order) < n:
        order += [int(i) for i in rng.permutation(pool)]
    return order[:n]


def plan(size: str | int, seed: int = 0) -> list[ItemSpec]:
    """The items of a build, in order: each pass visits every phrasing once, shuffled."""
    n = SIZES[size] if isinstance(size, str) and size in SIZES else size
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"size must be one of {list(SIZES)} or a positive item count, got {size!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    specs = []
    for i, p_index in enumerate(shuffled_passes(n, len(PHRASINGS), np.random.default_rng([seed, 0xC0FFEE]))):
        rng = np.random.default_rng([seed, i])
        ph = PHRASINGS[p_index]
        snr = SNRS_DB[int(rng.integers(len(SNRS_DB)))]
        color = speech.NOISE_COLORS[int(rng.integers(len(speech.NOISE_COLORS)))]
        specs.append(ItemSpec(
            id=f"{i:06d}", phrasing=ph, voice=VOICES[ph.lang][int(rng.integers(len(VOICES[ph.lang])))],
            rate=RATES[int(rng.integers(len(RATES)))], pitch=PITCHES[int(rng.integers(len(PITCHES)))],
            peak=round(float(rng.uniform(*PEAK_RANGE)), 4), lead_s=round(float(rng.uniform(*LEAD_S)), 3),
            trail_s=round(float(rng.uniform(*TRAIL_S)), 3), snr_db=snr,
            noise=None if snr is None else color, noise_seed=int(rng.integers(2**31))))
    return specs


@cache
def _ipa(text: str, lang: str) -> tuple[str, ...]:
    return to_ipa(text, lang)


def render_audio(spec: ItemSpec) -> tuple[np.ndarray, int]:
    """(int16 samples, samples of speech inside the padding) of one spec: espeak speech trimmed
    of its near-silence, scaled to the spec's peak, padded with silence, mixed with the spec's
    noise, peak-normalized. What ``render_item`` stores, without its VAD and codes."""
    ph = spec.phrasing
    clean = speech.trim_silence(speech.synthesize(ph.text, voice=spec.voice, rate=spec.rate,
                                                  pitch=spec.pitch, sample_rate=SAMPLE_RATE))
    clean = clean * np.float32(spec.peak / max(float(np.max(np.abs(clean))), 1e-9))
    audio = speech.pad_silence(clean, spec.lead_s, spec.trail_s, SAMPLE_RATE)
    if spec.snr_db is not None:
        audio, _ = speech.mix_at_snr(audio, spec.snr_db, spec.noise,
                                     np.random.default_rng(spec.noise_seed),
                                     reference_power=speech.power(clean))
    audio, _ = speech.peak_normalize(audio, 0.99)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16), int(clean.size)


def render_item(spec: ItemSpec, codes_fn: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> tuple[dict, np.ndarray]:
    """(item record, int16 samples) of one spec.

    The record holds the phrasing (text, lang, label, split), the rendering (voice, rate,
    pitch, snr_db, noise, lead_s, trail_s), ``speech_span`` (first and one-past-last sample of
    the utterance, trimmed of espeak's own near-silence, inside the padding), ``ipa`` symbols,
    ``vad`` events (with their 75 Hz ``frame``) and ``codes`` (``codes_fn(audio)`` as a list
    per codebook, or None without ``codes_fn``). ``codes_fn`` gets the float32 24 kHz samples
    exactly as stored in the wav.
    """
    ph = spec.phrasing
    pcm, speech_samples = render_audio(spec)
    lead = int(round(spec.lead_s * SAMPLE_RATE))
    stored = pcm.astype(np.float32) / 32768.0  # exactly what soundfile reads back from the wav
    events = detect(stored, SAMPLE_RATE, frame_rate=CODEC_FRAME_RATE)
    codes = None
    if codes_fn is not None:
        codes = np.asarray(codes_fn(stored)).astype(np.int64).tolist()
    record = {
        **_spec_fields(spec), "sample_rate": SAMPLE_RATE, "num_samples": int(pcm.size),
        "speech_span": [lead, lead + speech_samples], "ipa": list(_ipa(ph.text, ph.lang)),
        "vad": [e.to_dict() for e in events], "codes": codes,
    }
    return record, pcm


# ----------------------------------------------------------------------------- storage
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out} cannot be created: {parent} is a file")
            break
    if not overwrite and (out / "manifest.json").exists():
        raise ValueError(f"--out {out} already holds a speech corpus; choose another directory "
                         "or pass --overwrite")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_output(path) as tmp:  # fsync'ed and renamed: a kill leaves the old file or the new
        write(tmp)


_RENDERING_KEYS = ("id", "text", "lang", "label", "split", "voice", "rate", "pitch", "snr_db", "noise",
                   "lead_s", "trail_s", "audio")


def _resumable(out: Path, items_tmp: Path, specs: list[ItemSpec], with_codes: bool) -> list[dict]:
    """The records a killed build of the same plan already finished, in order.

    ``items_tmp`` gets a record's line only after its wav was renamed into place, so every
    complete line whose rendering matches the plan's item at its position, and whose wav is
    there with the recorded length, is reused; the first mismatch ends the reuse (a different
    seed or size, a torn last line, a missing wav) and everything from it is rendered again."""
    import soundfile

    if not items_tmp.is_file():
        return []
    kept: list[dict] = []
    for line, spec in zip(items_tmp.read_text(encoding="utf-8").splitlines(keepends=True), specs):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            break
        if any(record.get(k) != v for k, v in _spec_fields(spec).items()) or (record.get("codes") is not None) != with_codes:
            break
        wav = out / record["audio"]
        try:
            if soundfile.info(str(wav)).frames != record["num_samples"]:
                break
        except (RuntimeError, OSError, KeyError):
            break
        kept.append(record)
    return kept


def _spec_fields(spec: ItemSpec) -> dict:
    """The fields of an item record that the plan alone decides (see ``render_item``)."""
    ph = spec.phrasing
    return {"id": spec.id, "text": ph.text, "lang": ph.lang, "label": ph.label, "split": ph.split,
            "voice": spec.voice, "rate": spec.rate, "pitch": spec.pitch, "snr_db": spec.snr_db,
            "noise": spec.noise, "lead_s": spec.lead_s, "trail_s": spec.trail_s,
            "audio": f"audio/{spec.id}.wav"}


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    import soundfile

    _write_atomic(path, lambda tmp: soundfile.write(tmp, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV"))


def _manifest(records: list[dict], size: str | int, seed: int, has_codes: bool) -> dict:
    def count(*keys: str) -> dict:
        c = Counter("/".join(str(r[k]) for k in keys) for r in records)
        return dict(sorted(c.items()))

    return {
        "version": CORPUS_VERSION, "size": size, "seed": seed, "items": len(records),
        "sample_rate": SAMPLE_RATE, "codec_frame_rate": CODEC_FRAME_RATE,
        "ipa_inventory_version": IPA_INVENTORY_VERSION, "has_codes": has_codes,
        "labels": list(LABELS) + sorted({r["label"] for r in records} - set(LABELS)),
        "counts": {"label": count("label"), "lang": count("lang"), "split": count("split"),
                   "label/lang/split": count("label", "lang", "split")},
        "heldout_phrasings": [asdict(p) for p in PHRASINGS if p.heldout],
        "audio_seconds": round(sum(r["num_samples"] for r in records) / SAMPLE_RATE, 3),
    }


def build_corpus(out: str | Path, size: str | int = "small", seed: int = 0,
                 codes_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 overwrite: bool = False, progress: bool = True, specs: list[ItemSpec] | None = None) -> dict:
    """Render ``plan(size, seed)`` into ``out`` (see the module docstring); returns the manifest.
    ``specs`` renders those items instead (``tokenizers_mm.reading.reading_plan``; ``size`` and
    ``seed`` are then only recorded in the manifest).

    Raises ``ValueError`` before writing anything when ``out`` is a file, cannot be created,
    or already holds a corpus (unless ``overwrite``; then stale audio files are removed).
    """
    from tqdm import tqdm

    out = Path(out)
    specs = plan(size, seed) if specs is None else specs  # validates size and seed
    _check_out(out, overwrite)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    items_tmp = out / ".items.jsonl.tmp"
    if (out / "items.jsonl").exists() and not (out / "manifest.json").exists():
        os.replace(out / "items.jsonl", items_tmp)  # killed between the two last renames
    records = _resumable(out, items_tmp, specs, codes_fn is not None)  # a killed build goes on
    with atomic_output(items_tmp) as rewritten:
        rewritten.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with open(items_tmp, "a", encoding="utf-8") as f, \
            tqdm(specs, desc="speech items", unit="item", file=sys.stderr, disable=not progress,
                 dynamic_ncols=True, initial=len(records)) as bar:
        for spec in specs[len(records):]:
            record, pcm = render_item(spec, codes_fn)
            _write_wav(out / record["audio"], pcm)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            records.append(record)
            bar.update()
    fsync_path(items_tmp)
    os.replace(items_tmp, out / "items.jsonl")
    fsync_path(out)
    keep = {Path(r["audio"]).name for r in records}
    for wav in (out / "audio").glob("*.wav"):
        if wav.name not in keep:
            wav.unlink()
    manifest = _manifest(records, size, seed, codes_fn is not None)
    _write_atomic(out / "manifest.json", lambda tmp: tmp.write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"))
    return manifest


def read_items(corpus_dir: str | Path) -> list[dict]:
    """The item records of a built corpus, in order."""
    path = Path(corpus_dir) / "items.jsonl"
    if not path.is_file():
        raise ValueError(f"{corpus_dir} holds no speech corpus (no items.jsonl)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_audio(corpus_dir: str | Path, record: dict) -> np.ndarray:
    """float32 samples of an item (24 kHz), exactly as VAD and codes saw them."""
    import soundfile

    audio, rate = soundfile.read(Path(corpus_dir) / record["audio"], dtype="float32")
    if rate != record["sample_rate"]:
        raise ValueError(f"{record['audio']} is {rate} Hz, expected {record['sample_rate']}")
    return audio
