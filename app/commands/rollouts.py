"""``vla collect`` and ``vla eval``: closed-loop episodes on a simulator backend (``--backend``).

Episode i of a run uses seed ``--seed + i``, whatever else the run does, so two runs with the
same arguments give the same episodes and the same ``metrics.json``. The options have been
validated by ``app.cli`` before anything here runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from benchmarks import reports
from benchmarks.metrics import episode_metrics
from sim.cameras import default_rig
from sim.episode import Episode
from sim.backends import DEFAULT_BACKEND, make_env
from sim.interface import DrivingEnv
from sim.rollout import TALK_COUNTERFACTUAL_S, DartNoise, DriveTalk, run_episode
from sim.storage import EpisodeWriter
from vla.evaluation import evaluate
from vla.policies_registry import resolve_policy
from vla.options import hearing_from_args
from vla.parallel import RolloutSpec, make_pool
from vla.speech_commands import rephraser


def dart_noise(args: argparse.Namespace) -> DartNoise | None:
    """The DART noise ``--dart`` / ``--dart-speed`` ask for, or None."""
    if not getattr(args, "dart", False):
        return None
    return DartNoise(speed_prob=float(getattr(args, "dart_speed", 0.0)))


def _rollouts(args: argparse.Namespace, env_for: Callable[[int], DrivingEnv],
              query_expert: bool, desc: str,
              wrap: Callable | None = None) -> Iterator[tuple[int, Episode]]:
    """Yield (i, episode) for i < args.episodes, with a progress bar on stderr. ``wrap(policy,
    seed)`` replaces each episode's policy (e.g. best-of-N) when given."""
    with tqdm(total=args.episodes, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True) as bar:
        for i in range(args.episodes):
            seed = args.seed + i
            env = env_for(i)
            policy = resolve_policy(args.policy, env, seed)
            if wrap is not None:
                policy = wrap(policy, seed)
            ep = run_episode(env, policy, seed, query_expert=query_expert,
                             record_frames=bool(env.cameras),
                             plan_horizon=getattr(args, "plan_horizon", 0) if query_expert else 0,
                             goal_labels=getattr(args, "goal_labels", False) and query_expert,
                             goal_futures=getattr(args, "goal_futures", False) and query_expert,
                             noise=dart_noise(args) if query_expert else None)
            bar.set_postfix_str(f"seed {seed}: {ep.outcome}, {ep.num_steps} steps", refresh=False)
            bar.update()
            yield i, ep


def _finish(args: argparse.Namespace, out: Path, rows: list[dict], written: list[Path]) -> dict:
    record = reports.metrics_record(rows, args.policy, args.scenario, args.density, args.seed)
    reports.write_json(out / "metrics.json", record)
    print(reports.summary_table(record))
    for path in [out / "metrics.json", *written]:
        print(f"wrote {path}")
    return record


def _collect_spec(args: argparse.Namespace, cameras: bool) -> RolloutSpec:
    """The rollout of ``vla collect`` without a recipe: what the pool's workers run per seed."""
    return RolloutSpec(args.scenario, args.density, args.policy, args.phrasings, cameras=cameras,
                       query_expert=True, record_frames=cameras, plan_horizon=args.plan_horizon,
                       goal_labels=args.goal_labels, goal_futures=args.goal_futures,
                       noise=dart_noise(args), plan_every=args.label_every,
                       camera_size=(args.width, args.height),
                       backend=getattr(args, "backend", DEFAULT_BACKEND),
                       start_speed=tuple(args.start_speed) if getattr(args, "start_speed", None) else None)


def _recorded(out: Path, args: argparse.Namespace, wanted: range) -> dict[int, dict]:
    """seed -> metrics row of the episodes of this very collection (same policy, scenario,
    density; a seed in ``wanted``) that ``out`` already holds: what a killed run recorded."""
    from sim.storage import episode_metas, read_episode

    found: dict[int, dict] = {}
    for path, m in episode_metas(out):
        seed = int(m["seed"])
        if seed in wanted and seed not in found and \
                (m["scenario"], m["density"], m["policy"]) == (args.scenario, args.density, args.policy):
            found[seed] = episode_metrics(read_episode(path, load_frames=False))
    return found


def run_collect(args: argparse.Namespace) -> int:
    """Record episodes (frames, expert labels) into ``args.out`` and summarize them. Without a
    recipe the episodes come from the rollout pool (``--workers`` processes, or Ray actors with
    ``--ray``; each episode depends only on its seed, so the dataset is the same for any number
    of workers and either engine)."""
    rig = default_rig(args.width, args.height) if args.cameras == "default" else ()
    out = Path(args.out)
    rows: list[dict] = []
    steps = 0
    recipe, wrap, kept = getattr(args, "recipe", None), None, 0
    with EpisodeWriter(out) as writer:
        first = writer.next_index

        def keep(ep: Episode) -> None:
            nonlocal steps
            writer.append(ep)
            rows.append(episode_metrics(ep))
            steps += ep.num_steps

        if recipe or getattr(args, "d4rl", None):  # offline-RL datasets (offline_rl.recipes), one process
            from offline_rl.recipes import collect_options

            env = make_env(getattr(args, "backend", DEFAULT_BACKEND), args.scenario, args.density, cameras=rig,
                           rephrase=rephraser(args.phrasings))
            wrap, weights = collect_options(args, env)
            for _, ep in _rollouts(args, lambda i: env, query_expert=True,
                                   desc=f"collect {recipe or args.policy}", wrap=wrap):
                keep(ep)
        else:
            spec = _collect_spec(args, cameras=bool(rig))
            wanted = range(args.seed, args.seed + args.episodes)
            have = _recorded(out, args, wanted)
            for seed, row in have.items():  # a rerun after a kill: those episodes are kept, not redone
                rows.append(row)
            kept = len(have)
            if have:
                print(f"resuming: {len(have)} of the {args.episodes} episodes are already in {out}", file=sys.stderr)
            pool = make_pool(args.workers, getattr(args, "ray", None))
            with pool, tqdm(total=args.episodes, initial=len(have), desc=f"collect {args.policy}", unit="ep",
                            file=sys.stderr, dynamic_ncols=True) as bar:
                def record(ep: Episode) -> None:
                    keep(ep)
                    bar.set_postfix_str(f"seed {ep.seed}: {ep.outcome}, {ep.num_steps} steps", refresh=False)
                    bar.update()

                pool.run(spec, [s for s in wanted if s not in have], on_episode=record)
            rows.sort(key=lambda r: r["seed"])
        last = writer.next_index - 1
    _finish(argparse.Namespace(**{**vars(args), "policy": f"recipe {recipe}"}) if recipe else args, out, rows, [])
    frames = f"{len(rig)} cameras {args.width}x{args.height}" if rig else "no cameras"
    if len(rows) > kept:
        print(f"recorded {len(rows) - kept} episodes, {steps} steps ({frames}) as "
              f"{out / 'episodes'}/ep_{first:06d}.h5 .. ep_{last:06d}.h5"
              + (f"; {kept} were already there" if kept else ""))
    else:
        print(f"nothing to record: all {kept} episodes are already in {out}")
    if getattr(args, "d4rl", None):
        from offline_rl.datasets import episodes_to_d4rl

        data = episodes_to_d4rl(out, args.d4rl, weights)
        print(f"wrote {args.d4rl}: D4RL layout, {len(data)} transitions of every episode in {out}")
    return 0


def _talk(when: str, backend: str = DEFAULT_BACKEND) -> DriveTalk | None:
    """``vla eval --talk``: start (None), drive (a new command; with its counterfactual branch
    where the backend can snapshot, i.e. the embedded simulator) or chitchat."""
    if when == "start":
        return None
    if when == "chitchat":
        return DriveTalk(chitchat=True)
    return DriveTalk(counterfactual_s=TALK_COUNTERFACTUAL_S if backend == "embedded" else 0.0)


def run_eval(args: argparse.Namespace) -> int:
    """Closed-loop evaluation (``vla.evaluation.evaluate``): metrics.json, episodes.csv,
    trajectory.png, cameras.gif and, with --record, the episodes with expert labels."""
    gif_episode = None if args.no_gif else args.gif_episode
    out = Path(args.out)
    wrap = None
    if getattr(args, "best_of", 1) > 1:  # best-of-N over the policy's samples, rated by a scorer
        from methods.reward_model import BestOfNPolicy, TrajectoryScorer

        scorer = TrajectoryScorer.load(args.scorer)

        def wrap(policy, seed: int):
            return BestOfNPolicy(policy, scorer, args.best_of, temperature=args.temperature, seed=seed)

    writer = EpisodeWriter(out) if args.record else None
    kept: dict[str, Episode] = {}

    def keep(i: int, ep: Episode) -> None:
        if i == gif_episode and ep.frames is not None:
            kept["gif"] = ep
        ep = dataclasses.replace(ep, frames=None, cameras=())  # recorded without frames
        kept.setdefault("first", ep)
        if writer is not None:
            writer.append(ep)

    try:
        result = evaluate(args.policy, args.scenario, args.density, range(args.seed, args.seed + args.episodes),
                          phrasings=args.phrasings, wrap=wrap, record_expert=args.record,
                          frames_episode=gif_episode, frames_rig=default_rig(args.width, args.height),
                          on_episode=keep, progress=f"eval {args.policy}", out=out,
                          backend=getattr(args, "backend", DEFAULT_BACKEND), workers=getattr(args, "workers", 1),
                          ray=getattr(args, "ray", None), hearing=hearing_from_args(args),
                          execution=getattr(args, "execution", None),
                          talk=_talk(getattr(args, "talk", "start"), getattr(args, "backend", DEFAULT_BACKEND)))
    finally:
        if writer is not None:
            writer.close()
    written = [out / "episodes.csv", out / "trajectory.png"]
    reports.plot_trajectory(written[1], kept["first"])
    if "gif" in kept:
        written.append(out / "cameras.gif")
        reports.write_camera_gif(written[-1], kept["gif"])
    else:  # an older run's GIF would not match this run's metrics
        (out / "cameras.gif").unlink(missing_ok=True)
    if writer is not None:
        written.append(out / "episodes")
    print(reports.summary_table(result.metrics))
    if str(args.phrasings).endswith(".tsv"):  # the user's own words: which of them were followed
        print(reports.phrasing_table(result.rows))
    for path in [out / "metrics.json", *written]:
        print(f"wrote {path}")
    return 0
