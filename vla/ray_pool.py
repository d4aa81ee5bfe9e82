"""Rollouts on Ray (``--ray [ADDRESS]``): ``RayRolloutPool`` has ``vla.parallel.RolloutPool``'s
interface, but its workers are Ray actors, each owning its simulator and (for a learned
policy) its copy of the policy, on a Ray runtime started here or on a cluster.

Seeds go to whichever actor is free (at most ``IN_FLIGHT`` queued per actor, so none waits for
the driver between episodes). An actor that dies (killed, out of memory, a crash in native
code) is replaced and only the episodes it held are run again; each episode depends only on
its seed (and the policy), so the episodes are those of the local pool. On a cluster every
node needs this package and its checkpoints' paths (``pip install -e .[ray]``; a shared disk).
"""

from __future__ import annotations

import copy
import heapq
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence

from sim.episode import Episode
from vla import parallel
from vla.errors import VLAError
from vla.parallel import RolloutSpec

IN_FLIGHT = 2
"""Episodes queued on one actor at a time: the one it runs and the next."""

FORWARDED_ENV = ("VLA_", "CARLA_")
"""Prefixes of the driver's environment variables that every actor sees too (the simulator's
and the tests' switches, ``vla.parallel.FAULT_ENV``, the CARLA client's settings), as a pool
process inherits them; nodes of a cluster do not share the driver's environment."""


class _RolloutActor:
    """One rollout worker: ``vla.parallel._worker`` in its own process, with its cache (one
    simulator, one policy per ``RolloutSpec``)."""

    def __init__(self, checkpoint_kinds: bytes, env: dict[str, str]) -> None:
        os.environ.pop(parallel.FAULT_ENV, None)  # only the driver's, never a previous one's
        os.environ.update(env)
        parallel._setup_worker(checkpoint_kinds)

    def ready(self) -> bool:
        return True

    def run(self, spec: RolloutSpec, seed: int) -> Episode:
        return parallel._worker((spec, seed))


class RayRolloutPool:
    """``workers`` Ray actors kept for the whole session (each costs seconds to start: it
    imports torch and the simulator). ``address`` None starts a local Ray runtime of
    ``workers`` CPUs (no dashboard, quiet, no usage reports) on first use; otherwise the pool
    connects to the Ray cluster at ``address`` (``HOST:PORT``, ``ray://HOST:PORT`` or
    ``auto``). A runtime already initialized in this process is used as it is. ``close``
    shuts down only what the pool itself started or connected."""

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        check_ray(address)
        self.workers = max(1, int(workers))
        self.address = address
        self._ray = None
        self._remote = None  # _RolloutActor as a Ray actor class
        self._started = False
        self._actors: list = []
        self._ready: list[bool] = []
        self._pings: dict = {}  # ObjectRef of an actor's ready() -> its slot

    def __enter__(self) -> RayRolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors now (episodes in flight are abandoned), and the runtime if the pool
        started it."""
        self._kill_actors()
        if self._started:
            self._ray.shutdown()
        self._ray, self._remote, self._started = None, None, False

    def run(self, spec: RolloutSpec, seeds: Sequence[int],
            on_episode: Callable[[Episode], None] | None = None) -> list[Episode]:
        """Episodes for ``seeds`` in order; ``on_episode`` sees each one as soon as it (and
        every earlier seed) is done. An actor that dies is replaced and the episodes it held
        are run again; after ``vla.parallel.MAX_POOL_RESTARTS`` restarts for the same seed
        the run gives up with a RuntimeError."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            return []
        ray = self._connect()
        self._start_actors()
        try:
            return self._schedule(ray, spec, seeds, on_episode)
        except BaseException:  # a failed or interrupted run leaves no actor busy with it
            self._kill_actors()
            raise

    def _schedule(self, ray, spec: RolloutSpec, seeds: list[int],
                  on_episode: Callable[[Episode], None] | None) -> list[Episode]:
        from ray import exceptions as rx

        died = (rx.RayActorError, rx.WorkerCrashedError, rx.OutOfMemoryError, rx.NodeDiedError, rx.ObjectLostError)

        todo = list(range(len(seeds)))  # heap of seed indices: the earliest seeds go first
        held: list[list] = [[] for _ in self._actors]  # per actor: [(ref, index)] in submission order
        owner: dict = {}  # ObjectRef -> actor slot
        done: dict[int, Episode] = {}
        deaths: dict[int, int] = {}
        out: list[Episode] = []
        while len(out) < len(seeds):
            for depth in range(1, IN_FLIGHT + 1):  # one more episode per ready actor, in rounds
                for slot, actor in enumerate(self._actors):
                    if todo and self._ready[slot] and len(held[slot]) < depth:
                        i = heapq.heappop(todo)
                        ref = actor.run.remote(spec, seeds[i])
                        held[slot].append((ref, i))
                        owner[ref] = slot
            [ref], _ = ray.wait([*owner, *self._pings], num_returns=1)
            if ref in self._pings:
                self._check_ready(ref)
                continue
            slot = owner[ref]
            while ref in owner:  # an actor runs its episodes in order: those before ref are over too
                first, i = held[slot].pop(0)
                del owner[first]
                try:
                    done[i] = copy.deepcopy(ray.get(first))  # Ray's arrays are read-only views: copies
                except rx.RayTaskError as e:  # the episode itself raised: that error, as the local pool gives it
                    raise (e.cause if isinstance(e.cause, BaseException) else e) from e
                except died as e:  # the actor (or its node, or the episode it returned) died running seed i
                    lost = [i] + [j for _, j in held[slot]]
                    for r, _ in held[slot]:
                        del owner[r]
                    held[slot] = []
                    self._count_death(deaths, seeds, lost, e)
                    for j in lost:
                        heapq.heappush(todo, j)
                    self._replace(slot)
            while len(out) in done:
                out.append(done.pop(len(out)))
                if on_episode:
                    on_episode(out[-1])
        return out

    @staticmethod
    def _count_death(deaths: dict[int, int], seeds: list[int], lost: list[int], error: Exception) -> None:
        """One more death for the seed ``lost[0]`` that was running; give up past the limit."""
        culprit = lost[0]
        deaths[culprit] = deaths.get(culprit, 0) + 1
        if deaths[culprit] > parallel.MAX_POOL_RESTARTS:
            raise RuntimeError(f"Ray rollout workers died {deaths[culprit]} times running seed "
                               f"{seeds[culprit]}; giving up") from error
        print(f"vla: a Ray rollout worker died; restarting it and running seeds "
              f"{', '.join(str(seeds[i]) for i in sorted(lost))} again "
              f"({deaths[culprit]}/{parallel.MAX_POOL_RESTARTS} for seed {seeds[culprit]})",
              file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ runtime and actors
    def _connect(self):
        if self._ray is not None:
            return self._ray
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reports
            quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
            if self.address is None:
                # Ray's default token authentication stays on; its notice that it is on is hushed
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, **quiet)  # not $RAY_ADDRESS
            else:
                try:
                    ray.init(address=self.address, **quiet)
                except Exception as e:  # noqa: BLE001  any failure to connect is the address's
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise VLAError(f"--ray {self.address}: cannot connect to a Ray cluster there: {reason}") from None
            self._started = True
        self._ray = ray
        return ray

    def _start_actors(self) -> None:
        while len(self._actors) < self.workers:
            self._actors.append(None)
            self._ready.append(False)
            self._replace(len(self._actors) - 1)

    def _replace(self, slot: int) -> None:
        """A new actor in ``slot`` (killing the old one); it gets episodes once it is ready, so
        an actor the cluster has no CPU for yet holds none."""
        ray = self._ray
        if self._actors[slot] is not None:
            ray.kill(self._actors[slot], no_restart=True)
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1)(_RolloutActor)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        self._actors[slot] = self._remote.remote(parallel._checkpoint_kinds(), env)
        self._ready[slot] = False
        self._pings = {r: s for r, s in self._pings.items() if s != slot}
        self._pings[self._actors[slot].ready.remote()] = slot

    def _check_ready(self, ref) -> None:
        """An actor answered: it gets episodes from now on (one that failed to start, which a
        new one would too, ends the run)."""
        from ray.exceptions import RayActorError

        slot = self._pings.pop(ref)
        try:
            self._ready[slot] = self._ray.get(ref)
        except RayActorError as e:
            raise RuntimeError("a Ray rollout worker failed to start (the Ray error above says why; does "
                               "every node have this package: pip install -e .[ray]?)") from e

    def _kill_actors(self) -> None:
        if self._ray is not None:
            for actor in self._actors:
                if actor is not None:
                    self._ray.kill(actor, no_restart=True)
        self._actors, self._ready, self._pings = [], [], {}


def check_ray(address: str | None, timeout: float = 5.0) -> None:
    """Raise ``VLAError`` in one line, before anything runs, when Ray is not installed or
    nothing listens at a ``[ray://]HOST:PORT`` ``address`` (Ray itself would retry for
    minutes); other addresses (``auto``) are checked by ``ray.init`` when the pool starts."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise VLAError("--ray needs Ray: pip install -e .[ray]") from None
    if address is None:
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address.strip())
    if not match:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout).close()
    except OSError as e:
        raise VLAError(f"--ray {address}: no Ray cluster reachable there ({e.strerror or e})") from None
