"""Which rollout engine to use on one machine: the wall time of the same ``vla collect``-style
rollout (the expert, every state labelled, highway / medium, seeds 0..N-1; without cameras and
with the default 6-camera rig recorded) on ``RolloutPool(1)`` (in this process),
``RolloutPool(W)`` (W spawned processes) and ``RayRolloutPool(W)`` (W actors on a local Ray
runtime started for the measurement).

Each time runs from making the pool to closing it, start-up included (worker processes or the
Ray runtime and its actors), as one command pays it. The modules a command has loaded anyway
(the simulator, the expert) are imported before any timing. Every engine must give the same
episodes (checked). Prints a table, then one JSON line with the times and their ratios::

    python -m benchmarks.rollout_engines --episodes 8 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from vla.parallel import RolloutPool, RolloutSpec


def engines(workers: int) -> dict[str, Callable]:
    """name -> a function making that pool."""
    from vla.ray_pool import RayRolloutPool

    return {"pool_1": lambda: RolloutPool(1), f"pool_{workers}": lambda: RolloutPool(workers),
            f"ray_{workers}": lambda: RayRolloutPool(workers)}


def time_engine(make: Callable, spec: RolloutSpec, seeds: list[int]) -> tuple[dict, list]:
    """Seconds from making the pool to its first episode, to its last, and to closing it (the
    total); the episodes."""
    t0 = time.perf_counter()
    first: list[float] = []
    with make() as pool:
        episodes = pool.run(spec, seeds, on_episode=lambda ep: first or first.append(time.perf_counter() - t0))
        last = time.perf_counter() - t0
    return {"first_episode_s": round(first[0], 2), "last_episode_s": round(last, 2),
            "total_s": round(time.perf_counter() - t0, 2)}, episodes


def same(a: list, b: list) -> bool:
    return all(x.seed == y.seed and np.array_equal(x.ego, y.ego) and np.array_equal(x.actions, y.actions)
               for x, y in zip(a, b)) and len(a) == len(b)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rollout_engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=8, help="episodes per measurement (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="processes / actors of the pools (default: %(default)s)")
    p.add_argument("--scenario", default="highway")
    p.add_argument("--density", default="medium")
    args = p.parse_args(argv)
    import sim.backends, sim.rollout, vla.speech_commands  # noqa: E401, F401  loaded by any command already

    seeds = list(range(args.episodes))
    results: dict[str, dict] = {}
    for cameras in (False, True):
        rig = "cameras" if cameras else "no_cameras"
        spec = RolloutSpec(args.scenario, args.density, "expert", "train", cameras=cameras, query_expert=True,
                           record_frames=cameras)
        reference = None
        for name, make in engines(args.workers).items():
            timing, episodes = time_engine(make, spec, seeds)
            reference = reference or episodes
            results.setdefault(rig, {})[name] = {**timing, "same_episodes": same(reference, episodes),
                                                 "steps": sum(ep.num_steps for ep in episodes)}
            print(f"{rig:>10}  {name:>7}  first episode {timing['first_episode_s']:6.2f} s  last "
                  f"{timing['last_episode_s']:6.2f} s  total {timing['total_s']:6.2f} s  "
                  f"same episodes: {results[rig][name]['same_episodes']}", flush=True)
    w = args.workers
    ratios = {rig: {f"pool_{w}_over_pool_1": round(r[f"pool_{w}"]["total_s"] / r["pool_1"]["total_s"], 3),
                    f"ray_{w}_over_pool_{w}": round(r[f"ray_{w}"]["total_s"] / r[f"pool_{w}"]["total_s"], 3),
                    f"ray_{w}_over_pool_1": round(r[f"ray_{w}"]["total_s"] / r["pool_1"]["total_s"], 3)}
              for rig, r in results.items()}
    record = {"episodes": args.episodes, "workers": w, "scenario": args.scenario, "density": args.density,
              "results": results, "ratios": ratios}
    print(json.dumps(record, sort_keys=True))
    return record


if __name__ == "__main__":
    main()
