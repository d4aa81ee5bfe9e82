"""Closed-loop evaluation: ONE function that drives a policy on held-out seeds and measures it.

``evaluate(policy, scenario, density, seeds, ...)`` is what ``vla dagger`` (every iteration),
the studies (``benchmarks.dagger_study``, ``plan_study``, ``learning_curve``), the offline-RL
driving evaluation and the diffusion benchmark call. A policy given by name (a baseline or a
checkpoint directory) drives in the rollout pool's worker processes (one simulator each); a
policy object drives in this process (e.g. a policy held in memory during training). Either
way, episode i uses ``seeds[i]``, the passenger speaks the ``phrasings`` split, no expert is
queried, and the result is the same for any number of workers.

The result holds one row of ``benchmarks.metrics.episode_metrics`` per episode and the
``metrics.json`` record (``benchmarks.metrics.metrics_record``); with ``out`` both are written
there, atomically, as ``metrics.json`` and ``episodes.csv`` (``benchmarks.reports`` documents
the files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.metrics import episode_metrics, metrics_record, to_jsonable, write_episodes_csv, write_json
from sim.backends import DEFAULT_BACKEND, make_env
from sim.rollout import BASELINES, DrivingPolicy, run_episode
from vla.parallel import RolloutPool, RolloutSpec
from vla.speech_commands import rephraser


@dataclass(frozen=True)
class Evaluation:
    rows: list[dict]
    """One ``episode_metrics`` row per episode, in seed order."""
    metrics: dict
    """Aggregate metrics plus what ran (``metrics_record``), JSON-ready."""


def evaluate(policy: str | DrivingPolicy, scenario: str, density: str, seeds: Sequence[int], *,
             phrasings: str = "heldout", cameras: bool | None = None, backend: str = DEFAULT_BACKEND,
             pool: RolloutPool | None = None, workers: int = 1, out: str | Path | None = None,
             name: str | None = None) -> Evaluation:
    """Drive ``policy`` on ``seeds`` and measure it. ``cameras``: render the policy's rig (a
    named policy: None = its checkpoint's choice); ``pool``: a running rollout pool to use
    (else one of ``workers`` processes for this call); ``name``: how ``metrics.json`` names
    the policy (default: the policy's name)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    if isinstance(policy, str):
        if cameras is None:  # a checkpoint renders its own rig (none when blind); a baseline needs none
            cameras = policy not in BASELINES
        spec = RolloutSpec(scenario, density, policy, phrasings, cameras=cameras,
                           query_expert=False, record_frames=False, backend=backend)
        if pool is not None:
            episodes = pool.run(spec, seeds)
        else:
            with RolloutPool(workers) as own:
                episodes = own.run(spec, seeds)
        label = name or policy
    else:
        rig = tuple(getattr(policy, "rig", ())) if cameras is not False else ()
        env = make_env(backend, scenario, density, cameras=rig, rephrase=rephraser(phrasings))
        try:
            episodes = [run_episode(env, policy, s, query_expert=False, record_frames=False) for s in seeds]
        finally:
            env.close()
        label = name or getattr(policy, "name", type(policy).__name__)
    rows = [episode_metrics(ep) for ep in episodes]
    metrics = to_jsonable(metrics_record(rows, label, scenario, density, seeds[0]))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        write_episodes_csv(out / "episodes.csv", rows)
    return Evaluation(rows, metrics)
