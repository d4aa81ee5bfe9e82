"""Token form of the unified dialogue: ``to_tokens`` / ``from_tokens``.

Import them from ``tokenizers_mm.dialogue``, whose docstring gives the token grammar and the
trade-offs. ``from_tokens(to_tokens(d, layout), layout) == d`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tokenizers_mm.dialogue_types import (
    Action,
    Audio,
    CameraObs,
    Control,
    Dialogue,
    DialogueParseError,
    InterruptAndListen,
    Ipa,
    Observation,
    Prosody,
    Reply,
    System,
    Text,
    Thought,
    Turn,
    VadEvent,
    parse_float,
    parse_int,
)
from tokenizers_mm.vocab import VocabLayout


class _Writer:
    def __init__(self, layout: VocabLayout, ipa_index: Callable[[str], int] | None) -> None:
        self.layout = layout
        self.out: list[int] = []
        t0 = layout.ranges["text"][0]
        self.byte_ids = list(range(t0, t0 + 256))
        self.sp = {name: i for i, name in enumerate(layout.specials)}
        if ipa_index is None:
            table = {s: i for i, s in enumerate(layout.ipa_symbols)}
            ipa_index = table.__getitem__
        self.ipa_index = ipa_index

    def special(self, name: str) -> None:
        self.out.append(self.sp[name])

    def text(self, s: str) -> None:
        self.out.extend(map(self.byte_ids.__getitem__, s.encode("utf-8")))

    def nums(self, values: Any) -> None:
        """Numbers (ints via str, floats via repr), separated by <sep>."""
        for k, v in enumerate(values):
            if k:
                self.special("<sep>")
            self.text(repr(v))


def _emit_obs(o: Observation, w: _Writer) -> None:
    w.special("<obs>")
    w.text(str(o.step))
    for c in o.cameras:
        w.special("<camera>")
        w.nums((c.camera_id, *c.pos, *c.rot, *c.frame_tokens))
        w.special("</camera>")
    if o.ego is not None:
        w.special("<ego>")
        w.nums(o.ego)
        w.special("</ego>")
    w.special("</obs>")


def _emit_audio(a: Audio, w: _Writer) -> None:
    have = w.layout.audio_codebooks
    if a.n_q > have:
        raise ValueError(f"audio has n_q={a.n_q} codebooks but the vocabulary has {have}")
    codes = np.asarray(a.codes, dtype=np.int64)  # (n_q, T)
    ids = np.stack([w.layout.ids(f"audio_q{k}", codes[k]) for k in range(a.n_q)], axis=1).reshape(-1)
    w.special("<audio>")
    start = 0
    for e in a.vad:  # sorted by frame
        w.out.extend(ids[start * a.n_q : e.frame * a.n_q].tolist())
        start = e.frame
        w.special(f"<{e.kind}>")
    w.out.extend(ids[start * a.n_q :].tolist())
    w.special("</audio>")


def _emit_ipa(t: Ipa, w: _Writer) -> None:
    local = []
    for s in t.symbols:
        try:
            local.append(int(w.ipa_index(s)))
        except (LookupError, ValueError):
            raise ValueError(f"IPA symbol {s!r} is not in the vocabulary's IPA inventory") from None
    w.special("<ipa>")
    w.special(f"<lang={t.lang}>")
    w.out.extend(w.layout.ids("ipa", np.asarray(local, dtype=np.int64)).tolist())
    w.special("</ipa>")


def _emit_reply(t: Reply, w: _Writer) -> None:
    w.special("<reply>")
    if t.prosody is not None:
        w.special(f"<pitch={t.prosody.pitch}>")
        w.special(f"<rate={t.prosody.rate}>")
    w.text(t.text)
    w.special("</reply>")


def _emit_action(t: Action, w: _Writer) -> None:
    w.special("<action>")
    for c in t.controls:
        w.special(f"<control_{c.type}>")
        w.nums((c.value, c.duration))
    w.special("</action>")


def _emit_wrapped(tag: str, lang: str | None, s: str, w: _Writer) -> None:
    w.special(f"<{tag}>")
    if lang is not None:
        w.special(f"<lang={lang}>")
    w.text(s)
    w.special(f"</{tag}>")


_EMITTERS: dict[type, Callable[[Any, _Writer], None]] = {
    System: lambda t, w: _emit_wrapped("system", None, t.text, w),
    Thought: lambda t, w: _emit_wrapped("thought", None, t.text, w),
    Text: lambda t, w: _emit_wrapped("text", t.lang, t.text, w),
    Ipa: _emit_ipa,
    Reply: _emit_reply,
    InterruptAndListen: lambda t, w: w.special("<interrupt_and_listen>"),
    Observation: _emit_obs,
    Audio: _emit_audio,
    Action: _emit_action,
}


def to_tokens(d: Dialogue, layout: VocabLayout, ipa_index: Callable[[str], int] | None = None) -> np.ndarray:
    """The dialogue as (N,) int64 global ids of ``layout``.

    ``ipa_index`` maps an IPA symbol to its local index in the ``ipa`` range (default: its
    position in ``layout.ipa_symbols``); an unknown symbol is a ``ValueError`` naming it, as is
    an audio code or codebook the layout has no room for.
    """
    w = _Writer(layout, ipa_index)
    for turn in d.turns:
        _EMITTERS[type(turn)](turn, w)
    return np.asarray(w.out, dtype=np.int64)


# ----------------------------------------------------------------------------------- decode


class _Reader:
    def __init__(self, ids: list[int], layout: VocabLayout, ipa_symbol: Callable[[int], str]) -> None:
        self.ids, self.i, self.layout, self.ipa_symbol = ids, 0, layout, ipa_symbol
        self.sp = {name: i for i, name in enumerate(layout.specials)}
        self.t0, self.t1 = layout.ranges["text"]
        self.ipa0, self.ipa1 = layout.ranges["ipa"]
        self.q = [layout.ranges[f"audio_q{k}"] for k in range(layout.audio_codebooks)]

    def fail(self, msg: str, at: int | None = None) -> DialogueParseError:
        return DialogueParseError(f"token {self.i if at is None else at}", msg)

    def describe(self) -> str:
        if self.i >= len(self.ids):
            return "end of input"
        tok = self.ids[self.i]
        if 0 <= tok < len(self.layout.specials):
            return repr(self.layout.specials[tok])
        if self.t0 <= tok < self.t1:
            b = tok - self.t0
            return f"text byte 0x{b:02x}" + (f" {chr(b)!r}" if 32 <= b < 127 else "")
        try:
            name = self.layout.range_of(tok)
        except ValueError:
            return f"id {tok} (outside the vocabulary)"
        return f"{name}:{tok - self.layout.ranges[name][0]} (id {tok})"

    def peek_special(self) -> str | None:
        tok = self.ids[self.i] if self.i < len(self.ids) else -1
        return self.layout.specials[tok] if 0 <= tok < len(self.layout.specials) else None

    def expect(self, name: str) -> None:
        if self.peek_special() != name:
            raise self.fail(f"expected '{name}', got {self.describe()}")
        self.i += 1

    def take_bytes(self) -> tuple[bytes, int]:
        start, ids, n = self.i, self.ids, len(self.ids)
        while self.i < n and self.t0 <= ids[self.i] < self.t1:
            self.i += 1
        return bytes(t - self.t0 for t in ids[start : self.i]), start

    def text(self) -> str:
        data, start = self.take_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(
                f"invalid UTF-8 at byte 0x{data[e.start]:02x} ({e.reason})", start + e.start
            ) from None

    def nums(self, end: str, what: str) -> list[tuple[str, int]]:
        """``num { <sep> num }`` (possibly none) up to and including ``end``."""
        fields: list[tuple[str, int]] = []
        while self.peek_special() != end:
            if fields:
                self.expect("<sep>")
            data, start = self.take_bytes()
            if not data:
                raise self.fail(f"expected a number for {what}, got {self.describe()}")
            fields.append((data.decode("ascii", errors="replace"), start))
        self.i += 1
        return fields

    def number(self, field: tuple[str, int], what: str, integer: bool = False) -> Any:
        v = parse_int(field[0]) if integer else parse_float(field[0])
        if v is None or (integer and v < 0):
            raise self.fail(f"bad number {field[0]!r} for {what}", field[1])
        return v

    def build(self, at: int, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ValueError as e:
            raise self.fail(f"invalid {what}: {e}", at) from None

    def lang(self) -> str:
        name = self.peek_special()
        if name not in ("<lang=en>", "<lang=zh>"):
            raise self.fail(f"expected '<lang=en>' or '<lang=zh>', got {self.describe()}")
        self.i += 1
        return name[6:-1]


def _read_obs(r: _Reader, at: int) -> Observation:
    step = r.number((r.take_bytes()[0].decode("ascii", errors="replace"), at + 1), "step", integer=True)
    cameras: list[CameraObs] = []
    ego = None
    while r.peek_special() == "<camera>":
        start = r.i
        r.i += 1
        f = r.nums("</camera>", "camera")
        if len(f) < 8:
            raise r.fail(f"camera needs at least 8 numbers (id, x, y, z, w, qx, qy, qz), got {len(f)}", start)
        cam = (
            r.number(f[0], "camera id", True),
            tuple(r.number(x, "camera pos") for x in f[1:4]),
            tuple(r.number(x, "camera rot") for x in f[4:8]),
            tuple(r.number(x, "frame token", True) for x in f[8:]),
        )
        cameras.append(r.build(start, "camera", CameraObs, *cam))
    if r.peek_special() == "<ego>":
        r.i += 1
        ego = tuple(r.number(x, "ego value") for x in r.nums("</ego>", "ego"))
    r.expect("</obs>")
    return r.build(at, "'<obs>'", Observation, step, tuple(cameras), ego)


def _read_audio(r: _Reader, at: int) -> Audio:
    frames: list[list[int]] = []
    vad: list[VadEvent] = []
    n_q: int | None = None
    while (name := r.peek_special()) != "</audio>":
        if name in ("<vad_on>", "<vad_off>"):
            vad.append(VadEvent(name[1:-1], len(frames)))
            r.i += 1
            continue
        frame: list[int] = []
        while len(frame) != n_q and len(frame) < len(r.q) and r.i < len(r.ids):
            lo, hi = r.q[len(frame)]
            if not lo <= r.ids[r.i] < hi:
                break
            frame.append(r.ids[r.i] - lo)
            r.i += 1
        if not frame:
            raise r.fail(f"expected an audio_q0 code, a VAD token or '</audio>', got {r.describe()}")
        if n_q is not None and len(frame) != n_q:
            raise r.fail(
                f"audio frame {len(frames)} has {len(frame)} codes, n_q is {n_q}; got {r.describe()}"
            )
        n_q = len(frame)
        frames.append(frame)
    r.i += 1
    return r.build(at, "'<audio>'", Audio, tuple(zip(*frames)), tuple(vad))


def _read_ipa(r: _Reader, at: int) -> Ipa:
    lang = r.lang()
    symbols = []
    while r.i < len(r.ids) and r.ipa0 <= r.ids[r.i] < r.ipa1:
        symbols.append(r.ipa_symbol(r.ids[r.i] - r.ipa0))
        r.i += 1
    r.expect("</ipa>")
    return r.build(at, "'<ipa>'", Ipa, tuple(symbols), lang)


def _read_reply(r: _Reader, at: int) -> Reply:
    prosody = None
    pitch = r.peek_special()
    if pitch is not None and pitch.startswith("<pitch="):
        r.i += 1
        rate = r.peek_special()
        if rate is None or not rate.startswith("<rate="):
            raise r.fail(f"expected a '<rate=...>' token after {pitch!r}, got {r.describe()}")
        r.i += 1
        prosody = r.build(at, "'<reply>' prosody", Prosody, pitch[7:-1], rate[6:-1])
    text = r.text()
    r.expect("</reply>")
    return r.build(at, "'<reply>'", Reply, text, prosody)


def _read_action(r: _Reader, at: int) -> Action:
    controls = []
    while (name := r.peek_special()) in ("<control_lon>", "<control_lat>"):
        start = r.i
        r.i += 1
        value = r.number((r.take_bytes()[0].decode("ascii", errors="replace"), start + 1), "control value")
        r.expect("<sep>")
        data, pos = r.take_bytes()
        duration = r.number((data.decode("ascii", errors="replace"), pos), "control duration")
        controls.append(r.build(start, "control", Control, name[9:-1], value, duration))
    r.expect("</action>")
    return r.build(at, "'<action>'", Action, tuple(controls))


def _read_wrapped(cls: type, tag: str, with_lang: bool) -> Callable[[_Reader, int], Turn]:
    def read(r: _Reader, at: int) -> Turn:
        lang = r.lang() if with_lang else None
        text = r.text()
        r.expect(f"</{tag}>")
        return r.build(at, f"'<{tag}>'", cls, *((text, lang) if with_lang else (text,)))

    return read


_READERS: dict[str, Callable[[_Reader, int], Turn]] = {
    "<system>": _read_wrapped(System, "system", False),
    "<thought>": _read_wrapped(Thought, "thought", False),
    "<text>": _read_wrapped(Text, "text", True),
    "<ipa>": _read_ipa,
    "<reply>": _read_reply,
    "<interrupt_and_listen>": lambda r, at: InterruptAndListen(),
    "<obs>": _read_obs,
    "<audio>": _read_audio,
    "<action>": _read_action,
}


def from_tokens(
    ids: np.ndarray | list[int], layout: VocabLayout, ipa_symbol: Callable[[int], str] | None = None
) -> Dialogue:
    """Inverse of ``to_tokens``; malformed ids raise ``DialogueParseError`` ('token I: ...').

    ``ipa_symbol`` maps a local ``ipa`` index to its symbol (default: ``layout.ipa_symbols``).
    """
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"from_tokens needs a 1-D sequence of ids, got shape {arr.shape}")
    r = _Reader(arr.tolist(), layout, ipa_symbol or layout.ipa_symbols.__getitem__)
    turns: list[Turn] = []
    while r.i < len(r.ids):
        reader = _READERS.get(r.peek_special() or "")
        if reader is None:
            raise r.fail(f"expected the opening token of a turn, got {r.describe()}")
        r.i += 1
        turns.append(reader(r, r.i - 1))
    return Dialogue(tuple(turns))
