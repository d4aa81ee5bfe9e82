"""The ``vla`` command line.

::

    vla collect --scenario highway --density medium --episodes 10 --seed 0 --out data/hw
    vla eval --policy expert --scenario intersection --episodes 20 --out runs/expert_int
    vla bench sim --steps 300

Every option is validated before any work starts or any file is written. A problem the user
can fix is reported as ONE line ``vla: error: <message>`` on stderr with exit code 2 (as
argparse does for malformed options); Ctrl-C prints ``vla: interrupted`` and exits 130.
Outputs are written atomically (see ``benchmarks.reports`` for what each file holds), so an
interrupted run leaves whole files or none. Heavy modules (highway-env, matplotlib) are
imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sim.scenarios import DENSITIES, SCENARIOS, check_scenario, check_start_speed
from vla.config import SWITCHES
from vla.errors import VLAError
from vla.options import add_backend_args, add_hearing_args, add_ray_args, apply_backend_args

MIN_IMAGE_SIDE = 8
USER_ERRORS = (VLAError, ValueError, FileExistsError, NotADirectoryError, PermissionError)
"""Exceptions main() reports as one line (sim.storage.DatasetError is a ValueError)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vla-stack")
    except PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- validation
def _check_out_dir(out: str) -> None:
    """``out`` is a directory, or can be created as one (nothing is created here)."""
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise VLAError(f"--out {out} is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise VLAError(f"--out {out} is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise VLAError(f"--out {out} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VLAError(f"--out {out} cannot be created: {parent} is not writable")


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise VLAError(f"{name} must be >= {minimum}, got {value}")


def _check_common(args: argparse.Namespace) -> None:
    check_scenario(args.scenario, args.density)
    if hasattr(args, "episodes"):
        _check_positive("--episodes", args.episodes)
    if hasattr(args, "seed"):
        _check_positive("--seed", args.seed, minimum=0)
    if hasattr(args, "width"):
        _check_positive("--width", args.width, MIN_IMAGE_SIDE)
        _check_positive("--height", args.height, MIN_IMAGE_SIDE)


def _check_rollout(args: argparse.Namespace) -> None:
    from vla.policies_registry import check_policy, is_checkpoint, load_checkpoint

    _check_common(args)
    check_policy(args.policy)
    if is_checkpoint(args.policy):  # a damaged checkpoint fails here, in one line, before any output
        import offline_rl.policy  # noqa: F401  registers the offline-RL MLP checkpoint kind (imports torch)

        load_checkpoint(args.policy)
    if getattr(args, "plan_horizon", 0) < 0 or getattr(args, "plan_horizon", 0) == 1:
        raise VLAError(f"--plan-horizon must be 0 (off) or >= 2, got {args.plan_horizon}")
    for name in ("label_every", "workers"):
        if hasattr(args, name):
            _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    dart_speed = getattr(args, "dart_speed", 0.0)
    if not 0.0 <= dart_speed <= 1.0:  # also refuses NaN
        raise VLAError(f"--dart-speed must be a chance per step in [0, 1], got {dart_speed}")
    if dart_speed > 0 and not getattr(args, "dart", False):
        raise VLAError("--dart-speed needs --dart (speed bursts are a part of the DART recipe)")
    if getattr(args, "start_speed", None) is not None:
        try:
            check_start_speed(args.start_speed, args.scenario)
        except ValueError as e:
            raise VLAError(f"--start-speed: {e}") from None
        if getattr(args, "backend", "embedded") != "embedded":
            raise VLAError("--start-speed is an option of the embedded simulator")
        if getattr(args, "recipe", None) or getattr(args, "d4rl", None):
            raise VLAError("--start-speed goes with the rollout pool's collection, not with --recipe / --d4rl")
    if getattr(args, "goal_futures", False) and not (args.goal_labels and args.plan_horizon >= 20):
        raise VLAError("--goal-futures needs --goal-labels and --plan-horizon >= 20 (a plan's 2 s)")
    if getattr(args, "no_gif", True) is False and not 0 <= args.gif_episode < args.episodes:
        raise VLAError(f"--gif-episode must be in [0, {args.episodes}) for --episodes "
                       f"{args.episodes}, got {args.gif_episode} (or pass --no-gif)")
    _check_out_dir(args.out)


def _check_ray(args: argparse.Namespace) -> None:
    """--ray: Ray is installed and an address answers, before anything is written."""
    if args.ray:
        from vla.parallel import make_pool

        make_pool(1, args.ray)  # a pool checks both when made; it starts on its first run


def command_words(argv: Sequence[str] | None) -> list[str]:
    """The command and subcommand words of a command line: its leading arguments up to the
    first option (``vla train dpo --out X`` -> ``["train", "dpo"]``), so a lazily imported
    module is imported only when its own command runs, never because its name is an option's
    value."""
    words = []
    for token in (sys.argv[1:] if argv is None else argv):
        if token.startswith("-"):
            break
        words.append(token)
    return words


# ----------------------------------------------------------------------------- commands
def _cmd_collect(args: argparse.Namespace) -> int:
    _check_rollout(args)
    if args.ray and (args.recipe or args.d4rl):
        raise VLAError("--recipe and --d4rl collect in this process: drop --ray")
    _check_ray(args)
    apply_backend_args(args)
    from app.commands.rollouts import run_collect

    return run_collect(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from vla.speech_commands import check_phrasings

    _check_rollout(args)
    _check_best_of(args)
    check_phrasings(args.phrasings)
    _check_execution(args)
    if args.talk != "start" and args.scenario != "highway":
        raise VLAError(f"--talk {args.talk} is for the highway (a turn is decided by the first command), not --scenario "
                       f"{args.scenario}")
    if (args.workers > 1 or args.ray) and (args.record or args.best_of > 1 or not args.no_gif):
        raise VLAError("--workers > 1 and --ray drive episodes in worker processes, but --record, --best-of "
                       "and the GIF episode need this process: pass --no-gif (and no --record / --best-of)")
    _check_ray(args)
    apply_backend_args(args)
    from app.commands.rollouts import run_eval

    return run_eval(args)


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    _check_common(args)
    _check_positive("--steps", args.steps)
    from benchmarks.sim_bench import run_sim_bench

    print(f"sim bench: {args.scenario}/{args.density}, {args.steps} timed steps per measurement, "
          f"seed {args.seed}, default rig {args.width}x{args.height}", flush=True)
    result = run_sim_bench(args.scenario, args.density, args.steps, args.seed, args.width,
                           args.height, log=lambda line: print(line, flush=True))
    print(json.dumps(result, sort_keys=True))
    return 0


# ----------------------------------------------------------------------------- parser
def _add_sim_args(p: argparse.ArgumentParser, episodes: bool = True) -> None:
    p.add_argument("--scenario", default="highway",
                   help=f"scenario family, one of {', '.join(SCENARIOS)} (default: %(default)s)")
    p.add_argument("--density", default="medium",
                   help=f"traffic density, one of {', '.join(DENSITIES)} (default: %(default)s)")
    if episodes:
        p.add_argument("--episodes", type=int, default=10,
                       help="number of episodes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the first episode; episode i uses seed + i (default: %(default)s)")


def _add_size_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--width", type=int, default=96,
                   help=f"{what} camera image width in pixels, >= {MIN_IMAGE_SIDE} (default: %(default)s)")
    p.add_argument("--height", type=int, default=64,
                   help=f"{what} camera image height in pixels, >= {MIN_IMAGE_SIDE} (default: %(default)s)")


def _policy_arg(p: argparse.ArgumentParser) -> None:
    from sim.rollout import BASELINES

    p.add_argument("--policy", default="expert",
                   help=f"driving policy: one of {', '.join(BASELINES)}, or a transformer policy "
                        "checkpoint directory such as RUN/iter_003/policy (default: %(default)s)")


def _collect_parser(sub) -> None:
    p = sub.add_parser("collect", help="record episodes (camera frames + expert labels) to a dataset",
                       description="Drive closed-loop episodes and append them to a dataset "
                                   "directory (OUT/episodes/ep_NNNNNN.h5, sim.storage format), "
                                   "with every visited state labelled by the expert; then write "
                                   "OUT/metrics.json for the episodes of this run.")
    _add_sim_args(p)
    add_backend_args(p)
    p.add_argument("--out", required=True, help="dataset directory (created; existing datasets are appended to)")
    _policy_arg(p)
    p.add_argument("--cameras", choices=("default", "none"), default="default",
                   help="'default': record the 6-camera surround rig every step; 'none': no frames "
                        "(default: %(default)s)")
    _add_size_args(p, "recorded")
    p.add_argument("--phrasings", choices=("train", "heldout", "canonical"), default="train",
                   help="how the passenger phrases each episode's command (recorded with the episode; "
                        "keep 'heldout' for evaluation) (default: %(default)s)")
    p.add_argument("--plan-horizon", type=int, default=0, metavar="P",
                   help="also record the expert's own next P actions from every state a non-expert "
                        "policy visits (the action-chunk labels vla train uses for such episodes; "
                        "P >= the policy horizon, e.g. 4 small / 8 base); costs P-1 simulated steps "
                        "per step; 0 = off (default: %(default)s)")
    p.add_argument("--goal-labels", action="store_true",
                   help="also record the expert's action under every highway goal at every state "
                        "(vla train then learns each command from every state)")
    p.add_argument("--goal-futures", action="store_true",
                   help="with --goal-labels and --plan-horizon P >= 20: also the poses of the expert's "
                        "P-step continuation under every other highway goal at every state (the plan "
                        "labels of vla train --action plan --goal-relabel); costs P simulated steps per "
                        "goal and state")
    p.add_argument("--dart", action="store_true",
                   help="perturb the executed action with DART bursts; every state keeps the expert's "
                        "clean label (sim.rollout.DartNoise): recovery states without a learner")
    p.add_argument("--dart-speed", type=float, default=0.0, metavar="P",
                   help="with --dart: also start a SPEED burst (a held acceleration offset, 2-5 s) with "
                        "chance P per step, so the expert's recovery from speeds 2-5 m/s off its target is "
                        "recorded (e.g. 0.01); 0 = off (default: %(default)s)")
    p.add_argument("--start-speed", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="highway, embedded simulator: start our car at a speed drawn uniformly from [LO, HI] "
                        "m/s (e.g. 12 32) instead of 25, so the data hold the expert's way back to its "
                        "target speed from under and over it, under every goal (default: 25 m/s)")
    p.add_argument("--label-every", type=int, default=1, metavar="K",
                   help="simulate the expert's continuations (--plan-horizon, --goal-futures) at every K-th "
                        "state only (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="rollout processes, one simulator each; the episodes do not depend on it "
                        "(default: %(default)s; --recipe runs in one process)")
    add_ray_args(p)
    from offline_rl.recipes import RECIPE_NAMES

    p.add_argument("--recipe", choices=RECIPE_NAMES, default=None,
                   help="offline-RL dataset recipe instead of --policy (D4RL style; see offline_rl.recipes): "
                        "expert, medium (delayed, noisy expert), random, medium-replay (30/50/20%% mix)")
    p.add_argument("--d4rl", default=None, metavar="FILE",
                   help="then write every episode of OUT as one D4RL-layout dataset FILE (.h5, .hdf5, .npz)")
    p.add_argument("--reward-weights", default="",
                   help='JSON overriding sim.storage.RewardWeights for --d4rl, e.g. \'{"collision": -20}\'')
    p.set_defaults(func=_cmd_collect)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="closed-loop evaluation: metrics.json, episodes.csv, plots, GIF",
                       description="Run closed-loop episodes with a policy and write OUT/metrics.json "
                                   "(aggregate metrics), OUT/episodes.csv (one row per episode), "
                                   "OUT/trajectory.png (episode 0) and OUT/cameras.gif.")
    _policy_arg(p)
    _add_sim_args(p)
    add_backend_args(p)
    p.add_argument("--out", required=True, help="output directory (created; files in it are replaced)")
    p.add_argument("--record", action="store_true",
                   help="also store the episodes (states, actions, expert labels; no frames) "
                        "as a dataset under OUT/episodes (appended to one already there)")
    p.add_argument("--phrasings", default="heldout", metavar="SPLIT|FILE.tsv",
                   help="how the passenger phrases each episode's command: the speech corpus's held-out "
                        "or training phrasings, the canonical English command, or your own phrasings in a "
                        "tab-separated file with the header 'goal language phrasing' (en or zh; goals the "
                        "file does not cover keep the held-out phrasings) (default: %(default)s)")
    add_hearing_args(p)
    p.add_argument("--talk", choices=("start", "drive", "chitchat"), default="start",
                   help="when the passenger speaks: once before the drive (start); also once during it (drive, "
                        "highway: a new lane or speed command 3-6 s in, the one the episode is judged on; "
                        "metrics.json adds act_within_1s_rate and, on the embedded simulator, act_within_1s_cf_rate, "
                        "measured against the same car driven on without the words); or says chit-chat 3-6 s in (chitchat: the "
                        "episode is judged on its first command, which the policy should keep) (default: %(default)s)")
    p.add_argument("--tracker-jerk", type=float, nargs=2, default=None, metavar=("LONG", "LAT"),
                   help="a plan policy's tracker comfort limits in m/s^3 (0 = none) instead of the checkpoint's "
                        "(PolicyConfig.tracker_jerk_long / tracker_jerk_lat; default: the checkpoint's, 1.5 0 for new ones)")
    p.add_argument("--commit-margin", type=float, default=None, metavar="NATS",
                   help="a plan policy keeps the plan it is executing unless the new one is likelier by this many "
                        "nats, on open road (PolicyConfig.commit_margin; 0 = off; default: the checkpoint's, 1.5 unless set)")
    p.add_argument("--tracker-lookahead", type=float, default=None, metavar="S",
                   help="a plan policy's pure-pursuit look-ahead in seconds of speed (at least 3 m) instead of the "
                        "checkpoint's (PolicyConfig.tracker_lookahead; default: the checkpoint's, 1.0 unless set)")
    p.add_argument("--yield-zone", type=float, default=None, metavar="M",
                   help="a plan policy holds the line while crossing traffic would meet its path, within this many "
                        "metres before a junction (PolicyConfig.yield_zone, sim.yield_check; 0 = off; default: the "
                        "checkpoint's, 30 unless set)")
    p.add_argument("--route-steer-speed", type=float, default=None, metavar="MPS",
                   help="a plan policy steers along its route's centre line instead of the plan below this speed, "
                        "near and inside a junction (PolicyConfig.route_steer_speed; 0 = off; default: the checkpoint's, "
                        "20 unless set; 4 in checkpoints saved before 2026-12-07)")
    p.add_argument("--route-exit-hold", type=float, default=None, metavar="S",
                   help="a plan policy whose wheel followed the route inside a junction keeps following it for up to "
                        "this many seconds past the exit, until the car sits on the exit lane's centre line "
                        "(PolicyConfig.route_exit_hold; 0 = off; default: the checkpoint's, 3 unless set)")
    p.add_argument("--go-zone", type=float, default=None, metavar="M",
                   help="the go rule: within this many metres of a junction (or inside it) a plan policy slower than "
                        "its crossing speed accelerates when its next 12 m are free and no crossing traffic would meet "
                        "it, and brakes short of anything on those 12 m (PolicyConfig.go_zone, "
                        "sim.yield_check.go_accel; 0 = off; default: the checkpoint's, 10 for checkpoints saved since "
                        "2026-12-06, 0 before)")
    p.add_argument("--go-jerk", type=float, default=None, metavar="MPS3",
                   help="how fast the go rule's throttle ramps up to 2 m/s^2 (PolicyConfig.go_jerk; 0 = at once, as the "
                        "expert launches; default: the checkpoint's, 1.5 unless set)")
    p.add_argument("--go-commit", type=float, default=None, metavar="S",
                   help="once the go rule has launched a plan policy at a junction, only crossing traffic within this "
                        "many seconds of its path stops it again, until a rule brakes it or it leaves the junction "
                        "(PolicyConfig.go_commit; 0 = off, every step tested with the 1 s gap; default: the "
                        "checkpoint's, 0 unless set)")
    p.add_argument("--go-release", type=float, default=None, metavar="MPS3",
                   help="how fast a car still braking when the go rule launches it lets go of the brake, before its "
                        "throttle ramps at --go-jerk (PolicyConfig.go_release; 0 = at --go-jerk; default: the "
                        "checkpoint's, 0 unless set)")
    p.add_argument("--commit-inside", type=float, default=None, metavar="{0,1}",
                   help="with --go-commit: 1 = inside a junction the rules test with --go-commit's time gap whether or "
                        "not the go rule launched the car (PolicyConfig.commit_inside; default: the checkpoint's, 0 "
                        "unless set)")
    p.add_argument("--tracker-anticipate", type=float, default=None, metavar="{0,1}",
                   help="a plan policy's tracker: 1 = let go of a brake (or the throttle) early enough that the "
                        "jerk-limited release ends at the plan's speed, not past it (PolicyConfig.tracker_anticipate; "
                        "default: the checkpoint's, 0 unless set)")
    p.add_argument("--road-edge", type=float, default=None, metavar="{0,1}",
                   help="a plan policy on open road: 1 = keep the plan between the centres of the road's outermost "
                        "lanes, so that no plan leads off the road (PolicyConfig.road_edge; default: the checkpoint's, "
                        "1 unless set)")
    p.add_argument("--commit-lateral", type=float, default=None, metavar="{0,1}",
                   help="with --commit-margin: 1 = commitment holds only the plan's lateral path and the speed "
                        "always follows the newest plan; 0 = it holds the whole plan (PolicyConfig.commit_lateral; "
                        "default: the checkpoint's, 0 unless set)")
    p.add_argument("--yield-gap", type=float, default=None, metavar="S",
                   help="the junction rules' conflict test: two vehicles using one spot of our path within this many "
                        "seconds of each other conflict (PolicyConfig.yield_gap; the expert asks 1.5; default: the "
                        "checkpoint's, 1 unless set)")
    p.add_argument("--curve-brake", type=float, default=None, metavar="MPS2",
                   help="the curve cap: near and inside a junction a plan policy drives no faster than the speed from "
                        "which braking at this rate reaches the route's curve speed at the entry "
                        "(PolicyConfig.curve_brake, sim.yield_check.curve_accel; 0 = off; default: the checkpoint's, "
                        "2 unless set)")
    p.add_argument("--junction-ttc", type=float, default=None, metavar="S",
                   help="the junction brake: near and inside a junction a plan policy brakes for anything it would "
                        "touch within this many seconds at its present speed (PolicyConfig.junction_ttc, "
                        "sim.yield_check.junction_brake; 0 = off; default: the checkpoint's, 0 unless set)")
    p.add_argument("--junction-hold", type=float, default=None, metavar="MPS",
                   help="the junction hold: at or inside a junction a plan policy slower than this stops where it is "
                        "when going on would meet crossing traffic and standing would not (PolicyConfig.junction_hold, "
                        "sim.yield_check.junction_hold; 0 = off; default: the checkpoint's, 4 unless set)")
    p.add_argument("--yield-paths", type=float, default=None, metavar="{0,1}",
                   help="1: the yield check, the go rule and the junction hold predict crossing cars along their lane "
                        "and signalled turn (obs['actor_paths']) instead of straight along their heading "
                        "(PolicyConfig.yield_paths; default: the checkpoint's, 1 unless set)")
    p.add_argument("--route-follow", type=float, default=None, metavar="M",
                   help="the route follower: near and inside a junction a plan policy accelerates no harder than the "
                        "expert's car-following law allows behind the nearest actor on its route within this many "
                        "metres (PolicyConfig.route_follow, sim.yield_check.route_leader; 0 = off; default: the "
                        "checkpoint's, 0 unless set)")
    p.add_argument("--yield-turn", type=float, default=None, metavar="RAD",
                   help="the yield check and the go rule predict a crossing actor whose heading is changing on an arc "
                        "at its observed yaw rate, until it has turned this many radians (PolicyConfig.yield_turn; "
                        "0 = straight lines; default: the checkpoint's, 0 unless set)")
    p.add_argument("--merge-brake", type=float, default=None, metavar="MPS2",
                   help="a plan policy begins a lane change only when neither the new follower nor it would brake "
                        "harder than this (m/s^2) by the expert's MOBIL criterion read from the observed actors "
                        "(PolicyConfig.merge_brake, sim.gap_checks; 0 = off; default: the checkpoint's, 2 unless set)")
    p.add_argument("--follow-brake", type=float, default=None, metavar="MPS2",
                   help="a plan policy brakes harder than its plan when keeping 2 m behind the car ahead needs more "
                        "than this (m/s^2) (PolicyConfig.follow_brake, sim.gap_checks; 0 = off; default: the "
                        "checkpoint's, 3 unless set)")
    p.add_argument("--chitchat-threshold", type=float, default=None, metavar="P",
                   help="a plan policy with the command-label head ignores words heard during the drive as chit-chat "
                        "when it gives 'none' at least this probability (PolicyConfig.chitchat_threshold; default: "
                        "the checkpoint's, 0.95 unless set)")
    p.add_argument("--command-readback", type=float, default=None, metavar="P",
                   help="a plan policy with the command-label head acts on the canonical command of the label its "
                        "head names the words it heard, when it names one (not 'none') with at least this "
                        "probability (PolicyConfig.command_readback; 0 = off, the words as heard; held out it did "
                        "not help, see docs/audio_policy.md; default: the checkpoint's, 0 unless set)")
    p.add_argument("--gif-episode", type=int, default=0,
                   help="episode index rendered with cameras into cameras.gif (default: %(default)s)")
    p.add_argument("--no-gif", action="store_true",
                   help="render no cameras and write no cameras.gif (fastest; an older "
                        "cameras.gif in OUT is removed)")
    _add_size_args(p, "GIF")
    p.add_argument("--best-of", type=int, default=1,
                   help="best-of-N: at every re-plan sample N chunks from the policy (the greedy one "
                        "and N-1 at --temperature) and drive the one --scorer rates best (default: 1, off)")
    p.add_argument("--scorer", default=None,
                   help="trajectory scorer directory for --best-of (vla train dpo --loss bt-reward)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of the best-of-N candidates (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="rollout processes, one simulator each, with --no-gif; the metrics do not depend "
                        "on it (default: %(default)s)")
    add_ray_args(p)
    p.set_defaults(func=_cmd_eval)


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _switch(v: float) -> bool:
    return v in (0.0, 1.0)


_SCALAR_EXECUTION_FLAGS = (
    # (flag, args attribute = PolicyConfig field, which finite values it takes, what it takes)
    ("--tracker-lookahead", "tracker_lookahead", _positive, "a finite time > 0 in s"),
    ("--commit-margin", "commit_margin", _non_negative, "a finite number of nats >= 0"),
    ("--yield-zone", "yield_zone", _non_negative, "a finite distance >= 0 in m (0 = off)"),
    ("--route-steer-speed", "route_steer_speed", _non_negative, "a finite speed >= 0 in m/s (0 = off)"),
    ("--route-exit-hold", "route_exit_hold", _non_negative, "a finite time >= 0 in s (0 = off)"),
    ("--merge-brake", "merge_brake", _non_negative, "a finite deceleration >= 0 in m/s^2 (0 = off)"),
    ("--follow-brake", "follow_brake", _non_negative, "a finite deceleration >= 0 in m/s^2 (0 = off)"),
    ("--go-zone", "go_zone", _non_negative, "a finite distance >= 0 in m (0 = off)"),
    ("--junction-ttc", "junction_ttc", _non_negative, "a finite time >= 0 in s (0 = off)"),
    ("--route-follow", "route_follow", _non_negative, "a finite distance >= 0 in m (0 = off)"),
    ("--junction-hold", "junction_hold", _non_negative, "a finite speed >= 0 in m/s (0 = off)"),
    ("--yield-turn", "yield_turn", lambda v: 0 <= v <= math.pi, "a finite angle in [0, pi] rad (0 = off)"),
    ("--go-jerk", "go_jerk", _non_negative, "a finite jerk >= 0 in m/s^3 (0 = at once)"),
    ("--go-commit", "go_commit", _non_negative, "a finite time gap >= 0 in s (0 = off)"),
    ("--go-release", "go_release", _non_negative, "a finite jerk >= 0 in m/s^3 (0 = at --go-jerk)"),
    ("--yield-gap", "yield_gap", _positive, "a finite time gap > 0 in s"),
    ("--curve-brake", "curve_brake", _non_negative, "a finite deceleration >= 0 in m/s^2 (0 = off)"),
    ("--chitchat-threshold", "chitchat_threshold", lambda v: 0 < v <= 1, "a probability in (0, 1]"),
    ("--command-readback", "command_readback", lambda v: 0 <= v <= 1, "a probability in [0, 1] (0 = off)"),
    # the 0 / 1 switches, each flag named after its field
    *((f"--{field.replace('_', '-')}", field, _switch, means) for field, means in SWITCHES.items()),
)


def _check_execution(args: argparse.Namespace) -> None:
    """--tracker-jerk LONG LAT (finite, >= 0), --tracker-lookahead S (finite, > 0),
    --commit-margin NATS, --yield-zone M, --route-steer-speed MPS, --merge-brake and --follow-brake MPS2 (finite, >= 0), only for a
    plan policy checkpoint;
    sets ``args.execution``, the plan-execution settings ``evaluate`` drives with."""
    args.execution = None
    given = [flag for flag, value in [("--tracker-jerk", args.tracker_jerk)]
             + [(flag, getattr(args, attr)) for flag, attr, _, _ in _SCALAR_EXECUTION_FLAGS] if value is not None]
    if not given:
        return
    if args.tracker_jerk is not None and not all(math.isfinite(v) and v >= 0 for v in args.tracker_jerk):
        raise VLAError(f"--tracker-jerk takes two finite limits >= 0 in m/s^3 (0 = none), got {args.tracker_jerk}")
    for flag, attr, valid, takes in _SCALAR_EXECUTION_FLAGS:
        value = getattr(args, attr)
        if value is not None and not (math.isfinite(value) and valid(value)):
            raise VLAError(f"{flag} takes {takes}, got {value}")
    from vla.policies_registry import is_checkpoint

    flag = given[0]
    if not is_checkpoint(args.policy):
        raise VLAError(f"{flag} needs a plan policy checkpoint directory, got --policy {args.policy}")
    try:
        action = json.loads((Path(args.policy) / "policy.json").read_text())["config"].get("action", "control")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VLAError(f"--policy {args.policy}: cannot read its policy.json ({err})") from None
    if action != "plan":
        raise VLAError(f"{flag} needs a plan policy; {args.policy} predicts {action!r} chunks")
    args.execution = {attr: getattr(args, attr) for _, attr, _, _ in _SCALAR_EXECUTION_FLAGS
                      if getattr(args, attr) is not None}
    if args.tracker_jerk is not None:
        args.execution.update(tracker_jerk_long=args.tracker_jerk[0], tracker_jerk_lat=args.tracker_jerk[1])


def _check_best_of(args: argparse.Namespace) -> None:
    """--best-of N > 1 needs a transformer policy checkpoint and a --scorer directory."""
    _check_positive("--best-of", args.best_of)
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise VLAError(f"--temperature must be a finite number > 0, got {args.temperature}")
    if args.best_of == 1:
        return
    from vla.policies_registry import is_checkpoint

    if not is_checkpoint(args.policy):
        raise VLAError(f"--best-of needs a policy checkpoint directory, got --policy {args.policy}")
    if args.scorer is None:
        raise VLAError("--best-of needs --scorer (train one: vla train dpo --loss bt-reward ...)")
    from methods.reward_model import TrajectoryScorer

    TrajectoryScorer.load(args.scorer)  # a ValueError naming the problem if it is not one


BENCH_TARGETS: dict[str, tuple[str, str, str, str]] = {
    "diffusion": ("benchmarks.diffusion_bench", "configure", "run",
                  "diffusion head: ms per action chunk and closed-loop metrics vs inference steps"),
    "offline-rl": ("benchmarks.offline_rl_bench", "configure", "run",
                   "IQL and CQL gradient steps/s on one CPU thread (Pendulum-v1 dataset)"),
    "dpo": ("benchmarks.dpo_bench", "configure", "run",
            "preference-pair updates per second at the default small size on CPU"),
    "speech": ("benchmarks.speech_bench", "configure", "run",
               "command understanding from audio vs transcript (a linear probe on the policy's features, and its own "
               "command-label head where it has one)"),
    "gpu": ("benchmarks.gpu_bench", "configure", "run",
            "training tokens/s, MFU, peak memory and action-chunk Hz of the policy on a GPU (or --device cpu)"),
}
"""``vla bench TARGET`` kept in their own modules: name -> (module, configure, run, help); a
module is imported only when its target is on the command line."""


def _bench_parser(sub, argv: Sequence[str] | None = None) -> None:
    p = sub.add_parser("bench", help="speed benchmarks",
                       description="Speed benchmarks; the last line of the output is one JSON object.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    s = targets.add_parser("sim", help="env steps/s with and without cameras, expert and renderer speed",
                           description="Measure env.step (with and without the 6-camera rig), the "
                                       "expert and the camera renderer; see benchmarks.sim_bench.")
    _add_sim_args(s, episodes=False)
    s.add_argument("--steps", type=int, default=300,
                   help="timed steps per measurement (default: %(default)s)")
    _add_size_args(s, "benchmarked")
    s.set_defaults(func=_cmd_bench_sim)
    t = targets.add_parser("tokenizers", help="tokens/s of every tokenizer and the action-quantization table",
                           description="Tokens per second of each tokenizer (one CPU thread) and the "
                                       "action-quantization table on expert episodes; see "
                                       "benchmarks.tokenizer_bench.")
    t.add_argument("--data", nargs="*", default=[],
                   help="dataset directories (vla collect) whose expert actions feed the quantization "
                        "table (default: record --episodes fresh episodes per scenario)")
    t.add_argument("--episodes", type=int, default=4,
                   help="expert episodes per scenario when no --data is given (default: %(default)s)")
    t.set_defaults(func=_cmd_bench_tokenizers)
    b = targets.add_parser("policy", help="chunk latency and closed-loop steps/s of the transformer policy",
                           description="Policy inference per action chunk, closed-loop steps/s and the "
                                       "simulator alone (the policy on --device, the simulator on the "
                                       "CPU); see benchmarks.policy_bench.")
    _add_sim_args(b, episodes=False)
    b.add_argument("--steps", type=int, default=400, help="timed env steps (default: %(default)s)")
    b.add_argument("--policy", default=None, metavar="DIR",
                   help="benchmark this saved policy (its size, cameras, action and rules; a trained one runs "
                        "what random weights skip, e.g. commitment's scoring pass) instead of a random one")
    b.add_argument("--size", default=None, help="policy size: tiny, small or base (default: small)")
    b.add_argument("--no-cameras", action="store_true", help="benchmark the blind (state-token) policy")
    b.add_argument("--action", choices=("control", "plan"), default=None,
                   help="what the policy predicts: raw control chunks or plans for the tracker (default: plan, "
                        "as vla dagger)")
    b.add_argument("--replan-every", type=int, default=None, metavar="K",
                   help="a new chunk / plan every K steps (default: the action space's, 5 for plans)")
    b.add_argument("--device", default="cpu",
                   help="where the policy runs: cpu, cuda, cuda:N or auto (default: %(default)s)")
    b.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto = bf16 on a GPU that has it, fp32 on the CPU (default: %(default)s)")
    b.set_defaults(func=_cmd_bench_policy)
    words = command_words(argv)
    add_lazy_parsers(targets, BENCH_TARGETS, words[1:2] if words[:1] == ["bench"] else [], argv)


EXTRA_COMMANDS: dict[str, tuple[str, str, str | None, str]] = {
    "dagger": ("app.commands.train", "configure_dagger", "run_dagger",
               "closed-loop DAgger session: BC on expert data, then policy rollouts relabelled by the "
               "expert, aggregated and retrained, evaluated on held-out seeds every iteration"),
    "train": ("app.commands.train", "configure_train", None,
              "train a policy: bc, diffusion, iql, cql, dpo"),
    "make-pairs": ("app.commands.dpo", "configure_make_pairs", "run_make_pairs",
                   "preference pairs from a policy's own rollouts, ranked by the driving constitution"),
    "report": ("app.commands.dpo", "configure_report", "run_report",
               "alignment-tax report: closed-loop metrics of two policies on the same held-out seeds"),
    "make-speech": ("app.commands.make_speech", "configure", "run",
                    "build the spoken-command corpus (espeak-ng speech, IPA, VAD, noise)"),
    "train-codec": ("app.commands.train_codec", "configure", "run",
                    "train the small EnCodec-architecture audio codec on a speech corpus"),
    "train-ear": ("app.commands.train_ear", "configure", "run",
                  "train the ear: a phone recognizer (log-mel -> BiGRU -> CTC) that gives an audio "
                  "policy the IPA it hears"),
    "doctor": ("app.commands.doctor", "configure", "run",
               "check a run, dataset, checkpoint or D4RL file and list every problem found, changing nothing"),
}
"""name -> (module, configure function, run function or None when configure sets its own
subcommands' funcs, help). The module is imported only when its command runs (or its --help
is asked for), so the other commands start fast."""


def add_lazy_parsers(sub, registry: dict, wanted: Sequence[str], argv: Sequence[str] | None) -> None:
    """One subparser per ``registry`` entry ``name -> (module, configure, run or None, help)``;
    only the ``wanted`` names import their module and configure their options (a configure
    function that takes ``argv`` gets it, for its own subcommands)."""
    import importlib
    import inspect

    for name, (module, configure, run, help_text) in registry.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name in wanted:
            mod = importlib.import_module(module)
            fn = getattr(mod, configure)
            if "argv" in inspect.signature(fn).parameters:
                fn(p, argv=None if argv is None else list(argv))
            else:
                fn(p)
            if run is not None:
                p.set_defaults(func=getattr(mod, run))


def _extra_parsers(sub, argv: Sequence[str] | None) -> None:
    add_lazy_parsers(sub, EXTRA_COMMANDS, command_words(argv)[:1], argv)


def _cmd_bench_policy(args: argparse.Namespace) -> int:
    _check_common(args)
    _check_positive("--steps", args.steps)
    from benchmarks.policy_bench import run_policy_bench
    from vla.config import SIZES
    from vla.config import PolicyConfig

    policy = None
    if args.policy is not None:
        given = [flag for flag, value in (("--size", args.size), ("--no-cameras", args.no_cameras or None),
                                          ("--action", args.action), ("--replan-every", args.replan_every))
                 if value is not None]
        if given:
            raise VLAError(f"{', '.join(given)} cannot be given with --policy (the saved policy's own settings are used)")
        from vla.policy import VLAPolicy

        policy = VLAPolicy.load(args.policy)
        config = policy.config
        size = next((name for name, dims in SIZES.items()
                     if all(getattr(config, k) == v for k, v in dims.items())), "custom")
    else:
        size = args.size or "small"
        if size not in SIZES:
            raise VLAError(f"unknown --size {size!r}; choose one of {', '.join(SIZES)}")
        if args.replan_every is not None:
            _check_positive("--replan-every", args.replan_every)
        config = PolicyConfig(**SIZES[size], cameras=not args.no_cameras, action=args.action or "plan",
                              observation="lane_frame", replan_every=args.replan_every)
    from vla.accel import resolve

    accel = resolve(args.device, args.precision, "off")
    result = run_policy_bench(config, args.scenario, args.density, args.steps, args.seed,
                              log=lambda line: print(line, flush=True), accel=accel, policy=policy)
    print(json.dumps({**result, "size": size, "policy": args.policy or "random weights"}, sort_keys=True))
    return 0


def _cmd_bench_tokenizers(args: argparse.Namespace) -> int:
    _check_positive("--episodes", args.episodes)
    from benchmarks.tokenizer_bench import run_tokenizer_bench

    result = run_tokenizer_bench(args.data, args.episodes, log=lambda line: print(line, flush=True))
    print(json.dumps(result, sort_keys=True))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one ``vla: error:`` line and exit code 2 (the
    usage is one ``--help`` away), for every subcommand too (subparsers take this class)."""

    def error(self, message: str):
        where = "" if self.prog == "vla" else f"{self.prog}: "  # never "vla: error: vla: ..."
        self.exit(2, f"vla: error: {where}{_one_line(message)} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vla", description="Driving policies that see, hear and act: simulate, record, evaluate.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _collect_parser(sub)
    _eval_parser(sub)
    _bench_parser(sub, argv)
    _extra_parsers(sub, argv)
    return parser


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit)."""
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse errors
        return e.code if isinstance(e.code, int) else 2
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except KeyboardInterrupt:
        print("vla: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"vla: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
