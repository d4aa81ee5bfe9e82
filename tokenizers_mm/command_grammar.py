"""More ways to say each command, for TRAINING only: a small grammar of English and Mandarin
phrasings per goal label, beside the spoken-command corpus's 9 train phrasings per label
(``tokenizers_mm.corpus``).

Why: a policy that hears 9 phrasings of a goal learns those 9 sentences, not the words that
carry the goal ("left", "right", "faster", "straight"...), and follows a new wording about a
quarter of the time. Language augmentation with many paraphrases is the standard remedy
(instruction-following robot policies train on templated and paraphrased instructions). The
grammar is written from general usage, and no generated phrasing equals a held-out phrasing
of the corpus (checked at import): held-out phrasings stay unseen in training. Honest caveat:
the held-out phrasings were visible in the source when this grammar was written; phrasings
nobody here has seen (``vla eval --phrasings``-style tests) are the real check.

``grammar_phrasings(label)`` -> tuple of (text, lang), deterministic, deduplicated.
"""

from __future__ import annotations

from functools import cache
from itertools import product

from tokenizers_mm.corpus import LABELS, PHRASINGS

_LANE_EN = (
    "{v} to the {s} lane", "{v} into the {s} lane", "{v} over to the {s} lane", "{v} one lane {s}",
    "{v} a lane to the {s}", "please {v} to the {s} lane", "could you {v} into the {s} lane",
    "let's {v} over to the {s}", "{v} {s} now",
)
_LANE_VERBS = ("change", "move", "switch", "shift", "merge", "pull", "slide", "get")
_LANE_EXTRA_EN = ("{s} lane please", "use the {s} lane", "i want to be in the {s} lane",
                  "we should be in the {s} lane", "lane change to the {s}", "pass on the {s} side")
_TURN_EN = (
    "turn {s}", "turn {s} here", "turn {s} at the intersection", "take the next {s}", "go {s} at the junction",
    "{s} turn please", "make a {s} at the crossing", "we need to turn {s}", "could you turn {s}",
    "head {s} at the intersection", "take a {s} at the junction", "turn {s} up ahead", "{s} here please",
    "we are going {s} at this junction",
)
_EN = {
    "speed_up": ("speed up please", "faster please", "accelerate", "increase your speed", "a bit faster",
                 "can you go faster", "hurry up", "we are late, go faster", "put your foot down", "more speed please",
                 "drive faster", "let's go faster", "pick up speed", "speed it up", "could you accelerate",
                 "you can go faster here", "get us up to speed"),
    "slow_down": ("slow down please", "slower please", "decelerate", "reduce speed", "brake a little", "ease up",
                  "not so fast", "drive slower", "let's slow down", "lower your speed", "bring the speed down",
                  "easy, slow down", "you are driving too fast", "could you slow down", "a bit slower",
                  "less speed please"),
    "keep_lane": ("keep to this lane", "stay in the lane", "don't switch lanes", "no lane changes", "stick to this lane",
                  "keep driving in this lane", "stay put in this lane", "don't move over", "keep your current lane",
                  "just stay in lane", "do not leave this lane", "this lane is fine, stay here",
                  "no need to change lanes"),
    "turn_straight": ("go straight", "straight ahead", "straight on please", "keep straight", "don't turn",
                      "continue straight", "go straight at the intersection", "no turn, straight through",
                      "cross the intersection straight", "keep going straight ahead",
                      "drive straight through the junction", "just go straight here", "straight across please",
                      "we are not turning, go straight"),
    "none": ("nice weather today", "turn on the radio", "i am hungry", "how far is it", "what is the weather like",
             "i like this car", "can you open the window", "is there traffic ahead", "let's listen to a podcast",
             "that was a long meeting", "the left side of the road looks nice", "turn up the music",
             "my phone is almost out of battery", "right, where was i"),
}
_ZH = {
    "lane_left": ("向左换道", "往左边车道开", "并到左边车道", "换到左侧", "请向左变道", "往左变一条道", "左并线",
                  "去左边那条道"),
    "lane_right": ("向右换道", "往右边车道开", "并到右边车道", "换到右侧", "请向右变道", "往右变一条道", "右并线",
                   "去右边那条道"),
    "speed_up": ("快一点", "加快速度", "开快点", "请加速", "提速", "再开快点"),
    "slow_down": ("慢一点", "放慢速度", "开慢点", "请减速", "降速", "别开那么快"),
    "keep_lane": ("不要变道", "保持这条车道", "别换车道", "一直在这条道", "继续走这条道"),
    "turn_left": ("左拐", "往左拐", "路口左拐", "请左转", "在前面左转", "到路口往左"),
    "turn_right": ("右拐", "往右拐", "路口右拐", "请右转", "在前面右转", "到路口往右"),
    "turn_straight": ("一直走", "往前直走", "路口直走", "不要转弯", "继续直行", "到路口一直开"),
    "none": ("好热啊", "放首歌", "还要多久", "今天好累", "开一下窗户", "左边的风景不错"),
}


# Chit-chat ('none'): what passengers say that is not a driving command. A head trained on a few
# dozen such lines learned them by heart and named every unfamiliar sentence 'none', commands
# included (docs/audio_policy.md), so here are hundreds, built from small-talk topics, and hard
# negatives: the command words (left, right, turn, fast, slow, lane, speed, straight, keep)
# in senses that are not about driving. Questions about the time and remarks about the song
# playing are left out on purpose: the held-out chit-chat is of those kinds.
_CHAT_TOPICS_EN = ("the game last night", "the new cafe downtown", "the weather this weekend", "that billboard",
                   "the news this morning", "my sister's wedding", "the movie we saw", "this podcast",
                   "the price of coffee", "our holiday plans", "the neighbours' dog", "that old bridge")
_CHAT_ASK_EN = ("what do you think about {t}", "have you heard about {t}", "did you see {t}",
                "remind me to tell you about {t}", "i keep thinking about {t}", "tell me more about {t}")
_CHAT_FEEL_EN = ("i am {a}", "i feel {a}", "i am getting {a}", "honestly i am {a} today", "are you {a}")
_CHAT_ADJ_EN = ("tired", "sleepy", "a bit cold", "thirsty", "bored", "a little carsick", "really happy",
                "nervous about the meeting", "hungry again", "too warm")
_CHAT_HARD_EN = (
    "i left my wallet at home", "i left my keys in the office", "we left a bit late today", "you are right about that",
    "right, that makes sense", "that is the right answer", "turn the fan down a little", "turn the heating up",
    "turn the volume down please", "can you turn off the air conditioning", "it is my turn to pay for lunch",
    "that meeting went fast", "time flies so fast", "the internet here is so slow", "it was a slow day at work",
    "the speed of this wifi is terrible", "keep the change", "keep me posted about dinner",
    "let me get this straight, you never saw it", "the lanes here are so narrow", "the left side of the menu",
    "my left shoe is too tight", "the shop on the right sells bread", "stop talking about work",
    "go ahead and tell me the story", "i could use a faster phone", "slowly but surely we get there",
    "we should speed up the project at work", "the cyclists have their own lane here",
)
_CHAT_ZH_SUBJ = ("今天", "明天", "这个周末", "昨天晚上")
_CHAT_ZH_PRED = ("好冷啊", "我想吃火锅", "你有空吗", "会下雨吗", "我要加班", "电影真好看", "我们去哪儿玩")
_CHAT_HARD_ZH = ("我把钥匙落在左边的口袋里了", "你说得对", "把空调关小一点", "把音乐声音调小", "网速太慢了",
                 "时间过得真快", "右边那家店的面包很好吃", "轮到我请客了", "直说吧", "保持联系")


def _chitchat_en() -> list[str]:
    return ([a.format(t=t) for a, t in product(_CHAT_ASK_EN, _CHAT_TOPICS_EN)]
            + [f.format(a=a) for f, a in product(_CHAT_FEEL_EN, _CHAT_ADJ_EN)] + list(_EN["none"]) + list(_CHAT_HARD_EN))


def _chitchat_zh() -> list[str]:
    return [s + p for s, p in product(_CHAT_ZH_SUBJ, _CHAT_ZH_PRED)] + list(_ZH["none"]) + list(_CHAT_HARD_ZH)


@cache
def grammar_phrasings(label: str) -> tuple[tuple[str, str], ...]:
    """(text, lang) training phrasings of ``label`` from the grammar: none of them held out, none
    already in the corpus."""
    if label not in LABELS:
        raise ValueError(f"unknown goal label {label!r}; expected one of {LABELS}")
    en: list[str] = []
    if label in ("lane_left", "lane_right"):
        side = label.split("_")[1]
        en += [t.format(v=v, s=side) for t, v in product(_LANE_EN, _LANE_VERBS)]
        en += [t.format(s=side) for t in _LANE_EXTRA_EN]
    elif label in ("turn_left", "turn_right"):
        en += [t.format(s=label.split("_")[1]) for t in _TURN_EN]
    elif label == "none":
        en += _chitchat_en()
    else:
        en += list(_EN[label])
    zh = _chitchat_zh() if label == "none" else list(_ZH.get(label, ()))
    out = [(t, "en") for t in en] + [(t, "zh") for t in zh]
    seen, kept = {(p.text, p.lang) for p in PHRASINGS}, []  # only wordings the corpus does not have
    for item in out:
        if item not in seen:
            seen.add(item)
            kept.append(item)
    return tuple(kept)


def _check_disjoint() -> None:
    heldout = {(p.text, p.lang) for p in PHRASINGS if p.heldout}
    for label in LABELS:
        leaked = heldout & set(grammar_phrasings(label))
        if leaked:
            raise RuntimeError(f"the command grammar generates held-out phrasings {sorted(leaked)}")


_check_disjoint()
