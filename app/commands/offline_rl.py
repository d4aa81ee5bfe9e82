"""``vla train iql`` / ``vla train cql``: offline RL on a D4RL-layout dataset, through the shared
training loop (progress bar, log.csv, checkpoints, exact resume: run the same command again).

::

    vla train iql --data data/hw_mr.h5 --out runs/iql --steps 20000          # driving, MLP actor
    vla train cql --data pendulum.h5 --env Pendulum-v1 --out runs/cql         # gym, normalized score
    vla train iql --data data/hw_mr.h5 --bc --out runs/bc                     # the BC baseline
    vla train iql --data data/hw_mr.h5 --actor transformer --no-cameras ...   # the VLA policy

``--data``: a ``.h5``/``.hdf5``/``.npz`` D4RL file (``offline_rl.datasets``) or a ``vla collect``
episode directory (converted to OUT/dataset.h5 with ``--reward-weights``). ``--bc`` trains the
same actor on the same data and steps by behavior cloning (``offline_rl.bc``): the baseline.

Outputs: OUT/train (the loop's run directory), OUT/policy (the actor: an MLP checkpoint, kind
``offline_rl_mlp``, or the transformer policy; both load with ``vla eval --policy OUT/policy``)
and OUT/eval.json (the final evaluation). Evaluation: ``--env ID`` runs gymnasium episodes and
reports the return and, with reference returns (``--ref-min-return/--ref-max-return``, known
for Pendulum-v1), the D4RL normalized score; driving data (state vectors of ``sim.features``)
runs closed-loop episodes on the embedded simulator. ``--eval-every N`` also evaluates during
training (eval.jsonl in OUT/train).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla.errors import VLAError

HIDDEN_LAYERS = {"iql": 2, "cql": 3}
"""Default hidden layers per method (the papers' MLPs: 256x2 for IQL, 256x3 for CQL)."""


def _common(p: argparse.ArgumentParser, method: str) -> None:
    from offline_rl.networks import PRECISION_CHOICES
    from vla.options import add_policy_args

    p.add_argument("--data", required=True, help="D4RL-layout .h5/.hdf5/.npz file, or a vla collect episode directory")
    p.add_argument("--out", required=True, help="run directory (an existing one is resumed)")
    p.add_argument("--steps", type=int, default=10000, help="gradient steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="transitions per step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and sampling (default: %(default)s)")
    p.add_argument("--actor", choices=("mlp", "transformer"), default="mlp",
                   help="MLP actor over state vectors, or the transformer policy (default: %(default)s)")
    p.add_argument("--bc", action="store_true",
                   help="train the baseline instead: the same actor by behavior cloning, no critics")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (default: %(default)s)")
    p.add_argument("--layers", type=int, default=HIDDEN_LAYERS[method],
                   help="MLP hidden layers (default: %(default)s)")
    p.add_argument("--discount", type=float, default=0.99, help="gamma (default: %(default)s)")
    p.add_argument("--precision", choices=("auto", *PRECISION_CHOICES), default="auto",
                   help="matmul input precision of the MLPs (accumulation, parameters and Adam stay "
                        "float32); auto = bfloat16 on CPUs with bf16 instructions (AVX512-BF16, AMX), "
                        "else float32; a resumed run keeps its own (default: %(default)s)")
    p.add_argument("--compile", nargs="?", const="on", choices=("auto", "on", "off"), default="auto",
                   help="compile the losses with torch.compile (seconds at the first step, then 1.3-1.6x "
                        "the steps/s); auto = on for MLP actors where a C++ compiler is found, falling "
                        "back to eager with a warning if compiling fails; a resumed run keeps its own "
                        "(default: %(default)s)")
    p.add_argument("--normalize-reward", action="store_true",
                   help="scale rewards by 1000 / (max - min episode return) (IQL paper, locomotion)")
    p.add_argument("--no-normalize-obs", action="store_true", help="feed raw observations to the networks")
    p.add_argument("--reward-weights", default="",
                   help='JSON overriding sim.storage.RewardWeights when --data is an episode directory, '
                        'e.g. \'{"collision": -20}\'')
    p.add_argument("--episodes", default="",
                   help="transformer actor: the episode directory the dataset was exported from "
                        "(default: the file's 'source' attribute)")
    p.add_argument("--env", default="", help="gymnasium env id to evaluate in, e.g. Pendulum-v1")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps; 0 = only at the end")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation; 0 = none (default: %(default)s)")
    p.add_argument("--eval-seed", type=int, default=1000, help="seed of the first evaluation episode (default: %(default)s)")
    p.add_argument("--ref-min-return", type=float, default=None, help="normalized score 0 (default: known for Pendulum-v1)")
    p.add_argument("--ref-max-return", type=float, default=None, help="normalized score 100 (default: known for Pendulum-v1)")
    p.add_argument("--scenario", default="highway", help="driving evaluation scenario (default: %(default)s)")
    p.add_argument("--density", default="medium", help="driving evaluation density (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint period (default: steps / 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_policy_args(p)


def configure_iql(p: argparse.ArgumentParser) -> None:
    _common(p, "iql")
    p.add_argument("--tau", type=float, default=0.7, help="expectile (default: %(default)s)")
    p.add_argument("--beta", type=float, default=3.0, help="advantage inverse temperature (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam lr of every network (default: %(default)s)")
    p.add_argument("--value-loss", choices=("expectile", "quantile"), default="expectile",
                   help="value loss (default: %(default)s)")


def configure_cql(p: argparse.ArgumentParser) -> None:
    from offline_rl.networks import PRECISION_CHOICES

    _common(p, "cql")
    p.add_argument("--cql-alpha", type=float, default=5.0, help="penalty weight (default: %(default)s)")
    p.add_argument("--n-actions", type=int, default=10, help="sampled actions per source (default: %(default)s)")
    p.add_argument("--lagrange", action="store_true", help="tune the penalty weight toward --target-action-gap")
    p.add_argument("--target-action-gap", type=float, default=10.0, help="Lagrange threshold (default: %(default)s)")
    p.add_argument("--critic-lr", type=float, default=3e-4, help="critic lr (default: %(default)s)")
    p.add_argument("--actor-lr", type=float, default=1e-4, help="actor and alpha lr (default: %(default)s)")
    p.add_argument("--penalty", choices=("cql_h", "mean_gap"), default="cql_h", help="penalty (default: %(default)s)")
    p.add_argument("--penalty-precision", choices=("auto", *PRECISION_CHOICES), default="auto",
                   help="matmul precision of the penalty's sampled Q evaluations; auto = --precision's "
                        "(default: %(default)s)")


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "hidden", "layers"):
        if getattr(args, name) < 1:
            raise VLAError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("eval_every", "eval_episodes", "checkpoint_every", "threads", "seed"):
        if getattr(args, name) < 0:
            raise VLAError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if (args.ref_min_return is None) != (args.ref_max_return is None):
        raise VLAError("give both --ref-min-return and --ref-max-return, or neither")
    if args.actor == "transformer" and args.env:
        raise VLAError("--actor transformer reads driving episodes; --env is for MLP actors on gym data")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VLAError(f"--out {out} is a file, not a directory")


def _load_data(args: argparse.Namespace, out: Path):
    from offline_rl.datasets import (
        episodes_to_d4rl,
        load_d4rl,
        reward_weights_from_json,
    )

    source = Path(args.data)
    if source.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        data = episodes_to_d4rl(source, out / "dataset.h5", reward_weights_from_json(args.reward_weights))
        return data, source
    if not source.exists():
        raise VLAError(f"--data {source} does not exist")
    data = load_d4rl(source)
    hint = args.episodes or data.attrs.get("source", "")
    return data, (Path(hint) if hint else None)


def _is_driving(data) -> bool:
    from sim.features import STATE_DIM

    return data.obs_dim == STATE_DIM and data.action_dim == 2 and "feature_names" in data.attrs


def _action_bounds(args: argparse.Namespace, data):
    from sim.interface import ACTION_HIGH, ACTION_LOW

    if args.env:
        import gymnasium as gym

        try:
            space = gym.make(args.env).action_space
        except gym.error.Error as e:
            raise VLAError(f"--env {args.env}: {e}") from e
        if space.shape != (data.action_dim,):
            raise VLAError(f"--env {args.env} has actions of shape {space.shape}, the dataset {data.action_dim}")
        return space.low, space.high
    return (ACTION_LOW, ACTION_HIGH) if _is_driving(data) else None


def _speed_settings(args: argparse.Namespace, method_name: str) -> tuple[str, str, bool]:
    """(matmul precision, CQL penalty precision, compile) from ``--precision`` /
    ``--penalty-precision`` / ``--compile``. ``auto`` keeps what the run in ``--out`` used when
    it resumes one, and is otherwise resolved for this machine
    (``offline_rl.networks.resolve_precision`` / ``resolve_compile``). An automatic compile that
    fails falls back to eager (torch._dynamo's ``suppress_errors``) with a warning.
    ``--compile auto`` compiles MLP actors only: with the transformer actor the loss holds the
    whole decoder, whose compile time was never measured against its gain (``--compile on``)."""
    from offline_rl.networks import resolve_compile, resolve_precision
    from vla.checkpoint import latest_checkpoint, load_config

    checkpoint = latest_checkpoint(Path(args.out) / "train")
    saved = load_config(checkpoint).get("method_config", {}).get(method_name, {}) if checkpoint else {}
    precision = saved["precision"] if args.precision == "auto" and "precision" in saved \
        else resolve_precision(args.precision)
    penalty = args.penalty_precision if getattr(args, "penalty_precision", "auto") != "auto" \
        else saved.get("penalty_precision", precision)
    if args.compile == "auto" and "compile" in saved:
        compile_ = bool(saved["compile"])
    elif args.compile == "auto" and args.actor != "mlp":
        compile_ = False
    else:
        compile_ = resolve_compile(args.compile)
    if compile_ and args.compile == "auto":
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
    return precision, penalty, compile_


def _bc(args: argparse.Namespace, method_name: str, s: int, a: int, speed: tuple, actor):
    """The behaviour-cloning baseline (``--bc``) on the same actor as ``method_name`` would train."""
    from offline_rl.bc import BC, MLPBCConfig

    kind = "gaussian" if method_name == "iql" else "tanh_gaussian"
    return BC(s, a, MLPBCConfig(cosine_steps=args.steps if method_name == "iql" else 0, hidden=args.hidden,
                                n_hidden=args.layers, actor=kind), actor)


def _iql(args: argparse.Namespace, method_name: str, s: int, a: int, speed: tuple, actor):
    from offline_rl.iql import IQL, IQLConfig

    precision, _, compile_ = speed
    return IQL(s, a, IQLConfig(tau=args.tau, beta=args.beta, discount=args.discount, critic_lr=args.lr,
                               value_lr=args.lr, actor_lr=args.lr, actor_cosine_steps=args.steps,
                               hidden=args.hidden, n_hidden=args.layers, value_loss=args.value_loss,
                               precision=precision, compile=compile_), actor)


def _cql(args: argparse.Namespace, method_name: str, s: int, a: int, speed: tuple, actor):
    from offline_rl.cql import CQL, CQLConfig

    precision, penalty_precision, compile_ = speed
    return CQL(s, a, CQLConfig(discount=args.discount, critic_lr=args.critic_lr, actor_lr=args.actor_lr,
                               n_actions=args.n_actions, cql_alpha=args.cql_alpha, lagrange=args.lagrange,
                               target_action_gap=args.target_action_gap, hidden=args.hidden,
                               n_hidden=args.layers, penalty=args.penalty, precision=precision,
                               penalty_precision=penalty_precision, compile=compile_), actor)


OFFLINE_METHODS = {"iql": _iql, "cql": _cql}
"""``vla train NAME`` -> builder(args, NAME, obs_dim, action_dim, speed, actor) of its method;
``--bc`` builds the BC baseline (``_bc``) instead. A new method is one builder and one line."""


def _build(args: argparse.Namespace, method_name: str, data, episodes, normalizer,
           speed: tuple[str, str, bool]):
    """(training method, batch source); ``speed`` from ``_speed_settings``."""
    from offline_rl.actors import EpisodeInputs, TransformerActor
    from offline_rl.replay import TransitionData

    actor, inputs = None, None
    if args.actor == "transformer":
        if not _is_driving(data):
            raise VLAError("--actor transformer needs a driving dataset (vla collect --d4rl)")
        if episodes is None or not episodes.is_dir():
            raise VLAError(f"--actor transformer needs the episode directory of the dataset (--episodes); got {episodes}")
        from vla.options import policy_config
        from vla.policy import VLAPolicy, default_action_tokenizer

        config = policy_config(args)
        policy = VLAPolicy(config, default_action_tokenizer(config.n_bins), name=str(Path(args.out) / "policy"))
        inputs = EpisodeInputs(episodes, data, policy)
        actor = TransformerActor(policy, normalizer)
    build = _bc if args.bc else OFFLINE_METHODS[method_name]
    method = build(args, method_name, data.obs_dim, data.action_dim, speed, actor)
    next_inputs = inputs is not None and method_name == "cql" and not args.bc
    return method, TransitionData(data, normalizer, inputs, next_inputs=next_inputs)


def _evaluator(args: argparse.Namespace, data, method, normalizer):
    """``eval_fn()`` -> metrics dict, or None when there is nothing to evaluate in."""
    from offline_rl.evaluation import evaluate_driving, evaluate_gym
    from offline_rl.pendulum import REFERENCE_RETURNS
    from offline_rl.policy import MLPPolicy

    def policy():
        if args.actor == "transformer":
            return method.actor.policy
        return MLPPolicy(method.actor.net, normalizer, name=f"{method.name} (training)")

    if args.eval_episodes == 0:
        return None
    if args.env:
        ref = (args.ref_min_return, args.ref_max_return) if args.ref_min_return is not None \
            else REFERENCE_RETURNS.get(args.env)
        return lambda: evaluate_gym(policy().act, args.env, args.eval_episodes, args.eval_seed, ref)
    if _is_driving(data):
        from sim.scenarios import check_scenario

        check_scenario(args.scenario, args.density)
        return lambda: evaluate_driving(policy(), args.scenario, args.density, args.eval_episodes, args.eval_seed)
    return None


def _run(args: argparse.Namespace, method_name: str) -> int:
    import torch

    from offline_rl.policy import save_mlp_policy
    from offline_rl.replay import Normalizer
    from sim.atomic import atomic_output
    from vla.train_loop import TrainConfig, train

    _check(args)
    out = Path(args.out)
    data, episodes = _load_data(args, out)
    normalizer = Normalizer.fit(data, normalize_obs=not args.no_normalize_obs,
                                action_bounds=_action_bounds(args, data),
                                reward_scale="returns" if args.normalize_reward else 1.0)
    torch.manual_seed(args.seed)
    speed = _speed_settings(args, method_name)
    method, batches = _build(args, method_name, data, episodes, normalizer, speed)
    evaluate = _evaluator(args, data, method, normalizer)
    if args.eval_every and evaluate is None:
        raise VLAError("--eval-every needs something to evaluate in: --env ID, or a driving dataset")
    print(f"{method.name} ({args.actor} actor): {len(batches)} transitions, obs {data.obs_dim}, "
          f"actions {data.action_dim}, {args.steps} steps of {args.batch_size}", flush=True)
    if not args.bc:
        print(f"matmul inputs {speed[0]} (--precision {args.precision}), "
              f"{'compiled' if speed[2] else 'eager'} (--compile {args.compile})", flush=True)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                         eval_every=args.eval_every, threads=args.threads, progress=not args.no_progress,
                         checkpoint_every=args.checkpoint_every or max(1, args.steps // 5),
                         log_every=max(1, min(100, args.steps // 20)))
    result = train(method, batches, config, out / "train",
                   eval_fn=(lambda step: evaluate()) if evaluate else None,
                   log=lambda line: print(line, flush=True))
    if args.actor == "transformer":
        method.actor.policy.save(out / "policy")
    else:
        save_mlp_policy(out / "policy", method.actor.net, normalizer, method.name, args.hidden, args.layers)
    summary = {"method": method.name, "actor": args.actor, "steps": result.steps_done,
               **{k: float(v) for k, v in result.last_logs.items()}}
    if evaluate is not None:
        with torch.no_grad():
            summary["eval"] = evaluate()
        with atomic_output(out / "eval.json") as tmp:
            tmp.write_text(json.dumps(summary["eval"], indent=1) + "\n")
    print(f"wrote {out / 'policy'} (evaluate it: vla eval --policy {out / 'policy'} ...)")
    print(json.dumps(summary, sort_keys=True, default=float))
    return 0


def run_iql(args: argparse.Namespace) -> int:
    return _run(args, "iql")


def run_cql(args: argparse.Namespace) -> int:
    return _run(args, "cql")
