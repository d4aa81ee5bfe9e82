"""``vla bench diffusion``: the diffusion action head's cost and closed-loop quality against its
number of inference (denoising) steps, with the binned head as the baseline.

* ``ms_per_chunk``: one ``predict_action_chunk`` on one observation (prefix pass + N denoiser
  steps; the binned head: prefix pass + H*D KV-cached decoding steps), on ONE torch thread,
  median over ``--repeats``; all variants are timed round-robin in the same run, so load from
  other processes hits them alike. Without ``--policy`` the weights are random (speed does not
  depend on them) at ``--size`` (default 'small'); with it, the checkpoint's own config.
* ``closed_loop`` (with ``--policy``, a trained diffusion checkpoint): one row of
  ``benchmarks.metrics`` over ``--episodes`` held-out episodes (seeds ``--seed + i``, held-out
  phrasings) per step count (and per ``--noise``, the initial-noise std); ``--baseline CKPT``
  adds any other checkpoint (e.g. the binned head) on the same seeds.

Human-readable lines first, then ONE JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

CLOSED_LOOP_KEYS = ("collision_rate", "progress_mean", "jerk_long_p95", "jerk_lat_p95", "comfort_fraction",
                    "off_road_rate", "driving_score")
"""The aggregate metrics reported per step count."""


def _number_list(kind):
    def parse(text: str) -> list:
        try:
            values = [kind(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values
    return parse


def configure(p: argparse.ArgumentParser) -> None:
    from sim.scenarios import DENSITIES, SCENARIOS
    from vla.config import SIZES

    p.add_argument("--steps", type=_number_list(int), default=[1, 2, 5, 10, 20],
                   help="comma-separated inference step counts (default: 1,2,5,10,20)")
    p.add_argument("--noise", type=_number_list(float), default=None,
                   help="comma-separated initial-noise stds evaluated in closed loop (default: the "
                        "checkpoint's diffusion_noise)")
    p.add_argument("--size", choices=list(SIZES), default="small",
                   help="policy size when no --policy is given (default: %(default)s)")
    p.add_argument("--no-cameras", action="store_true",
                   help="time the blind (state-token) policy when no --policy is given")
    p.add_argument("--repeats", type=int, default=30, help="timed chunks per variant (default: %(default)s)")
    p.add_argument("--policy", default=None,
                   help="a trained diffusion-head checkpoint directory: time it and evaluate it in closed loop")
    p.add_argument("--baseline", default=None,
                   help="another checkpoint (e.g. the binned head) evaluated on the same seeds")
    p.add_argument("--episodes", type=int, default=10, help="closed-loop episodes per step count (default: %(default)s)")
    p.add_argument("--scenario", default="highway", help=f"one of {', '.join(SCENARIOS)} (default: %(default)s)")
    p.add_argument("--density", default="medium", help=f"one of {', '.join(DENSITIES)} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first episode (default: %(default)s)")


def _check(args: argparse.Namespace):
    """Validate the options; return the diffusion policy to benchmark."""
    from sim.scenarios import check_scenario
    from vla.config import SIZES
    from vla.config import PolicyConfig
    from vla.policies_registry import is_checkpoint
    from vla.policy import VLAPolicy, default_action_tokenizer

    check_scenario(args.scenario, args.density)
    for name in ("repeats", "episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.noise is not None and not all(0.0 <= s < float("inf") for s in args.noise):
        raise ValueError(f"--noise values must be finite and >= 0, got {args.noise}")
    for flag, path in (("--policy", args.policy), ("--baseline", args.baseline)):
        if path is not None and not is_checkpoint(path):
            raise ValueError(f"{flag} {path} is not a policy checkpoint directory (policy.json + model.safetensors)")
    if args.baseline is not None and args.policy is None:
        raise ValueError("--baseline needs --policy (the diffusion checkpoint it is compared with)")
    if args.policy is not None:
        policy = VLAPolicy.load(args.policy)
        if policy.config.head != "diffusion":
            raise ValueError(f"--policy {args.policy} has the {policy.config.head!r} head, not 'diffusion'")
    else:
        torch.manual_seed(0)
        config = PolicyConfig(**SIZES[args.size], cameras=not args.no_cameras, head="diffusion")
        policy = VLAPolicy(config, default_action_tokenizer(config.n_bins))
    limit = policy.config.diffusion_train_steps
    bad = [n for n in args.steps if not 1 <= n <= limit]
    if bad:
        raise ValueError(f"--steps {bad[0]} is outside [1, {limit}] (the policy's diffusion_train_steps)")
    return policy.eval()


def _with_steps(policy, steps: int, noise: float | None = None):
    noise = policy.config.diffusion_noise if noise is None else float(noise)
    policy.config = dataclasses.replace(policy.config, diffusion_inference_steps=int(steps), diffusion_noise=noise)
    return policy


def time_chunks(policy, steps: list[int], repeats: int, scenario: str, density: str, seed: int,
                log=print) -> dict:
    """Median ms per chunk of the binned head (random weights, same config) and of ``policy``
    at each step count, timed round-robin on one thread."""
    from sim.backends import DEFAULT_BACKEND, make_env
    from vla.policy import VLAPolicy, default_action_tokenizer

    torch.manual_seed(0)
    bins = VLAPolicy(dataclasses.replace(policy.config, head="bins"), default_action_tokenizer(policy.config.n_bins),
                     policy.layout, policy.rig).eval()
    env = make_env(DEFAULT_BACKEND, scenario, density, cameras=policy.rig)
    obs, _ = env.reset(seed=seed)
    variants = {"bins": (bins, None)} | {n: (policy, n) for n in steps}
    for p in (bins, policy):
        p.reset()
        p.hear(env.goal.command, env.goal.lang)
    times: dict = {k: [] for k in variants}
    for r in range(repeats + 2):  # 2 warm-up rounds
        for key, (p, n) in variants.items():
            if n is not None:
                _with_steps(p, n)
            t0 = time.perf_counter()
            p.predict_action_chunk(obs, generator=torch.Generator().manual_seed(r))
            if r >= 2:
                times[key].append(time.perf_counter() - t0)
    ms = {key: 1000.0 * float(np.median(v)) for key, v in times.items()}
    log(f"binned head: {ms['bins']:.2f} ms/chunk ({policy.config.horizon * 2} decoding steps)")
    for n in steps:
        log(f"diffusion head, {n:3d} steps ({policy.config.diffusion_scheduler}): {ms[n]:.2f} ms/chunk")
    return {"bins_ms_per_chunk": ms["bins"], "diffusion_ms_per_chunk": {str(n): ms[n] for n in steps}}


def closed_loop(policy, episodes: int, scenario: str, density: str, seed: int) -> dict:
    """Aggregate metrics (CLOSED_LOOP_KEYS) of ``policy`` over held-out episodes seed + i."""
    from vla.evaluation import evaluate

    metrics = evaluate(policy, scenario, density, range(seed, seed + episodes)).metrics
    return {k: metrics[k] for k in CLOSED_LOOP_KEYS}


def _line(name: str, m: dict) -> str:
    return f"{name}: " + ", ".join(f"{k} {m[k]:.3f}" for k in CLOSED_LOOP_KEYS)


def run(args: argparse.Namespace) -> int:
    from benchmarks.reports import to_jsonable

    policy = _check(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved = cfg = policy.config
    try:
        print(f"diffusion bench: {args.policy or 'random weights, size ' + args.size}, d={cfg.d_model} "
              f"x{cfg.n_layers} layers, H={cfg.horizon}, cameras {len(policy.rig)}, one thread", flush=True)
        result = {"policy": args.policy, "size": None if args.policy else args.size, "threads": 1,
                  "horizon": cfg.horizon, "scheduler": cfg.diffusion_scheduler, "steps": list(args.steps),
                  "repeats": args.repeats}
        result |= time_chunks(policy, args.steps, args.repeats, args.scenario, args.density, args.seed,
                              log=lambda line: print(line, flush=True))
        if args.policy is not None:
            rows = []
            for noise in args.noise or [cfg.diffusion_noise]:
                for n in args.steps:
                    metrics = closed_loop(_with_steps(policy, n, noise), args.episodes, args.scenario,
                                          args.density, args.seed)
                    rows.append({"steps": n, "noise": noise, **metrics})
                    print(_line(f"{n:3d} steps, noise {noise:g}", metrics), flush=True)
            result |= {"closed_loop": rows, "episodes": args.episodes, "scenario": args.scenario,
                       "density": args.density, "seed": args.seed}
            if args.baseline is not None:
                from vla.policy import VLAPolicy

                base = closed_loop(VLAPolicy.load(args.baseline).eval(), args.episodes, args.scenario,
                                   args.density, args.seed)
                print(_line(f"baseline {args.baseline}", base), flush=True)
                result |= {"baseline": args.baseline, "baseline_closed_loop": base}
    finally:
        policy.config = saved
        torch.set_num_threads(threads)
    print(json.dumps(to_jsonable(result), sort_keys=True))
    return 0
