r"""Textual form of the unified dialogue: ``serialize`` / ``parse``.

Import them from ``tokenizers_mm.dialogue``, whose docstring gives the grammar, the escaping
scheme and the error format. ``parse(serialize(d)) == d`` exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenizers_mm.dialogue_types import (
    CONTROL_TYPES,
    LANGS,
    PITCHES,
    RATES,
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

_ESCAPES = {"\\": "\\\\", "<": "\\<", ">": "\\>", "\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "\\s"}
_UNESCAPES = {"\\": "\\", "<": "<", ">": ">", "n": "\n", "r": "\r", "t": "\t", "s": " "}
_NEEDS_ESCAPE = re.compile(r"[\\<>\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NEEDS_ESCAPE_SYM = re.compile(r"[\\<> \x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPE_SEQ = re.compile(r"\\(?:u\{([0-9a-fA-F]{1,6})\}|([\\<>nrts]))|\\.?|>", re.DOTALL)
_TAG_NAME = re.compile(r"<(/?[^\s<>/]*)")
_VAD = re.compile(r"(vad_on|vad_off)@(\d+)")
_WORD = re.compile(r"[^ ]+")
_CONTENT = re.compile(r"(?:[^\\<]|\\.)*")
_TAGS = ("system", "thought", "text", "ipa", "reply", "interrupt_and_listen", "obs", "audio", "action")


def _esc_char(m: re.Match[str]) -> str:
    ch = m.group()
    return _ESCAPES.get(ch) or f"\\u{{{ord(ch):x}}}"


def escape(s: str, in_symbol: bool = False) -> str:
    """Escape content text (``in_symbol``: an IPA symbol, where spaces are escaped too)."""
    return (_NEEDS_ESCAPE_SYM if in_symbol else _NEEDS_ESCAPE).sub(_esc_char, s)


# ---------------------------------------------------------------------------------- serialize


def _ser_obs(o: Observation) -> list[str]:
    lines = [f"<obs step={o.step}>"]
    for c in o.cameras:
        lines.append(
            f"camera id={c.camera_id} pos={','.join(map(repr, c.pos))} "
            f"rot={','.join(map(repr, c.rot))} frame={','.join(map(str, c.frame_tokens))}"
        )
    if o.ego is not None:
        lines.append("ego" + "".join(f" {v!r}" for v in o.ego))
    return [*lines, "</obs>"]


def _ser_audio(a: Audio) -> list[str]:
    rows = " | ".join(f"q{k}:" + "".join(f" {c}" for c in row) for k, row in enumerate(a.codes))
    vad = "".join(f" {e.kind}@{e.frame}" for e in a.vad)
    return [f"<audio n_q={a.n_q}> {rows}{vad} </audio>"]


def _ser_reply(r: Reply) -> list[str]:
    attrs = "" if r.prosody is None else f" pitch={r.prosody.pitch} rate={r.prosody.rate}"
    return [f"<reply{attrs}> {escape(r.text)} </reply>"]


def _ser_action(a: Action) -> list[str]:
    body = " ; ".join(f"control type={c.type} value={c.value!r} duration={c.duration!r}" for c in a.controls)
    return [f"<action> {body} </action>"]


_SERIALIZERS: dict[type, Callable[[Any], list[str]]] = {
    System: lambda t: [f"<system> {escape(t.text)} </system>"],
    Thought: lambda t: [f"<thought> {escape(t.text)} </thought>"],
    Text: lambda t: [f"<text lang={t.lang}> {escape(t.text)} </text>"],
    Ipa: lambda t: [f"<ipa lang={t.lang}> {' '.join(escape(s, True) for s in t.symbols)} </ipa>"],
    Reply: _ser_reply,
    InterruptAndListen: lambda t: ["<interrupt_and_listen>"],
    Observation: _ser_obs,
    Audio: _ser_audio,
    Action: _ser_action,
}


def serialize(d: Dialogue) -> str:
    """The dialogue as text, one line per turn (an observation spans several), NL-terminated."""
    return "".join(line + "\n" for turn in d.turns for line in _SERIALIZERS[type(turn)](turn))


# -------------------------------------------------------------------------------------- parse


def _err(ln: int, col: int, msg: str) -> DialogueParseError:
    return DialogueParseError(f"line {ln}, col {col}", msg)


def _build(ln: int, col: int, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as e:
        raise _err(ln, col, f"invalid {what}: {e}") from None


@dataclass(frozen=True)
class _Tag:
    name: str
    attrs: tuple[tuple[str, str, int], ...]  # key, value, 1-based column of the key
    end: int  # 0-based index just past '>'


def _open_tag(line: str, ln: int) -> _Tag:
    m = _TAG_NAME.match(line)
    if m is None:
        raise _err(ln, 1, f"expected a tag, got {line.split(' ', 1)[0]!r}")
    name = m.group(1)
    if name.startswith("/"):
        raise _err(ln, 1, f"unexpected close tag '<{name}>'")
    if name not in _TAGS:
        raise _err(ln, 1, f"unknown tag '<{name}>'")
    p, attrs = m.end(), []
    while p < len(line) and line[p] == " ":
        q = p + 1
        while q < len(line) and line[q] not in " >":
            q += 1
        key, eq, value = line[p + 1 : q].partition("=")
        if not eq or not key:
            raise _err(ln, p + 2, f"bad attribute {line[p + 1 : q]!r} in '<{name}>'")
        attrs.append((key, value, p + 2))
        p = q
    if p >= len(line) or line[p] != ">":
        raise _err(ln, p + 1, f"expected '>' to end '<{name}', got {line[p : p + 8] or 'end of line'!r}")
    return _Tag(name, tuple(attrs), p + 1)


def _attrs(tag: _Tag, ln: int, keys: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """The tag's attributes, which must be exactly ``keys`` in order: {key: (value, value col)}."""
    for key, _, col in tag.attrs:
        if key not in keys:
            raise _err(ln, col, f"unknown attribute {key!r} in '<{tag.name}>'")
    got = tuple(a[0] for a in tag.attrs)
    for key in keys:
        if key not in got:
            raise _err(ln, tag.end, f"missing attribute '{key}=' in '<{tag.name}>'")
    if got != keys:
        raise _err(ln, 1, f"attributes of '<{tag.name}>' must be {' '.join(keys)}, in that order")
    return {k: (v, col + len(k) + 1) for k, v, col in tag.attrs}


def _content(line: str, ln: int, tag: _Tag) -> tuple[str, int]:
    """Raw content between '<tag ...> ' and ' </tag>' (checked to end the line) and its column."""
    p, close = tag.end, f"</{tag.name}>"
    if p >= len(line) or line[p] != " ":
        raise _err(ln, p + 1, f"expected ' ' after '<{tag.name}>', got {line[p : p + 1] or 'end of line'!r}")
    q = _CONTENT.match(line, p + 1).end()  # the first '<' not part of an escape
    if q >= len(line) or line[q] != "<":
        raise _err(ln, len(line) + 1, f"missing close tag '{close}'")
    if not line.startswith(close, q):
        if line.startswith("</", q):
            end = line.find(">", q)
            token = line[q : end + 1] if end != -1 else line[q:]
            raise _err(ln, q + 1, f"mismatched close tag {token!r}, expected '{close}'")
        raise _err(ln, q + 1, f"unescaped '<' (write '\\<') or missing close tag '{close}'")
    if q == p + 1 or line[q - 1] != " ":
        raise _err(ln, q + 1, f"expected ' ' before '{close}'")
    if q + len(close) < len(line):
        raise _err(ln, q + len(close) + 1, f"trailing garbage {line[q + len(close) :]!r}")
    return line[p + 1 : q - 1], p + 2


def _unescape(s: str, ln: int, col: int) -> str:
    if "\\" not in s and ">" not in s:
        return s

    def sub(m: re.Match[str]) -> str:
        if m.group(2):
            return _UNESCAPES[m.group(2)]
        if m.group(1):
            cp = int(m.group(1), 16)
            if cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)
        token = m.group()
        raise _err(
            ln, col + m.start(), "unescaped '>' (write '\\>')" if token == ">" else f"bad escape {token!r}"
        )

    return _ESCAPE_SEQ.sub(sub, s)


def _words(s: str, col: int) -> list[tuple[str, int]]:
    return [(m.group(), col + m.start()) for m in _WORD.finditer(s)]


def _split(s: str, col: int, sep: str) -> list[tuple[str, int]]:
    out = []
    for piece in s.split(sep):
        out.append((piece, col))
        col += len(piece) + len(sep)
    return out


def _kv(word: tuple[str, int], key: str, ln: int) -> tuple[str, int]:
    text, col = word
    if not text.startswith(key + "="):
        raise _err(ln, col, f"expected '{key}=', got {text!r}")
    return text[len(key) + 1 :], col + len(key) + 1


def _num(word: tuple[str, int], ln: int, what: str) -> float:
    v = parse_float(word[0])
    if v is None:
        raise _err(ln, word[1], f"bad number {word[0]!r} for {what}")
    return v


def _uint(word: tuple[str, int], ln: int, what: str) -> int:
    v = parse_int(word[0])
    if v is None:
        raise _err(ln, word[1], f"bad number {word[0]!r} for {what}")
    if v < 0:
        raise _err(ln, word[1], f"negative {what} {word[0]!r}")
    return v


def _choice(word: tuple[str, int], options: tuple[str, ...], ln: int, what: str, key: str) -> str:
    if word[0] not in options:
        raise _err(ln, word[1], f"unknown {what} '{key}={word[0]}'; expected one of {options}")
    return word[0]


def _parse_camera(line: str, ln: int) -> CameraObs:
    words = _words(line, 1)
    if len(words) > 5:
        raise _err(ln, words[5][1], f"trailing garbage {line[words[5][1] - 1 :]!r}")
    if len(words) < 5:
        raise _err(ln, len(line) + 1, "camera line needs id=, pos=, rot= and frame=")
    cam_id = _uint(_kv(words[1], "id", ln), ln, "camera id")
    pos, rot = _split(*_kv(words[2], "pos", ln), ","), _split(*_kv(words[3], "rot", ln), ",")
    if len(pos) != 3:
        raise _err(ln, words[2][1], f"pos needs 3 numbers (x,y,z), got {len(pos)} in {words[2][0]!r}")
    if len(rot) != 4:
        raise _err(
            ln, words[3][1], f"quaternion needs 4 numbers (w,x,y,z), got {len(rot)} in {words[3][0]!r}"
        )
    frame_value, frame_col = _kv(words[4], "frame", ln)
    frame = _split(frame_value, frame_col, ",") if frame_value else []
    return _build(
        ln, 1, "camera", CameraObs, cam_id,
        tuple(_num(w, ln, "camera pos") for w in pos),
        tuple(_num(w, ln, "camera rot") for w in rot),
        tuple(_uint(w, ln, "frame token") for w in frame),
    )  # fmt: skip


def _parse_obs(lines: list[str], i: int, tag: _Tag) -> tuple[Observation, int]:
    """The observation opened on ``lines[i]``; returns it and the index of the next line."""
    ln = i + 1
    step = _uint(_attrs(tag, ln, ("step",))["step"], ln, "step")
    if tag.end < len(lines[i]):
        raise _err(ln, tag.end + 1, f"trailing garbage {lines[i][tag.end :]!r}")
    cameras: list[CameraObs] = []
    ego: tuple[float, ...] | None = None
    for j in range(i + 1, len(lines)):
        line = lines[j]
        if line == "</obs>":
            return _build(ln, 1, "'<obs>'", Observation, step, tuple(cameras), ego), j + 1
        if line.startswith("</obs>"):
            raise _err(j + 1, 7, f"trailing garbage {line[6:]!r}")
        if line.startswith("camera "):
            if ego is not None:
                raise _err(j + 1, 1, "'camera' after 'ego': cameras come first")
            cameras.append(_parse_camera(line, j + 1))
        elif line == "ego" or line.startswith("ego "):
            if ego is not None:
                raise _err(j + 1, 1, "second 'ego' line in one '<obs>'")
            ego = tuple(_num(w, j + 1, "ego value") for w in _words(line, 1)[1:])
        elif line.startswith("<"):
            token = line.split(" ", 1)[0]
            raise _err(j + 1, 1, f"missing close tag '</obs>' (opened at line {ln}) before {token!r}")
        else:
            token = line.split(" ", 1)[0]
            raise _err(j + 1, 1, f"unexpected {token!r} in '<obs>' (expected camera, ego or '</obs>')")
    raise _err(len(lines) + 1, 1, f"missing close tag '</obs>' (opened at line {ln}) at end of input")


def _parse_audio(line: str, ln: int, tag: _Tag) -> Audio:
    n_q_word = _attrs(tag, ln, ("n_q",))["n_q"]
    n_q = _uint(n_q_word, ln, "n_q")
    raw, col = _content(line, ln, tag)
    rows: list[list[int]] = []
    vad: list[VadEvent] = []
    expect_row = True
    for w, c in _words(raw, col):
        if vad or w.startswith("vad_"):
            m = _VAD.fullmatch(w)
            if m is None:
                raise _err(ln, c, f"expected vad_on@FRAME or vad_off@FRAME, got {w!r}")
            vad.append(VadEvent(m.group(1), int(m.group(2))))
        elif expect_row:
            if w != f"q{len(rows)}:":
                raise _err(ln, c, f"expected 'q{len(rows)}:', got {w!r}")
            rows.append([])
            expect_row = False
        elif w == "|":
            expect_row = True
        else:
            rows[-1].append(_uint((w, c), ln, "audio code"))
    if expect_row:
        raise _err(ln, col + len(raw), f"expected 'q{len(rows)}:' before '</audio>'")
    if len(rows) != n_q:
        raise _err(ln, n_q_word[1], f"'n_q={n_q}' but the audio has {len(rows)} code rows")
    return _build(ln, 1, "'<audio>'", Audio, tuple(map(tuple, rows)), tuple(vad))


def _parse_control(words: list[tuple[str, int]], ln: int, col: int) -> Control:
    if not words:
        raise _err(ln, col, "expected 'control', got nothing")
    if words[0][0] != "control":
        raise _err(ln, words[0][1], f"expected 'control', got {words[0][0]!r}")
    if len(words) != 4:
        raise _err(ln, words[0][1], f"control needs type=, value=, duration=; got {len(words) - 1} fields")
    kind = _choice(_kv(words[1], "type", ln), CONTROL_TYPES, ln, "control type", "type")
    value = _num(_kv(words[2], "value", ln), ln, "control value")
    duration = _num(_kv(words[3], "duration", ln), ln, "control duration")
    return _build(ln, words[0][1], "control", Control, kind, value, duration)


def _parse_action(line: str, ln: int, tag: _Tag) -> Action:
    _attrs(tag, ln, ())
    raw, col = _content(line, ln, tag)
    groups: list[tuple[int, list[tuple[str, int]]]] = [(col, [])]
    for w, c in _words(raw, col):
        if w == ";":
            groups.append((c, []))
        else:
            groups[-1][1].append((w, c))
    return Action(tuple(_parse_control(g, ln, c) for c, g in groups))


def _parse_line(line: str, ln: int, tag: _Tag) -> Turn:
    """Every single-line turn."""
    if tag.name == "audio":
        return _parse_audio(line, ln, tag)
    if tag.name == "action":
        return _parse_action(line, ln, tag)
    if tag.name == "interrupt_and_listen":
        _attrs(tag, ln, ())
        if tag.end < len(line):
            raise _err(ln, tag.end + 1, f"trailing garbage {line[tag.end :]!r}")
        return InterruptAndListen()
    if tag.name == "reply":
        attrs = _attrs(tag, ln, ("pitch", "rate") if tag.attrs else ())
        prosody = None if not attrs else Prosody(
            _choice(attrs["pitch"], PITCHES, ln, "prosody value", "pitch"),
            _choice(attrs["rate"], RATES, ln, "prosody value", "rate"),
        )  # fmt: skip
        raw, col = _content(line, ln, tag)
        return _build(ln, 1, "'<reply>'", Reply, _unescape(raw, ln, col), prosody)
    keys = ("lang",) if tag.name in ("text", "ipa") else ()
    attrs = _attrs(tag, ln, keys)
    lang = _choice(attrs["lang"], LANGS, ln, "language", "lang") if keys else ""
    raw, col = _content(line, ln, tag)
    if tag.name == "ipa":
        symbols = [] if raw == "" else _split(raw, col, " ")
        for s, c in symbols:
            if s == "":
                raise _err(ln, c, "empty IPA symbol (two spaces in a row?)")
        return _build(ln, 1, "'<ipa>'", Ipa, tuple(_unescape(s, ln, c) for s, c in symbols), lang)
    text = _unescape(raw, ln, col)
    if tag.name == "text":
        return _build(ln, 1, "'<text>'", Text, text, lang)
    return _build(ln, 1, f"'<{tag.name}>'", System if tag.name == "system" else Thought, text)


def parse(text: str) -> Dialogue:
    """Inverse of ``serialize``: ``parse(serialize(d)) == d`` field for field."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    turns: list[Turn] = []
    i = 0
    while i < len(lines):
        if lines[i] == "":
            i += 1
            continue
        tag = _open_tag(lines[i], i + 1)
        if tag.name == "obs":
            obs, i = _parse_obs(lines, i, tag)
            turns.append(obs)
        else:
            turns.append(_parse_line(lines[i], i + 1, tag))
            i += 1
    return Dialogue(tuple(turns))
