r"""The unified dialogue format: typed turns, a textual form and a token form.

One episode of talking and driving is a ``Dialogue`` of turns in time order:

* ``System(text)``; ``Thought(text)``; ``Text(text, lang)`` and ``Ipa(symbols, lang)`` (what the
  passenger said; lang "en" | "zh"); ``Reply(text, prosody)`` with optional
  ``Prosody(pitch: low|mid|high, rate: slow|normal|fast)``; ``InterruptAndListen()``;
* ``Observation(step, cameras, ego)``: ``CameraObs(camera_id, pos (x,y,z), rot (w,x,y,z),
  frame_tokens)`` per camera (pose as in ``sim.cameras``; frame tokens are opaque ids >= 0) and
  the ego state (``sim.interface.EGO_FIELDS`` order) or None;
* ``Audio(codes, vad)``: codec codes, n_q rows x T >= 1 frames, and ``VadEvent(kind, frame)``
  events ("vad_on" | "vad_off", 0 <= frame <= T, in time order; an event at frame f happens
  before frame f's codes);
* ``Action(controls)``: ``Control(type: lon|lat, value, duration > 0)``, one or more.

All are frozen dataclasses validated in ``__post_init__`` (``ValueError``; NaN/inf rejected) and
normalized to plain ``int`` / ``float`` / ``tuple``. Nothing else is normalized: ``-0.0`` stays
``-0.0`` and quaternions are kept as given, so both round trips below are exact.

Textual form: ``serialize(d) -> str``, ``parse(str) -> Dialogue``
-----------------------------------------------------------------
For logs, datasets and hand-written cases. Example::

    <system> You are the driver. </system>
    <obs step=12>
    camera id=0 pos=1.5,0.0,1.6 rot=1.0,0.0,0.0,0.0 frame=17,4,255
    ego 25.1 0.2
    </obs>
    <audio n_q=2> q0: 5 7 9 | q1: 1 2 3 vad_on@0 vad_off@2 </audio>
    <text lang=en> change to the left lane </text>
    <ipa lang=en> tʃ eɪ n dʒ </ipa>
    <thought> gap on the left </thought>
    <reply pitch=high rate=fast> ok, changing lanes </reply>
    <interrupt_and_listen>
    <action> control type=lon value=-1.25 duration=0.5 ; control type=lat value=0.02 duration=0.5 </action>

Grammar (NL = "\n"; the input's final NL may be missing; empty lines between turns are
ignored; inside camera / ego / audio / action lines a run of spaces counts as one)::

    dialogue  = { turn | NL } ;
    turn      = system | thought | text | ipa | reply | interrupt | obs | audio | action ;
    system    = "<system> " etext " </system>" NL ;
    thought   = "<thought> " etext " </thought>" NL ;
    text      = "<text lang=" lang "> " etext " </text>" NL ;
    ipa       = "<ipa lang=" lang "> " [ esym { " " esym } ] " </ipa>" NL ;
    reply     = "<reply" [ " pitch=" pitch " rate=" rate ] "> " etext " </reply>" NL ;
    interrupt = "<interrupt_and_listen>" NL ;
    obs       = "<obs step=" uint ">" NL { camera NL } [ ego NL ] "</obs>" NL ;
    camera    = "camera id=" uint " pos=" float "," float "," float
                " rot=" float "," float "," float "," float " frame=" [ uint { "," uint } ] ;
    ego       = "ego" { " " float } ;                  (no ego line: ego is None)
    audio     = "<audio n_q=" uint "> " row { " | " row } { " " vad } " </audio>" NL ;
    row       = "q" k ":" uint { " " uint } ;          (k = 0 .. n_q-1, in order)
    vad       = ( "vad_on" | "vad_off" ) "@" uint ;
    action    = "<action> " control { " ; " control } " </action>" NL ;
    control   = "control type=" ( "lon" | "lat" ) " value=" float " duration=" float ;
    lang = "en" | "zh" ;  pitch = "low" | "mid" | "high" ;  rate = "slow" | "normal" | "fast" ;
    uint  = digit { digit } ;
    float = [ "-" ] uint [ "." uint ] [ ( "e" | "E" ) [ "+" | "-" ] uint ] ;   (finite)

Floats are written with ``repr`` (the shortest string that reads back to the same double).
``etext`` / ``esym`` are escaped: ``\\`` ``\<`` ``\>`` ``\n`` ``\r`` ``\t``, ``\s`` for a space
(written only inside IPA symbols, which are space-separated) and ``\u{HEX}`` for any other
C0/C1 control character, U+2028 and U+2029; every other character (any script, combining marks,
tone letters, emoji) is written as itself, so no line of content can break. The single space
after ``<tag ...>`` and before ``</tag>`` is padding, not content: leading/trailing spaces of a
text survive. Malformed input raises ``DialogueParseError`` (a ``ValueError``):
``line L, col C: message`` quoting the offending token (1-based, columns count code points).

Token form: ``to_tokens(d, layout, ipa_index) -> ids``, ``from_tokens(ids, layout, ipa_symbol)``
--------------------------------------------------------------------------------------------------
The ids the one transformer reads, in the shared ``VocabLayout``. ``<...>`` are special tokens,
``B`` a byte of the ``text`` range (``tokenizers_mm.text``), ``I`` an id of the ``ipa`` range,
``Qk`` a code of ``audio_q{k}``::

    system    = <system> B* </system>            thought   = <thought> B* </thought>
    text      = <text> lang B* </text>           lang      = <lang=en> | <lang=zh>
    ipa       = <ipa> lang I* </ipa>             interrupt = <interrupt_and_listen>
    reply     = <reply> [ <pitch=P> <rate=R> ] B* </reply>
    obs       = <obs> num camera* [ <ego> [ num { <sep> num } ] </ego> ] </obs>     (num = step)
    camera    = <camera> num { <sep> num } </camera>   (id, x, y, z, w, qx, qy, qz, frame tokens..)
    audio     = <audio> { vad* Q0 Q1 .. Q(n_q-1) } vad* </audio>  (frame-major; n_q read off frame 0)
    vad       = <vad_on> | <vad_off>             (placed before the frame it precedes)
    action    = <action> control+ </action>      control = (<control_lon> | <control_lat>) num <sep> num
    num       = B+ : the ASCII bytes of repr(float) / str(int)

No ``<bos>`` / ``<eos>``: the sequence builder adds them. Malformed ids raise
``DialogueParseError`` as ``token I: message`` naming the offending token.

Trade-off: numbers with no natural token range (camera pose, ego state, control value and
duration, step index, frame tokens) are spelled as text bytes of their ``repr``. That is long
(a camera pose costs ~100 tokens, a frame token ~4) but exact and needs no extra vocabulary. The
policy does not learn from this spelling: it consumes poses, ego state and frames as embeddings
and actions through the binned action tokenizer. The token form exists for the text / thought /
reply / action channel and for logging, and it still round-trips exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from sim.cameras import default_rig
from tokenizers_mm import text as text_tok
from tokenizers_mm.dialogue_text import escape, parse, serialize
from tokenizers_mm.dialogue_tokens import from_tokens, to_tokens
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
)
from tokenizers_mm.vocab import VocabLayout

__all__ = [  # noqa: RUF022 (grouped: types, then functions)
    "Action", "Audio", "CameraObs", "Control", "Dialogue", "DialogueParseError", "InterruptAndListen",
    "Ipa", "Observation", "Prosody", "Reply", "System", "Text", "Thought", "Turn", "VadEvent",
    "escape", "parse", "serialize", "to_tokens", "from_tokens",
    "typical_layout", "typical_dialogue", "bench_dialogue",
]  # fmt: skip

_BENCH_IPA = tuple(
    "p b t d k ɡ m n ŋ f v θ ð s z ʃ ʒ h l ɹ j w i ɪ e ɛ æ ə ʌ ɑ ɔ o ʊ u "  # noqa: SIM905
    "tʃ dʒ eɪ aɪ ɔɪ aʊ oʊ ɚ ˈ ˌ ɕ tɕʰ ʈʂ ˥ ˧˥ ˨˩˦ ˥˩".split()
)


def typical_layout() -> VocabLayout:
    """A vocabulary like the real one: ~50 IPA symbols, 4 codebooks of 1024 codes."""
    return VocabLayout(ipa_symbols=_BENCH_IPA, audio_codebooks=4, audio_codebook_size=1024)


def typical_dialogue(steps: int = 4) -> Dialogue:
    """A few seconds of a drive: per step a 6-camera observation (16 frame tokens each) and
    one second of 4-level codec audio; then the passenger's command, thought, reply, action."""
    rig = default_rig()
    turns: list[Turn] = [System("You are the driver. Follow the passenger's requests safely and smoothly.")]
    for step in range(steps):
        cams = tuple(
            CameraObs(
                k, spec.position, spec.rotation, tuple((step * 97 + k * 31 + i * 7) % 1024 for i in range(16))
            )
            for k, spec in enumerate(rig)
        )
        ego = tuple(math.sin(step + i) * 10 for i in range(13))
        turns.append(Observation(step, cams, ego))
        codes = tuple(tuple((step * 13 + q * 101 + t * 17) % 1024 for t in range(75)) for q in range(4))
        turns.append(Audio(codes, (VadEvent("vad_on", 3), VadEvent("vad_off", 70))))
    ipa = ("tʃ", "eɪ", "n", "dʒ", "t", "ə", "ð", "ə", "l", "ɛ", "f", "t", "l", "eɪ", "n")
    turns += [
        Text("change to the left lane please", "en"),
        Ipa(ipa, "en"),
        Thought("the left lane is free for 40 m behind and ahead; signal, then merge gently"),
        Reply("ok, changing to the left lane", Prosody("mid", "normal")),
        Action(tuple(Control("lon" if i % 2 else "lat", 0.25 * i - 1.0, 0.1) for i in range(10))),
    ]
    return Dialogue(tuple(turns))


def _rate(fn: Callable[[], Any], units: int, min_time: float) -> float:
    """Units per second of ``fn``, timed over at least ``min_time`` seconds."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time or calls == 0:
        fn()
        calls += 1
    return units * calls / elapsed


def bench_dialogue(min_time: float = 0.3) -> dict[str, float]:
    """Throughput on ``typical_dialogue()``: tokens/s of text encode, to_tokens, from_tokens;
    characters/s of serialize and parse. For ``vla bench tokenizers``; not a test."""
    layout, d = typical_layout(), typical_dialogue()
    ids = to_tokens(d, layout)
    text = serialize(d)
    texts = [t.text for t in d.turns if isinstance(t, (System, Text, Thought, Reply))]
    n_bytes = sum(len(s.encode("utf-8")) for s in texts)
    return {
        "dialogue_tokens": float(len(ids)),
        "dialogue_chars": float(len(text)),
        "text_encode_tokens_per_s": _rate(
            lambda: [text_tok.encode(s, layout) for s in texts], n_bytes, min_time
        ),
        "to_tokens_tokens_per_s": _rate(lambda: to_tokens(d, layout), len(ids), min_time),
        "from_tokens_tokens_per_s": _rate(lambda: from_tokens(ids, layout), len(ids), min_time),
        "serialize_chars_per_s": _rate(lambda: serialize(d), len(text), min_time),
        "parse_chars_per_s": _rate(lambda: parse(text), len(text), min_time),
    }
