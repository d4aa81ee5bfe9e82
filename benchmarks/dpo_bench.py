"""``vla bench dpo``: preference-pair updates per second on ONE CPU thread.

Setup: the transformer policy at ``--size`` (default small, blind: state tokens + the IPA
command), ``--pairs`` synthetic pairs (random scaled ego / actor features, a random 24-token
command, random chosen / rejected chunks inside the action limits, random reference
log-probabilities: speed does not depend on the values). A step = gather a ``PairBatch``
(``PairDataset.batch``: encode nothing, stack 2B rows) + ``DPOMethod.update`` (one
teacher-forced forward of 2B rows, the loss, backward, AdamW). The first ``--warmup`` steps
are not timed; the figure is the median of ``--repeats`` timed runs. The last line printed is
one JSON object: ``pairs_per_s`` (= batch_size x updates/s), ``updates_per_s``, ``batch_size``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="small", help="policy size: tiny, small or base (default: %(default)s)")
    p.add_argument("--loss", default="dpo", help="preference loss (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per update (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed updates per repeat (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates first (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=512, help="synthetic pairs in the dataset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default: %(default)s)")


def synthetic_pairs(policy, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` random pairs in the ``methods.pairs`` shard layout (values are meaningless)."""
    from methods.constitution import RULE_NAMES
    from sim.interface import ACTION_HIGH, ACTION_LOW, EGO_FIELDS

    rng = np.random.default_rng(seed)
    h, lc = policy.config.horizon, policy.config.command_ids_max
    lo, hi = policy.layout.ranges["ipa"]
    command = np.full((n, lc), policy.layout.special("<pad>"), np.int64)
    command[:, :24] = rng.integers(lo, hi, size=(n, 24))
    mask = np.zeros((n, lc), bool)
    mask[:, :24] = True

    def chunk() -> np.ndarray:
        return rng.uniform(ACTION_LOW, ACTION_HIGH, size=(n, h, 2)).astype(np.float32)

    return {
        "ego": rng.normal(size=(n, len(policy.observation.ego_fields))).astype(np.float32),
        "actors": rng.normal(size=(n, policy.observation.actors, len(policy.observation.actor_fields))).astype(np.float32),
        "command": command, "command_mask": mask,
        "ego_raw": np.zeros((n, len(EGO_FIELDS)), np.float32),
        "seed": np.arange(n, dtype=np.int64), "step": np.zeros(n, np.int64),
        "rule": np.array([RULE_NAMES[0]] * n, dtype="U16"), "kind": np.array(["rank"] * n, dtype="U16"),
        "goal_label": np.array(["keep_lane"] * n, dtype="U16"),
        "chosen_source": np.array(["expert"] * n, dtype="U16"), "rejected_source": np.array(["greedy"] * n, dtype="U16"),
        "chosen_actions": chunk(), "rejected_actions": chunk(),
        "chosen_mask": np.ones((n, h), bool), "rejected_mask": np.ones((n, h), bool),
        "chosen_costs": np.zeros((n, len(RULE_NAMES)), np.float32),
        "rejected_costs": np.zeros((n, len(RULE_NAMES)), np.float32),
        "chosen_steps": np.full(n, h, np.int64), "rejected_steps": np.full(n, h, np.int64),
    }


def updates_per_second(method, data, steps: int, warmup: int, repeats: int, batch_size: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(data), size=(warmup + repeats * steps, batch_size))
    for idx in draws[:warmup]:
        method.update(data.batch(idx))
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for idx in draws[warmup + r * steps: warmup + (r + 1) * steps]:
            method.update(data.batch(idx))
        rates.append(steps / (time.perf_counter() - start))
    return float(np.median(rates))


def run(args: argparse.Namespace) -> int:
    from vla.config import SIZES
    from vla.errors import VLAError

    if args.size not in SIZES:
        raise VLAError(f"unknown --size {args.size!r}; choose one of {', '.join(SIZES)}")
    for name in ("batch_size", "steps", "repeats", "pairs"):
        if getattr(args, name) < 1:
            raise VLAError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from methods.dpo import DPOConfig, DPOMethod, PairDataset
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = DPOConfig(loss=args.loss)  # validates the loss name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(args.seed)
        pc = PolicyConfig(**SIZES[args.size], cameras=False)
        policy = VLAPolicy(pc, default_action_tokenizer(pc.n_bins))
        rng = np.random.default_rng(args.seed)
        data = PairDataset(synthetic_pairs(policy, args.pairs, args.seed), policy,
                           ref_logp=rng.normal(-20.0, 3.0, size=(args.pairs, 2)).astype(np.float32))
        method = DPOMethod(policy, config)
        rate = updates_per_second(method, data, args.steps, args.warmup, args.repeats, args.batch_size, args.seed)
    finally:
        torch.set_num_threads(threads)
    params = sum(p.numel() for p in policy.parameters())
    print(f"dpo bench: size {args.size} ({params} parameters, blind), loss {args.loss}, batch {args.batch_size} "
          f"pairs, horizon {pc.horizon}: {rate:.2f} updates/s, {rate * args.batch_size:.1f} pairs/s (1 thread)")
    print(json.dumps({"pairs_per_s": rate * args.batch_size, "updates_per_s": rate, "batch_size": args.batch_size,
                      "size": args.size, "loss": args.loss, "threads": 1, "parameters": params}, sort_keys=True))
    return 0
