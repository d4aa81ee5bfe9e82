"""A spoken command as the policy hears it: codec tokens and VAD events of synthesized, noisy audio.

``draw_rendition(phrasing, rng, voices, snrs)`` draws how a passenger says a phrasing (voice,
rate, pitch, loudness, silence around it, background noise at an SNR) as a
``tokenizers_mm.corpus.ItemSpec``; ``corpus.render_item`` synthesizes it with espeak-ng, mixes
the noise and runs the real silero VAD on the *mixed* samples; ``command_tokens`` turns the
result into the policy's command stream.

Voices are split (``VOICE_SPLITS``): the policy trains on ``train`` voices only, and is tested
on ``heldout`` voices it never heard (the phrasings have their own fixed split in
``tokenizers_mm.corpus``).

The stream (``command_tokens``): codec frames at 75 Hz, ``group`` consecutive frames per
position, each frame's first ``n_q`` codebook levels (ids in the ``audio_q{k}`` ranges of the
vocabulary), so a position holds ``G = group * n_q`` ids, frame-major (frame 0: q0..q{n_q-1},
frame 1: ...). A VAD event is a position of its own, ``[<vad_on>|<vad_off>, <pad> x (G-1)]``,
placed before the group holding its frame; ``<pad>`` also fills the last group. The result is
flat, ``positions * G`` ids: the policy's model sums each position's ``G`` embeddings (plus one
learned vector per slot) into one token (``vla.model``), so 2 s of speech at ``group=4`` is about
40 positions instead of 150 x ``n_q`` ids.
"""

from __future__ import annotations

import numpy as np

from tokenizers_mm import corpus
from tokenizers_mm.corpus import ItemSpec, Phrasing
from tokenizers_mm.vocab import VocabLayout

VOICE_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"en": ("en-us", "en-gb", "en-gb-scotland", "en-us+f1"), "zh": ("cmn", "cmn+m3")},
    "heldout": {"en": ("en-gb+f4", "en-us-nyc+m3"), "zh": ("cmn+f4",)},
}
"""espeak voices heard in training and voices kept for testing (no breath variants: see
``tokenizers_mm.speech``). ``wide`` (below) is a larger training pool for the ear."""

WIDE_BASES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    "zh": ("cmn",),
}
"""espeak's English accents and its Mandarin voice (``en-us-nyc`` is missing: it is a held-out voice's)."""
WIDE_VARIANTS: tuple[str, ...] = (
    "Alex", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo",
    "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty",
    "belinda", "benjamin", "boris", "croak", "david", "ed", "edward", "edward2", "f1", "gustave", "grandma",
    "grandpa", "ian", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3",
    "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max",
    "michel", "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "robosoft",
    "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "shelby",
    "steph", "steph2", "steph3", "travis", "zac")
"""espeak-ng's voice variants (``espeak-ng-data/voices/!v``) that give the same samples on every call:
none with ``breath`` (Alicia, Demonic, Storm, f2, f3, f5, sandro, victor, the whispers) and not
``Reed`` or ``caleb``, which differed between two calls (checked 2026-12-06); ``fast`` is left out
(it sounds as the bare voice) and ``Mr serious`` (a space in the name). A held-out voice's variant
is removed from the pool by ``touches_heldout``."""


def touches_heldout(voice: str, lang: str) -> bool:
    """Whether ``voice`` is, or shares what sets apart, a held-out voice of ``lang``: the held-out
    voice itself, its variant (``en-gb+f4`` rules out every ``+f4`` in English), or its accent
    when no training voice has that accent (``en-us-nyc``)."""
    base, _, variant = voice.partition("+")
    train_bases = {v.partition("+")[0] for v in VOICE_SPLITS["train"].get(lang, ())}
    for held in VOICE_SPLITS["heldout"].get(lang, ()):
        held_base, _, held_variant = held.partition("+")
        if voice == held or (variant and variant == held_variant) or (base == held_base and base not in train_bases):
            return True
    return False


def _wide(lang: str) -> tuple[str, ...]:
    pool = list(WIDE_BASES[lang]) + [f"{b}+{v}" for b in WIDE_BASES[lang] for v in WIDE_VARIANTS]
    pool += [v for v in VOICE_SPLITS["train"][lang] if v not in pool]
    return tuple(v for v in pool if not touches_heldout(v, lang))


VOICE_SPLITS["wide"] = {lang: _wide(lang) for lang in ("en", "zh")}
"""``wide``: every training voice, and espeak's accents x its variants, less anything a held-out
voice is made of (English: 623 voices, Mandarin: 90). The ear's reading corpus may be read in it
(``vla make-speech --reading N --reading-voices wide``), and a heard policy's training commands
rendered in it (``--audio-voices wide``): a recognizer that heard 4 English voices erred on
0.22-0.29 of the phones of a new voice even on sentences it knew (docs/audio_policy.md)."""
TRAINING_POOLS: tuple[str, ...] = ("train", "wide")
"""The voice splits training may draw from (never ``heldout``); ``vla.data.AUDIO_VOICES`` is the
same tuple for the training loop, which does not import this module."""
TRAIN_SNRS_DB: tuple[float | None, ...] = corpus.SNRS_DB
"""Background noise levels drawn in training (None: clean): the corpus's."""


def draw_rendition(phrasing: Phrasing, rng: np.random.Generator, voices: str = "train",
                   snrs: tuple[float | None, ...] = TRAIN_SNRS_DB, item_id: str = "cmd") -> ItemSpec:
    """How a passenger says ``phrasing`` this time: every random choice from ``rng``."""
    if voices not in VOICE_SPLITS:
        raise ValueError(f"voices must be one of {sorted(VOICE_SPLITS)}, got {voices!r}")
    pool = VOICE_SPLITS[voices][phrasing.lang]
    snr = snrs[int(rng.integers(len(snrs)))]
    color = corpus.speech.NOISE_COLORS[int(rng.integers(len(corpus.speech.NOISE_COLORS)))]
    return ItemSpec(id=item_id, phrasing=phrasing, voice=pool[int(rng.integers(len(pool)))],
                    rate=corpus.RATES[int(rng.integers(len(corpus.RATES)))],
                    pitch=corpus.PITCHES[int(rng.integers(len(corpus.PITCHES)))],
                    peak=round(float(rng.uniform(*corpus.PEAK_RANGE)), 4),
                    lead_s=round(float(rng.uniform(*corpus.LEAD_S)), 3),
                    trail_s=round(float(rng.uniform(*corpus.TRAIL_S)), 3), snr_db=snr,
                    noise=None if snr is None else color, noise_seed=int(rng.integers(2**31)))


def command_tokens(codes: np.ndarray, vad: list[dict], layout: VocabLayout, n_q: int, group: int) -> np.ndarray:
    """(positions * G,) int64 ids of the stream described above, from ``codes`` (n_q_codec, T)
    local codebook indices and ``vad`` events (dicts with ``kind`` and ``frame``, as
    ``corpus.render_item`` records them)."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] < n_q:
        raise ValueError(f"codes must have shape (>= {n_q} codebooks, frames), got {codes.shape}")
    if n_q < 1 or group < 1:
        raise ValueError(f"n_q and group must be >= 1, got {n_q} and {group}")
    g = group * n_q
    pad = layout.special("<pad>")
    frames = codes.shape[1]
    ids = np.stack([layout.ids(f"audio_q{k}", codes[k]) for k in range(n_q)], axis=1)  # (T, n_q)
    events = sorted((int(e["frame"]), 0 if e["kind"] == "vad_on" else 1, e["kind"]) for e in vad)
    out: list[np.ndarray] = []
    e = 0
    for start in range(0, frames, group):
        while e < len(events) and events[e][0] < start + group:
            out.append(np.array([layout.special(f"<{events[e][2]}>")] + [pad] * (g - 1), dtype=np.int64))
            e += 1
        chunk = ids[start:start + group].reshape(-1)
        out.append(np.concatenate([chunk, np.full(g - len(chunk), pad, dtype=np.int64)]))
    for _, _, kind in events[e:]:  # events past the last frame
        out.append(np.array([layout.special(f"<{kind}>")] + [pad] * (g - 1), dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def render_command(spec: ItemSpec, codec, layout: VocabLayout, n_q: int, group: int) -> tuple[np.ndarray, dict]:
    """(command stream ids, the corpus record: voice, SNR, VAD events, speech span...) of one
    rendition; the VAD runs on the mixed audio the codec encodes."""
    record, _ = corpus.render_item(spec, codes_fn=codec.encode)
    return command_tokens(np.asarray(record["codes"]), record["vad"], layout, n_q, group), record
