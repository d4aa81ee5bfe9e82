"""``vla bench speech --policy DIR``: does the policy's transformer understand the spoken command?

Command understanding is measured by a **linear probe**: the policy reads a command at a fixed
driving state of the command's own scenario (seed 0 at medium density: the intersection for
turns, the highway for lane and speed commands and chit-chat; a turn heard on the highway, where
no policy was ever told one, says nothing), its hidden state at the ``<action>`` token (what
every action is decoded from) is the feature, and a multinomial logistic regression is fitted on
the features of the corpus's *training* phrasings spoken in *training* voices (all noise levels)
and scored on its *held-out* phrasings spoken in *held-out* voices, per noise level (clean, 20,
10, 5 dB), English and Mandarin apart. The 9 labels are ``tokenizers_mm.corpus.LABELS`` (the
goals and ``none``). The same probe on an ``ipa`` or ``text`` policy gives the accuracy from the
transcript, the reference an audio policy is compared with (its figures do not depend on voice
or noise). A probe reads what the features hold; a policy may still not act on it.

For a policy with the command-label head (``--command-label-weight`` > 0), the same held-out
renditions are also scored by the **head itself** (``command_accuracy_head_{level}``,
``command_accuracy_head_zh``): the label the policy names them at that state, which is what it
acts on when words come during the drive (chit-chat is ignored by it). No fitting: the probe
can read more than the policy uses, or less than its own head was trained to name.

Also: ``hearing_ms_per_step``, the cost of hearing in one decision step (an action chunk with
the command in the sequence minus one with an empty command, median over repeats), and
``render_ms`` (synthesis + codec + VAD of one utterance). ``ipa_phone_error_rate``: for a
``heard`` policy, the phone error rate of the IPA its ear produced from the held-out renditions
(all noise levels) against phonemizer's IPA of the phrasing's text (per level too,
``ipa_phone_error_rate_{level}``); for other policies null with the reason (an ``audio``
policy produces no IPA). ``act_within_1s_rate``: closed loop, ``--talk-episodes`` held-out
medium highway episodes (seeds 3,000,000+, held-out phrasings, held-out voices at 10 dB for a
spoken policy) in which the passenger gives a new command 3-6 s into the drive
(``sim.rollout.DriveTalk``, ``vla eval --talk drive``): the fraction in which the car acts on it
within 1 s (``benchmarks.metrics.act_latency``), with ``act_latency_s_median`` and the goal
success of those commands (``talk_goal_success_rate``); null with the reason when
``--talk-episodes 0``. ``act_within_1s_cf_rate`` (with ``act_latency_cf_s_median``): the same
against the same car driven on from that moment without the words
(``benchmarks.metrics.act_latency_cf``), which also counts braking to fall in behind the target
lane's traffic and not what traffic does to both.

``command_accuracy_by_label``: the probe's accuracy per spoken label over all noise levels and
both languages (the confusion matrix's diagonal); a policy trained on one scenario family never
heard the other's goals named, and this says which labels its figures lose.

The last line is JSON; ``--out DIR`` also writes ``speech.json`` and ``confusion.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

SNR_LEVELS: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0)
"""Noise levels of the test renditions (None: clean)."""
NOT_BUILT = {
    "ipa_phone_error_rate": "only a 'heard' policy produces IPA from audio (its ear); this one does not",
}
TALK_FIRST_SEED = 3_000_000
"""First seed of the closed-loop episodes with a command during the drive (the held-out seeds)."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint directory (audio, ipa or text command)")
    p.add_argument("--renditions", type=int, default=2,
                   help="renditions (voice, rate, pitch, noise draw) of each phrasing per noise level (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the renditions and the probe (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=20, help="timed action chunks per variant (default: %(default)s)")
    p.add_argument("--snrs", default="clean,20,10,5",
                   help="noise levels of the test renditions, dB or clean (default: %(default)s)")
    p.add_argument("--talk-episodes", type=int, default=10,
                   help="closed-loop episodes with a command during the drive, for act_within_1s_rate "
                        "(0 = skip) (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write speech.json and confusion.png here")


def _state(policy, scenario: str = "highway"):
    """The fixed observation commands are heard at: seed 0 of ``scenario`` at medium density."""
    from sim.backends import DEFAULT_BACKEND, make_env

    env = make_env(DEFAULT_BACKEND, scenario, "medium", cameras=policy.rig)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    return obs


@torch.no_grad()
def features(policy, obs, commands: list[np.ndarray]) -> np.ndarray:
    """(N, d) hidden states at the <action> token for each command id sequence at ``obs`` (one
    observation, or a list with one per command)."""
    out = []
    for ids, at in zip(commands, obs if isinstance(obs, list) else [obs] * len(commands)):
        policy.reset()
        policy._command = ids
        out.append(policy.model.action_features(policy.inputs_from_obs(at))[0].float().numpy())
    return np.stack(out)


def _name(snr: float | None) -> str:
    return "clean" if snr is None else f"{snr:g}db"


def parse_snrs(text: str) -> tuple[float | None, ...]:
    """``clean,20,10`` -> (None, 20.0, 10.0); a ValueError names a bad level."""
    out: list[float | None] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part == "clean":
            out.append(None)
            continue
        try:
            value = float(part.removesuffix("db"))
        except ValueError:
            raise ValueError(f"--snrs: {part!r} is neither a number of dB nor clean") from None
        if not np.isfinite(value):
            raise ValueError(f"--snrs: {part!r} is not finite")
        out.append(value)
    if not out:
        raise ValueError("--snrs names no noise level")
    return tuple(out)


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, seed: int, steps: int = 500) -> tuple:
    """Multinomial logistic regression (L2 1e-3, Adam) on standardized features: (mean, std, W, b)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    w = (torch.randn(x.shape[1], classes, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + 1e-3 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mean, std, w.detach().numpy(), b.detach().numpy()


def predict(probe: tuple, x: np.ndarray) -> np.ndarray:
    mean, std, w, b = probe
    return np.argmax(((x - mean) / std) @ w + b, axis=1)


def acting_on_time(policy_dir: str, episodes: int) -> dict:
    """``act_within_1s_rate``, ``act_latency_s_median`` and ``talk_goal_success_rate`` of
    ``episodes`` closed-loop episodes with a command during the drive (module docstring)."""
    from benchmarks.metrics import TALK_CF_METRIC_DOCS, TALK_METRIC_DOCS
    from sim.rollout import TALK_COUNTERFACTUAL_S, DriveTalk
    from vla.evaluation import evaluate
    from vla.policy import EVAL_HEARING

    metrics = evaluate(policy_dir, "highway", "medium", range(TALK_FIRST_SEED, TALK_FIRST_SEED + episodes),
                       phrasings="heldout", hearing=EVAL_HEARING,
                       talk=DriveTalk(counterfactual_s=TALK_COUNTERFACTUAL_S),
                       progress="command during the drive").metrics
    # the aggregate has these keys only when some episode heard a command during the drive
    return {k: metrics.get(k, 0 if k in ("talk_episodes", "act_cf_episodes") else None)
            for k in (*TALK_METRIC_DOCS, *TALK_CF_METRIC_DOCS)}


def run_speech_bench(policy_dir: str, renditions: int = 2, seed: int = 0, repeats: int = 20,
                     log=print, snrs: tuple[float | None, ...] = SNR_LEVELS,
                     talk_episodes: int = 10) -> tuple[dict, np.ndarray]:
    """The figures described above and the (9, 9) confusion matrix (rows: true label) of the
    held-out renditions at all noise levels together."""
    from tokenizers_mm.corpus import LABELS, PHRASINGS
    from vla.policies_registry import load_checkpoint
    from vla.policy import Hearing

    torch.set_num_threads(1)
    policy = load_checkpoint(policy_dir)
    if not hasattr(policy, "encode_command") or policy.config.command == "none":
        raise ValueError(f"{policy_dir}: not a policy that hears commands (command 'none' or not a VLA policy)")
    policy.eval()
    audio = policy.config.command in ("audio", "heard")
    obs = _state(policy)
    states = {"highway": obs, "intersection": _state(policy, "intersection")}

    def at(labels: list[int]) -> list[dict]:  # each command heard at a state of its own scenario
        return [states["intersection" if LABELS[y].startswith("turn_") else "highway"] for y in labels]
    label_index = {label: i for i, label in enumerate(LABELS)}

    def encode(phrasings, voices: str, snrs: tuple, offset: int) -> tuple[list, list, list]:
        ids, labels, langs = [], [], []
        for snr in snrs:
            policy.hearing = Hearing(voices, (snr,))
            for k in range(renditions if audio else 1):
                for j, p in enumerate(phrasings):
                    ids.append(policy.encode_command(p.text, p.lang, seed=offset + 1000 * k + j))
                    labels.append(label_index[p.label])
                    langs.append(p.lang)
        return ids, labels, langs

    t0 = time.perf_counter()
    train = [p for p in PHRASINGS if not p.heldout]
    held = [p for p in PHRASINGS if p.heldout]
    tr_ids, tr_y, _ = encode(train, "train", tuple(snrs) if audio else (None,), seed * 100_000)
    renders = len(tr_ids)
    x_train = features(policy, at(tr_y), tr_ids)
    probe = fit_probe(x_train, np.array(tr_y), len(LABELS), seed)
    train_acc = float((predict(probe, x_train) == np.array(tr_y)).mean())
    result: dict = {"policy": str(policy_dir), "command": policy.config.command, "probe_train_accuracy": train_acc}
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    zh_hits, zh_total = 0, 0
    ears = policy.config.command == "heard"
    if ears:
        from tokenizers_mm.codec_train import phone_error_rate
        from tokenizers_mm.ipa import INVENTORY, to_ipa
    head = getattr(policy.model, "command_head", None) is not None
    head_zh_hits = 0
    refs_all: list = []
    hyps_all: list = []
    for snr in snrs:
        ids, y, langs = encode(held, "heldout", (snr,), seed * 100_000 + 50_000)
        if ears:  # the ids ARE the ear's transcription (IPA tokens), cut at the policy's command length
            refs = [to_ipa(p.text, p.lang) for _ in range(renditions) for p in held]
            hyps = [INVENTORY.decode(i, layout=policy.layout) for i in ids]
            result[f"ipa_phone_error_rate_{_name(snr)}"] = phone_error_rate(refs, hyps)
            refs_all += refs
            hyps_all += hyps
        renders += len(ids)
        heard_at = at(y)
        pred = predict(probe, features(policy, heard_at, ids))
        y, langs = np.array(y), np.array(langs)
        en = langs == "en"
        if head:  # what the policy itself names them: its command-label head at the same state
            said = np.array([int(policy._label_probs(o, i).argmax()) for o, i in zip(heard_at, ids)])
            result[f"command_accuracy_head_{_name(snr)}"] = float((said[en] == y[en]).mean())
            head_zh_hits += int((said[~en] == y[~en]).sum())
        result[f"command_accuracy_{_name(snr)}"] = float((pred[en] == y[en]).mean())
        zh_hits += int((pred[~en] == y[~en]).sum())
        zh_total += int((~en).sum())
        np.add.at(confusion, (y, pred), 1)
        head_note = (f"; the policy's own label head: English {result[f'command_accuracy_head_{_name(snr)}']:.3f}"
                     if head else "")
        log(f"held-out phrasings x held-out voices, {_name(snr):>5}: English accuracy "
            f"{result[f'command_accuracy_{_name(snr)}']:.3f}, Mandarin {(pred[~en] == y[~en]).mean():.3f} "
            f"({en.sum()} + {(~en).sum()} renditions){head_note}")
    result["command_accuracy_zh"] = zh_hits / max(1, zh_total)
    # per spoken label (all levels, both languages): a policy trained on one scenario family never
    # heard the other's goals named, and these say which labels its figures lose
    spoken = confusion.sum(1)
    result["command_accuracy_by_label"] = {label: float(confusion[i, i] / spoken[i]) if spoken[i] else None
                                           for i, label in enumerate(LABELS)}
    if head:
        result["command_accuracy_head_zh"] = head_zh_hits / max(1, zh_total)
    result["render_ms"] = 1000 * (time.perf_counter() - t0) / max(1, renders) if audio else 0.0
    policy.hearing = Hearing("heldout", (10.0,))
    with_command = policy.encode_command(held[0].text, held[0].lang, seed=seed)

    def chunk_ms(ids: np.ndarray) -> float:
        times = []
        for i in range(repeats + 3):
            policy.reset()
            policy._command = ids
            t = time.perf_counter()
            policy.predict_action_chunk(obs)
            if i >= 3:
                times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    heard, silent = chunk_ms(with_command), chunk_ms(np.zeros(0, dtype=np.int64))
    result.update(hearing_ms_per_step=heard - silent, chunk_ms_with_command=heard, chunk_ms_without_command=silent,
                  command_positions=int(len(with_command) // policy.config.command_group),
                  labels=list(LABELS), renditions=renditions,
                  not_measured={k: v for k, v in NOT_BUILT.items() if not (ears and k == "ipa_phone_error_rate")})
    if not head:
        for key in [f"command_accuracy_head_{_name(snr)}" for snr in snrs] + ["command_accuracy_head_zh"]:
            result["not_measured"][key] = "the policy has no command-label head (trained with command_label_weight 0)"
    if talk_episodes > 0:
        result.update(acting_on_time(policy_dir, talk_episodes))
        log(f"command during the drive, {result['talk_episodes']} of {talk_episodes} held-out episodes: acted within "
            f"1 s in {result['act_within_1s_rate']} (against the car without the words: "
            f"{result['act_within_1s_cf_rate']}), goal success {result['talk_goal_success_rate']}")
    else:
        for key in ("act_within_1s_rate", "act_within_1s_cf_rate"):
            result["not_measured"][key] = "not run (--talk-episodes 0)"
    for key in result["not_measured"]:
        result[key] = None
    if ears:
        result["ipa_phone_error_rate"] = phone_error_rate(refs_all, hyps_all)
    return result, confusion


def _confusion_png(path: Path, confusion: np.ndarray, labels: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.atomic import atomic_output

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    rates = confusion / np.maximum(1, confusion.sum(1, keepdims=True))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("probe's label")
    ax.set_ylabel("spoken label")
    ax.set_title(title, fontsize=9)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from benchmarks.reports import write_json
    from vla.errors import VLAError

    for name in ("renditions", "repeats"):
        if getattr(args, name) < 1:
            raise VLAError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.talk_episodes < 0:
        raise VLAError(f"--talk-episodes must be >= 0, got {args.talk_episodes}")
    if args.seed < 0:
        raise VLAError(f"--seed must be >= 0, got {args.seed}")
    try:
        snrs = parse_snrs(args.snrs)
        result, confusion = run_speech_bench(args.policy, args.renditions, args.seed, args.repeats,
                                             log=lambda line: print(line, flush=True), snrs=snrs,
                                             talk_episodes=args.talk_episodes)
    except ValueError as e:
        raise VLAError(str(e)) from None
    print(f"Mandarin (all noise levels): {result['command_accuracy_zh']:.3f}; probe on training renditions: "
          f"{result['probe_train_accuracy']:.3f}; hearing costs {result['hearing_ms_per_step']:.2f} ms per "
          f"decision step ({result['command_positions']} command positions)", flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "speech.json", {**result, "confusion": confusion.tolist()})
        _confusion_png(out / "confusion.png", confusion, result["labels"],
                       f"{result['command']} policy, held-out phrasings and voices, all noise levels")
    print(json.dumps(result, sort_keys=True))
    return 0
