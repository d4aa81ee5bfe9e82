"""Training samples from recorded episodes: one sample per visited state, labelled with the
expert's action chunk from that state on (the DAgger aggregate and plain BC data alike).

A sample at step t of an episode holds the policy's inputs at s_t (``vla.inputs``) and the
targets: the expert's own plan from s_t (``Episode.expert_plans``) when recorded, else
``expert_actions[t : t + H]`` (the same thing when the expert drove), encoded as bins + residuals by the policy's action
tokenizer; steps past the episode's end are masked. A ``plan`` policy (``PolicyConfig.action``)
is labelled with the expert's plan from s_t instead (``sim.plan.plan_labels``: where the expert
went in the next 2 s, from the recorded trajectory while it executed its own clean actions, else
from ``Episode.expert_futures``); unknown waypoints are masked and states with no known first
waypoint (inside a DART burst, unlabelled rollout states) are not samples. Frames stay in per-episode arrays and are
gathered per batch, so adding an episode never copies the others.

Command augmentation (``augment_commands`` = p): the expert's labels depend on the goal, not
on how the passenger worded it, so with probability p a training sample hears another
``train``-split phrasing of its goal (``vla.speech_commands``), drawn from numpy's global RNG
(saved in every checkpoint, so resume stays exact). A recorded episode carries one phrasing;
without this a policy trained on a few dozen episodes hears 2-4 of each goal's 9 train
phrasings and cannot follow the held-out ones. Held-out phrasings are never used. With
``command_grammar`` half of those swaps draw from ``tokenizers_mm.command_grammar`` instead
(dozens of generated wordings per goal, English or Mandarin with equal odds).

Paraphrases (``paraphrase`` = q, ``ipa`` and ``text`` policies): each of those swaps that
drew an English corpus phrasing hears, with probability q, one of up to ``PARAPHRASES`` of its
WordNet paraphrases instead (``tokenizers_mm.thesaurus``: words and expressions replaced by
synonyms of their most frequent sense, "stay in this lane" -> "remain in this lane"), so the
policy meets many wordings of each goal made by a lexical database rather than by a person.

Phone errors (``phone_errors`` = r, ``ipa`` and ``heard`` policies): each IPA token of a
sample's command is, with probability r, replaced by a random inventory symbol (half the
time), dropped (a quarter) or followed by a random symbol (a quarter), drawn from numpy's global
RNG. Why: a ``heard`` policy trains on its ear's transcriptions of training phrasings in
training voices, which the ear heard nearly perfectly, and is tested on speech the ear hears
with phone error rates of 0.25-0.5 (``vla train-ear``'s report); without errors in training the
policy meets its first garbled command at test time.

Goal relabelling (``goal_relabel``; episodes recorded with ``Episode.goal_labels``): the
expert is a pure function of (state, goal), so each visited state also gives one sample per
OTHER highway goal, labelled with the expert's action under that goal and heard as a
train-split phrasing of it (only the chunk's first action: the expert's later actions under
that goal were never simulated, the rest is masked; a ``plan`` policy's is the whole plan, from
``Episode.goal_futures``, at the states where they were recorded). The same state under different commands
then asks for different actions, which is what teaches a policy to listen (Learning by
Cheating supervises every high-level command from each state the same way). Only states where
the ego is still in the lane it started in are relabelled: a goal's lanes count from the lane
the command was heard in, so after the expert's lane change to the left the other goals'
labels drive back ("keep your lane" means the start lane) or two lanes over, commands no
passenger gave there. With them a policy unsure of a new wording changed lane, heard "keep" in
it, drove back, and repeated (lane_left in held-out words: 0/15 on 2 of 3 seeds); without them
every label at a moved state is the episode's own goal (stay in the new lane).

Chit-chat (``chitchat`` = c; needs the command-label head, ``command_label_weight`` > 0): with
probability c a sample hears a ``none`` training phrasing ("play some music"; the grammar's too
with ``command_grammar``) instead of a command, with label ``none`` and no action target: no
action follows from chit-chat alone. A policy that hears words during the drive asks its label
head whether they are a command (``VLAPolicy.hear``) and keeps the command it had when they
are not. Episodes heard during the drive (``Episode.heard_at`` > 0) train only on the states
from then on, counted from the lane the command was heard in.

Speed balance (``balance_speed``, ``plan`` policies): within each goal label, samples whose plan
slows the car, holds its speed or speeds it up (the mean speed to the plan's last known waypoint
against the start speed, beyond +-``SPEED_CLASS_MPS``) are drawn about equally often, each class
at most ``MAX_BALANCE_REPEATS`` times as often as before. Why: the expert rarely drives far from
its goal's speed, so "slow down" said to a car already under the target (the expert speeds back
up) is a few percent of that goal's samples, and a policy that undershoots never learns to
recover (docs/drive_like_expert.md, "Slow down: the misses are on open road").
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from sim.episode import Episode
from sim.interface import EGO
from sim.plan import PLAN_FIELDS, goal_plan_labels, plan_labels
from sim.scenarios import HIGHWAY_GOAL_LABELS
from tokenizers_mm.action import ActionTokenizer
from vla.inputs import PolicyInputs, actor_forecasts, collate


RELABELLED_SCENARIOS = ("highway",)
"""Scenario families whose episodes carry the expert's labels under the other goals
(``sim.highway.EmbeddedDrivingEnv.goal_labels`` / ``goal_futures``; the junction has none):
goal relabelling uses them there and leaves other families' episodes as they are."""


@dataclass(frozen=True)
class _EpisodeArrays:
    frames: np.ndarray | None  # (T, N, H, W, 3) uint8
    ego: np.ndarray  # (T, E) float32
    actors: np.ndarray  # (T, K, A) float32
    command: np.ndarray  # (Lc,) int64
    label: str  # the goal type (selects the phrasings a sample may hear instead)
    bins: np.ndarray  # (T, H, D) int64
    residual: np.ndarray  # (T, H, D) float32
    mask: np.ndarray  # (T, H) bool
    goal_bins: np.ndarray | None = None  # (T, G, H, D) int64: the expert under each highway goal
    goal_residual: np.ndarray | None = None  # (T, G, H, D) float32
    goal_valid: np.ndarray | None = None  # (T, G) bool: a counterfactual sample exists
    goal_mask: np.ndarray | None = None  # (T, G, H) bool: its known chunk steps / waypoints
    forecast: np.ndarray | None = None  # (T, K, F, 2) float32: the actor tokens' cars later (forecast_weight > 0)
    forecast_mask: np.ndarray | None = None  # (T, K, F) bool


def episode_arrays(ep: Episode, policy, goal_relabel: bool = False) -> _EpisodeArrays:
    """Everything the policy trains on from one episode (labels: the expert's actions)."""
    t, horizon = ep.num_steps, policy.config.horizon
    labels = ep.expert_actions
    if t and not np.all(np.isfinite(labels)):
        raise ValueError(f"episode seed {ep.seed} has steps without expert labels; record with expert queries")
    if policy.config.action == "plan":
        chunks = plan_labels(ep.ego, ep.actions, labels, ep.expert_futures, horizon)
        mask = np.isfinite(chunks).all(-1)
        mask &= np.cumprod(mask, axis=1).astype(bool)  # a plan's known waypoints are a prefix
        chunks = np.where(np.isfinite(chunks), chunks, 0.0)
    elif ep.expert_plans is not None and horizon > 1:
        # The expert's own plan from each state (a policy drove): see Episode.expert_plans.
        if ep.expert_plans.shape[1] < horizon:
            raise ValueError(f"episode seed {ep.seed} has expert plans of {ep.expert_plans.shape[1]} steps, "
                             f"the policy's horizon is {horizon}; record with plan_horizon >= {horizon}")
        chunks = np.array(ep.expert_plans[:, :horizon], dtype=np.float64)
        mask = np.isfinite(chunks).all(-1)
        if t and not mask[:, 0].all():
            raise ValueError(f"episode seed {ep.seed} has expert plans without their first action")
        for h in range(1, horizon):  # past a plan's end repeat its last action (masked, like chunk)
            chunks[~mask[:, h], h] = chunks[~mask[:, h], h - 1]
    elif t:
        if horizon > 1 and ep.policy != "expert" and not np.allclose(ep.actions, labels):
            warnings.warn(f"episode seed {ep.seed} was driven by {ep.policy!r} and has no expert plans: its "
                          "action chunks are the expert's answers to the states that policy drove into "
                          "(record with vla collect --plan-horizon)", stacklevel=2)
        chunks, mask = ActionTokenizer.chunk(labels, horizon)
    else:
        chunks, mask = np.zeros((0, horizon, 2)), np.zeros((0, horizon), bool)
    bins, residual = policy.action_tokenizer.encode(chunks) if t else (
        np.zeros(chunks.shape, np.int64), np.zeros(chunks.shape, np.float32))
    goal_bins = goal_residual = goal_valid = goal_mask = None
    if goal_relabel and policy.config.action == "plan" and t and ep.scenario in RELABELLED_SCENARIOS:
        if ep.goal_futures is None:
            raise ValueError(f"episode seed {ep.seed} has no goal futures; a plan policy's goal relabelling needs "
                             "episodes recorded with goal labels and a plan horizon (vla dagger --goal-relabel "
                             "--action plan records them)")
        per_goal = goal_plan_labels(ep.ego[:t + 1], ep.goal_futures, horizon)  # (T, G, H, 2)
        goal_mask = np.isfinite(per_goal).all(-1)
        goal_mask &= np.cumprod(goal_mask, axis=-1).astype(bool)
        goal_valid = goal_mask[:, :, 0] & (np.array(HIGHWAY_GOAL_LABELS) != ep.goal.label)[None]
        goal_bins, goal_residual = policy.action_tokenizer.encode(np.where(np.isfinite(per_goal), per_goal, 0.0))
        goal_bins, goal_residual = goal_bins.astype(np.int64), goal_residual.astype(np.float32)
    elif goal_relabel and ep.goal_labels is not None and t:  # the dataset turns it off for command "none"
        per_goal = ep.goal_labels.astype(np.float64)  # (T, G, 2)
        goal_valid = np.isfinite(per_goal).all(-1) & (np.array(HIGHWAY_GOAL_LABELS) != ep.goal.label)[None]
        first = np.where(np.isfinite(per_goal), per_goal, 0.0)
        goal_bins, goal_residual = policy.action_tokenizer.encode(np.repeat(first[:, :, None], horizon, axis=2))
        goal_bins, goal_residual = goal_bins.astype(np.int64), goal_residual.astype(np.float32)
        goal_mask = np.zeros((*goal_valid.shape, horizon), dtype=bool)
        goal_mask[..., 0] = True  # only the first action: the expert's later ones were never simulated
    # A command heard during the drive (ep.heard_at > 0) labels the states from then on only:
    # the earlier ones were driven under the command it replaced, whose words are not kept.
    heard = int(ep.heard_at)
    start_lane = float(ep.ego[heard, EGO["lane_id"]])
    if heard:
        mask = mask.copy()
        mask[:heard] = False
    if goal_valid is not None:  # only where the ego is still in the lane the command was heard in
        lanes = ep.ego[: len(goal_valid), EGO["lane_id"]]
        goal_valid = goal_valid & (lanes == start_lane)[:, None]
        goal_valid[:heard] = False
    ego, actors = policy.observation.episode(ep.ego[:t], ep.actors[:t], start_lane, route=ep.route)
    forecast = forecast_mask = None
    if policy.config.forecast_weight > 0:
        forecast, forecast_mask = actor_forecasts(ep.ego, ep.actors, policy.observation.actors, t)
    frames = None
    if policy.config.cameras:
        if ep.frames is None:
            raise ValueError(f"episode seed {ep.seed} has no camera frames but the policy reads cameras")
        frames = ep.frames
    return _EpisodeArrays(
        frames=frames,
        ego=ego,
        actors=actors,
        forecast=forecast,
        forecast_mask=forecast_mask,
        command=policy.encode_command(ep.goal.command, ep.goal.lang, seed=ep.seed),
        label=ep.goal.label,
        goal_bins=goal_bins,
        goal_residual=goal_residual,
        goal_valid=goal_valid,
        goal_mask=goal_mask,
        bins=bins.astype(np.int64),
        residual=residual.astype(np.float32),
        mask=mask.astype(bool),
    )


PARAPHRASES = 16
"""Paraphrases per English training phrasing (``paraphrase`` > 0), made once per dataset."""

AUDIO_RENDITIONS = 4
"""Renditions (voice, rate, pitch, noise) of each train phrasing an audio policy's samples may
hear instead of their episode's own (which is drawn from the episode's seed)."""
AUDIO_VOICES = ("train", "wide")
"""Voice pools (``tokenizers_mm.audio_command.VOICE_SPLITS``) an audio / heard policy's training
commands are rendered in: the 4 + 2 training voices, or the 713 of ``wide`` (none of a held-out
voice's accent or variant). ``tokenizers_mm.audio_command.TRAINING_POOLS``, written out here so
that training does not import the speech stack (1.3 s) to check a flag; a test keeps them equal."""


SPEED_CLASS_MPS = 0.5
"""m/s; a plan whose mean speed to its last known waypoint is this much under (over) the start
speed slows the car (speeds it up); the speed balance's classes. 0.5 m/s over 2 s is a mean
acceleration of 0.5 m/s^2."""

MAX_BALANCE_REPEATS = 8
"""The most times the speed balance lists a sample."""


def speed_classes(tokenizer: ActionTokenizer, bins: np.ndarray, residual: np.ndarray,
                  mask: np.ndarray) -> np.ndarray:
    """(N, H, 2) plan tokens and (N, H) known-waypoint masks (a prefix) -> (N,) speed classes:
    0 slows the car, 1 holds its speed, 2 speeds it up (``SPEED_CLASS_MPS``)."""
    if len(bins) == 0:
        return np.zeros(0, dtype=np.int64)
    plans = tokenizer.decode(bins, residual)
    last = np.maximum(np.asarray(mask).sum(1) - 1, 0)
    gain = plans[np.arange(len(plans)), last, PLAN_FIELDS.index("speed_gain")]
    return np.where(gain < -SPEED_CLASS_MPS, 0, np.where(gain > SPEED_CLASS_MPS, 2, 1)).astype(np.int64)


def check_balance_speed(balance_speed: bool, action: str) -> None:
    """Refuse the speed balance (``--balance-speed``) for a policy that does not predict plans."""
    if balance_speed and action != "plan":
        raise ValueError(f"--balance-speed balances plans by their speed; this policy predicts {action!r} actions "
                         "(use --action plan)")


def balance_repeats(groups: np.ndarray) -> np.ndarray:
    """(N, 2) integer (goal label, speed class) per listed sample -> (N,) times to list each, so
    that within a label every class is drawn about as often as its most common one, up to
    ``MAX_BALANCE_REPEATS`` times."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    keys, inverse, counts = np.unique(groups, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    most = np.zeros(len(keys), dtype=np.int64)
    for label in np.unique(keys[:, 0]):
        same = keys[:, 0] == label
        most[same] = counts[same].max()
    return np.clip(np.rint(most / counts), 1, MAX_BALANCE_REPEATS).astype(np.int64)[inverse]


class DemoDataset:
    """The aggregated dataset: ``len`` samples, ``batch(indices) -> PolicyInputs``."""

    def __init__(self, policy, augment_commands: float = 0.0, goal_relabel: bool = False,
                 command_grammar: bool = False, audio_renditions: int = AUDIO_RENDITIONS,
                 phone_errors: float = 0.0, paraphrase: float = 0.0, chitchat: float = 0.0,
                 audio_voices: str = "train", balance_speed: bool = False) -> None:
        check_balance_speed(balance_speed, policy.config.action)
        self.balance_speed = bool(balance_speed)
        if audio_voices not in AUDIO_VOICES:
            raise ValueError(f"audio_voices must be one of {list(AUDIO_VOICES)}, got {audio_voices!r}")
        self.audio_voices = audio_voices
        if not 0.0 <= chitchat <= 1.0:
            raise ValueError(f"chitchat must be in [0, 1], got {chitchat}")
        if chitchat > 0 and policy.config.command_label_weight <= 0:
            raise ValueError("chitchat samples teach the command-label head to name chit-chat 'none'; this policy "
                             "has no such head (command_label_weight 0)")
        self.chitchat = float(chitchat)
        if not 0.0 <= augment_commands <= 1.0:
            raise ValueError(f"augment_commands must be in [0, 1], got {augment_commands}")
        if not 0.0 <= paraphrase <= 1.0:
            raise ValueError(f"paraphrase must be in [0, 1], got {paraphrase}")
        if paraphrase > 0 and policy.config.command not in ("ipa", "text"):
            raise ValueError(f"paraphrase is for ipa / text policies; this one hears {policy.config.command!r}")
        self.paraphrase = float(paraphrase)
        self._variants: dict[str, list[list[np.ndarray]]] = {}  # label -> per _phrasings entry, its paraphrases
        if not 0.0 <= phone_errors <= 1.0:
            raise ValueError(f"phone_errors must be in [0, 1], got {phone_errors}")
        if phone_errors > 0 and policy.config.command not in ("ipa", "heard"):
            raise ValueError(f"phone_errors is for ipa / heard policies; this one hears {policy.config.command!r}")
        self.phone_errors = float(phone_errors)
        self.policy = policy
        self.augment_commands = float(augment_commands)
        self.goal_relabel = bool(goal_relabel) and policy.config.command != "none"
        self._phrasings: dict[str, list[np.ndarray]] = {}
        self._grammar: dict[str, list[list[np.ndarray]]] = {}  # label -> per language, its phrasings
        if (self.augment_commands > 0 or self.goal_relabel or self.chitchat > 0) and policy.config.command != "none":
            from tokenizers_mm.corpus import PHRASINGS
            from tokenizers_mm.thesaurus import paraphrases

            renditions = audio_renditions if policy.config.command in ("audio", "heard") else 1
            with self._voices():  # the training commands in the training voice pool
                train = [p for p in PHRASINGS if p.split == "train"]
                grammar: dict[str, tuple[tuple[str, str], ...]] = {}  # label -> its grammar wordings (text, lang)
                if command_grammar:
                    from tokenizers_mm.command_grammar import grammar_phrasings

                    grammar = {label: grammar_phrasings(label) for label in dict.fromkeys(p.label for p in train)
                               if label != "none" or self.chitchat > 0}  # chit-chat is only drawn for chitchat samples
                total = renditions * (len(train) + sum(len(wordings) for wordings in grammar.values()))
                # a spoken policy synthesizes (and an ear transcribes) every rendition first: minutes, so shown
                bar = tqdm(total=total, desc="hearing the training phrasings", unit="clip", disable=renditions == 1,
                           leave=False)
                for p in train:
                    for k in range(renditions):  # an audio policy hears each phrasing in several voices
                        self._phrasings.setdefault(p.label, []).append(policy.encode_command(p.text, p.lang, seed=k))
                        bar.update()
                        if self.paraphrase > 0:
                            texts = paraphrases(p.text, PARAPHRASES) if p.lang == "en" else []
                            self._variants.setdefault(p.label, []).append(
                                [policy.encode_command(t, p.lang) for t in texts])
                for label, wordings in grammar.items():
                    by_lang: dict[str, list[np.ndarray]] = {}
                    for text, lang in wordings:
                        for k in range(renditions):
                            by_lang.setdefault(lang, []).append(policy.encode_command(text, lang, seed=k))
                            bar.update()
                    self._grammar[label] = list(by_lang.values())
                bar.close()
        self._episodes: list[_EpisodeArrays] = []
        self._listed = np.zeros((0, 3), dtype=np.int64)  # (episode, step, goal or -1) per listed sample
        self._groups = np.zeros((0, 2), dtype=np.int64)  # its (goal label, speed class) under balance_speed
        self._drawn: np.ndarray | None = None  # the rows drawn from (balanced), made when first needed

    @property
    def _index(self) -> np.ndarray:
        """The rows samples are drawn from: the listed ones, each repeated by the speed balance."""
        if not self.balance_speed:
            return self._listed
        if self._drawn is None:
            self._drawn = np.repeat(self._listed, balance_repeats(self._groups), axis=0)
        return self._drawn

    @contextmanager
    def _voices(self):
        """The policy renders training commands in ``audio_voices`` meanwhile (its own hearing is
        restored after: evaluation sets held-out voices)."""
        before = self.policy.hearing
        self.policy.hearing = replace(before, voices=self.audio_voices)
        try:
            yield
        finally:
            self.policy.hearing = before

    def add_episode(self, ep: Episode, repeats: np.ndarray | None = None) -> None:
        """Add ``ep``'s samples. ``repeats`` (``(T,)`` integers >= 1, one per step): its recorded
        sample at step t is drawn ``repeats[t]`` times as often as one not repeated (it is listed
        that many times; the goal-relabelled samples of the state are listed once). None: once each."""
        if repeats is not None:
            repeats = np.asarray(repeats)
            want = f"repeats must be {len(ep.actions)} integers >= 1 (one per step of the episode)"
            if repeats.shape != (len(ep.actions),) or not np.issubdtype(repeats.dtype, np.integer):
                raise ValueError(f"{want}, got shape {repeats.shape} {repeats.dtype}")
            if len(repeats) and repeats.min() < 1:
                raise ValueError(f"{want}, got a minimum of {repeats.min()}")
        with self._voices():
            arrays = episode_arrays(ep, self.policy, self.goal_relabel)
        e = len(self._episodes)
        self._episodes.append(arrays)
        steps = np.flatnonzero(arrays.mask[:, 0]) if len(arrays.mask) else np.arange(0)  # labelled states
        if repeats is not None and len(steps):
            steps = np.repeat(steps, repeats[steps])
        rows = [np.stack([np.full_like(steps, e), steps, np.full_like(steps, -1)], 1)]
        if arrays.goal_valid is not None:
            t, g = np.nonzero(arrays.goal_valid)
            rows.append(np.stack([np.full_like(t, e), t, g], 1))
        self._listed = np.concatenate([self._listed, *rows])
        if self.balance_speed:
            from tokenizers_mm.corpus import LABELS

            tok = self.policy.action_tokenizer
            groups = [np.stack([np.full_like(steps, LABELS.index(arrays.label)),
                                speed_classes(tok, arrays.bins[steps], arrays.residual[steps], arrays.mask[steps])], 1)]
            if arrays.goal_valid is not None:
                labels = np.array([LABELS.index(label) for label in HIGHWAY_GOAL_LABELS])[g]
                groups.append(np.stack([labels, speed_classes(tok, arrays.goal_bins[t, g], arrays.goal_residual[t, g],
                                                              arrays.goal_mask[t, g])], 1))
            self._groups = np.concatenate([self._groups, *groups])
            self._drawn = None

    def plain_view(self) -> "DemoDataset":
        """The recorded samples (no goal-relabelled ones), each heard with its recorded command:
        no phrasing swaps, chit-chat or phone errors. Shares this dataset's episode arrays, so
        it costs no copy; episodes added here later are not in it."""
        plain = DemoDataset(self.policy, audio_voices=self.audio_voices)
        plain._episodes = self._episodes
        plain._listed = self._listed[self._listed[:, 2] < 0]
        return plain

    @property
    def counterfactual_samples(self) -> int:
        """Samples labelled by the expert under another goal than the episode's."""
        return int((self._listed[:, 2] >= 0).sum())

    def __len__(self) -> int:
        return int(len(self._index))

    @property
    def episodes(self) -> int:
        return len(self._episodes)

    def select(self, batch: PolicyInputs, positions: np.ndarray) -> PolicyInputs:
        """Rows ``positions`` of a ``batch`` (data-parallel training: a rank's part of the whole
        batch, augmented as one process would have; ``vla.train_loop``)."""
        return batch.select(positions)

    def _with_phone_errors(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` with each IPA token substituted / dropped / followed by a random IPA token with
        probability ``phone_errors`` (module docstring); other ids are kept as they are."""
        lo, hi = self.policy.layout.ranges["ipa"]
        out: list[int] = []
        for token in np.asarray(ids).tolist():
            if not lo <= token < hi or np.random.random() >= self.phone_errors:
                out.append(token)
                continue
            kind = np.random.random()
            if kind < 0.5:
                out.append(int(np.random.randint(lo, hi)))
            elif kind >= 0.75:
                out += [token, int(np.random.randint(lo, hi))]
        return np.asarray(out, dtype=np.int64)

    def batch(self, indices: np.ndarray) -> PolicyInputs:
        rows = self._index[np.asarray(indices, dtype=np.int64)]
        eps = [self._episodes[e] for e in rows[:, 0]]
        steps = rows[:, 1]
        pad = self.policy.layout.special("<pad>")
        goals = rows[:, 2]
        commands = [ep.command for ep in eps]
        if self._phrasings:
            swap = (np.random.random(len(eps)) < self.augment_commands) | (goals >= 0)
            for i in np.flatnonzero(swap):
                label = eps[i].label if goals[i] < 0 else HIGHWAY_GOAL_LABELS[goals[i]]
                options = self._phrasings.get(label)
                grammar = self._grammar.get(label)
                variants = self._variants.get(label, [])  # aligned with the corpus options
                if grammar and np.random.random() < 0.5:  # a grammar phrasing, its language drawn first
                    options, variants = grammar[np.random.randint(len(grammar))], []
                if options:
                    j = np.random.randint(len(options))
                    commands[i] = options[j]
                    if j < len(variants) and variants[j] and np.random.random() < self.paraphrase:
                        commands[i] = variants[j][np.random.randint(len(variants[j]))]
        chat = np.zeros(len(eps), dtype=bool)
        if self.chitchat > 0:  # chit-chat instead: only the label head learns from it ('none')
            chat = np.random.random(len(eps)) < self.chitchat
            for i in np.flatnonzero(chat):
                options, grammar = self._phrasings["none"], self._grammar.get("none")
                if grammar and np.random.random() < 0.5:
                    options = grammar[np.random.randint(len(grammar))]
                commands[i] = options[np.random.randint(len(options))]
        if self.phone_errors > 0:
            commands = [self._with_phone_errors(c) for c in commands]
        bins, residual, mask = [], [], []
        for ep, s, g, c in zip(eps, steps, goals, chat):
            if g < 0:
                bins.append(ep.bins[s]), residual.append(ep.residual[s]), mask.append(ep.mask[s])
            else:  # the expert under goal g (see goal_mask)
                bins.append(ep.goal_bins[s, g]), residual.append(ep.goal_residual[s, g])
                mask.append(ep.goal_mask[s, g])
            if c:  # no action is right for chit-chat alone: the policy keeps the command it had
                mask[-1] = np.zeros_like(mask[-1])
        frames = [ep.frames[s] for ep, s in zip(eps, steps)] if self.policy.config.cameras else None
        forecast = forecast_mask = None
        if self.policy.config.forecast_weight > 0:
            forecast = [ep.forecast[s] for ep, s in zip(eps, steps)]
            forecast_mask = [ep.forecast_mask[s] for ep, s in zip(eps, steps)]
        heard = None
        if self.policy.config.command_label_weight > 0:  # the label of the command each sample hears
            from tokenizers_mm.corpus import LABELS

            heard = [LABELS.index("none" if c else HIGHWAY_GOAL_LABELS[g] if g >= 0 else ep.label)
                     for ep, g, c in zip(eps, goals, chat)]
        return collate([ep.ego[s] for ep, s in zip(eps, steps)], [ep.actors[s] for ep, s in zip(eps, steps)],
                       commands, pad, self.policy.config.command_ids_max, frames=frames,
                       action_bins=bins, action_residual=residual, action_mask=mask,
                       actor_future=forecast, actor_future_mask=forecast_mask, command_label=heard)


def open_loop_loss(policy, data: DemoDataset, indices: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """The policy's loss terms (``compute_loss``'s logs: loss, bin_ce, residual, bin_acc, ...)
    over samples ``indices`` of ``data`` (batch means weighted by batch size), in eval mode and
    without gradients; the policy's train / eval mode is restored. With a ``DemoDataset`` built
    without augmentation, every sample hears its recorded command, so two calls on the same
    indices agree.
    ``vla train bc --val-data`` compares it on training and held-out expert episodes: the gap
    says how much the policy memorizes."""
    import torch

    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("open_loop_loss: no samples")
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    sums: dict[str, float] = {}
    try:
        with torch.no_grad():
            for i in range(0, len(indices), batch_size):
                part = indices[i:i + batch_size]
                _, logs = policy.compute_loss(data.batch(part).to(device))
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(part)
    finally:
        policy.train(was_training)
    return {k: v / len(indices) for k, v in sums.items()}


def open_loop_validation(policy, data: DemoDataset, val_episodes: list, samples: int, seed: int,
                         names: tuple[str, str] = ("--val-data", "--data"), log=print):
    """``evaluate(step) -> dict`` for the training loop's ``eval_fn``: ``policy``'s open-loop
    loss terms (``open_loop_loss``) on up to ``samples`` samples of ``val_episodes`` (held-out
    expert episodes) and as many of the training data (``data.plain_view()``), drawn once and
    seeded from all of each side's episodes, both heard with their recorded commands; keys
    ``val_*`` and ``train_*``. ``names`` say in errors which option gave each side. The training
    loop restores every RNG after an evaluation, so training is the same with or without it;
    seeding here makes a diffusion head's noise the same at every evaluation. Used by
    ``vla train bc --val-data`` and ``vla dagger --val-data``."""
    def side(plain, name: str) -> tuple:  # samples from every episode: a few whole ones make a noisy figure
        if len(plain) == 0:
            raise ValueError(f"{name}: its episodes hold no labelled states")
        return plain, np.random.default_rng(seed + 1).choice(len(plain), min(samples, len(plain)), replace=False)

    if samples < 1:
        raise ValueError(f"open-loop validation needs samples >= 1, got {samples}")
    val = DemoDataset(policy, audio_voices=data.audio_voices)  # no augmentation: the recorded command and labels
    for ep in val_episodes:
        val.add_episode(ep)
    held_out, fit = side(val, names[0]), side(data.plain_view(), names[1])
    log(f"open-loop validation: {len(held_out[1])} held-out samples of {held_out[0].episodes} episodes, "
        f"{len(fit[1])} of {fit[0].episodes} training episodes")
    done: dict[int, dict[str, float]] = {}  # the last step's result is asked for twice

    def evaluate(step: int) -> dict[str, float]:
        if step not in done:
            out = {}
            for prefix, (samples_of, idx) in (("val", held_out), ("train", fit)):
                torch.manual_seed(seed)
                np.random.seed(seed)
                out.update({f"{prefix}_{k}": v for k, v in open_loop_loss(policy, samples_of, idx).items()})
            done[step] = out
        return done[step]

    return evaluate
