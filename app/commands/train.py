"""``vla dagger`` and ``vla train bc``: training the transformer policy.

Both commands resume: run the same command again after an interruption (Ctrl-C, kill -9) and
it continues where it stopped (``methods.dagger``, ``vla.train_loop``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.metrics import format_table
from methods.session_options import add_session_args, dagger_config
from vla.config import VAL_SAMPLES
from vla.options import (accel_from_args, add_accel_args, add_backend_args, add_command_data_args, add_policy_args,
                         apply_backend_args, check_flags, policy_config)

ITERATION_COLUMNS = ("iteration", "setting", "beta", "dataset_episodes", "dataset_steps", "train_loss",
                     "collision_rate", "off_road_rate", "progress_mean", "goal_success_rate",
                     "jerk_long_p95", "comfort_fraction", "driving_score", "wall_time_s")


MAIN_JOB_DEFAULTS = dict(default_action="plan", observation="lane_frame", dart=True, goal_relabel=True,
                         command_grammar=True, command_label_weight=1.0, beta0=0.0, expert_episodes=8, rollouts=4,
                         train_steps=400, label_every=5)
"""``vla dagger``'s defaults: the recipe of the learning-curve study (plans in the lane frame,
DART and goal-relabelled expert data, the learner driving from iteration 1) plus the command
grammar (held-out phrasings, 3 seeds x 50 episodes per density: goal success +0.077 [+0.013,
+0.140] pooled over medium and dense, off-road -0.017) and the command-label loss (the
``<action>`` state names the heard command; same protocol, medium + dense data: goal success
+0.070 [+0.020, +0.123] pooled, held-out "left" 59/90 -> 80/90, collision +0.003 [0, +0.010];
docs/drive_like_expert.md), sized so the README's main job finishes in minutes on 2 cores."""


def configure_dagger(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default="highway",
                   help="scenario family, or several joined by commas for one policy that drives in all "
                        "(e.g. highway,intersection) (default: %(default)s)")
    p.add_argument("--density", default="medium",
                   help="traffic density, or several joined by commas (default: %(default)s)")
    p.add_argument("--out", required=True, help="run directory (created; an existing one is resumed)")
    p.add_argument("--seed", type=int, default=0, help="session seed (default: %(default)s)")
    p.add_argument("--start-from", default="", metavar="POLICY",
                   help="improve this checkpoint (vla train bc, an earlier session) instead of training BC in "
                        "iteration 0; the policy is the checkpoint's (size, inputs, action head), so the policy "
                        "options below may only repeat what it already is")
    p.add_argument("--expert-data", nargs="+", default=[], metavar="DIR",
                   help="iteration 0's expert episodes: the first --expert-episodes episodes of these datasets "
                        "(vla collect), copied into the run, instead of recording new ones")
    add_session_args(p, **MAIN_JOB_DEFAULTS)
    add_backend_args(p)
    add_accel_args(p)


def _start_from(args: argparse.Namespace, config):
    """``config`` with ``--start-from`` / ``--expert-data`` applied: the policy config becomes
    the checkpoint's, and a policy option given on the command line that contradicts it is a
    one-line error (a warm start cannot change the architecture)."""
    from dataclasses import fields, replace

    from vla.policy import read_policy_config

    if args.expert_data:
        config = replace(config, expert_data=tuple(args.expert_data))
    if not args.start_from:
        return config
    saved = read_policy_config(args.start_from)
    defaults = argparse.ArgumentParser()
    configure_dagger(defaults)
    default_policy = policy_config(defaults.parse_args(["--out", "-"]))
    for f in fields(saved):
        given, default = getattr(config.policy, f.name), getattr(default_policy, f.name)
        if given != default and given != getattr(saved, f.name):
            raise ValueError(f"--start-from {args.start_from}: its {f.name} is {getattr(saved, f.name)!r}, the "
                             f"command line asks for {given!r}; drop that option (the session trains the checkpoint)")
    return replace(config, policy=saved, start_policy=args.start_from)


def run_dagger(args: argparse.Namespace) -> int:
    from methods.dagger import DaggerSession
    from vla.distributed import is_main

    check_flags(args)
    apply_backend_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    config = _start_from(args, dagger_config(args, args.scenario, args.density, args.seed))
    session = DaggerSession(config, out, log=lambda line: print(line, flush=True), accel=accel_from_args(args))
    lines = session.run_all()
    if not is_main():
        return 0  # under torchrun rank 0 reports
    rows, columns = [], ITERATION_COLUMNS
    if any("open_loop" in line for line in lines):  # --val-data: the open-loop losses beside the training loss
        at = columns.index("train_loss") + 1
        columns = columns[:at] + ("open_loop_train", "open_loop_val") + columns[at:]
    for line in lines:
        head = {k: v for k, v in line.items() if k not in ("metrics", "per_setting", "open_loop")}
        if "open_loop" in line:
            head.update(open_loop_train=line["open_loop"]["train_loss"], open_loop_val=line["open_loop"]["val_loss"])
        rows.append({**head, "setting": "all" if line.get("per_setting") else f"{args.scenario}_{args.density}",
                     **line["metrics"]})
        rows += [{"iteration": line["iteration"], "setting": name, **m}
                 for name, m in line.get("per_setting", {}).items()]
    print(format_table(rows, columns))
    print(f"wrote {out / 'iterations.jsonl'} and {out / 'metrics.json'}; final policy: "
          f"{out / f'iter_{args.iterations:03d}' / 'policy'}")
    return 0


TRAIN_METHODS: dict[str, tuple[str, str, str, str]] = {
    "diffusion": ("app.commands.train_diffusion", "configure", "run",
                  "the transformer policy with a diffusion action head, on a recorded dataset"),
    "iql": ("app.commands.offline_rl", "configure_iql", "run_iql",
            "offline RL: implicit Q-learning on a D4RL-layout dataset (MLP or transformer actor)"),
    "cql": ("app.commands.offline_rl", "configure_cql", "run_cql",
            "offline RL: conservative Q-learning on a D4RL-layout dataset (MLP or transformer actor)"),
    "dpo": ("app.commands.dpo", "configure_train", "run_train",
            "preference optimization (DPO / IPO / ORPO) of a policy against a frozen reference"),
}
"""``vla train METHOD`` besides ``bc``: name -> (module, configure function, run function, help).
A module is imported only when its method is on the command line, so the others start fast."""


def configure_train(p: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    from app.cli import add_lazy_parsers, command_words

    words = command_words(argv)
    wanted = set(words[1:2]) if words[:1] == ["train"] else set()
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    bc = methods.add_parser("bc", help="behavior cloning on a recorded dataset (vla collect)",
                            description="Goal-conditioned behavior cloning: the policy hears each "
                                        "episode's recorded command and imitates the expert labels.")
    add_dataset_train_args(bc)
    bc.set_defaults(func=run_train_bc, default_action="plan", observation="lane_frame")
    add_lazy_parsers(methods, TRAIN_METHODS, wanted, argv)


def add_dataset_train_args(p: argparse.ArgumentParser, head: str | None = None) -> None:
    """Options of training the transformer policy on recorded datasets (``vla train bc`` and
    ``vla train diffusion``, which passes ``head``)."""
    p.add_argument("--data", required=True, nargs="+", help="dataset directories written by vla collect")
    p.add_argument("--out", required=True, help="run directory (an existing one is resumed)")
    p.add_argument("--steps", type=int, default=1000, help="gradient steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and sampling (default: %(default)s)")
    p.add_argument("--val-data", nargs="+", default=[], metavar="DIR",
                   help="held-out datasets (vla collect, other seeds than --data): every --val-every steps the "
                        "policy's open-loop loss on them and on the training episodes (both without command "
                        "augmentation) goes to OUT/train/eval.jsonl and the log; their gap measures memorization")
    p.add_argument("--val-every", type=int, default=0, metavar="N",
                   help="--val-data: evaluate every N steps and at the end (default: 0 = the checkpoint interval, "
                        "steps / 5)")
    p.add_argument("--val-samples", type=int, default=VAL_SAMPLES, metavar="N",
                   help="--val-data: samples drawn once (seeded) from each side (default: %(default)s)")
    add_command_data_args(p, relabel_help="also train on the expert's actions under the other goals where "
                                          "the data has them (vla collect --goal-labels)")
    add_policy_args(p, head=head)
    add_accel_args(p)


def run_train_bc(args: argparse.Namespace) -> int:
    """``vla train bc``: the policy (head from --head) cloned on the datasets."""
    return run_train_policy(args)


def run_train_policy(args: argparse.Namespace) -> int:
    """Behavior cloning of the transformer policy, whichever its head (``args.head``), on
    ``args.data`` through the shared training loop; writes OUT/train and OUT/policy."""
    import torch

    from methods.bc import BCConfig, BCMethod
    from sim.storage import read_episodes
    from vla.data import DemoDataset, check_balance_speed, open_loop_validation
    from vla.policy import VLAPolicy, default_action_tokenizer
    from vla.distributed import is_main
    from vla.train_loop import TrainConfig, train

    check_flags(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    config = policy_config(args)
    check_balance_speed(args.balance_speed, config.action)  # before anything is written
    accel = accel_from_args(args)
    if args.val_every < 0 or args.val_samples < 1:
        raise ValueError(f"--val-every must be >= 0 and --val-samples >= 1, got {args.val_every} and {args.val_samples}")
    if (args.val_every or args.val_samples != VAL_SAMPLES) and not args.val_data:
        raise ValueError("--val-every / --val-samples need --val-data (held-out datasets)")
    overlap = {str(Path(d).resolve()) for d in args.val_data} & {str(Path(d).resolve()) for d in args.data}
    if overlap:
        raise ValueError(f"--val-data {sorted(overlap)[0]} is also in --data: held-out data must not be trained on")
    episodes = [ep for d in args.data for ep in read_episodes(d, load_frames=config.cameras)]
    val_episodes = [ep for d in args.val_data for ep in read_episodes(d, load_frames=config.cameras)]
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = default_action_tokenizer(config.n_bins, config.action)
    torch.manual_seed(args.seed)
    policy = VLAPolicy(config, tokenizer, name=str(out / "policy"))
    data = DemoDataset(policy, augment_commands=args.augment_commands, goal_relabel=args.goal_relabel,
                       audio_renditions=args.audio_renditions, command_grammar=args.command_grammar,
                       phone_errors=args.phone_errors, paraphrase=args.paraphrase, chitchat=args.chitchat,
                       audio_voices=args.audio_voices, balance_speed=args.balance_speed)
    for ep in episodes:
        data.add_episode(ep)
    print(f"{len(episodes)} episodes, {len(data)} samples ({data.counterfactual_samples} under other goals); "
          f"training on {accel.device}, {accel.precision}{', compiled' if accel.compile else ''}", flush=True)
    method = BCMethod(policy, BCConfig(lr=args.lr, total_steps=args.steps, warmup_steps=min(50, args.steps // 5)),
                      accel)
    checkpoint_every = max(50, args.steps // 5)
    validation = (open_loop_validation(policy, data, val_episodes, args.val_samples, args.seed,
                                       log=lambda line: print(line, flush=True) if is_main() else None)
                  if val_episodes else None)
    val_every = (args.val_every or checkpoint_every) if validation else 0
    result = train(method, data, TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                             checkpoint_every=checkpoint_every, eval_every=val_every),
                   out / "train", eval_fn=validation, log=lambda line: print(line, flush=True))
    if not is_main():
        return 0  # data-parallel: rank 0 writes the policy
    policy.save(out / "policy")
    final = validation(result.steps_done) if validation else {}
    if final:
        print(f"open-loop loss at step {result.steps_done}: training episodes {final['train_loss']:.3f}, held-out "
              f"{final['val_loss']:.3f} ({final['val_loss'] / max(final['train_loss'], 1e-9):.2f}x)", flush=True)
    print(json.dumps({"steps": result.steps_done, **result.last_logs, **final}, sort_keys=True))
    print(f"wrote {out / 'policy'} (evaluate it: vla eval --policy {out / 'policy'} ...)")
    return 0
