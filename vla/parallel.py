"""Closed-loop rollouts over the available cores: one process per core, each with its own
simulator (the simulator is the bottleneck) and, for learned policies, its own copy of the
policy loaded from a checkpoint directory on one torch thread.

Episodes come back in seed order whatever the number of workers, and each depends only on its
seed (and the policy), so results do not depend on ``workers``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.episode import Episode
from sim.rollout import DartNoise, DriveTalk

if TYPE_CHECKING:
    from vla.ray_pool import RayRolloutPool


MAX_POOL_RESTARTS = 3
"""Times one ``RolloutPool.run`` call replaces dead workers before it gives up (a
``RayRolloutPool``: per seed, counted against the seed a dead actor was running)."""

FAULT_ENV = "VLA_FAULT_WORKER_EXIT"
"""Fault injection for tests: ``SEED:MARKER`` makes the worker that starts episode SEED exit at
once (as if killed) if the file MARKER does not exist yet, creating it (so only once)."""


@dataclass(frozen=True)
class RolloutSpec:
    scenario: str
    density: str
    policy: str  # "expert", "random", "constant" or a policy checkpoint directory
    phrasings: str = "train"  # vla.speech_commands split: train / heldout / canonical
    cameras: bool = True  # render the policy's rig (the default rig for baselines)
    query_expert: bool = True  # label every visited state with the expert (DAgger)
    record_frames: bool = True
    beta: float = 0.0  # probability of executing the expert's action at each step
    beta_seed: int = 0  # mixes into the per-episode generator that draws the beta coin
    plan_horizon: int = 0  # > 1: record the expert's own P-step plan from every visited state
    goal_labels: bool = False  # record the expert's action under every highway goal too
    goal_futures: bool = False  # and its plan_horizon-step continuation under each (plan labels)
    noise: DartNoise | None = None  # DART bursts on the executed action (labels stay clean)
    plan_every: int = 1  # simulate the expert's continuation at every m-th visited state only
    camera_size: tuple[int, int] = (96, 64)  # (width, height) of a baseline's default rig
    backend: str = "embedded"  # the simulator (sim.backends.BACKENDS)
    hearing: object = None  # vla.policy.Hearing for an audio policy (voices, noise); None: the policy's own
    execution: tuple[tuple[str, float], ...] = ()  # how a plan policy executes plans (VLAPolicy.set_execution); (): its own
    talk: DriveTalk | None = None  # a new command during the drive (sim.rollout.DriveTalk); None: only the first
    goal_bias: tuple[tuple[str, float], ...] = ()  # highway commands tried first (sim.scenarios.parse_goal_bias)
    start_speed: tuple[float, float] | None = None  # highway: our car's start speed drawn from [lo, hi] m/s


def _run(spec: RolloutSpec, seed: int, cache: dict) -> Episode:
    from sim.cameras import default_rig
    from sim.backends import make_env
    from sim.rollout import BASELINES, run_episode
    from vla.speech_commands import rephraser

    if "policy" not in cache:
        if spec.policy in BASELINES:
            cache["policy"], rig = None, default_rig(*spec.camera_size)
        else:
            import torch

            from vla.policies_registry import load_checkpoint

            torch.set_num_threads(1)
            cache["policy"] = load_checkpoint(spec.policy)
            if spec.hearing is not None and hasattr(cache["policy"], "hearing"):
                cache["policy"].hearing = spec.hearing
            if spec.execution:
                cache["policy"].set_execution(**dict(spec.execution))
            rig = getattr(cache["policy"], "rig", ())
        cache["env"] = make_env(spec.backend, spec.scenario, spec.density, cameras=rig if spec.cameras else (),
                                rephrase=rephraser(spec.phrasings), goal_bias=spec.goal_bias,
                                start_speed=spec.start_speed)
    env = cache["env"]
    policy = cache["policy"] or BASELINES[spec.policy](env, seed)
    rng = np.random.default_rng([seed, spec.beta_seed, 17])
    return run_episode(env, policy, seed, query_expert=spec.query_expert, record_frames=spec.record_frames,
                       beta=spec.beta, rng=rng, plan_horizon=spec.plan_horizon,
                       goal_labels=spec.goal_labels, goal_futures=spec.goal_futures, noise=spec.noise,
                       plan_every=spec.plan_every, talk=spec.talk)


_WORKER_CACHE: dict = {}


def _worker(args: tuple[RolloutSpec, int]) -> Episode:
    spec, seed = args
    fault = os.environ.get(FAULT_ENV)
    if fault:
        at, marker = fault.split(":", 1)
        if int(at) == seed and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
    if _WORKER_CACHE.get("key") != spec:
        _WORKER_CACHE.clear()
        _WORKER_CACHE["key"] = spec
    return _run(spec, seed, _WORKER_CACHE)


class RolloutPool:
    """Worker processes kept for a whole session (starting one costs seconds: it imports torch,
    transformers and the simulator). ``workers <= 1`` runs in-process."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self._pool = None
        self._cache: dict = {}

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers now (an episode in flight is abandoned)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                if proc.is_alive():
                    proc.terminate()
            for proc in processes:
                proc.join(timeout=10)

    def run(self, spec: RolloutSpec, seeds: Sequence[int],
            on_episode: Callable[[Episode], None] | None = None) -> list[Episode]:
        """Episodes for ``seeds`` in order; ``on_episode`` sees each one as soon as it (and
        every earlier seed) is done, e.g. to append it to a dataset or advance a progress bar.
        A worker process that dies (killed, out of memory, a crash in native code) is replaced
        and the episodes not yet returned are run again, up to ``MAX_POOL_RESTARTS`` times per
        call; each episode depends only on its seed, so the result is the same."""
        seeds = [int(s) for s in seeds]
        if self.workers == 1 or len(seeds) <= 1:
            episodes = (_run(spec, s, self._cache_for(spec)) for s in seeds)
        else:
            episodes = self._in_workers(spec, seeds)
        out = []
        for ep in episodes:
            out.append(ep)
            if on_episode:
                on_episode(ep)
        return out

    def _executor(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(_checkpoint_kinds(),))
        return self._pool

    def _in_workers(self, spec: RolloutSpec, seeds: list[int]):
        from concurrent.futures.process import BrokenProcessPool

        done, restarts = 0, 0
        while done < len(seeds):
            futures = [self._executor().submit(_worker, (spec, s)) for s in seeds[done:]]
            try:
                for future in futures:
                    episode = future.result()
                    done += 1
                    yield episode
            except BrokenProcessPool:
                self.close()
                restarts += 1
                if restarts > MAX_POOL_RESTARTS:
                    raise RuntimeError(f"rollout workers died {restarts} times in one run (last at seed "
                                       f"{seeds[done]}); giving up") from None
                print(f"vla: a rollout worker died; restarting the pool and running seeds {seeds[done]}.. again "
                      f"({restarts}/{MAX_POOL_RESTARTS})", file=sys.stderr, flush=True)

    def _cache_for(self, spec: RolloutSpec) -> dict:
        if self._cache.get("key") != spec:
            self._cache = {"key": spec}
        return self._cache


LOCAL_RAY = "local"
"""What ``--ray`` without an address means: a Ray runtime started on this machine."""


def make_pool(workers: int, ray: str | bool | None = False) -> RolloutPool | RayRolloutPool:
    """The rollout pool of a command: ``workers`` local processes (``ray`` False or None, the
    default: on one machine they start faster than Ray's runtime, see
    ``benchmarks.rollout_engines``), or ``workers`` Ray actors (``vla.ray_pool``) on a Ray
    runtime started here (``ray`` True, "" or ``LOCAL_RAY``) or on the cluster at address
    ``ray``. Both give the same episodes for the same seeds."""
    if ray is None or ray is False:
        return RolloutPool(workers)
    from vla.ray_pool import RayRolloutPool

    return RayRolloutPool(workers, address=None if ray in (True, "", LOCAL_RAY) else str(ray))


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM this worker when its parent dies, so a killed session
    (kill -9, then resumed) leaves no orphan workers finishing episodes nobody will read."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no libc symbol: orphans finish their episode
        pass


def _checkpoint_kinds() -> bytes:
    """The checkpoint kinds registered in this process, for ``_setup_worker`` in a worker."""
    from vla.policies_registry import CHECKPOINT_KINDS

    return pickle.dumps(dict(CHECKPOINT_KINDS))


def _init_worker(checkpoint_kinds: bytes = b"") -> None:
    """Set-up of a pool's worker process: it dies with its parent, then ``_setup_worker``."""
    _die_with_parent()
    _setup_worker(checkpoint_kinds)


def _setup_worker(checkpoint_kinds: bytes = b"") -> None:
    """What every rollout worker (a pool process, a Ray actor) does first: one thread, and the
    checkpoint kinds the parent had registered (their loaders are pickled by reference:
    unpickling them, once the thread count is set, imports and registers their modules here
    too)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from vla.policies_registry import register_checkpoint_kind

    for kind, loader in (pickle.loads(checkpoint_kinds) if checkpoint_kinds else {}).items():
        register_checkpoint_kind(kind, loader)
    import cv2

    cv2.setNumThreads(1)
