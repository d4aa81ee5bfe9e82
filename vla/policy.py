"""The one policy interface every training method uses, around ``vla.model.VLAModel``.

* ``compute_loss(batch)`` -> (loss, logs): bin cross-entropy + in-bin residual loss
  (``vla.losses``) on the expert's action chunk;
* ``predict_action_chunk(obs)`` -> (H, 2) physical actions for one observation;
* ``select_action(obs)`` -> (2,) the action to execute now; owns the chunk queue / temporal
  ensembling (``PolicyConfig.execution``);
* ``hear(command, lang)``: the passenger's spoken command for this episode (what the policy
  heard: IPA phonemes or text bytes of the phrasing, by ``PolicyConfig.command``);
* ``reset()``: forget the episode (queue, heard command, the lane the command was heard in) and
  reseed the policy's own sampling generator (``SAMPLING_SEED``: evaluation is reproducible);
* ``after_optimizer_step()``: training methods call it after each optimizer step (EMA update).

The action head is picked from ``vla.heads.POLICY_HEADS`` by ``PolicyConfig.head``: ``bins`` (bin tokens
plus residual, decoded with the KV cache) or ``diffusion`` (``vla.diffusion_head``: the chunk
denoised from noise; its predictions come from an EMA of the whole model's weights once trained).

A checkpoint directory holds ``model.safetensors`` (the model's weights, plus the EMA's under
``ema.`` for a diffusion policy), ``policy.json`` (PolicyConfig, vocabulary
layout, action tokenizer, camera rig, format version). ``forward`` of the model stays pure
network math; nothing here changes the simulator.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sim.atomic import atomic_output
from sim.cameras import CameraSpec, default_rig
from sim.interface import ACTION_HIGH, ACTION_LOW, ACTOR, DT, EGO, wrap_angle
from sim.gap_checks import (FollowParams, MergeParams, follow_brake, hold_lane, keep_on_road, lane_change_side,
                            merge_safe)
from sim.plan import (PLAN_DT, PLAN_HIGH, PLAN_LOW, PlanTracker, TrackerParams, blend_plans, path_error, plan_frame,
                      plan_trajectory, pose_of)
from sim.route import JUNCTION_HORIZON
from sim.scenarios import canonical_command
from sim.yield_check import (YieldParams, block_brake, crossing_conflict, crossing_speed, curve_accel, ego_path,
                             follow_accel, go_accel, junction_brake, junction_hold, launch_accel, path_block, route_leader,
                             yield_accel)
from tokenizers_mm.action import ActionTokenizer
from tokenizers_mm.corpus import LABELS
from tokenizers_mm.ipa import INVENTORY, to_ipa
from tokenizers_mm.text import encode as encode_text
from tokenizers_mm.vocab import VocabLayout
from vla.commitment import Commitment, open_road
from vla.config import SPOKEN_MODALITIES, PolicyConfig
from vla.diffusion_head import EMA
from vla.heads import POLICY_HEADS, bins_actions
from vla.inputs import OBSERVATIONS, PolicyInputs, collate
from vla.model import VLAModel

FORMAT_VERSION = 1
SAMPLING_SEED = 0
"""Seed of the policy's own generator (diffusion noise in select_action), reset every episode."""
CODEC_DIR = "codec"
"""Where a saved audio policy keeps its codec (inside the policy directory)."""
EAR_DIR = "ear"
"""Where a saved 'heard' policy keeps its ear (inside the policy directory)."""
COMMAND_CACHE_SIZE = 4096
"""Encoded commands a policy keeps (the cache is emptied when full)."""
AUDIO_SEED = 0xA0D1
"""Mixed into every rendition's seed, so audio draws never repeat another stream's."""
EMA_PREFIX = "ema."
"""Key prefix of the EMA weights in model.safetensors."""


def default_action_tokenizer(n_bins: int, action: str = "control") -> ActionTokenizer:
    """Companded (mu-law) bins over the simulator's whole action range
    (``sim.interface.ACTION_LOW/HIGH``), or for ``action == "plan"`` over the plan bounds
    (``sim.plan.PLAN_LOW/HIGH``: both plan numbers are 0 for holding speed and lane, where
    companded bins are finest).

    Bounds fitted to expert data clip the corrections DAgger labels in states the expert never
    visits (steering beyond the expert's range landed in the edge bins), so the range is the
    simulator's. Uniform bins over that range were 0.025 rad wide: highway steering fell into
    2-3 bins and a BC policy learned to drive straight and never correct; companding gives bins
    of ~0.002 rad around 0 and the residual recovers the rest."""
    if action == "plan":
        return ActionTokenizer.mulaw(PLAN_LOW, PLAN_HIGH, n_bins)
    if action != "control":
        raise ValueError(f"unknown action space {action!r}; choose 'control' or 'plan'")
    return ActionTokenizer.mulaw(ACTION_LOW, ACTION_HIGH, n_bins)


def require_control_actions(policy, what: str) -> None:
    """A clear error for methods that read a policy's chunks as raw [accel, steer] actions
    (DPO, constitution pairs, best-of-N, the offline-RL actor) when given a plan policy."""
    action = getattr(getattr(policy, "config", None), "action", "control")
    if action != "control":
        raise ValueError(f"{what} works on raw-control chunks; policy {getattr(policy, 'name', '')!r} predicts "
                         f"{action!r} (PolicyConfig.action). Train a --action control policy for it.")


def require_token_likelihood(policy, what: str) -> None:
    """A clear error for methods that need the chunk's token likelihood (DPO, the offline-RL
    transformer actor) when the policy's action head has none (the diffusion head)."""
    head = getattr(getattr(policy, "config", None), "head", "bins")
    if not POLICY_HEADS[head].likelihood:
        raise ValueError(f"{what} needs the action head's token likelihood; policy {getattr(policy, 'name', '')!r} "
                         f"has head {head!r}, which has none. Train a --head bins policy for it.")


def make_layout(config: PolicyConfig) -> VocabLayout:
    if config.command == "audio":
        return VocabLayout(ipa_symbols=INVENTORY.symbols, audio_codebooks=config.audio_n_q,
                           audio_codebook_size=config.audio_codebook_size, action_bins=(config.n_bins, config.n_bins))
    return VocabLayout(ipa_symbols=INVENTORY.symbols, action_bins=(config.n_bins, config.n_bins))


@dataclass(frozen=True)
class Hearing:
    """How the passenger sounds to an audio policy (``PolicyConfig.command == 'audio'``): the
    voice split drawn from and the background-noise levels (None: clean), one drawn per
    rendition. Training hears ``train`` voices; evaluation sets ``heldout`` voices and a level."""

    voices: str = "train"
    snrs_db: tuple[float | None, ...] | None = None
    """None: the training levels (``tokenizers_mm.audio_command.TRAIN_SNRS_DB``)."""


EVAL_HEARING = Hearing("heldout", (10.0,))
"""How evaluations (``vla eval``'s defaults, DAgger's iterations) let an audio policy hear:
voices it never trained on, at 10 dB SNR."""


def load_codec(path: str | Path):
    """The codec checkpoint of an audio policy (a one-line ValueError naming the directory)."""
    from tokenizers_mm.codec import AudioCodec

    try:
        return AudioCodec.from_pretrained_dir(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"audio codec {path}: {e}") from None




ROUTE_SETTLE_OFFSET = 0.3
ROUTE_SETTLE_HEADING = 0.05
"""m, rad: past a junction's exit (``PolicyConfig.route_exit_hold``) the wheel follows the route
until the car is within this offset of its centre line and this heading of its direction."""


EXECUTION_SETTINGS = ("tracker_jerk_long", "tracker_jerk_lat", "tracker_lookahead", "commit_margin", "yield_zone",
                      "route_steer_speed", "route_exit_hold", "merge_brake", "follow_brake", "go_zone", "yield_turn",
                      "junction_ttc", "route_follow", "junction_hold", "yield_paths", "chitchat_threshold", "go_jerk",
                      "curve_brake", "go_commit", "go_release", "commit_inside", "yield_gap", "command_readback",
                      "commit_lateral", "tracker_anticipate", "road_edge")
"""``PolicyConfig`` fields that say how a plan policy executes its plans and what it does with words
heard during the drive (``VLAPolicy.set_execution``): not what was learned, so any checkpoint can
drive with others."""


def _read_policy_meta(directory: Path) -> tuple[dict, PolicyConfig]:
    """A checkpoint's ``policy.json`` and the config in it (an audio policy's codec path made
    absolute); one ValueError naming the file and what is wrong."""
    meta_path, weights = directory / "policy.json", directory / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ValueError(f"{directory} is not a policy checkpoint (needs policy.json and model.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{meta_path}: not readable as JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
    missing = [k for k in ("config", "action_tokenizer", "vocab", "rig") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing field(s) {missing}")
    try:
        config = PolicyConfig.from_dict(meta["config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{meta_path}: field 'config': {e}") from None
    if config.command == "audio" and not Path(config.audio_codec).is_absolute():
        config = replace(config, audio_codec=str(directory / config.audio_codec))
    if config.command == "heard" and not Path(config.audio_ear).is_absolute():
        config = replace(config, audio_ear=str(directory / config.audio_ear))
    return meta, config


def read_policy_config(directory: str | Path) -> PolicyConfig:
    """The config saved with the checkpoint in ``directory``, without building the model."""
    return _read_policy_meta(Path(directory))[1]


class VLAPolicy(torch.nn.Module):
    def __init__(self, config: PolicyConfig, action_tokenizer: ActionTokenizer,
                 layout: VocabLayout | None = None, rig: tuple[CameraSpec, ...] | None = None,
                 name: str = "vla") -> None:
        super().__init__()
        if action_tokenizer.n_bins != config.n_bins or action_tokenizer.scheme == "kmeans":
            raise ValueError(f"action tokenizer has {action_tokenizer.n_bins} {action_tokenizer.scheme} "
                             f"bins; the policy needs {config.n_bins} per-dimension bins")
        self.codec = None
        if config.command == "audio":
            self.codec = load_codec(config.audio_codec)
            if self.codec.n_q < config.audio_n_q:
                raise ValueError(f"audio codec {config.audio_codec} has {self.codec.n_q} codebooks; the policy "
                                 f"reads {config.audio_n_q}")
            if config.audio_codebook_size not in (0, self.codec.codebook_size):
                raise ValueError(f"audio codec {config.audio_codec} has codebooks of {self.codec.codebook_size}, "
                                 f"the policy was built for {config.audio_codebook_size}")
            config = replace(config, audio_codebook_size=self.codec.codebook_size)
        self.ear = None
        if config.command == "heard":
            from tokenizers_mm.ear import PhoneRecognizer

            try:
                ear = PhoneRecognizer.load(config.audio_ear)
            except ValueError as e:
                raise ValueError(f"audio ear {config.audio_ear}: {e}") from None
            # kept out of the policy's submodules: training must not touch it (no weight decay,
            # no state in model.safetensors; it is saved beside the weights) and it stays on the CPU
            self.__dict__["ear"] = ear
        self.hearing = Hearing()
        self.config = config
        self.layout = layout or make_layout(config)
        self.rig = tuple(rig) if rig is not None else (
            default_rig(config.camera_width, config.camera_height) if config.cameras else ())
        self.action_tokenizer = action_tokenizer
        self.observation = OBSERVATIONS[config.observation]
        self.model = VLAModel(config, self.layout, self.rig)
        self.head = POLICY_HEADS[config.head]
        self._ema = EMA(self.model, config.ema_decay) if self.head.ema and config.ema_decay > 0 else None
        self.name = name
        self._command_cache: dict[tuple[str, str], np.ndarray] = {}
        self._generator = torch.Generator()
        self.tracker: PlanTracker | None = None
        self.commitment = Commitment(self)  # vla.commitment: holds executed plans under commit_margin
        if config.action == "plan":
            self.set_execution()
        self.reset()

    def set_execution(self, **settings: float) -> None:
        """(Re)build the plan tracker, driving with other ``EXECUTION_SETTINGS`` (``PolicyConfig``
        fields: comfort limits in m/s^3, look-ahead in s, commitment margin in nats) where given;
        recorded in the config, so a save keeps them. ValueError for a control-chunk policy or an
        unknown / bad setting."""
        if self.config.action != "plan":
            raise ValueError(f"only a plan policy has a tracker; this one predicts {self.config.action!r} chunks")
        unknown = sorted(set(settings) - set(EXECUTION_SETTINGS))
        if unknown:
            raise ValueError(f"unknown plan execution settings {unknown}; choose from {list(EXECUTION_SETTINGS)}")
        self.config = c = replace(self.config, **{k: float(v) for k, v in settings.items()})
        self.tracker = PlanTracker(TrackerParams(max_jerk_long=c.tracker_jerk_long, max_jerk_lat=c.tracker_jerk_lat,
                                                 anticipate=c.tracker_anticipate > 0,
                                                 lookahead_time=c.tracker_lookahead))
        self._yield_params = YieldParams(zone=c.yield_zone, go_zone=c.go_zone, max_turn=c.yield_turn,
                                         brake_ttc=c.junction_ttc, follow_ahead=c.route_follow, hold_speed=c.junction_hold,
                                         go_jerk=c.go_jerk if c.go_zone > 0 else 0.0, go_release=c.go_release,
                                         curve_brake=c.curve_brake, time_gap=c.yield_gap)
        self._committed_params = (replace(self._yield_params, time_gap=c.go_commit)
                                  if c.go_commit > 0 and c.go_zone > 0 else None)
        self._merge_params = MergeParams(b_safe=c.merge_brake)
        self._follow_params = FollowParams(trigger=c.follow_brake)

    # ------------------------------------------------------------------ EMA weights
    @property
    def inference_model(self) -> VLAModel:
        """The weights that predict: the EMA once it has been updated, else the model."""
        return self._ema.model if self._ema is not None and self._ema.step > 0 else self.model

    def after_optimizer_step(self) -> None:
        """Training methods call this after every optimizer step: updates the EMA, if any."""
        if self._ema is not None:
            self._ema.update(self.model)

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA's weights and update count ({} without an EMA): resume state for methods."""
        return self._ema.state_dict() if self._ema is not None else {}

    def load_ema_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self._ema is None:
            if state:
                raise ValueError(f"policy head {self.config.head!r} keeps no EMA, but EMA weights were given")
            return
        self._ema.load_state_dict(state)

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .double() move the EMA copy too
        super()._apply(fn, *args, **kwargs)
        if getattr(self, "_ema", None) is not None:
            self._ema.model._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ episode state
    def reset(self) -> None:
        self._generator.manual_seed(SAMPLING_SEED)
        self._command = np.zeros(0, dtype=np.int64)
        self._start_lane: float | None = None
        self._queue: deque = deque()  # (age, (H, 2) chunk) for ensembling / open loop
        self._plan: tuple | None = None  # (plan, its lane frame, the ego's pose then, step made)
        self._plans: list[tuple] = []  # the recent raw plans, newest first, for 'ensemble'
        self._t = 0  # steps of this episode so far
        self._actor_seen: dict[float, tuple[float, float]] = {}  # actor id -> (speed, yaw) at step _actor_seen_t
        self._actor_seen_t = -2
        self._exit_hold_until = -1  # the last step the wheel may follow the route past a junction's exit
        self._launched = False  # the go rule started the car at this junction and no rule has braked it since
        self._pending: np.ndarray | None = None  # words heard during the drive, weighed at the next decision
        self._readback_due = False  # the first command is still to be read back (command_readback)
        self.commitment.clear()
        self.last_heard = ""  # what they were: a label of the head ("none": ignored), or "command" without one

    def hear(self, command: str, lang: str = "en", seed: int = 0) -> None:
        """The passenger says ``command``; an audio policy hears the rendition drawn for
        ``seed`` (the episode's) under ``self.hearing``.

        During the drive (after the first step) the words are weighed at the next decision: a
        policy with the command-label head (``command_label_weight`` > 0) reads them at that
        state and ignores them when it gives ``none`` a probability of at least
        ``PolicyConfig.chitchat_threshold`` (chit-chat; trained with ``DemoDataset(chitchat=...)``),
        keeping the command it had. Otherwise they replace the
        old command in the sequence: the lane a lane command counts from becomes the lane the
        car is in then (as it was the start lane for the first command, and as the goal
        relabelling trained it), and the plan being executed is dropped with the plans blended
        with it, so nothing made for the old command is kept or committed to. ``last_heard``
        says what the policy made of the last words heard during the drive."""
        ids = self.encode_command(command, lang, seed)
        if self._t == 0:
            self._command = ids
            self._readback_due = self.config.command_readback > 0 and self.model.command_head is not None
        else:
            self._pending = ids

    def _weigh_pending(self, obs: dict) -> None:
        """Words heard since the last decision (``hear``): adopt them as the command unless the
        label head gives them ``none`` at least ``chitchat_threshold``."""
        ids, self._pending = self._pending, None
        self.last_heard = "command"
        if self.model.command_head is not None:
            probs = self._label_probs(obs, ids)
            label = LABELS[int(probs.argmax())]
            if float(probs[LABELS.index("none")]) >= self.config.chitchat_threshold:
                self.last_heard = "none"
                return
            self.last_heard = label if label != "none" else "command"
            ids = self._read_back(ids, probs)
        self._command, self._start_lane = ids, None  # read as if heard here: the lane is anchored now
        self._plan, self._plans = None, []
        self._queue.clear()

    def _read_back(self, ids: np.ndarray, probs: torch.Tensor) -> np.ndarray:
        """``ids`` (words heard), or the canonical command of the label the head names with at
        least ``command_readback`` probability (not ``none``), read as the policy reads commands."""
        label = LABELS[int(probs.argmax())]
        if self.config.command_readback <= 0 or label == "none" or float(probs.max()) < self.config.command_readback:
            return ids
        return self.encode_command(canonical_command(label), "en", 0)

    def _label_probs(self, obs: dict, ids: np.ndarray) -> torch.Tensor:
        """The command-label head's 9 probabilities for words ``ids`` heard at ``obs`` (the lane
        anchored where the car is), leaving the policy's command and anchor as they were."""
        old = (self._command, self._start_lane)
        self._command, self._start_lane = ids, None
        try:
            inputs = self.inputs_from_obs(obs)
        finally:
            self._command, self._start_lane = old
        with torch.no_grad():
            model = self.inference_model.eval()
            inputs = inputs.to(next(model.parameters()).device)
            return torch.softmax(model.command_head(model.action_features(inputs))[0].float(), -1).cpu()

    def chitchat_probability(self, obs: dict, words: str, lang: str = "en", seed: int = 0) -> float:
        """The probability the command-label head gives ``none`` (not a command) for ``words``
        heard at ``obs``, as the policy weighs words heard during the drive; the policy's state is
        unchanged. ValueError for a policy without the head."""
        if self.model.command_head is None:
            raise ValueError("this policy has no command-label head (command_label_weight 0); it adopts every command")
        return float(self._label_probs(obs, self.encode_command(words, lang, seed))[LABELS.index("none")])

    def encode_command(self, command: str, lang: str = "en", seed: int = 0) -> np.ndarray:
        """Vocabulary ids of a spoken command in this policy's command modality (cached). An
        audio policy synthesizes it (voice, rate, pitch, noise drawn from ``seed`` and the words
        under ``self.hearing``) and hears codec tokens + VAD events of the mixed audio."""
        spoken = self.config.command in SPOKEN_MODALITIES
        key = (command, lang, int(seed), self.hearing) if spoken else (command, lang)
        if key not in self._command_cache:
            if len(self._command_cache) >= COMMAND_CACHE_SIZE:
                self._command_cache.clear()
            if spoken:
                ids = self._render(command, lang, int(seed))
            elif self.config.command == "none":
                ids = np.zeros(0, dtype=np.int64)
            elif self.config.command == "text":
                ids = encode_text(command, self.layout)
            else:
                ids = INVENTORY.encode(to_ipa(command, lang), unknown="unk", layout=self.layout)
            self._command_cache[key] = ids[: self.config.command_ids_max]
        return self._command_cache[key]

    def _render(self, command: str, lang: str, seed: int) -> np.ndarray:
        import zlib

        from tokenizers_mm.audio_command import draw_rendition, render_command
        from tokenizers_mm.corpus import Phrasing

        words = zlib.crc32(f"{lang}:{command}".encode())
        rng = np.random.default_rng([words, seed, AUDIO_SEED])
        levels = {} if self.hearing.snrs_db is None else {"snrs": self.hearing.snrs_db}
        spec = draw_rendition(Phrasing(command, lang, "unknown", False), rng, self.hearing.voices, **levels)
        if self.ear is not None:  # 'heard': the IPA phones the ear recognizes in the mixed audio
            from tokenizers_mm.corpus import render_audio

            pcm, _ = render_audio(spec)
            heard = self.ear.transcribe(pcm.astype(np.float32) / 32768.0)
            return INVENTORY.encode(heard, unknown="unk", layout=self.layout)
        ids, _ = render_command(spec, self.codec, self.layout, self.config.audio_n_q, self.config.audio_group)
        return ids

    # ------------------------------------------------------------------ observations -> inputs
    def inputs_from_obs(self, obs: dict) -> PolicyInputs:
        ego = np.asarray(obs["ego"], dtype=np.float64)
        if self._start_lane is None:
            self._start_lane = float(ego[EGO["lane_id"]])
        frames = None
        if self.config.cameras:
            if "cameras" not in obs:
                raise ValueError("this policy reads cameras: build the env with cameras=policy.rig")
            frames = np.asarray(obs["cameras"])
        return collate([self.observation.ego_features(ego, self._start_lane, obs.get("route"), obs.get("actors"))],
                       [self.observation.actor_features(ego, np.asarray(obs["actors"], dtype=np.float64))],
                       [self._command], self.layout.special("<pad>"), self.config.command_ids_max,
                       frames=None if frames is None else [frames])

    # ------------------------------------------------------------------ the interface
    def compute_loss(self, batch: PolicyInputs) -> tuple[torch.Tensor, dict[str, float]]:
        """The head's training loss (bins: CE + residual; diffusion: noise-prediction MSE)."""
        return self.head.loss(self, batch)

    def chunk_log_prob(self, batch: PolicyInputs, residual_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) teacher-forced log pi(chunk | inputs) of the batch's target chunks and (B,) their
        valid tokens, from the action head (ValueError for a head without a likelihood)."""
        return self.head.log_prob(self, batch, residual_scale)

    def weighted_loss(self, batch: PolicyInputs, weights: torch.Tensor) -> torch.Tensor:
        """The head's likelihood loss with per-sample ``weights`` (B,)."""
        return self.head.weighted_loss(self, batch, weights)

    def chunk_logits(self, batch: PolicyInputs) -> torch.Tensor:
        """(B, H, D, n_bins) teacher-forced token logits of the head."""
        return self.head.logits(self, batch)

    @torch.inference_mode()  # not no_grad: ~15% less per-op overhead while decoding, and only numbers leave
    def predict_chunk_batch(self, inputs: PolicyInputs, temperature: float = 0.0,
                            generator: torch.Generator | None = None) -> np.ndarray:
        """(B, H, 2) physical actions for a batch of inputs (the diffusion head draws its noise
        from ``generator``, None: torch's global RNG; it ignores ``temperature``). The inputs
        move to the policy's device."""
        inputs = inputs.to(next(self.model.parameters()).device)
        return self.head.predict(self, self.inference_model, inputs, temperature, generator)

    def predict_action_chunk(self, obs: dict, temperature: float = 0.0,
                             generator: torch.Generator | None = None) -> np.ndarray:
        """(H, 2) [accel m/s^2, steer rad] for one observation; random draws come from
        ``generator`` (None: torch's global RNG; select_action passes the policy's own)."""
        self._eval()
        return self.predict_chunk_batch(self.inputs_from_obs(obs), temperature, generator)[0].astype(np.float32)

    def _eval(self) -> None:
        for model in (self.model, self.inference_model):
            if model.training:  # .eval() walks every module: not on each decision when it is a no-op
                model.eval()

    @torch.inference_mode()
    def _own_plan(self, obs: dict) -> np.ndarray:
        """``predict_action_chunk`` at temperature 0, as ``select_action`` asks it: with the bins
        head and commitment on it keeps the prefix pass, which commitment's scores then reuse for
        this observation (``vla.commitment``)."""
        if self.config.head != "bins" or self.config.commit_margin <= 0:
            return self.predict_action_chunk(obs, generator=self._generator)
        self._eval()
        device = next(self.model.parameters()).device
        inputs = self.inputs_from_obs(obs).to(device)
        model = self.inference_model
        score = self.commitment.prefix_bins() if model.thought is None else None  # weighed in the same pass
        score = None if score is None else torch.as_tensor(score, device=device)
        out = model.generate_chunk(inputs, generator=self._generator, keep_prefix=True, score=score)
        self.commitment.remember(out, score)
        return bins_actions(self, out)[0].astype(np.float32)

    def select_action(self, obs: dict,
                      plan: Callable[[dict], np.ndarray] | None = None) -> np.ndarray:
        """The action to execute now. ``plan(obs) -> (H, 2)`` replaces the policy's own chunk
        prediction when given (best-of-N picks among sampled chunks); the chunk queue and
        temporal ensembling stay here either way."""
        if plan is None:
            plan = self._own_plan
        self.commitment.clear()  # _own_plan fills it for this step's observation only
        if self._readback_due:  # the command heard before the drive, read back at its first state
            self._readback_due = False
            self._command = self._read_back(self._command, self._label_probs(obs, self._command))
        if self._pending is not None:
            self._weigh_pending(obs)
        t, self._t = self._t, self._t + 1
        if self.tracker is not None:
            return self._track(obs, plan, t)
        mode = self.config.execution
        if mode == "open_loop":
            if not self._queue:
                self._queue.extend(plan(obs))
            return self._queue.popleft()
        # the chunks still covering this step, their ages in steps
        self._queue = deque([(age + 1, c) for age, c in self._queue if age + 1 < len(c)])
        if t % self.config.replan_period == 0 or not self._queue:
            self._queue.appendleft((0, plan(obs)))
        if mode == "first":
            age, chunk = self._queue[0]
            return chunk[age]
        weights = np.array([np.exp(-self.config.decay * age) for age, _ in self._queue])
        preds = np.stack([c[age] for age, c in self._queue])
        return (weights[:, None] * preds).sum(0) / weights.sum()

    @property
    def plan_period(self) -> int:
        """Steps between two plans of a plan policy (``_track``): every ``PLAN_DT`` under
        'open_loop', else ``replan_period``."""
        return int(round(PLAN_DT / DT)) if self.config.execution == "open_loop" else self.config.replan_period

    def _track(self, obs: dict, plan: Callable[[dict], np.ndarray], t: int) -> np.ndarray:
        """A plan policy's action at step ``t`` of the episode: the tracker on the current plan,
        made in the lane frame of its moment. A new plan every ``replan_every`` steps ('first':
        tracked alone; 'ensemble': blended with the plans of the last 2 s,
        ``sim.plan.blend_plans``, weights exp(-ensemble_decay * age in steps)), or every PLAN_DT
        seconds under 'open_loop'; between two plans the tracker follows the last one."""
        ego = np.asarray(obs["ego"], dtype=np.float64)
        mode = self.config.execution
        if self._plan is None or t - self._plan[3] >= self.plan_period:
            frame, pose = plan_frame(ego), pose_of(ego)
            kept = self.commitment.kept(obs, self._plan, frame, pose, t)
            if kept is not None and self.config.commit_lateral <= 0:  # _own_plan scores it in its prefix pass
                self.commitment.expect(kept)
            new = (self.commitment.choose(obs, np.asarray(plan(obs), dtype=np.float64), kept), frame, pose, t)
            self.commitment.clear()  # it belongs to this observation only
            if mode == "ensemble":
                horizon = self.config.horizon * int(round(PLAN_DT / DT))
                self._plans = [new] + [p for p in self._plans if t - p[3] < horizon]
                blended = blend_plans([(p, f, s, (t - made) * DT) for p, f, s, made in self._plans], new[1], new[2],
                                      self.config.decay)
                new = (blended, new[1], new[2], t)
            self._plan = self._keep_on_road(obs, self._merge(obs, new))
        waypoints, frame, start, made = self._plan
        action = self.tracker.control(waypoints, frame, start, pose_of(ego), age=(t - made) * DT,
                                      steer_now=float(ego[EGO["steer"]]), accel_now=float(ego[EGO["accel_long"]]))
        path = obs.get("route_path")
        if self._route_steers(obs, ego, t):
            action = action.copy()
            action[1] = self.tracker.steer_along(pose_of(ego), np.asarray(path, dtype=np.float64))
        accels, yaw_rates = self._actor_motion(obs, t)
        if self.config.follow_brake > 0 and open_road(obs):
            brake = follow_brake(np.asarray(obs["ego"]), np.asarray(obs["actors"]), accels, self._follow_params)
            if brake is not None and brake < action[0]:
                action = action.copy()
                action[0] = brake
        return self._yield(obs, action, accels, yaw_rates, t)

    def _route_steers(self, obs: dict, ego: np.ndarray, t: int) -> bool:
        """Whether the wheel follows the route's centre line (``obs["route_path"]``) at step ``t``
        instead of the plan: on a junction's approach and inside it below ``route_steer_speed``;
        past its exit for up to ``route_exit_hold`` s after the last step steered inside it,
        until the car is settled on the centre line (``ROUTE_SETTLE_OFFSET``,
        ``ROUTE_SETTLE_HEADING``); once settled, the plan steers until the next junction."""
        c = self.config
        route, path = obs.get("route"), obs.get("route_path")
        if c.route_steer_speed <= 0 or route is None or path is None:
            self._exit_hold_until = -1
            return False
        junction = float(np.asarray(route)[0])
        if junction < JUNCTION_HORIZON:
            steers = bool(ego[EGO["speed"]] < c.route_steer_speed)
            if steers and junction <= 0.0 and c.route_exit_hold > 0:  # inside: armed for the exit
                self._exit_hold_until = t + int(round(c.route_exit_hold / DT))
            return steers
        if t <= self._exit_hold_until:
            offset, heading = path_error(pose_of(ego), np.asarray(path, dtype=np.float64))
            if abs(offset) > ROUTE_SETTLE_OFFSET or abs(heading) > ROUTE_SETTLE_HEADING:
                return True
        self._exit_hold_until = -1
        return False

    def _actor_motion(self, obs: dict, t: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Each observed actor's acceleration (m/s^2) and yaw rate (rad/s) from its speed and
        heading at the previous step (same ``id``; 0 for one not seen then), for the gap and
        yield checks; the yaw rates only with ``yield_turn`` on (None: straight lines)."""
        actors = np.asarray(obs["actors"], dtype=np.float64)
        ids, speeds, yaws = actors[:, ACTOR["id"]], actors[:, ACTOR["speed"]], actors[:, ACTOR["yaw"]]
        last = self._actor_seen if self._actor_seen_t == t - 1 else {}
        accels = np.array([(v - last[i][0]) / DT if i in last else 0.0 for i, v in zip(ids, speeds)])
        yaw_rates = None if self.config.yield_turn <= 0 else np.array(
            [wrap_angle(y - last[i][1]) / DT if i in last else 0.0 for i, y in zip(ids, yaws)])
        present = actors[:, ACTOR["present"]] > 0.5
        self._actor_seen = dict(zip(ids[present], zip(speeds[present], yaws[present])))
        self._actor_seen_t = t
        return accels, yaw_rates

    def _merge(self, obs: dict, plan: tuple) -> tuple:
        """``plan`` (plan, frame, pose, step) kept in its lane while it begins a lane change the
        merge check (``sim.gap_checks``) finds unsafe; itself otherwise, with ``merge_brake`` 0 and
        near a junction (a turn's plan ends far to one side too; the gap checks are for open road)."""
        if self.config.merge_brake <= 0 or not open_road(obs):
            return plan
        ego = np.asarray(obs["ego"], dtype=np.float64)
        side = lane_change_side(plan[0], float(ego[EGO["lane_offset"]]), self._merge_params)
        if side == 0 or merge_safe(ego, np.asarray(obs["actors"]), side, self._merge_params):
            return plan
        return (hold_lane(plan[0]), *plan[1:])

    def _keep_on_road(self, obs: dict, plan: tuple) -> tuple:
        """``plan`` (plan, frame, pose, step) with its lateral offsets between the outermost lane
        centres of the road (``PolicyConfig.road_edge``, ``sim.gap_checks.keep_on_road``); itself
        when off, near a junction, or where the backend reports no lanes."""
        lanes = obs.get("lanes")
        if self.config.road_edge <= 0 or lanes is None or not open_road(obs):
            return plan
        return (keep_on_road(plan[0], lanes, self._merge_params.lane_width), *plan[1:])

    def _yield(self, obs: dict, action: np.ndarray, accels: np.ndarray, yaw_rates: np.ndarray | None,
               t: int) -> np.ndarray:
        """``action`` with its acceleration lowered to the yield check's brake (``sim.yield_check``)
        while ``yield_zone`` is on, the car is on a junction's approach and crossing traffic
        would meet its path (the route ahead, ``obs["route_path"]``; a backend without it: the
        executed plan's); raised to the go rule's start (``go_zone``, ``sim.yield_check.go_accel``)
        when the car stands at or in a junction and going now is clear; then, with ``route_follow``
        on, capped at the expert's car-following law behind the nearest actor on the route
        (``sim.yield_check.route_leader``); otherwise ``action`` itself. The conflict test and the
        path-block test run at most once per step, shared by both. With ``go_commit`` on, a car
        the go rule has launched is tested with that time gap until a rule brakes it."""
        route = obs.get("route")
        c = self.config
        if ((c.yield_zone <= 0 and c.go_zone <= 0 and c.junction_ttc <= 0 and c.route_follow <= 0 and c.junction_hold <= 0
             and c.curve_brake <= 0) or route is None):
            self._launched = False
            return action
        junction = float(np.asarray(route)[0])
        near = JUNCTION_HORIZON if c.route_follow > 0 else max(c.yield_zone, c.go_zone)
        if not 0.0 <= junction < JUNCTION_HORIZON or junction > near:  # open road, not near
            self._launched = False
            return action
        p = self._rule_params(self._launched, junction)
        actors = np.asarray(obs["actors"], dtype=np.float64)
        ego = np.asarray(obs["ego"], dtype=np.float64)
        if obs.get("route_path") is not None:
            path = ego_path(ego, obs["route_path"])  # where the route goes through the junction
        else:
            waypoints, frame, start, made = self._plan
            times, points = plan_trajectory(waypoints, frame, start)
            path = ego_path(ego, points[times > (t - made) * DT])
        yielding = c.yield_zone > 0 and 0.0 < junction <= p.zone
        going = c.go_zone > 0 and 0.0 <= junction <= p.go_zone
        holding = c.junction_hold > 0 and 0.0 <= junction <= p.zone and float(ego[EGO["speed"]]) < c.junction_hold
        paths = obs.get("actor_paths") if c.yield_paths > 0 else None
        conflict = (crossing_conflict(ego, actors, path, p, accels, yaw_rates, paths=paths)
                    if yielding or holding or (going and junction > 0.0) else False)
        block = path_block(ego, actors, path, p) if going else None
        brake = yield_accel(ego, actors, junction, path, p, conflict=conflict) if yielding else None
        if block is not None:  # something stands or drives on our next metres: stop short of it
            stop = block_brake(ego, block, p)
            brake = stop if brake is None else min(brake, stop)
        if holding and brake is None:  # slow at or in the junction: wait where standing is clear
            brake = junction_hold(ego, actors, junction, path, p, accels, yaw_rates, conflict=conflict, paths=paths)
        if c.junction_ttc > 0:  # something we would touch soon at our speed
            stop = junction_brake(ego, actors, junction, path, p, accels, yaw_rates)
            if stop is not None:
                brake = stop if brake is None else min(brake, stop)
        accel = float(action[0])
        if brake is not None:
            accel = min(accel, brake)
            self._launched = False  # a rule stopped or slowed the car: the launch is over, the next needs the full test
        else:
            go = go_accel(ego, actors, junction, path, p, verdicts=(block, conflict)) if going else None
            if go is not None and p.go_jerk > 0:  # a throttle: ramped as the check timed it
                go = min(go, float(launch_accel(float(ego[EGO["accel_long"]]), DT, p)))
            if go is not None:
                accel = max(accel, go)
                self._launched = True
        if c.curve_brake > 0 and obs.get("route_path") is not None:  # no faster than the bend allows
            cap = curve_accel(ego, junction, obs["route_path"], p)
            if cap is not None:
                accel = min(accel, cap)
        leader = route_leader(ego, actors, path, p) if c.route_follow > 0 else None
        if leader is not None:  # never faster than the expert's car-following law behind it
            v_free = max(float(ego[EGO["speed"]]), crossing_speed(path, p))
            accel = min(accel, follow_accel(ego, leader, v_free))
        if accel == action[0]:
            return action
        out = action.copy()
        out[0] = accel
        return out

    def _rule_params(self, launched: bool, junction: float) -> YieldParams:
        """The junction rules' parameters for a step ``junction`` m before the entry (0 inside): with
        ``go_commit``'s time gap while a launch holds (``launched``, the go rule's state) or, with
        ``commit_inside``, anywhere inside the junction; else the plain ones."""
        committed = launched or (self.config.commit_inside > 0 and junction == 0.0)
        return self._committed_params if committed and self._committed_params is not None else self._yield_params

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        if self.codec is not None:  # the policy carries its codec
            self.codec.save(directory / CODEC_DIR)
            config["audio_codec"] = CODEC_DIR
        if self.ear is not None:  # ... or its ear
            self.ear.save(directory / EAR_DIR)
            config["audio_ear"] = EAR_DIR
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "config": config,
            "vocab": self.layout.to_dict(),
            "action_tokenizer": self.action_tokenizer.to_dict(),
            "rig": [c.to_dict() for c in self.rig],
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        state.update({EMA_PREFIX + k: v.detach().contiguous().cpu() for k, v in self.ema_state_dict().items()})
        with atomic_output(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        with atomic_output(directory / "policy.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False))

    @staticmethod
    def load(directory: str | Path) -> VLAPolicy:
        """The policy saved in ``directory``. A broken checkpoint (unreadable or non-JSON
        ``policy.json``, a missing or mistyped field, truncated or foreign weights, weights that
        do not fit the config) raises one ValueError naming the file and what is wrong."""
        directory = Path(directory)
        meta_path, weights = directory / "policy.json", directory / "model.safetensors"
        meta, config = _read_policy_meta(directory)
        parts = {}
        for name, build in (("action_tokenizer", ActionTokenizer.from_dict), ("vocab", VocabLayout.from_dict),
                            ("rig", lambda rig: tuple(CameraSpec.from_dict(c) for c in rig))):
            try:
                parts[name] = build(meta[name])
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                raise ValueError(f"{meta_path}: field {name!r}: {type(e).__name__}: {e}") from None
        policy = VLAPolicy(config, parts["action_tokenizer"], parts["vocab"], parts["rig"], name=str(directory))
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own SafetensorError on truncated / garbage files
            raise ValueError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        ema = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
        try:
            policy.model.load_state_dict({k: v for k, v in state.items() if not k.startswith(EMA_PREFIX)})
            policy.load_ema_state_dict(ema)
        except RuntimeError as e:  # size mismatch / missing or unexpected keys
            first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
            raise ValueError(f"{weights}: weights do not fit the config in {meta_path.name} ({first})") from None
        policy.eval()
        return policy
