"""Unified dialogue format: exact textual and token round trips, golden forms, clear errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizers_mm.dialogue import (
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
    VadEvent,
    bench_dialogue,
    from_tokens,
    parse,
    serialize,
    to_tokens,
    typical_dialogue,
    typical_layout,
)
from tokenizers_mm.vocab import VocabLayout

N_Q, CODEBOOK = 3, 16

# ------------------------------------------------------------------------------- strategies

WEIRD = [
    "",
    " ",
    "  lead",
    "trail  ",
    "<",
    ">",
    "</text>",
    "<obs step=1>",
    "\\",
    "\\n",
    "\n",
    "\r\n",
    "\t",
    "=",
    "a=b",
    " ; ",
    "|",
    "q0:",
    "vad_on@0",
    "\x00",
    "\x85",
    "\u2028",
    "\u2029",
    "\ufeff",
    "换到左车道",
    "n˥˩",
    "e\u0301",
    "👨\u200d👩\u200d👧",
    "\\u{41}",
    "\\s",
    "control type=lon",
]
chars = st.characters(codec="utf-8")
texts = st.lists(st.one_of(st.sampled_from(WEIRD), st.text(chars, max_size=8)), max_size=4).map("".join)
symbols = st.one_of(
    st.sampled_from(["tʃ", "eɪ", "n˥˩", "ɕ", "a b", "<", "\\", "\n", "˧˥", "e\u0301", " "]),
    st.text(chars, min_size=1, max_size=4),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(finite, st.sampled_from([0.0, -0.0, 1e-310, -5e-324, 1.7976931348623157e308, 0.1]))
token_ids = st.integers(0, 2**40)
langs = st.sampled_from(["en", "zh"])
quaternions = st.tuples(numbers, numbers, numbers, numbers).filter(lambda q: math.hypot(*q) > 0)

cameras = st.builds(CameraObs, st.integers(0, 2**33), st.tuples(numbers, numbers, numbers), quaternions,
                    st.lists(token_ids, max_size=5).map(tuple))  # fmt: skip
observations = st.builds(
    Observation,
    st.integers(0, 10**6),
    st.lists(cameras, max_size=3, unique_by=lambda c: c.camera_id).map(tuple),
    st.none() | st.lists(numbers, max_size=4).map(tuple),
)


@st.composite
def audios(draw: st.DrawFn) -> Audio:
    n_q, n_frames = draw(st.integers(1, N_Q)), draw(st.integers(1, 6))
    codes = tuple(tuple(draw(st.lists(st.integers(0, CODEBOOK - 1), min_size=n_frames, max_size=n_frames)))
                  for _ in range(n_q))  # fmt: skip
    events = draw(
        st.lists(st.tuples(st.sampled_from(["vad_on", "vad_off"]), st.integers(0, n_frames)), max_size=4)
    )
    vad = tuple(VadEvent(k, f) for k, f in sorted(events, key=lambda e: e[1]))
    return Audio(codes, vad)


controls = st.builds(
    Control,
    st.sampled_from(["lon", "lat"]),
    numbers,
    st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False),
)
prosodies = st.builds(
    Prosody, st.sampled_from(["low", "mid", "high"]), st.sampled_from(["slow", "normal", "fast"])
)
turns = st.one_of(
    st.builds(System, texts),
    st.builds(Thought, texts),
    st.builds(Text, texts, langs),
    st.builds(Ipa, st.lists(symbols, max_size=5).map(tuple), langs),
    st.builds(Reply, texts, st.none() | prosodies),
    st.just(InterruptAndListen()),
    observations,
    audios(),
    st.builds(Action, st.lists(controls, min_size=1, max_size=3).map(tuple)),
)
dialogues = st.builds(Dialogue, st.lists(turns, max_size=8).map(tuple))


def layout_for(d: Dialogue) -> VocabLayout:
    syms = dict.fromkeys(s for t in d.turns if isinstance(t, Ipa) for s in t.symbols)
    return VocabLayout(ipa_symbols=tuple(syms), audio_codebooks=N_Q, audio_codebook_size=CODEBOOK)


def assert_identical(a: Dialogue, b: Dialogue) -> None:
    """Equal AND with the same float bit patterns (repr tells -0.0 from 0.0)."""
    assert a == b
    assert repr(a) == repr(b)


def n_lines(d: Dialogue) -> int:
    def count(t: object) -> int:
        if isinstance(t, Observation):
            return 2 + len(t.cameras) + (t.ego is not None)
        return 1

    return sum(count(t) for t in d.turns)


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None)
@given(dialogues)
def test_text_round_trip_is_exact(d: Dialogue) -> None:
    text = serialize(d)
    assert_identical(parse(text), d)
    assert text.count("\n") == n_lines(d)  # line-oriented: no content ever breaks a line
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", text)
    assert_identical(parse(text.rstrip("\n")), d)  # final newline optional


@settings(max_examples=150, deadline=None)
@given(dialogues)
def test_token_round_trip_is_exact(d: Dialogue) -> None:
    layout = layout_for(d)
    ids = to_tokens(d, layout)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < layout.size)
    assert_identical(from_tokens(ids, layout), d)
    index = {s: i for i, s in enumerate(layout.ipa_symbols)}
    custom = to_tokens(d, layout, index.__getitem__)
    assert np.array_equal(custom, ids)
    assert_identical(from_tokens(custom, layout, layout.ipa_symbols.__getitem__), d)


def test_negative_zero_and_extreme_floats_survive() -> None:
    values = (-0.0, 5e-324, -1.7976931348623157e308, 0.1 + 0.2, 1e16, -1e-5)
    d = Dialogue((Observation(0, ego=values), Action(tuple(Control("lon", v, 0.1) for v in values))))
    for back in (parse(serialize(d)), from_tokens(to_tokens(d, layout_for(d)), layout_for(d))):
        assert_identical(back, d)
        assert math.copysign(1.0, back.turns[0].ego[0]) == -1.0


# ---------------------------------------------------------------------------------- golden

EXAMPLE = Dialogue((
    System("You are the driver."),
    Observation(12, (CameraObs(0, (1.5, 0, 1.6), (1, 0, 0, 0), (17, 4, 255)),
                     CameraObs(3, (-1.8, 0.0, 1.6), (0.0, 0.0, 0.0, 1.0))), (25.1, 0.2, -0.0)),
    Audio(((5, 7, 9), (1, 2, 3)), (VadEvent("vad_on", 0), VadEvent("vad_off", 2))),
    Text("change to the left lane", "en"),
    Text("换到左边车道\n<快点>", "zh"),
    Ipa(("tʃ", "eɪ", "n", "dʒ"), "en"),
    Ipa(("x", "w", "a", "n˥˩", "t ɕ"), "zh"),
    Thought("gap on the left; a\\b"),
    Reply("ok, changing lanes", Prosody("high", "fast")),
    Reply("  padded  "),
    InterruptAndListen(),
    Observation(13),
    Action((Control("lon", -1.25, 0.5), Control("lat", 0.02, 0.5))),
))  # fmt: skip

GOLDEN = r"""<system> You are the driver. </system>
<obs step=12>
camera id=0 pos=1.5,0.0,1.6 rot=1.0,0.0,0.0,0.0 frame=17,4,255
camera id=3 pos=-1.8,0.0,1.6 rot=0.0,0.0,0.0,1.0 frame=
ego 25.1 0.2 -0.0
</obs>
<audio n_q=2> q0: 5 7 9 | q1: 1 2 3 vad_on@0 vad_off@2 </audio>
<text lang=en> change to the left lane </text>
<text lang=zh> 换到左边车道\n\<快点\> </text>
<ipa lang=en> tʃ eɪ n dʒ </ipa>
<ipa lang=zh> x w a n˥˩ t\sɕ </ipa>
<thought> gap on the left; a\\b </thought>
<reply pitch=high rate=fast> ok, changing lanes </reply>
<reply>   padded   </reply>
<interrupt_and_listen>
<obs step=13>
</obs>
<action> control type=lon value=-1.25 duration=0.5 ; control type=lat value=0.02 duration=0.5 </action>
"""


def test_golden_serialization() -> None:
    assert serialize(EXAMPLE) == GOLDEN
    assert_identical(parse(GOLDEN), EXAMPLE)


def test_golden_tokens() -> None:
    layout = VocabLayout(audio_codebooks=2, audio_codebook_size=8)
    sp, t0 = layout.special, layout.ranges["text"][0]
    q0, q1 = layout.ranges["audio_q0"][0], layout.ranges["audio_q1"][0]

    def b(s: str) -> list[int]:
        return [t0 + x for x in s.encode()]

    d = Dialogue((Text("hi", "zh"), Audio(((1, 2), (3, 4)), (VadEvent("vad_on", 1),)),
                  Action((Control("lat", 0.5, 1.0),)), InterruptAndListen()))  # fmt: skip
    expected = [sp("<text>"), sp("<lang=zh>"), *b("hi"), sp("</text>"),
                sp("<audio>"), q0 + 1, q1 + 3, sp("<vad_on>"), q0 + 2, q1 + 4, sp("</audio>"),
                sp("<action>"), sp("<control_lat>"), *b("0.5"), sp("<sep>"), *b("1.0"), sp("</action>"),
                sp("<interrupt_and_listen>")]  # fmt: skip
    assert to_tokens(d, layout).tolist() == expected


# ----------------------------------------------------------------------------------- errors

CAM = "camera id=0 pos=1.5,0.0,1.6 rot=1.0,0.0,0.0,0.0 frame=1,2"
MALFORMED = [
    ("<obsx>\n", r"line 1, col 1: unknown tag '<obsx>'"),
    ("</obs>\n", r"line 1, col 1: unexpected close tag '</obs>'"),
    ("hello world\n", r"line 1, col 1: expected a tag, got 'hello'"),
    ("<text lang=en> hello\n", r"line 1, col 21: missing close tag '</text>'"),
    ("<obs step=1>\nego 1.0\n", r"line 3, col 1: missing close tag '</obs>' \(opened at line 1\)"),
    ("<obs step=1>\n<text lang=en> hi </text>\n", r"line 2, col 1: missing close tag '</obs>'.*'<text'"),
    ("<thought> hi </text>\n", r"line 1, col 14: mismatched close tag '</text>', expected '</thought>'"),
    (
        "<obs step=1>\ncamera id=0 pos=1.5,x,1.6 rot=1,0,0,0 frame=\n</obs>\n",
        r"line 2, col 21: bad number 'x'",
    ),
    ("<obs step=1>\nego 1.0 1..2\n</obs>\n", r"line 2, col 9: bad number '1..2' for ego value"),
    ("<action> control type=lon value=nan duration=0.5 </action>\n", r"line 1, col 33: bad number 'nan'"),
    ("<action> control type=lon value=1e999 duration=0.5 </action>\n", r"line 1, col 33: bad number '1e999'"),
    ("<audio n_q=1> q0: 1 x </audio>\n", r"line 1, col 21: bad number 'x' for audio code"),
    (
        "<obs step=1>\ncamera id=0 pos=1.5,0.0,1.6 rot=1,0,0 frame=\n</obs>\n",
        r"line 2, col 29: quaternion needs 4 numbers \(w,x,y,z\), got 3 in 'rot=1,0,0'",
    ),
    (
        "<obs step=1>\ncamera id=0 pos=1.5,0.0 rot=1,0,0,0 frame=\n</obs>\n",
        r"line 2, col 13: pos needs 3 numbers",
    ),
    (
        "<obs step=1>\ncamera id=0 pos=0,0,0 rot=0,0,0,0 frame=\n</obs>\n",
        r"line 2, col 1: invalid camera: .*zero norm",
    ),
    (
        "<action> control type=yaw value=1.0 duration=0.5 </action>\n",
        r"line 1, col 23: unknown control type 'type=yaw'",
    ),
    (
        "<action> control type=lon value=1.0 duration=0 </action>\n",
        r"line 1, col 10: invalid control: .*duration",
    ),
    (
        "<action> control type=lon value=1 duration=1 ; </action>\n",
        r"line 1, col 46: expected 'control', got nothing",
    ),
    ("<action>  </action>\n", r"line 1, col 10: expected 'control', got nothing"),
    ("<reply pitch=loud rate=fast> hi </reply>\n", r"line 1, col 14: unknown prosody value 'pitch=loud'"),
    ("<reply pitch=high rate=slowly> hi </reply>\n", r"line 1, col 24: unknown prosody value 'rate=slowly'"),
    ("<reply pitch=high> hi </reply>\n", r"line 1, col 18: missing attribute 'rate='"),
    ("<obs step=-3>\n</obs>\n", r"line 1, col 11: negative step '-3'"),
    ("<obs step=1 x=2>\n</obs>\n", r"line 1, col 13: unknown attribute 'x' in '<obs>'"),
    ("<text> hi </text>\n", r"line 1, col 6: missing attribute 'lang=' in '<text>'"),
    ("<text lang=fr> salut </text>\n", r"line 1, col 12: unknown language 'lang=fr'"),
    ("<text lang=en> hi </text> extra\n", r"line 1, col 26: trailing garbage ' extra'"),
    ("<text lang=en> hi </text>\r\n", r"line 1, col 26: trailing garbage '\\r'"),
    ("<interrupt_and_listen> now\n", r"line 1, col 23: trailing garbage ' now'"),
    ("<obs step=1>\n</obs> x\n", r"line 2, col 7: trailing garbage ' x'"),
    ("<obs step=1>\n" + CAM + " extra\n</obs>\n", r"line 2, col 59: trailing garbage 'extra'"),
    ("<text lang=en>hi </text>\n", r"line 1, col 15: expected ' ' after '<text>', got 'h'"),
    ("<text lang=en> hi</text>\n", r"line 1, col 18: expected ' ' before '</text>'"),
    ("<system> a > b </system>\n", r"line 1, col 12: unescaped '>'"),
    ("<system> a < b </system>\n", r"line 1, col 12: unescaped '<'"),
    ("<system> a \\q b </system>\n", r"line 1, col 12: bad escape '\\\\q'"),
    ("<system> \\u{d800} </system>\n", r"line 1, col 10: bad escape '\\\\u\{d800\}'"),
    ("<ipa lang=en> a  b </ipa>\n", r"line 1, col 17: empty IPA symbol"),
    ("<audio n_q=3> q0: 1 2 | q1: 3 4 </audio>\n", r"line 1, col 12: 'n_q=3' but the audio has 2 code rows"),
    ("<audio n_q=2> q0: 1 2 | q1: 3 </audio>\n", r"line 1, col 1: invalid '<audio>': .*equal length"),
    ("<audio n_q=1> q0: 1 2 vad_on@3 </audio>\n", r"line 1, col 1: invalid '<audio>': VAD frame outside"),
    ("<audio n_q=1> q0: 1 2 vad_on@1 7 </audio>\n", r"line 1, col 32: expected vad_on@FRAME .*got '7'"),
    ("<audio n_q=2> q1: 1 </audio>\n", r"line 1, col 15: expected 'q0:', got 'q1:'"),
    ("<obs step=1>\n" + CAM + "\n" + CAM + "\n</obs>\n", r"line 1, col 1: invalid '<obs>': .*unique"),
    ("<obs step=1>\nego 1.0\n" + CAM + "\n</obs>\n", r"line 3, col 1: 'camera' after 'ego'"),
    ("<obs step=1>\nlidar 1 2\n</obs>\n", r"line 2, col 1: unexpected 'lidar' in '<obs>'"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_text_names_position_and_token(text: str, message: str) -> None:
    with pytest.raises(DialogueParseError, match=message) as e:
        parse(text)
    assert isinstance(e.value, ValueError) and e.value.where.startswith("line ")


def test_malformed_tokens_name_position_and_token() -> None:
    layout = VocabLayout(ipa_symbols=("a",), audio_codebooks=2, audio_codebook_size=8)
    sp, t0 = layout.special, layout.ranges["text"][0]
    ids = to_tokens(Dialogue((Text("hi"), Action((Control("lon", 1.0, 0.5),)))), layout)
    cases = [
        (ids[:-1], r"token 14: expected '</action>', got end of input"),
        (ids[1:], r"token 0: expected the opening token of a turn, got '<lang=en>'"),
        (np.r_[t0 + ord("x"), ids], r"token 0: .*got text byte 0x78 'x'"),
        (np.r_[ids[:2], t0 + 0xFF, ids[3:]], r"token 2: invalid UTF-8 at byte 0xff"),
        (np.r_[ids[:7], t0 + ord("x"), ids[8:]], r"token 7: bad number 'x\.0' for control value"),
        ([sp("<reply>"), sp("<pitch=low>"), sp("</reply>")], r"token 2: expected a '<rate=...>'"),
        ([sp("<obs>"), sp("</obs>")], r"token 1: bad number '' for step"),
        ([sp("<ipa>"), sp("</ipa>")], r"token 1: expected '<lang=en>' or '<lang=zh>', got '</ipa>'"),
        ([sp("<audio>"), sp("</audio>")], r"token 0: invalid '<audio>': .*at least one codebook"),
        ([99999], r"token 0: .*id 99999 \(outside the vocabulary\)"),
    ]
    for bad, message in cases:
        with pytest.raises(DialogueParseError, match=message):
            from_tokens(np.asarray(bad), layout)


def test_token_encoding_errors_name_the_culprit() -> None:
    layout = VocabLayout(ipa_symbols=("a",), audio_codebooks=2, audio_codebook_size=8)
    with pytest.raises(ValueError, match=r"IPA symbol 'ʃ' is not in the vocabulary"):
        to_tokens(Dialogue((Ipa(("a", "ʃ")),)), layout)
    with pytest.raises(ValueError, match=r"index 9 outside range 'audio_q0'"):
        to_tokens(Dialogue((Audio(((9,),)),)), layout)
    with pytest.raises(ValueError, match=r"n_q=3 codebooks but the vocabulary has 2"):
        to_tokens(Dialogue((Audio(((1,), (1,), (1,))),)), layout)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: CameraObs(0, (0, 0, 0), (1, 0, 0)), "quaternion needs 4"),
        (lambda: CameraObs(0, (0, 0, 0), (0, 0, 0, 0)), "zero norm"),
        (lambda: CameraObs(0, (0, 0, math.nan), (1, 0, 0, 0)), "finite"),
        (lambda: CameraObs(0, (0, 0), (1, 0, 0, 0)), "pos needs 3"),
        (lambda: CameraObs(-1, (0, 0, 0), (1, 0, 0, 0)), "camera_id must be >= 0"),
        (lambda: CameraObs(0, (0, 0, 0), (1, 0, 0, 0), (3, -1)), "frame token must be >= 0"),
        (lambda: CameraObs(True, (0, 0, 0), (1, 0, 0, 0)), "integer"),
        (lambda: Observation(-1), "step must be >= 0"),
        (lambda: Observation(0, ego=(1.0, math.inf)), "finite"),
        (lambda: Audio(((1, 2), (3,))), "equal length"),
        (lambda: Audio(((1, -2),)), ">= 0"),
        (lambda: Audio(()), "n_q >= 1"),
        (lambda: Audio(((),)), "T >= 1"),
        (lambda: Audio(((1,),), (VadEvent("vad_on", 2),)), r"outside \[0, 1\]"),
        (lambda: Audio(((1, 2),), (VadEvent("vad_on", 2), VadEvent("vad_off", 1))), "time order"),
        (lambda: VadEvent("vad_maybe", 0), "unknown VAD event"),
        (lambda: Control("yaw", 0.0, 1.0), "unknown control type"),
        (lambda: Control("lon", math.nan, 1.0), "finite"),
        (lambda: Control("lon", math.inf, 1.0), "finite"),
        (lambda: Control("lon", 1.0, 0.0), "duration must be > 0"),
        (lambda: Control("lon", 1.0, math.inf), "finite"),
        (lambda: Action(()), "at least one"),
        (lambda: Prosody("loud", "fast"), "unknown prosody pitch"),
        (lambda: Prosody("low", "slowly"), "unknown prosody rate"),
        (lambda: Text("hi", "fr"), "unknown language"),
        (lambda: Text("a\ud800"), "lone surrogate"),
        (lambda: Ipa(("a", "")), "non-empty"),
        (lambda: Dialogue(("hello",)), "not a dialogue turn"),  # type: ignore[arg-type]
    ],
)
def test_construction_validates(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_construction_normalizes_numbers_only() -> None:
    cam = CameraObs(np.int64(2), [1, 2, 3], np.array([2.0, 0, 0, 0], dtype=np.float32), [np.uint8(7)])
    assert cam == CameraObs(2, (1.0, 2.0, 3.0), (2.0, 0.0, 0.0, 0.0), (7,))
    assert type(cam.camera_id) is int and all(type(v) is float for v in (*cam.pos, *cam.rot))
    assert cam.rot == (2.0, 0.0, 0.0, 0.0)  # not renormalized: round trips stay exact


def test_typical_dialogue_and_bench_smoke() -> None:
    d, layout = typical_dialogue(), typical_layout()
    assert_identical(parse(serialize(d)), d)
    assert_identical(from_tokens(to_tokens(d, layout), layout), d)
    result = bench_dialogue(min_time=0.0)
    assert result["dialogue_tokens"] > 1000 and all(v > 0 for v in result.values())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_inputs_fail_only_with_parse_errors(data: st.DataObject) -> None:
    """Corrupt the golden text / tokens anywhere: the result parses (and round-trips) or raises
    DialogueParseError, never another exception."""
    text = GOLDEN
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.integers(0, len(text)))
        piece = data.draw(st.sampled_from(["", "<", ">", "\\", " ", "\n", "=", ",", "-", "x", "</obs>", "1"]))
        text = text[:k] + piece + text[k + data.draw(st.integers(0, 3)) :]
    try:
        assert parse(serialize(parse(text))) == parse(text)
    except DialogueParseError:
        pass
    layout = layout_for(EXAMPLE)
    ids = to_tokens(EXAMPLE, layout).tolist()
    k = data.draw(st.integers(0, len(ids)))
    ids[k : k + data.draw(st.integers(0, 2))] = data.draw(
        st.lists(st.integers(-2, layout.size + 2), max_size=2)
    )
    try:
        d = from_tokens(ids, layout)
        assert from_tokens(to_tokens(d, layout), layout) == d
    except DialogueParseError:
        pass
