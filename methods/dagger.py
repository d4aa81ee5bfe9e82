"""Closed-loop DAgger sessions (Ross et al. 2011) with the transformer policy.

Iteration 0 is behavior cloning on expert episodes (recorded by the session, or copied from
datasets the user recorded, ``expert_data``), or a policy the user already trained
(``start_policy``): DAgger then improves that checkpoint. Iteration k >= 1 rolls out the policy of
iteration k-1 in the simulator, executing the expert's action instead with probability
``beta_k = beta0 * beta_decay^(k-1)``, queries the expert on EVERY visited state (its own
H-step plan from there, ``env.expert_plan``, labels the state's action chunk), appends
those episodes to the aggregated dataset, retrains on all of it (warm start from the previous
policy, or from scratch) and evaluates the new policy in closed loop on held-out seeds with
held-out spoken phrasings.

Run directory (everything written atomically; a kill -9 at any point and the same command
resumes where it stopped, giving the same dataset and step counts)::

    RUN/session.json                  the DaggerConfig (a resumed run must match it)
    RUN/action_tokenizer.json         the action tokenizer (uniform bins over the action limits)
    RUN/data/iter_KKK/episodes/*.h5   each iteration's episodes (append-only, crash-safe)
    RUN/iter_KKK/train/               training loop checkpoints and logs (exact resume)
    RUN/iter_KKK/policy/              the iteration's policy (model.safetensors + policy.json)
    RUN/iter_KKK/eval/                metrics.json + episodes.csv on the held-out seeds
    RUN/iter_KKK/done.json            the iteration's summary line (written last)
    RUN/iterations.jsonl              one line per finished iteration
    RUN/metrics.json                  the final policy's metrics
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.metrics import metrics_record, to_jsonable, write_episodes_csv, write_json
from sim.atomic import atomic_output
from sim.plan import plan_steps
from sim.rollout import DartNoise
from sim.scenarios import check_scenario, check_start_speed, parse_goal_bias
from sim.storage import EpisodeWriter, count_episodes, episode_paths, read_episodes
from tokenizers_mm.action import ActionTokenizer
from vla import distributed
from vla.accel import Accel
from vla.config import VAL_SAMPLES, PolicyConfig
from vla.data import AUDIO_VOICES, DemoDataset, check_balance_speed, open_loop_validation
from vla.evaluation import evaluate
from vla.parallel import RolloutSpec, make_pool
from vla.policy import EVAL_HEARING, VLAPolicy, default_action_tokenizer
from vla.train_loop import TrainConfig, train
from methods.bc import BCConfig, BCMethod

EVAL_SEED_OFFSET = 1_000_000
"""Evaluation seeds start here: never used for training data."""
MAX_REPEATS = 8
"""The most times ``disagreement_repeats`` lists one rollout state."""


@dataclass(frozen=True)
class DaggerConfig:
    scenario: str = "highway"
    """Scenario family (sim.scenarios), or several joined by commas: one policy for all of them
    (``settings``)."""
    density: str = "medium"
    """Traffic density level, or several joined by commas."""
    iterations: int = 3
    """DAgger iterations after iteration 0 (BC on expert data)."""
    expert_episodes: int = 8
    """Expert episodes recorded for iteration 0."""
    rollouts: int = 4
    """Policy rollouts (expert-labelled) added per DAgger iteration. 0: none, so every iteration
    only retrains on the expert data for ``train_steps`` more steps: DAgger's equal-compute BC
    control (the same warm-started steps, schedule and seeds, without the learner's states)."""
    eval_episodes: int = 5
    """Held-out evaluation episodes after every iteration (split over the settings)."""
    beta0: float = 0.5
    """Probability of executing the expert's action in iteration 1's rollouts."""
    beta_decay: float = 0.5
    """beta_k = beta0 * beta_decay ** (k - 1)."""
    warm_start: bool = True
    """Start each iteration's training from the previous policy (False: from scratch)."""
    train_steps: int = 300
    """Gradient steps per iteration."""
    batch_size: int = 32
    """Samples per gradient step."""
    lr: float = 1e-3
    """Peak learning rate."""
    seed: int = 0
    """Seeds training episodes (seed * 100000 + i), weights and sampling; eval seeds are
    EVAL_SEED_OFFSET + seed * 100000 + i."""
    workers: int = 2
    """Rollout processes (one simulator each)."""
    ray: str | None = None
    """Run the ``workers`` rollout workers as Ray actors instead (``vla.ray_pool``): "local" for
    a Ray runtime started here, else a cluster's address; None: local processes. The episodes
    are the same either way, so a session may resume with another value."""
    threads: int = 0
    """torch threads for each iteration's training; 0 (the default): one per rollout worker, up
    to the cores this process may use (shared among torchrun's local ranks). The workers wait
    while the policy trains, so their cores are free; on 2 cores 2 threads train the main job's
    policy 1.5x faster than 1 (2026-12-05), and as reproducibly (the training loop uses torch's
    deterministic CPU algorithms). Use 1 when other processes share the cores (a 20-40x
    slowdown of small models from oversubscription has been seen). It may change when a session
    resumes."""
    augment_commands: float = 0.5
    """Probability that a training sample hears another train-split phrasing of its goal
    (``vla.data.DemoDataset``)."""
    audio_renditions: int = 4
    """An audio policy: renditions of each training phrasing those samples may hear."""
    audio_voices: str = "train"
    """An audio / heard policy: the voice pool its training commands are rendered in
    (``vla.data.AUDIO_VOICES``: ``train`` or ``wide``)."""
    phone_errors: float = 0.0
    """An ipa / heard policy: chance that each IPA token of a training command is corrupted
    (``vla.data.DemoDataset``)."""
    command_grammar: bool = False
    """Half of those samples hear a ``tokenizers_mm.command_grammar`` phrasing instead."""
    chitchat: float = 0.0
    """Chance that a sample hears chit-chat instead, labelled ``none`` for the command-label head
    and without an action target (``vla.data.DemoDataset``)."""
    balance_speed: bool = False
    """A plan policy: within each goal, samples that slow the car, hold or speed it up are drawn
    about equally often (``vla.data.DemoDataset``'s speed balance)."""
    paraphrase: float = 0.0
    """An ipa / text policy: chance that a sample hearing an English training phrasing hears one
    of its WordNet paraphrases instead (``vla.data.DemoDataset``)."""
    label_every: int = 1
    """Simulate the expert's continuation (the chunk / plan label) at every k-th state of a
    policy rollout only; the others keep just the expert's action (a control chunk's first
    entry) and no plan label. A plan label costs 20 simulator steps per state."""
    dart: bool = False
    """Perturb the expert's execution in iteration 0 with DART bursts (``sim.rollout.DartNoise``
    defaults; the labels stay its clean actions), so BC also sees the expert recover."""
    dart_speed: float = 0.0
    """With ``dart``: chance per step of a DART speed burst (``DartNoise.speed_prob``); 0 = none."""
    rollout_goal_bias: str = ""
    """Highway commands the learner's rollouts (iterations >= 1) try first, ``LABEL=P[,...]``
    (``sim.scenarios.parse_goal_bias``): with chance P an episode is told LABEL when the traffic
    allows it, so the learner visits more of the states of a goal type it misses (its own
    under-speed states after "slow down", say). "": the usual draw. Expert data (iteration 0)
    and the evaluations are never biased."""
    rollout_start_speed: tuple[float, float] | None = None
    """The learner's highway rollouts (iterations >= 1) start our car at a speed drawn from
    [lo, hi] m/s (``EmbeddedDrivingEnv(start_speed=...)``), so it also drives, and is labelled,
    from speeds away from its targets (under the slow-down band, say) that the expert's own
    starts never reach. None: the scenario's start. Embedded simulator only; expert data
    (iteration 0) and the evaluations keep the usual start."""
    disagreement_weight: float = 0.0
    """Draw the learner's rollout states (iterations >= 1) in proportion to how far its action was
    from the expert's there (``disagreement_repeats``, in the spirit of DA-RB's critical states):
    a recorded state whose disagreement is ``x`` times the rollouts' mean is listed
    ``1 + round(w * (x - 1))`` times (at least once, at most ``MAX_REPEATS``). 0: every state once."""
    goal_relabel: bool = False
    """Record the expert's action under every highway goal at every visited state and train on
    them too, each heard as a train phrasing of that goal (``vla.data``; LbC-style). Off by
    default: in the dense study (seed 0, 50 held-out episodes) it cut collisions (0.16 -> 0.10)
    but made the policy's steps jerky (lateral jerk p95 1.3 -> 9.2; with DAgger 22.8) and did
    not improve goal success; see docs/dagger_study.md. A ``plan`` policy is relabelled with
    the expert's whole plan under each goal, simulated at every ``label_every``-th recorded
    state (``env.goal_futures``: 20 simulator steps per goal and state)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The transformer policy (with ``start_policy``: that checkpoint's config)."""
    expert_data: tuple[str, ...] = ()
    """Datasets (``vla collect``) whose first ``expert_episodes`` episodes, in order, are
    iteration 0's expert data, copied into the session; () = the session records them."""
    start_policy: str = ""
    """A checkpoint that is iteration 0's policy instead of BC on the expert data (it is
    evaluated as iteration 0, and iteration 1 warm-starts from it); "" = train BC."""
    backend: str = "embedded"
    """The simulator every episode of the session runs on (``sim.backends``)."""
    val_data: tuple[str, ...] = ()
    """Held-out expert datasets (``vla collect``, other seeds than the session's): each
    iteration's training computes the policy's open-loop loss on them and on its own training
    data (``vla.data.open_loop_validation``) at every checkpoint and at its end; the figures go
    to ``iter_k/train/eval.jsonl`` and the iteration's line (``open_loop``). Evaluating never
    changes training, so it may be added or dropped when a session resumes."""
    val_samples: int = VAL_SAMPLES
    """Samples drawn from each side of that validation."""

    def __post_init__(self) -> None:
        from sim.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"unknown simulator backend {self.backend!r}; choose one of {sorted(BACKENDS)}")
        if self.goal_relabel and self.backend != "embedded":
            raise ValueError(f"goal relabelling needs the expert under every goal, which the {self.backend} "
                             "backend does not record yet; pass --no-goal-relabel")
        settings = self.settings
        for scenario, density in settings:
            check_scenario(scenario, density)
        if len(set(settings)) != len(settings):
            raise ValueError(f"DaggerConfig lists a scenario or density twice: {self.scenario!r} x {self.density!r}")
        for name in ("expert_episodes", "eval_episodes", "train_steps", "batch_size", "workers", "label_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"DaggerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.ray is not None and not (isinstance(self.ray, str) and self.ray.strip()):
            raise ValueError(f"DaggerConfig.ray must be None, 'local' or a Ray cluster address, got {self.ray!r}")
        if self.iterations < 0 or self.rollouts < 0:
            raise ValueError("DaggerConfig.iterations and rollouts must be >= 0")
        if not (0.0 <= self.beta0 <= 1.0 and 0.0 <= self.beta_decay <= 1.0):
            raise ValueError("DaggerConfig.beta0 and beta_decay must be in [0, 1]")
        try:
            parse_goal_bias(self.rollout_goal_bias)
        except ValueError as e:
            raise ValueError(f"DaggerConfig.rollout_goal_bias (--rollout-goal-bias): {e}") from None
        if self.rollout_start_speed is not None:
            if not any(scenario == "highway" for scenario, _ in settings):
                raise ValueError("DaggerConfig.rollout_start_speed (--rollout-start-speed) is a highway option; "
                                 f"this session drives {self.scenario!r} only")
            if self.backend != "embedded":
                raise ValueError("DaggerConfig.rollout_start_speed (--rollout-start-speed) is an option of the "
                                 f"embedded simulator, not of the {self.backend} backend")
            try:
                object.__setattr__(self, "rollout_start_speed", check_start_speed(self.rollout_start_speed, "highway"))
            except ValueError as e:
                raise ValueError(f"DaggerConfig.rollout_start_speed (--rollout-start-speed): {e}") from None
        if not 0.0 <= float(self.disagreement_weight) <= MAX_REPEATS:
            raise ValueError(f"DaggerConfig.disagreement_weight (--disagreement-weight) must be in [0, {MAX_REPEATS}], "
                             f"got {self.disagreement_weight}")
        if not 0.0 <= float(self.dart_speed) <= 1.0:
            raise ValueError(f"DaggerConfig.dart_speed (--dart-speed) must be a chance per step in [0, 1], got {self.dart_speed}")
        if self.dart_speed > 0 and not self.dart:
            raise ValueError("DaggerConfig.dart_speed needs dart (--dart-speed needs --dart: speed bursts are a part of the DART recipe)")
        if isinstance(self.audio_renditions, bool) or not isinstance(self.audio_renditions, int) \
                or self.audio_renditions < 1:
            raise ValueError(f"DaggerConfig.audio_renditions must be an integer >= 1, got {self.audio_renditions!r}")
        if self.audio_voices not in AUDIO_VOICES:
            raise ValueError(f"DaggerConfig.audio_voices (--audio-voices) must be one of {list(AUDIO_VOICES)}, "
                             f"got {self.audio_voices!r}")
        if not 0.0 <= self.augment_commands <= 1.0:
            raise ValueError(f"DaggerConfig.augment_commands must be in [0, 1], got {self.augment_commands}")
        if not 0.0 <= self.phone_errors <= 1.0:
            raise ValueError(f"DaggerConfig.phone_errors must be in [0, 1], got {self.phone_errors}")
        if not 0.0 <= self.paraphrase <= 1.0:
            raise ValueError(f"DaggerConfig.paraphrase must be in [0, 1], got {self.paraphrase}")
        if not 0.0 <= self.chitchat <= 1.0:
            raise ValueError(f"DaggerConfig.chitchat must be in [0, 1], got {self.chitchat}")
        check_balance_speed(self.balance_speed, self.policy.action)
        if isinstance(self.expert_data, str) or not all(isinstance(d, str) and d for d in self.expert_data):
            raise ValueError(f"DaggerConfig.expert_data must be a list of dataset directories, got {self.expert_data!r}")
        if isinstance(self.val_data, str) or not all(isinstance(d, str) and d for d in self.val_data):
            raise ValueError(f"DaggerConfig.val_data must be a list of dataset directories, got {self.val_data!r}")
        overlap = {str(Path(d).resolve()) for d in self.val_data} & {str(Path(d).resolve()) for d in self.expert_data}
        if overlap:
            raise ValueError(f"val_data {sorted(overlap)[0]} is also expert data: held-out data must not be trained on")
        if self.val_samples < 1:
            raise ValueError(f"DaggerConfig.val_samples must be >= 1, got {self.val_samples}")
        if not self.lr > 0 or self.seed < 0:
            raise ValueError("DaggerConfig.lr must be > 0 and seed >= 0")
        if self.threads < 0:
            raise ValueError(f"DaggerConfig.threads must be >= 0 (0: one per rollout worker), got {self.threads}")

    @property
    def settings(self) -> list[tuple[str, str]]:
        """(scenario, density) pairs the session drives in: every scenario x every density. The
        i-th episode of an iteration (expert, rollout or held-out evaluation) is in setting
        i mod len(settings)."""
        return [(s.strip(), d.strip()) for s in self.scenario.split(",") for d in self.density.split(",")]

    def beta(self, k: int) -> float:
        return 1.0 if k == 0 else self.beta0 * self.beta_decay ** (k - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> DaggerConfig:
        return DaggerConfig(**{**d, "policy": PolicyConfig.from_dict(d["policy"]),
                               "expert_data": tuple(d.get("expert_data", ())), "val_data": tuple(d.get("val_data", ()))})


def disagreement_repeats(episodes: list, weight: float) -> list[np.ndarray]:
    """Per step of each of ``episodes`` (policy rollouts with the expert's action at every state),
    how many times its sample is listed (``DemoDataset.add_episode``'s ``repeats``).

    A step's disagreement is ``|accel - expert accel| / A + |steer - expert steer| / S``, with A and
    S the mean absolute differences over all the episodes' steps (so acceleration and steering
    count alike and the mean is 2); a step at ``x`` times the mean is listed
    ``clip(1 + round(weight * (x - 1)), 1, MAX_REPEATS)`` times. States where the learner did about
    what the expert would have done are listed once; those where it went its own way, more."""
    if not episodes or weight <= 0:
        return [np.ones(ep.num_steps, np.int64) for ep in episodes]
    diffs = [np.abs(np.asarray(ep.actions, np.float64) - np.asarray(ep.expert_actions, np.float64))
             for ep in episodes]
    every = np.concatenate([d.reshape(-1, 2) for d in diffs])
    if not np.isfinite(every).all():
        raise ValueError("disagreement weighting needs the expert's action at every rollout state; "
                         "an episode has NaN expert actions")
    if not len(every):
        return [np.ones(0, np.int64) for _ in episodes]
    scale = every.mean(0)
    scale = np.where(scale > 0, scale, 1.0)  # a component that never differs counts for nothing
    mean = (every / scale).sum(1).mean()
    if mean <= 0:  # the learner did what the expert would have done everywhere
        return [np.ones(ep.num_steps, np.int64) for ep in episodes]
    return [np.clip(1 + np.round(weight * ((d / scale).sum(1) / mean - 1.0)), 1, MAX_REPEATS).astype(np.int64)
            for d in diffs]


def label_horizon(policy: PolicyConfig) -> int:
    """Steps of the expert's continuation that label a visited state: the chunk's H actions,
    or the plan's last waypoint (``sim.plan.plan_steps``)."""
    return int(plan_steps(policy.horizon)[-1]) if policy.action == "plan" else policy.horizon


def rollout_spec(c: DaggerConfig, k: int, policy_dir: str, scenario: str, density: str) -> RolloutSpec:
    """How iteration k of a session with config ``c`` records its episodes in one setting
    (iteration 0: the expert, with DART bursts if ``c.dart``; later ones: ``policy_dir``
    mixed with the expert by beta_k, on the highway told the commands of
    ``c.rollout_goal_bias`` first and started at a speed from ``c.rollout_start_speed``), and
    what the expert labels on them."""
    return RolloutSpec(scenario, density, policy_dir, "train", cameras=c.policy.cameras,
                       query_expert=True, record_frames=c.policy.cameras, beta=c.beta(k), beta_seed=k,
                       plan_horizon=label_horizon(c.policy), goal_labels=c.goal_relabel,
                       goal_futures=c.goal_relabel and c.policy.action == "plan",
                       noise=DartNoise(speed_prob=c.dart_speed) if (c.dart and k == 0) else None, plan_every=c.label_every,
                       backend=c.backend,
                       goal_bias=parse_goal_bias(c.rollout_goal_bias) if (k > 0 and scenario == "highway") else (),
                       start_speed=c.rollout_start_speed if (k > 0 and scenario == "highway") else None)


class DaggerSession:
    def __init__(self, config: DaggerConfig, run_dir: str | Path, log: Callable[[str], None] = print,
                 accel: Accel = Accel()) -> None:
        """``accel`` (``vla.accel``): where and how the iterations' retraining runs; it may change
        when a session resumes. Under torchrun every process runs the session: rank 0 alone
        drives the rollouts and evaluations and writes, the others wait for it at a barrier,
        and every rank takes its share of each training batch (``vla.distributed``)."""
        self.config, self.run, self.log, self.accel = config, Path(run_dir), log, accel
        if config.expert_data and count_episodes(self._data_dir(0)) < config.expert_episodes:
            self._expert_sources()  # refuse missing or too few episodes before writing anything
        if config.val_data and not self._val_episodes():
            raise ValueError(f"val_data {', '.join(config.val_data)}: no episodes")
        self.run.mkdir(parents=True, exist_ok=True)
        saved = self.run / "session.json"
        if saved.exists():
            # Through DaggerConfig, so fields added since the session began compare at their
            # defaults (an older session still resumes when nothing it set has changed).
            old = json.loads(json.dumps(DaggerConfig.from_dict(json.loads(saved.read_text())).to_dict()))
            current = json.loads(json.dumps(config.to_dict()))
            old["ray"] = current["ray"]  # where the episodes run does not change them
            for name in ("threads", "val_data", "val_samples"):  # nor how fast it trains, nor what it is measured on
                old[name] = current[name]
            # More iterations extend a session: iteration k's beta, seeds and schedule do not
            # depend on the total, so the iterations done stay what they would have been.
            extend = current["iterations"] > old["iterations"]
            if extend:
                old["iterations"] = current["iterations"]
            if old != current:
                diff = next(k for k in current if old.get(k) != current[k])
                raise ValueError(f"{self.run} holds a session with a different config ({diff}: "
                                 f"{old.get(diff)!r}); use a new --out (only --iterations may be raised)")
            if extend and distributed.is_main():
                write_json(saved, config.to_dict())
        elif distributed.is_main():
            write_json(saved, config.to_dict())
        if distributed.is_main():
            self._tokenizer()
        distributed.barrier()
        self.pool = make_pool(config.workers, config.ray)  # started on first use, closed by run_all / close

    # ------------------------------------------------------------------ paths and seeds
    def _iter_dir(self, k: int) -> Path:
        return self.run / f"iter_{k:03d}"

    def _data_dir(self, k: int) -> Path:
        return self.run / "data" / f"iter_{k:03d}"

    def _train_seeds(self, k: int, n: int) -> list[int]:
        return [self.config.seed * 100_000 + k * 1_000 + i for i in range(n)]

    def eval_seeds(self) -> list[int]:
        return [EVAL_SEED_OFFSET + self.config.seed * 100_000 + i for i in range(self.config.eval_episodes)]

    # ------------------------------------------------------------------ phases
    def _collect(self, k: int, policy_dir: str) -> None:
        """Record iteration k's episodes, resuming after those already on disk. Episodes are
        written setting by setting (episode i is in setting i mod S), so the count on disk says
        which are done."""
        c = self.config
        n = c.expert_episodes if k == 0 else c.rollouts
        data = self._data_dir(k)
        done = count_episodes(data)
        settings = c.settings
        seeds = self._train_seeds(k, n)
        order = sorted(range(n), key=lambda i: (i % len(settings), i))[done:]
        if not order:
            return
        if k == 0 and c.expert_data:
            self._copy_expert_data(data, done)
            return
        from tqdm import tqdm

        with EpisodeWriter(data) as writer, tqdm(total=n, initial=done, desc=f"iter {k} rollouts",
                                                 unit="ep", leave=False) as bar:
            def keep(ep):
                writer.append(ep)
                bar.update(1)
            for j, (scenario, density) in enumerate(settings):
                todo = [seeds[i] for i in order if i % len(settings) == j]
                if todo:
                    self.pool.run(rollout_spec(c, k, policy_dir, scenario, density), todo, on_episode=keep)

    def _expert_sources(self) -> list[Path]:
        """The episode files of ``expert_data`` in order; ValueError naming the datasets when
        they hold fewer than ``expert_episodes``."""
        c = self.config
        sources = [path for d in c.expert_data for path in episode_paths(d)]
        if len(sources) < c.expert_episodes:
            raise ValueError(f"--expert-data {' '.join(c.expert_data)} holds {len(sources)} episodes; "
                             f"--expert-episodes asks for {c.expert_episodes}")
        return sources

    def _copy_expert_data(self, data: Path, done: int) -> None:
        """Iteration 0's episodes from ``expert_data``: the first ``expert_episodes`` of the
        datasets in order, copied byte for byte after the ``done`` already copied."""
        c = self.config
        sources = self._expert_sources()
        self.log(f"iteration 0: the first {c.expert_episodes} of the {len(sources)} episodes in "
                 f"{', '.join(c.expert_data)} ({done} copied before)")
        with EpisodeWriter(data) as writer:
            for path in sources[done:c.expert_episodes]:
                writer.append_copy(path)

    def _tokenizer(self) -> ActionTokenizer:
        path = self.run / "action_tokenizer.json"
        if path.exists():
            return ActionTokenizer.load(path)
        tok = (VLAPolicy.load(self.config.start_policy).action_tokenizer if self.config.start_policy
               else default_action_tokenizer(self.config.policy.n_bins, self.config.policy.action))
        tok.save(path)
        return tok

    def _train(self, k: int) -> tuple[VLAPolicy, dict, int]:
        c = self.config
        torch.manual_seed(c.seed * 1000 + k)
        if k == 0 and c.start_policy:
            return self._start_from(c.start_policy)
        policy = VLAPolicy(c.policy, self._tokenizer(), name=str(self._iter_dir(k) / "policy"))
        if k > 0 and c.warm_start:
            policy.model.load_state_dict(VLAPolicy.load(self._iter_dir(k - 1) / "policy").model.state_dict())
        data = self._dataset(policy, k)
        method = BCMethod(policy, BCConfig(lr=c.lr, total_steps=c.train_steps,
                                           warmup_steps=min(50, c.train_steps // 5)), self.accel)
        checkpoint_every = max(50, c.train_steps // 4)
        validation = self._open_loop(policy, data, c.seed * 1000 + k, f"iteration {k}'s data") if c.val_data else None
        cfg = TrainConfig(steps=c.train_steps, batch_size=c.batch_size, log_every=25,
                          checkpoint_every=checkpoint_every, seed=c.seed * 1000 + k,
                          threads=self.train_threads(),
                          eval_every=min(checkpoint_every, c.train_steps) if validation else 0)
        result = train(method, data, cfg, self._iter_dir(k) / "train", eval_fn=validation, log=self.log)
        if distributed.is_main():
            policy.save(self._iter_dir(k) / "policy")
        logs = dict(result.last_logs)
        if validation:
            logs["open_loop"] = validation(result.steps_done)
        return policy, logs, len(data)

    def _open_loop(self, policy: VLAPolicy, data: DemoDataset, seed: int, name: str):
        """``vla.data.open_loop_validation`` of ``policy`` on ``val_data`` and on ``data`` (``name``)."""
        return open_loop_validation(policy, data, self._val_episodes(), self.config.val_samples, seed,
                                    names=("val_data", name),
                                    log=self.log if distributed.is_main() else (lambda line: None))

    def _val_episodes(self) -> list:
        """``val_data``'s episodes, read once per session."""
        if getattr(self, "_val_cache", None) is None:
            self._val_cache = [ep for d in self.config.val_data
                               for ep in read_episodes(d, load_frames=self.config.policy.cameras)]
        return self._val_cache

    def train_threads(self) -> int:
        """The torch threads each iteration trains with (``DaggerConfig.threads``, 0 resolved)."""
        if self.config.threads:
            return self.config.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        return max(1, min(self.config.workers, cores // max(1, local_ranks)))

    def _dataset(self, policy: VLAPolicy, k: int) -> DemoDataset:
        """The aggregated episodes of iterations 0..k as ``policy``'s training samples."""
        c = self.config
        data = DemoDataset(policy, augment_commands=c.augment_commands, goal_relabel=c.goal_relabel,
                           audio_renditions=c.audio_renditions, command_grammar=c.command_grammar, chitchat=c.chitchat,
                           phone_errors=c.phone_errors, paraphrase=c.paraphrase, audio_voices=c.audio_voices,
                           balance_speed=c.balance_speed)
        rollouts = []
        for j in range(k + 1):
            if j > 0 and c.rollouts == 0:  # the equal-compute control: expert data only
                continue
            for ep in read_episodes(self._data_dir(j), load_frames=c.policy.cameras):
                if j == 0:
                    data.add_episode(ep)
                else:
                    rollouts.append(ep)
        for ep, repeats in zip(rollouts, disagreement_repeats(rollouts, c.disagreement_weight)):
            data.add_episode(ep, repeats)  # all ones without a weight: each state once, as before
        return data

    def _start_from(self, checkpoint: str) -> tuple[VLAPolicy, dict, int]:
        """Iteration 0 = the user's checkpoint, saved as the session's own (weights and config
        unchanged); the expert data is read once to check that it can train this policy."""
        policy = VLAPolicy.load(checkpoint)
        if policy.config != self.config.policy:
            raise ValueError(f"DaggerConfig.policy differs from the config saved with {checkpoint}; "
                             "a session that starts from a checkpoint trains that policy")
        data = self._dataset(policy, 0)
        if distributed.is_main():
            policy.save(self._iter_dir(0) / "policy")
        logs = {}
        if self.config.val_data:  # the start policy's figures, for the iterations to be compared with
            logs["open_loop"] = self._open_loop(policy, data, self.config.seed * 1000, "the expert data")(0)
        return policy, logs, len(data)

    def _evaluate(self, k: int) -> dict:
        """The iteration's policy on the held-out seeds, in every setting; with several settings
        each gets ``eval/<scenario>_<density>/`` and ``eval/`` holds all episodes pooled."""
        c = self.config
        policy = str(self._iter_dir(k) / "policy")
        settings = c.settings
        seeds = self.eval_seeds()
        out = self._iter_dir(k) / "eval"
        rows, per_setting = [], {}
        for j, (scenario, density) in enumerate(settings):
            mine = seeds[j::len(settings)]
            if not mine:
                continue
            several = len(settings) > 1
            ev = evaluate(policy, scenario, density, mine, cameras=c.policy.cameras, pool=self.pool,
                          out=out / f"{scenario}_{density}" if several else None, backend=c.backend,
                          hearing=EVAL_HEARING)
            rows += ev.rows
            if several:
                per_setting[f"{scenario}_{density}"] = ev.metrics
        metrics = to_jsonable(metrics_record(rows, policy, c.scenario, c.density, seeds[0]))
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        write_episodes_csv(out / "episodes.csv", rows)
        return {**metrics, "per_setting": per_setting} if per_setting else metrics

    # ------------------------------------------------------------------ the session
    def run_iteration(self, k: int) -> dict:
        done_path = self._iter_dir(k) / "done.json"
        if done_path.exists():
            return json.loads(done_path.read_text())
        t0 = time.time()
        previous = "expert" if k == 0 else str(self._iter_dir(k - 1) / "policy")
        if distributed.is_main():
            self._collect(k, previous)
        distributed.barrier()  # the others wait for the iteration's episodes, then train with rank 0
        policy, logs, samples = self._train(k)
        distributed.barrier()  # rank 0 saved the policy
        if not distributed.is_main():
            distributed.barrier()  # while rank 0 evaluates and writes done.json
            return json.loads(done_path.read_text())
        metrics = self._evaluate(k)
        line = {
            "iteration": k, "beta": self.config.beta(k),
            "dataset_episodes": sum(count_episodes(self._data_dir(j)) for j in range(k + 1)),
            "dataset_steps": samples, "train_loss": logs.get("loss"), "wall_time_s": round(time.time() - t0, 1),
            "metrics": {key: v for key, v in metrics.items()
                        if key not in ("policy", "scenario", "density", "seed", "per_setting")},
        }
        if "open_loop" in logs:
            line["open_loop"] = logs["open_loop"]
        if "per_setting" in metrics:
            line["per_setting"] = {name: {key: v for key, v in m.items() if key not in ("policy", "seed")}
                                   for name, m in metrics["per_setting"].items()}
        write_json(done_path, line)
        distributed.barrier()
        return line

    def run_all(self) -> list[dict]:
        lines = []
        if distributed.is_main():
            self.log(f"{self.config.workers} rollout worker(s); the policy trains on {self.train_threads()} torch "
                     "thread(s) (--threads)")
        with self.pool:
            for k in range(self.config.iterations + 1):
                lines.append(self.run_iteration(k))
                if distributed.is_main():
                    with atomic_output(self.run / "iterations.jsonl") as tmp:
                        tmp.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
        if distributed.is_main():
            final = json.loads((self._iter_dir(self.config.iterations) / "eval" / "metrics.json").read_text())
            write_json(self.run / "metrics.json", final)
        distributed.barrier()
        return lines
