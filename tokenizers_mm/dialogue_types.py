"""The turns of the unified dialogue format: typed, frozen, validated at construction.

Import them from ``tokenizers_mm.dialogue`` (the public module); this file only holds the types,
their validation and the number grammar both serializations share.

Numbers are normalized at construction (floats to Python ``float``, ints to Python ``int``,
sequences to tuples) and stored exactly as given otherwise: a quaternion is NOT renormalized,
``-0.0`` stays ``-0.0``. Both serializations write floats with ``repr`` (shortest string that
round-trips), so every field survives ``parse(serialize(d))`` and ``from_tokens(to_tokens(d))``
bit for bit. NaN and infinities are rejected everywhere with ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from dataclasses import dataclass
from typing import Any

LANGS = ("en", "zh")
PITCHES = ("low", "mid", "high")
RATES = ("slow", "normal", "fast")
CONTROL_TYPES = ("lon", "lat")
VAD_KINDS = ("vad_on", "vad_off")

_FLOAT_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"-?\d+")


class DialogueParseError(ValueError):
    """Malformed textual or token dialogue; ``where`` is 'line L, col C' or 'token I'."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def parse_float(s: str) -> float | None:
    """A finite float written as ``repr`` writes it (or a plain integer); None if not."""
    if not _FLOAT_RE.fullmatch(s):
        return None
    v = float(s)
    return v if math.isfinite(v) else None


def parse_int(s: str) -> int | None:
    return int(s) if _INT_RE.fullmatch(s) else None


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _int(name: str, v: Any, minimum: int | None = 0) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {v!r}") from None
    if minimum is not None and i < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {i}")
    return int(i)


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return f


def _floats(name: str, vs: Any, n: int | None = None) -> tuple[float, ...]:
    out = tuple(_float(name, v) for v in vs)
    if n is not None and len(out) != n:
        raise ValueError(f"{name} needs {n} numbers, got {len(out)}")
    return out


def _text(name: str, s: Any) -> str:
    if not isinstance(s, str):
        raise ValueError(f"{name} must be a str, got {type(s).__name__}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name}: character {e.start} is a lone surrogate (not UTF-8 encodable)") from None
    return s


def _choice(name: str, v: Any, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ValueError(f"unknown {name} {v!r}; expected one of {options}")
    return str(v)


@dataclass(frozen=True)
class System:
    """The system prompt."""

    text: str

    def __post_init__(self) -> None:
        _set(self, "text", _text("system text", self.text))


@dataclass(frozen=True)
class CameraObs:
    """One camera at one step: its pose on the ego and its frame's tokens (opaque ids >= 0)."""

    camera_id: int
    pos: tuple[float, float, float]  # metres, ego frame (see sim.cameras)
    rot: tuple[float, float, float, float]  # quaternion (w, x, y, z), camera -> ego; not renormalized
    frame_tokens: tuple[int, ...] = ()  # patch / codebook ids

    def __post_init__(self) -> None:
        _set(self, "camera_id", _int("camera_id", self.camera_id))
        _set(self, "pos", _floats("camera pos", self.pos, 3))
        rot = _floats("camera rot", self.rot)
        if len(rot) != 4:
            raise ValueError(f"camera rot: quaternion needs 4 numbers (w, x, y, z), got {len(rot)}")
        if math.hypot(*rot) == 0.0:
            raise ValueError("camera rot: quaternion has zero norm")
        _set(self, "rot", rot)
        _set(self, "frame_tokens", tuple(_int("frame token", t) for t in self.frame_tokens))


@dataclass(frozen=True)
class Observation:
    """What the policy sees at env step ``step``: cameras (unique ids) and the ego state."""

    step: int
    cameras: tuple[CameraObs, ...] = ()
    ego: tuple[float, ...] | None = None  # sim.interface.EGO_FIELDS order, or None

    def __post_init__(self) -> None:
        _set(self, "step", _int("step", self.step))
        cams = tuple(self.cameras)
        if not all(isinstance(c, CameraObs) for c in cams):
            raise ValueError("observation cameras must be CameraObs")
        ids = [c.camera_id for c in cams]
        if len(set(ids)) != len(ids):
            raise ValueError(f"observation camera ids must be unique, got {ids}")
        _set(self, "cameras", cams)
        if self.ego is not None:
            _set(self, "ego", _floats("ego value", self.ego))


@dataclass(frozen=True)
class VadEvent:
    """Voice activity starts (``vad_on``) or stops (``vad_off``) before audio frame ``frame``."""

    kind: str
    frame: int

    def __post_init__(self) -> None:
        _set(self, "kind", _choice("VAD event", self.kind, VAD_KINDS))
        _set(self, "frame", _int("VAD frame", self.frame))


@dataclass(frozen=True)
class Audio:
    """Neural-codec codes, ``n_q`` rows x ``T`` frames (T >= 1), plus VAD events in time order.

    An event at frame ``f`` (0 <= f <= T) happens before frame ``f``'s codes; ``f == T`` means
    after the last frame. Events must be sorted by frame (ties keep their order).
    """

    codes: tuple[tuple[int, ...], ...]
    vad: tuple[VadEvent, ...] = ()

    def __post_init__(self) -> None:
        codes = tuple(tuple(_int("audio code", c) for c in row) for row in self.codes)
        if not codes:
            raise ValueError("audio needs at least one codebook row (n_q >= 1)")
        n_frames = len(codes[0])
        if n_frames == 0:
            raise ValueError("audio needs at least one frame (T >= 1)")
        if any(len(row) != n_frames for row in codes):
            raise ValueError(f"audio code rows must have equal length, got {[len(r) for r in codes]}")
        vad = tuple(self.vad)
        if not all(isinstance(e, VadEvent) for e in vad):
            raise ValueError("audio vad must be VadEvent")
        frames = [e.frame for e in vad]
        if any(f > n_frames for f in frames):
            raise ValueError(f"VAD frame outside [0, {n_frames}]: {frames}")
        if frames != sorted(frames):
            raise ValueError(f"VAD events must be in time order, got frames {frames}")
        _set(self, "codes", codes)
        _set(self, "vad", vad)

    @property
    def n_q(self) -> int:
        return len(self.codes)

    @property
    def n_frames(self) -> int:
        return len(self.codes[0])


@dataclass(frozen=True)
class Text:
    """What the passenger said, as text."""

    text: str
    lang: str = "en"

    def __post_init__(self) -> None:
        _set(self, "text", _text("text", self.text))
        _set(self, "lang", _choice("language", self.lang, LANGS))


@dataclass(frozen=True)
class Ipa:
    """What the passenger said, as IPA symbols (each non-empty; may hold combining marks/tones)."""

    symbols: tuple[str, ...]
    lang: str = "en"

    def __post_init__(self) -> None:
        syms = tuple(_text("IPA symbol", s) for s in self.symbols)
        if any(s == "" for s in syms):
            raise ValueError("IPA symbols must be non-empty")
        _set(self, "symbols", syms)
        _set(self, "lang", _choice("language", self.lang, LANGS))


@dataclass(frozen=True)
class Thought:
    """The policy's private reasoning."""

    text: str

    def __post_init__(self) -> None:
        _set(self, "text", _text("thought text", self.text))


@dataclass(frozen=True)
class Prosody:
    pitch: str  # low | mid | high
    rate: str  # slow | normal | fast

    def __post_init__(self) -> None:
        _set(self, "pitch", _choice("prosody pitch", self.pitch, PITCHES))
        _set(self, "rate", _choice("prosody rate", self.rate, RATES))


@dataclass(frozen=True)
class Reply:
    """What the policy says back, with optional prosody for the speech synthesizer."""

    text: str
    prosody: Prosody | None = None

    def __post_init__(self) -> None:
        _set(self, "text", _text("reply text", self.text))
        if self.prosody is not None and not isinstance(self.prosody, Prosody):
            raise ValueError("reply prosody must be a Prosody or None")


@dataclass(frozen=True)
class Control:
    """Hold a longitudinal (m/s^2) or lateral (steer, rad) command for ``duration`` seconds."""

    type: str  # lon | lat
    value: float
    duration: float

    def __post_init__(self) -> None:
        _set(self, "type", _choice("control type", self.type, CONTROL_TYPES))
        _set(self, "value", _float("control value", self.value))
        duration = _float("control duration", self.duration)
        if duration <= 0.0:
            raise ValueError(f"control duration must be > 0, got {duration!r}")
        _set(self, "duration", duration)


@dataclass(frozen=True)
class Action:
    """One or more controls, executed as a chunk."""

    controls: tuple[Control, ...]

    def __post_init__(self) -> None:
        controls = tuple(self.controls)
        if not controls or not all(isinstance(c, Control) for c in controls):
            raise ValueError("action needs at least one Control")
        _set(self, "controls", controls)


@dataclass(frozen=True)
class InterruptAndListen:
    """The policy yields the floor: stop talking and listen to the passenger."""


Turn = System | Observation | Audio | Text | Ipa | Thought | Reply | Action | InterruptAndListen
TURN_TYPES = (System, Observation, Audio, Text, Ipa, Thought, Reply, Action, InterruptAndListen)


@dataclass(frozen=True)
class Dialogue:
    """An interleaved multimodal episode: turns in time order."""

    turns: tuple[Turn, ...] = ()

    def __post_init__(self) -> None:
        turns = tuple(self.turns)
        for i, t in enumerate(turns):
            if not isinstance(t, TURN_TYPES):
                raise ValueError(f"turn {i} is a {type(t).__name__}, not a dialogue turn")
        _set(self, "turns", turns)
