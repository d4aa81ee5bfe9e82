"""Command-line options of the transformer policy (``PolicyConfig``), shared by every command and
study that builds one: ``add_policy_args`` adds them, ``policy_config`` reads them back; and the
simulator backend's (``add_backend_args`` / ``apply_backend_args``)."""

from __future__ import annotations

import argparse
import math

from vla.config import ACTION_HEADS, ACTION_SPACES, DIFFUSION_SCHEDULERS, OBSERVATION_CHOICES, SIZES, PolicyConfig


def add_policy_args(p: argparse.ArgumentParser, head: str | None = None) -> None:
    """The policy's options; ``head`` fixes the action head (no --head option) when given."""
    p.add_argument("--size", choices=list(SIZES), default="small",
                   help="policy size (default: %(default)s): " + "; ".join(
                       f"{k}: d={v['d_model']} x{v['n_layers']} layers" for k, v in SIZES.items()))
    p.add_argument("--no-cameras", action="store_true",
                   help="a blind policy on state tokens only (faster; no camera rendering)")
    p.add_argument("--command", choices=("ipa", "text", "none", "audio", "heard"), default="ipa",
                   help="how the policy hears the spoken command: IPA or text of the phrasing, nothing, "
                        "the synthesized noisy utterance as codec tokens + VAD events (needs --audio-codec), "
                        "or the IPA an ear recognizes in that utterance (needs --audio-ear) "
                        "(default: %(default)s)")
    p.add_argument("--audio-codec", default="", metavar="DIR",
                   help="--command audio: the codec checkpoint (vla train-codec); the policy keeps a copy")
    p.add_argument("--audio-ear", default="", metavar="DIR",
                   help="--command heard: the ear (vla train-ear); the policy keeps a copy")
    p.add_argument("--command-label-weight", type=float, default=0.0, metavar="W",
                   help="weight of an auxiliary loss naming the heard command's label (of 9) from the "
                        "policy's <action> state; 0 = none; not used with --command none (default: %(default)s)")
    p.add_argument("--command-bag", type=int, default=0, metavar="N",
                   help="read the command as ONE token: the mean of its phone (or byte) 1-3-grams, hashed into N "
                        "learned vectors, instead of as a sequence (with --command-bag-dropout its label head names "
                        "new wordings more often; on dev the car did not follow them more often, see "
                        "docs/audio_policy.md; with --command ipa, text or heard); 0 = the sequence "
                        "(default: %(default)s)")
    p.add_argument("--command-bag-dropout", type=float, default=0.0, metavar="P",
                   help="training: leave each n-gram of the command bag out with probability P (at least one "
                        "is kept) (default: %(default)s)")
    p.add_argument("--command-thought", action="store_true",
                   help="with --command-label-weight > 0: feed the label the policy names back as a token "
                        "before its action tokens, so it acts after saying what it understood (trained on the "
                        "true label, --command-thought-noise of them replaced at random; held out it gained +0.023 "
                        "[-0.033, +0.080] in goal success, see docs/audio_policy.md)")
    p.add_argument("--command-thought-noise", type=float, default=0.2, metavar="P",
                   help="training, with --command-thought: the chance that a sample's thought token is a random "
                        "label (its action targets stay its own) (default: %(default)s)")
    p.add_argument("--action", choices=ACTION_SPACES, default=None,
                   help="what the policy predicts: raw [accel, steer] chunks, or a 2 s plan of waypoints "
                        "that a tracking controller drives (default: the command's, control with --head "
                        "diffusion)")
    p.set_defaults(default_action="control")
    p.add_argument("--observation", choices=OBSERVATION_CHOICES, default=PolicyConfig().observation,
                   help="ego / actor token features: actors in the ego's body frame, or along and across "
                        "its lane with inverse gap and closing rate (lane_frame), plus where the route goes: "
                        "the distance to the next junction and the route's point 2 s ahead (lane_route; needs "
                        "data recorded with them) (default: %(default)s)")
    p.add_argument("--execution", choices=("ensemble", "first", "open_loop"), default="ensemble",
                   help="chunk execution: temporal ensembling, first action, or open loop (default: %(default)s)")
    p.add_argument("--forecast-weight", type=float, default=0.0, metavar="W",
                   help="weight of the auxiliary loss that forecasts every actor token's car 1 and 2 s ahead "
                        "(PlanT's); 0 = none (default: %(default)s)")
    p.add_argument("--replan-every", type=int, default=None, metavar="K",
                   help="predict a new chunk / plan every K steps only (ensemble / first execution); a plan's "
                        "tracker still runs every step (default: 1 for control chunks, 5 for plans)")
    if head is None:
        p.add_argument("--head", choices=ACTION_HEADS, default="bins",
                       help="action head: bin tokens + residual, or a diffusion head denoising the "
                            "whole chunk (default: %(default)s)")
    else:
        p.set_defaults(head=head)
    defaults = PolicyConfig()
    p.add_argument("--attn", choices=("sdpa", "flash_attention_2"), default=defaults.attn_implementation,
                   help="attention kernel: torch's scaled_dot_product_attention (it picks the flash / "
                        "memory-efficient kernels on a GPU), or the flash-attn package (pip install "
                        "flash-attn; CUDA, bf16) (default: %(default)s)")
    p.add_argument("--diffusion-steps", type=int, default=defaults.diffusion_inference_steps,
                   help="diffusion head: denoising steps per chunk at inference (default: %(default)s)")
    p.add_argument("--diffusion-scheduler", choices=DIFFUSION_SCHEDULERS, default=defaults.diffusion_scheduler,
                   help="diffusion head: inference sampler (default: %(default)s)")
    p.add_argument("--diffusion-noise", type=float, default=defaults.diffusion_noise,
                   help="diffusion head: std of the initial noise at inference; 0 = deterministic, "
                        "smoother chunks (default: %(default)s)")


def add_command_data_args(p: argparse.ArgumentParser, relabel_help: str) -> None:
    """How training samples hear their commands (``vla.data.DemoDataset``)."""
    p.add_argument("--goal-relabel", action=argparse.BooleanOptionalAction, default=False,
                   help=relabel_help + " (default: %(default)s)")
    p.add_argument("--augment-commands", type=float, default=0.5, metavar="P",
                   help="probability that a training sample hears another train-split phrasing of "
                        "its goal instead of the recorded one (default: %(default)s)")
    p.add_argument("--command-grammar", action=argparse.BooleanOptionalAction, default=False,
                   help="half of those samples hear a phrasing from tokenizers_mm.command_grammar instead "
                        "(hundreds of training-only wordings; an audio / heard policy synthesizes each of "
                        "them --audio-renditions times) (default: %(default)s)")
    p.add_argument("--phone-errors", type=float, default=0.0, metavar="R",
                   help="--command ipa or heard: probability that each IPA token of a training command is "
                        "substituted, dropped or doubled by a random one (0 = none) (default: %(default)s)")
    p.add_argument("--paraphrase", type=float, default=0.0, metavar="Q",
                   help="--command ipa or text: probability that a sample hearing an English training phrasing "
                        "hears one of its WordNet paraphrases instead (tokenizers_mm.thesaurus; 0 = none) "
                        "(default: %(default)s)")
    p.add_argument("--chitchat", type=float, default=0.0, metavar="C",
                   help="probability that a training sample hears chit-chat (a 'none' phrasing) instead, labelled "
                        "'none' for the command-label head and with no action target, so that words heard during "
                        "the drive that are not a command are ignored (needs --command-label-weight > 0; 0 = none) "
                        "(default: %(default)s)")
    p.add_argument("--balance-speed", action=argparse.BooleanOptionalAction, default=False,
                   help="--action plan: within each goal, draw samples whose plan slows the car, holds or speeds "
                        "it up about equally often (each class at most 8 times as often as before), so that rare "
                        "recoveries (speeding back up under 'slow down') are learned (default: %(default)s)")
    p.add_argument("--audio-renditions", type=int, default=4, metavar="K",
                   help="--command audio or heard: renditions (voice, rate, pitch, noise) of each training phrasing "
                        "those samples may hear (default: %(default)s)")
    p.add_argument("--audio-voices", choices=["train", "wide"], default="train",
                   help="--command audio or heard: the voices training commands are rendered in: train (4 English "
                        "and 2 Mandarin voices) or wide (espeak's accents x voice variants, 713 voices, none of a "
                        "held-out voice's accent or variant; measured worse for a heard policy, docs/audio_policy.md) "
                        "(default: %(default)s)")


def policy_config(args: argparse.Namespace) -> PolicyConfig:
    """The ``PolicyConfig`` of options added by ``add_policy_args``. Without ``--action`` the
    command's ``default_action`` applies, except that a diffusion head predicts control chunks."""
    import importlib.util

    from vla.errors import VLAError

    defaults = PolicyConfig()
    if getattr(args, "attn", None) == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise VLAError("--attn flash_attention_2 needs the flash-attn package (pip install flash-attn) and a CUDA GPU")
    head = getattr(args, "head", defaults.head)
    if getattr(args, "command_thought", False) and (args.command == "none" or head != "bins"
                                                     or getattr(args, "command_label_weight", 0.0) <= 0):
        raise VLAError("--command-thought feeds back the label the policy names: it needs --command-label-weight > 0, "
                       "a command to hear (not --command none) and --head bins")
    action = getattr(args, "action", None) or ("control" if head == "diffusion"
                                               else getattr(args, "default_action", defaults.action))
    return PolicyConfig(**SIZES[args.size], cameras=not args.no_cameras, command=args.command,
                        observation=getattr(args, "observation", defaults.observation),
                        replan_every=getattr(args, "replan_every", defaults.replan_every),
                        forecast_weight=getattr(args, "forecast_weight", defaults.forecast_weight),
                        action=action, execution=args.execution, head=head,
                        diffusion_inference_steps=getattr(args, "diffusion_steps", defaults.diffusion_inference_steps),
                        diffusion_scheduler=getattr(args, "diffusion_scheduler", defaults.diffusion_scheduler),
                        diffusion_noise=getattr(args, "diffusion_noise", defaults.diffusion_noise),
                        attn_implementation=getattr(args, "attn", defaults.attn_implementation),
                        command_label_weight=(0.0 if args.command == "none"  # nothing heard, nothing to name
                                              else getattr(args, "command_label_weight", defaults.command_label_weight)),
                        command_bag=getattr(args, "command_bag", defaults.command_bag),
                        command_bag_dropout=getattr(args, "command_bag_dropout", defaults.command_bag_dropout),
                        command_thought=getattr(args, "command_thought", defaults.command_thought),
                        command_thought_noise=getattr(args, "command_thought_noise", defaults.command_thought_noise),
                        **_audio_fields(args))


def _audio_fields(args: argparse.Namespace) -> dict:
    from pathlib import Path

    from vla.errors import VLAError

    codec, ear = getattr(args, "audio_codec", ""), getattr(args, "audio_ear", "")
    command = getattr(args, "command", "ipa")
    if ear and command != "heard":
        raise VLAError("--audio-ear is for --command heard")
    if command == "heard":
        if codec:
            raise VLAError("--audio-codec is for --command audio (--command heard reads --audio-ear)")
        if not ear:
            raise VLAError("--command heard needs --audio-ear DIR (an ear: vla train-ear)")
        if not (Path(ear) / "ear.json").is_file():
            raise VLAError(f"--audio-ear {ear}: not an ear directory (no ear.json)")
        return {"audio_ear": str(Path(ear).resolve())}
    if command != "audio":
        if codec:
            raise VLAError("--audio-codec is for --command audio")
        return {}
    if not codec:
        raise VLAError("--command audio needs --audio-codec DIR (a codec checkpoint: vla train-codec)")
    if not (Path(codec) / "config.json").is_file():
        raise VLAError(f"--audio-codec {codec}: not a codec checkpoint directory (no config.json)")
    return {"audio_codec": str(Path(codec).resolve())}


def add_hearing_args(p: argparse.ArgumentParser) -> None:
    """How an audio policy hears the passenger in evaluation (``vla.policy.Hearing``)."""
    p.add_argument("--voices", choices=("heldout", "train"), default="heldout",
                   help="audio policies: espeak voices the passenger speaks in, never heard in training or "
                        "the training ones (default: %(default)s)")
    p.add_argument("--snr-db", default="10", metavar="DB|clean",
                   help="audio policies: background noise, signal-to-noise in dB, or clean (default: %(default)s)")


def hearing_from_args(args: argparse.Namespace):
    """The ``vla.policy.Hearing`` of ``add_hearing_args``'s options (None without them)."""
    import math

    from vla.errors import VLAError
    from vla.policy import Hearing

    if not hasattr(args, "voices"):
        return None
    text = str(args.snr_db).strip().lower()
    if text == "clean":
        return Hearing(args.voices, (None,))
    try:
        snr = float(text)
    except ValueError:
        raise VLAError(f"--snr-db must be a number of dB or clean, got {args.snr_db!r}") from None
    if not math.isfinite(snr):
        raise VLAError(f"--snr-db must be finite, got {args.snr_db!r}")
    return Hearing(args.voices, (snr,))


def add_accel_args(p: argparse.ArgumentParser) -> None:
    """--device / --precision / --compile of commands that train the transformer policy (``vla.accel``)."""
    from vla.accel import COMPILE_CHOICES, PRECISION_CHOICES

    p.add_argument("--device", default="auto",
                   help="auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; under "
                        "torchrun each process takes the GPU of its LOCAL_RANK (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="bf16: autocast of the forward pass with fp32 master weights and optimizer state; "
                        "auto = bf16 on a GPU that has it, fp32 on the CPU (default: %(default)s)")
    p.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                   help="torch.compile the training loss; auto = on for CUDA, off on the CPU; a compile "
                        "that fails falls back to eager with a warning (default: %(default)s)")


def accel_from_args(args: argparse.Namespace):
    """The ``vla.accel.Accel`` of ``add_accel_args``'s options (a one-line VLAError for a device
    that is not here)."""
    from vla.accel import resolve

    return resolve(getattr(args, "device", "auto"), getattr(args, "precision", "auto"),
                   getattr(args, "compile", "auto"))


FLAG_RULES = {
    # argparse dest: (flag, rule, what the rule says)
    "steps": ("--steps", lambda v: v >= 1, "an integer >= 1"),
    "train_steps": ("--train-steps", lambda v: v >= 1, "an integer >= 1"),
    "batch_size": ("--batch-size", lambda v: v >= 1, "an integer >= 1"),
    "lr": ("--lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "iterations": ("--iterations", lambda v: v >= 0, "an integer >= 0"),
    "rollouts": ("--rollouts", lambda v: v >= 0, "an integer >= 0 (0: the equal-compute BC control)"),
    "expert_episodes": ("--expert-episodes", lambda v: v >= 1, "an integer >= 1"),
    "beta0": ("--beta0", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "label_every": ("--label-every", lambda v: v >= 1, "an integer >= 1"),
    "forecast_weight": ("--forecast-weight", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "replan_every": ("--replan-every", lambda v: v is None or v >= 1, "an integer >= 1"),
    "augment_commands": ("--augment-commands", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "command_label_weight": ("--command-label-weight", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "command_bag": ("--command-bag", lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    "command_bag_dropout": ("--command-bag-dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "command_thought_noise": ("--command-thought-noise", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "audio_renditions": ("--audio-renditions", lambda v: v >= 1, "an integer >= 1"),
    "phone_errors": ("--phone-errors", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "paraphrase": ("--paraphrase", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "chitchat": ("--chitchat", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
}
"""The training flags' ranges, checked by ``check_flags`` before anything runs, so an error names
the flag the user typed rather than the config field it fills."""


def check_flags(args: argparse.Namespace) -> None:
    """Raise ``VLAError`` naming the first training flag of ``args`` outside its range."""
    from vla.errors import VLAError

    for dest, (flag, ok, rule) in FLAG_RULES.items():
        if hasattr(args, dest) and not ok(getattr(args, dest)):
            raise VLAError(f"{flag} must be {rule}, got {getattr(args, dest)}")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend and the --carla-* flags of the commands that drive a simulator."""
    from sim.backends import BACKENDS, DEFAULT_BACKEND

    p.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND,
                   help="simulator: the embedded one, or a CARLA server (pip install -e .[carla]; see the "
                        "README's CARLA section) (default: %(default)s)")
    p.add_argument("--carla-host", default=None, help="CARLA server host (default: $CARLA_HOST or localhost)")
    p.add_argument("--carla-port", type=int, default=None, help="CARLA server port (default: $CARLA_PORT or 2000)")
    p.add_argument("--carla-town", default=None,
                   help="map to load, e.g. Town01 (default: $CARLA_TOWN, or the server's current map)")
    p.add_argument("--carla-timeout", type=float, default=None,
                   help="seconds to wait for the server per call and per tick (default: $CARLA_TIMEOUT or 10)")
    p.add_argument("--carla-launch", action="store_true",
                   help="start a server from $CARLA_ROOT on a free port and stop it at the end "
                        "(default: connect to a running one)")


def apply_backend_args(args: argparse.Namespace) -> None:
    """Check --backend and the --carla-* flags; for CARLA, export them as CARLA_HOST / CARLA_PORT /
    CARLA_TOWN / CARLA_TIMEOUT so every rollout worker process builds the same client."""
    import os

    from vla.errors import VLAError

    if getattr(args, "backend", "embedded") != "carla":
        return
    if getattr(args, "workers", 1) > 1:
        raise VLAError("--backend carla drives one server from one process: use --workers 1 "
                       "(several servers: one command per server)")
    from sim.carla_backend import CarlaOptions

    try:
        options = CarlaOptions.from_environment(host=args.carla_host, port=args.carla_port, town=args.carla_town,
                                                timeout=args.carla_timeout,
                                                launch=True if getattr(args, "carla_launch", False) else None)
    except (TypeError, ValueError) as e:
        raise VLAError(f"--backend carla: {e}") from None
    if options.launch and not os.environ.get("CARLA_ROOT"):
        raise VLAError("--carla-launch needs CARLA_ROOT, the directory of the CARLA server to start")
    os.environ.update({"CARLA_HOST": options.host, "CARLA_PORT": str(options.port), "CARLA_TOWN": options.town,
                       "CARLA_TIMEOUT": str(options.timeout), "CARLA_LAUNCH": "1" if options.launch else "0"})


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS]: the rollout workers as Ray actors (``vla.parallel.make_pool``)."""
    from vla.parallel import LOCAL_RAY

    p.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                   help="run the --workers rollout workers as Ray actors, each owning one simulator (and "
                        "policy copy); a worker that dies loses only its episode, which is run again. "
                        f"Alone (or '{LOCAL_RAY}'): a Ray runtime started on this machine; with ADDRESS "
                        "(HOST:PORT, ray://HOST:PORT or auto): that cluster, whose nodes need this package "
                        "(pip install -e .[ray]). The episodes are the same as without it "
                        "(default: local worker processes, faster to start on one machine)")
