"""Closed-loop evaluation: ONE function that drives a policy on held-out seeds and measures it.

``evaluate(policy, scenario, density, seeds, ...)`` is what ``vla eval``, ``vla dpo compare``,
``vla dagger`` (every iteration), the studies (``benchmarks.dagger_study``, ``plan_study``,
``learning_curve``), the offline-RL driving evaluation and the diffusion benchmark call. A
policy given by name (a baseline or a checkpoint directory) drives in the rollout pool's
workers (one simulator each: processes, or Ray actors with ``ray``) when there is a pool,
more than one worker or ``ray``, else in this process; a policy object always drives in this
process (e.g. a policy held in memory during training), and so does an evaluation that wraps
the policy (best-of-N), records expert labels or keeps an episode's frames. Either way,
episode i uses ``seeds[i]``, the passenger speaks the ``phrasings`` split, and the result is
the same for any number of workers.

The result holds one row of ``benchmarks.metrics.episode_metrics`` per episode and the
``metrics.json`` record (``benchmarks.metrics.metrics_record``); with ``out`` both are written
there, atomically, as ``metrics.json`` and ``episodes.csv`` (``benchmarks.reports`` documents
the files).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from benchmarks.metrics import episode_metrics, metrics_record, to_jsonable, write_episodes_csv, write_json
from sim.backends import DEFAULT_BACKEND, make_env
from sim.episode import Episode
from sim.rollout import BASELINES, DriveTalk, DrivingPolicy, run_episode
from vla.parallel import RolloutPool, RolloutSpec, make_pool
from vla.policies_registry import load_checkpoint
from vla.speech_commands import rephraser

if TYPE_CHECKING:
    from vla.ray_pool import RayRolloutPool


@dataclass(frozen=True)
class Evaluation:
    rows: list[dict]
    """One ``episode_metrics`` row per episode, in seed order."""
    metrics: dict
    """Aggregate metrics plus what ran (``metrics_record``), JSON-ready."""


def evaluate(policy: str | DrivingPolicy, scenario: str, density: str, seeds: Sequence[int], *,
             phrasings: str = "heldout", cameras: bool | None = None, backend: str = DEFAULT_BACKEND,
             pool: RolloutPool | RayRolloutPool | None = None, workers: int = 1, ray: str | None = None,
             out: str | Path | None = None,
             name: str | None = None, wrap: Callable[[DrivingPolicy, int], DrivingPolicy] | None = None,
             record_expert: bool = False, frames_episode: int | None = None, frames_rig: tuple = (),
             on_episode: Callable[[int, Episode], None] | None = None, progress: str | None = None,
             hearing=None, execution: dict[str, float] | None = None,
             talk: DriveTalk | None = None) -> Evaluation:
    """Drive ``policy`` on ``seeds`` and measure it. ``cameras``: render the policy's rig (a
    named policy: None = its checkpoint's choice); ``pool``: a running rollout pool to use
    (else one of ``workers`` processes for this call, or of ``workers`` Ray actors with ``ray``,
    ``vla.parallel.make_pool``'s); ``name``: how ``metrics.json`` names the policy (default:
    the policy's name).

    In this process only (what ``vla eval`` and ``vla dpo compare`` use): ``wrap(policy, seed)``
    replaces each episode's policy (best-of-N); ``record_expert`` labels every visited state
    with the expert (``vla eval --record``); episode ``frames_episode`` keeps its frames
    (rendered with ``frames_rig`` when the policy is blind). ``on_episode(i, episode)`` sees
    each episode in order; ``progress`` names a progress bar on stderr. ``hearing``
    (``vla.policy.Hearing``): how an audio policy hears the passenger (voices, noise); None
    leaves the policy's own. ``execution``: how a plan policy executes its plans
    (``VLAPolicy.set_execution``, e.g. ``{"tracker_lookahead": 1.0}``); None leaves the checkpoint's.
    ``talk``: the passenger also gives a new command during each drive (``sim.rollout.DriveTalk``;
    the metrics then add ``TALK_METRIC_DOCS``'s, e.g. ``act_within_1s_rate``)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    bar = tqdm(total=len(seeds), desc=progress, unit="ep", file=sys.stderr, dynamic_ncols=True,
               disable=progress is None)
    episodes: list[Episode] = []

    def done(ep: Episode) -> None:
        if on_episode is not None:
            on_episode(len(episodes), ep)
        episodes.append(dataclasses.replace(ep, frames=None, cameras=()) if ep.frames is not None else ep)
        bar.set_postfix_str(f"seed {ep.seed}: {ep.outcome}, {ep.num_steps} steps", refresh=False)
        bar.update()

    in_process = (not isinstance(policy, str) or (pool is None and workers <= 1 and not ray)
                  or wrap is not None or record_expert or frames_episode is not None)
    with bar:
        if in_process:
            _drive_here(policy, scenario, density, seeds, phrasings, cameras, backend, wrap, record_expert,
                        frames_episode, frames_rig, done, hearing, execution, talk)
        else:
            if cameras is None:  # a checkpoint renders its own rig (none when blind); a baseline needs none
                cameras = policy not in BASELINES
            spec = RolloutSpec(scenario, density, policy, phrasings, cameras=cameras,
                               query_expert=False, record_frames=False, backend=backend, hearing=hearing,
                               execution=tuple(sorted((execution or {}).items())), talk=talk)
            if pool is not None:
                pool.run(spec, seeds, on_episode=done)
            else:
                with make_pool(workers, ray) as own:
                    own.run(spec, seeds, on_episode=done)
    label = name or (policy if isinstance(policy, str) else getattr(policy, "name", type(policy).__name__))
    rows = [episode_metrics(ep) for ep in episodes]
    metrics = to_jsonable(metrics_record(rows, label, scenario, density, seeds[0]))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        write_episodes_csv(out / "episodes.csv", rows)
    return Evaluation(rows, metrics)


def _drive_here(policy: str | DrivingPolicy, scenario: str, density: str, seeds: list[int], phrasings: str,
                cameras: bool | None, backend: str, wrap, record_expert: bool, frames_episode: int | None,
                frames_rig: tuple, done: Callable[[Episode], None], hearing=None,
                execution: dict[str, float] | None = None, talk: DriveTalk | None = None) -> None:
    """``evaluate``'s episodes in this process: one simulator (two when a blind policy's frames
    episode needs a camera rig), a baseline built per episode, a checkpoint loaded once."""
    fixed = policy if not isinstance(policy, str) else None if policy in BASELINES else load_checkpoint(policy)
    if hearing is not None and hasattr(fixed, "hearing"):
        fixed.hearing = hearing
    if execution:
        if fixed is None or not hasattr(fixed, "set_execution"):
            raise ValueError(f"plan execution settings need a plan policy checkpoint, got {policy!r}")
        fixed.set_execution(**execution)
    rig = tuple(getattr(fixed, "rig", ())) if fixed is not None and cameras is not False else ()
    rephrase = rephraser(phrasings)
    env = make_env(backend, scenario, density, cameras=rig, rephrase=rephrase)
    shown = env if rig else None
    try:
        if frames_episode is not None and not rig and frames_rig:
            shown = make_env(backend, scenario, density, cameras=tuple(frames_rig), rephrase=rephrase)
        for i, seed in enumerate(seeds):
            here = shown if i == frames_episode and shown is not None else env
            driver = fixed if fixed is not None else BASELINES[policy](here, seed)
            if wrap is not None:
                driver = wrap(driver, seed)
            done(run_episode(here, driver, seed, query_expert=record_expert,
                             record_frames=i == frames_episode and bool(here.cameras), talk=talk))
    finally:
        env.close()
        if shown is not None and shown is not env:
            shown.close()
