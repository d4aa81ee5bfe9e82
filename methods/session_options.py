"""Command-line options of a DAgger / BC session (``methods.dagger.DaggerConfig``), shared by
``vla dagger`` and the studies (``benchmarks.dagger_study``, ``benchmarks.plan_study``), each
with its own defaults: ``add_session_args`` adds them, ``dagger_config`` reads them back."""

from __future__ import annotations

import argparse

from vla.config import VAL_SAMPLES
from vla.options import add_command_data_args, add_policy_args, add_ray_args, policy_config


def add_session_args(p: argparse.ArgumentParser, train_steps: int = 300,
                     eval_option: str = "--eval-episodes", eval_default: int = 5, **defaults) -> None:
    """The DAgger session's options (``DaggerConfig``) and the policy's; ``dagger_config``
    reads them back. Each command and study passes its own ``defaults`` (argparse dests)."""
    p.add_argument("--iterations", type=int, default=3, help="DAgger iterations after BC; resuming a finished session with more "
                   "extends it (default: %(default)s)")
    p.add_argument("--expert-episodes", type=int, default=8, help="expert episodes for iteration 0 (default: %(default)s)")
    p.add_argument("--rollouts", type=int, default=4,
                   help="policy rollouts per iteration; 0 = none: the iterations only retrain on the expert data, "
                        "DAgger's equal-compute BC control (default: %(default)s)")
    p.add_argument(eval_option, dest="session_eval_episodes", type=int, default=eval_default,
                   metavar=eval_option.lstrip("-").replace("-", "_").upper(),
                   help="held-out evaluation episodes per iteration (default: %(default)s)")
    p.add_argument("--train-steps", type=int, default=train_steps, help="gradient steps per iteration (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--beta0", type=float, default=0.5, help="expert mixing in iteration 1 (default: %(default)s)")
    p.add_argument("--beta-decay", type=float, default=0.5, help="beta_k = beta0 * decay^(k-1) (default: %(default)s)")
    p.add_argument("--from-scratch", action="store_true", help="retrain each iteration from scratch (default: warm start)")
    p.add_argument("--workers", type=int, default=2, help="rollout processes (default: %(default)s)")
    add_ray_args(p)
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads while the policy trains; 0: one per rollout worker, up to the cores this "
                        "process may use (the workers wait meanwhile); 1 when other jobs share the cores "
                        "(default: %(default)s)")
    p.add_argument("--val-data", nargs="+", default=[], metavar="DIR",
                   help="held-out expert datasets (vla collect, other seeds): each iteration's open-loop loss on them "
                        "and on its training data goes to iter_K/train/eval.jsonl and the table; their gap "
                        "measures memorization")
    p.add_argument("--val-samples", type=int, default=VAL_SAMPLES, metavar="N",
                   help="--val-data: samples drawn once from each side (default: %(default)s)")
    p.add_argument("--label-every", type=int, default=1, metavar="K",
                   help="simulate the expert's continuation (chunk / plan label) at every K-th state of a "
                        "policy rollout only; a plan label costs 20 simulator steps (default: %(default)s)")
    p.add_argument("--dart", action=argparse.BooleanOptionalAction, default=False,
                   help="perturb the expert's execution in iteration 0's episodes with DART bursts "
                        "(labels stay the expert's clean actions; sim.rollout.DartNoise) (default: %(default)s)")
    p.add_argument("--dart-speed", type=float, default=0.0, metavar="P",
                   help="with --dart: also start a DART speed burst (a held acceleration offset, 2-5 s) with chance "
                        "P per step of iteration 0 (sim.rollout.DartNoise.speed_prob); 0 = off (default: %(default)s)")
    p.add_argument("--rollout-goal-bias", default="", metavar="LABEL=P[,...]",
                   help="the learner's highway rollouts (iterations >= 1) are told LABEL first with chance P when "
                        "the traffic allows it, e.g. slow_down=0.5: more of its own states under a goal type it "
                        "misses; expert data and evaluations keep the usual draw (default: none)")
    p.add_argument("--rollout-start-speed", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="the learner's highway rollouts (iterations >= 1) start our car at a speed drawn from "
                        "[LO, HI] m/s, so it is also labelled from speeds away from its targets; expert data and "
                        "evaluations keep the usual start; embedded simulator only (default: the scenario's start)")
    p.add_argument("--disagreement-weight", type=float, default=0.0, metavar="W",
                   help="draw the learner's rollout states in proportion to how far its action was from the "
                        "expert's: a state at x times the mean disagreement is listed 1 + round(W (x - 1)) times "
                        "(1 to 8); 0 = each once (default: %(default)s)")
    add_command_data_args(p, relabel_help="also record and train on the expert's action under every other "
                                          "highway goal at every visited state")
    add_policy_args(p)
    p.set_defaults(**defaults)


def dagger_config(args: argparse.Namespace, scenario: str, density: str, seed: int):
    """The ``DaggerConfig`` of options added by ``add_session_args``."""
    from methods.dagger import DaggerConfig

    if args.val_samples != VAL_SAMPLES and not args.val_data:
        raise ValueError("--val-samples needs --val-data (held-out datasets)")
    return DaggerConfig(
        scenario=scenario, density=density, iterations=args.iterations,
        expert_episodes=args.expert_episodes, rollouts=args.rollouts, eval_episodes=args.session_eval_episodes,
        beta0=args.beta0, beta_decay=args.beta_decay, warm_start=not args.from_scratch,
        train_steps=args.train_steps, batch_size=args.batch_size, lr=args.lr, seed=seed,
        workers=args.workers, threads=args.threads, augment_commands=args.augment_commands, goal_relabel=args.goal_relabel,
        audio_renditions=getattr(args, "audio_renditions", 4), audio_voices=getattr(args, "audio_voices", "train"),
        command_grammar=getattr(args, "command_grammar", False),
        phone_errors=getattr(args, "phone_errors", 0.0), paraphrase=getattr(args, "paraphrase", 0.0),
        chitchat=getattr(args, "chitchat", 0.0), balance_speed=getattr(args, "balance_speed", False),
        dart=args.dart, dart_speed=getattr(args, "dart_speed", 0.0), label_every=args.label_every, policy=policy_config(args),
        rollout_goal_bias=getattr(args, "rollout_goal_bias", ""),
        rollout_start_speed=getattr(args, "rollout_start_speed", None),  # DaggerConfig makes it a (lo, hi) tuple
        disagreement_weight=getattr(args, "disagreement_weight", 0.0),
        backend=getattr(args, "backend", "embedded"), ray=getattr(args, "ray", None),
        val_data=tuple(args.val_data), val_samples=args.val_samples)
