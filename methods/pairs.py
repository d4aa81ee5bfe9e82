"""Preference pairs from a policy's own rollouts, ranked by the driving constitution.

For each episode seed the policy drives (``select_action``, its own execution mode). Every
``stride`` steps from ``first_branch`` on (at most ``max_branches`` times) the simulator state
is cloned (``EmbeddedDrivingEnv.snapshot``) and candidate continuations of
``continuation_steps`` steps are rolled out from it, each restored from the same snapshot:

* ``greedy``: the policy's own plan: greedy chunks, re-planned every H steps (open loop);
* ``sampleK``: chunks sampled at ``temperature`` (``predict_chunk_batch`` with a generator
  seeded by (seed, step)), re-planned the same way;
* ``perturbK``: the greedy first chunk plus a constant (accel, steer) offset, then greedy;
* ``expert``: the expert's action every step;
* ``smooth``: the policy's greedy plan through a rate limiter (jerk <= ``smooth_max_jerk``,
  steering rate <= ``smooth_max_steer_rate``) starting from the last executed action: a
  smoothed correction of the policy's own trajectory.

The first H executed actions of a continuation are its CHUNK (what the policy scores; fewer
when the continuation ends earlier, masked). Candidates whose chunk equals an earlier
candidate's are dropped, so no trajectory is ever paired with itself or a copy. Pairs:

* ``rank``: the constitution's best candidate (chosen) against each candidate it beats
  (rejected), at most ``max_pairs_per_branch``, highest-priority deciding rule first;
* ``revise`` (critique and revise): when the greedy trajectory violates a rule, each revision
  (``expert``, ``smooth``) the constitution prefers to it is chosen, the greedy rejected.

On disk (``write_pairs``): ``DIR/pairs.json`` (manifest: what made the pairs, one entry per
finished seed) and ``DIR/shards/pairs_SEED.npz`` (``PAIR_FIELDS``), each written atomically;
a rerun skips the seeds already done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from methods.constitution import (
    RULE_INDEX,
    Constitution,
    ConstitutionConfig,
    Trajectory,
)
from sim.atomic import atomic_output
from sim.interface import ACTION_HIGH, ACTION_LOW, DT, EGO_FIELDS

FORMAT = "vla-preference-pairs"
VERSION = 1
CONTEXT_FIELDS = ("ego", "actors", "command", "command_mask", "ego_raw")
PAIR_FIELDS = CONTEXT_FIELDS + (
    "seed", "step", "rule", "kind", "goal_label", "chosen_source", "rejected_source",
    "chosen_actions", "rejected_actions", "chosen_mask", "rejected_mask",
    "chosen_costs", "rejected_costs", "chosen_steps", "rejected_steps")
"""Arrays of a shard, one row per pair (+ ``frames`` (N, cams, H, W, 3) uint8 for camera policies)."""


@dataclass(frozen=True)
class PairConfig:
    continuation_steps: int = 20
    """Steps (0.1 s) of every candidate continuation; >= the policy's chunk horizon."""
    stride: int = 20
    """Steps between two branch states of the policy's rollout."""
    first_branch: int = 5
    """Step of the first branch state (>= 2, so comfort sees two states of history)."""
    max_branches: int = 8
    """Branch states per episode."""
    samples: int = 3
    """Chunks sampled from the policy per branch state."""
    temperature: float = 1.0
    """Sampling temperature of those chunks."""
    perturbations: tuple[tuple[float, float], ...] = ((-1.5, 0.0), (1.5, 0.0), (0.0, 0.02), (0.0, -0.02))
    """(accel m/s^2, steer rad) offsets added to the greedy first chunk, one candidate each."""
    expert: bool = True
    """Add the expert's continuation."""
    revise: bool = True
    """Add the smoothed correction and make critique-and-revise pairs."""
    smooth_max_jerk: float = 2.0
    """m/s^3: the smoothed correction's accel change per second (half nuPlan's 4.13)."""
    smooth_max_steer_rate: float = 0.15
    """rad/s: the smoothed correction's steering rate."""
    max_pairs_per_branch: int = 4
    """Rank pairs kept per branch state."""
    max_steps: int = 0
    """Stop the policy's rollout after this many steps (0: run the episode to its end)."""
    constitution: ConstitutionConfig = field(default_factory=ConstitutionConfig)
    """Thresholds and margins of the rules."""

    def __post_init__(self) -> None:
        for name in ("continuation_steps", "stride", "max_branches", "max_pairs_per_branch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PairConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.first_branch < 2 or self.samples < 0 or self.max_steps < 0:
            raise ValueError("PairConfig.first_branch must be >= 2, samples and max_steps >= 0")
        if not self.temperature > 0 or self.smooth_max_jerk <= 0 or self.smooth_max_steer_rate <= 0:
            raise ValueError("PairConfig.temperature, smooth_max_jerk and smooth_max_steer_rate must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Candidate:
    source: str
    first_chunk: np.ndarray | None  # (H, 2) planned first chunk, or None (per-step drivers)
    mode: str  # "greedy", "sample", "expert", "smooth"
    actions: list = field(default_factory=list)
    trajectory: Trajectory | None = None
    costs: np.ndarray | None = None

    def chunk(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, 2) first executed actions (last one repeated past the end) and (H,) validity."""
        acts = np.asarray(self.actions[:h], dtype=np.float32).reshape(-1, 2)
        mask = np.arange(h) < len(acts)
        if len(acts) == 0:
            return np.zeros((h, 2), np.float32), mask
        return np.concatenate([acts, np.repeat(acts[-1:], h - len(acts), 0)]).astype(np.float32), mask


class PairMaker:
    """Makes the pairs of one episode at a time with one policy in one env."""

    def __init__(self, policy, env, config: PairConfig = PairConfig()) -> None:
        if config.continuation_steps < policy.config.horizon:
            raise ValueError(f"continuation_steps {config.continuation_steps} is shorter than the "
                             f"policy's chunk horizon {policy.config.horizon}")
        self.policy, self.env, self.config = policy, env, config
        self.constitution = Constitution(config.constitution)
        self.h = policy.config.horizon
        self._seed = 0  # the current episode's seed: what an audio policy hears is drawn from it

    # ------------------------------------------------------------------ one continuation
    def _drive(self, cand: _Candidate, obs: dict, last_action: np.ndarray, gen: torch.Generator,
               history: np.ndarray) -> None:
        env, p, c = self.env, self.policy, self.config
        ego, actors, events, terms, outcome = [env.ego_state()], [env.actors()], [], [], ""
        queue = list(cand.first_chunk) if cand.first_chunk is not None else []
        prev = np.asarray(last_action, dtype=np.float64)
        for t in range(c.continuation_steps):
            if cand.mode == "expert":
                action = env.expert_action()
            else:
                if not queue:
                    temp = c.temperature if cand.mode == "sample" else 0.0
                    queue = list(p.predict_chunk_batch(p.inputs_from_obs(obs), temp, gen)[0])
                action = np.asarray(queue.pop(0), dtype=np.float64)
                if cand.mode == "smooth":
                    limit = np.array([c.smooth_max_jerk, c.smooth_max_steer_rate]) * DT
                    action = prev + np.clip(action - prev, -limit, limit)
            action = np.clip(np.asarray(action, dtype=np.float64), ACTION_LOW, ACTION_HIGH)
            obs, _, terminated, truncated, info = env.step(action)
            prev = action
            cand.actions.append(action.astype(np.float32))
            ego.append(env.ego_state())
            actors.append(env.actors())
            events.append(info["events"])
            terms.append(info["reward_terms"])
            if terminated or truncated:
                outcome = info.get("outcome", "")
                break
        cand.trajectory = Trajectory(ego=np.array(ego), actors=np.array(actors), events=np.array(events),
                                     reward_terms=np.array(terms), history=history, outcome=outcome)
        cand.costs = self.constitution.costs(cand.trajectory, env.goal)

    def _candidates(self, inputs, gen: torch.Generator) -> list[_Candidate]:
        c, p = self.config, self.policy
        greedy = p.predict_chunk_batch(inputs)[0]
        cands = [_Candidate("greedy", greedy, "greedy")]
        if c.samples:
            batch = inputs.select(np.zeros(c.samples, dtype=np.int64))
            for i, chunk in enumerate(p.predict_chunk_batch(batch, c.temperature, gen)):
                cands.append(_Candidate(f"sample{i}", chunk, "sample"))
        for i, offset in enumerate(c.perturbations):
            cands.append(_Candidate(f"perturb{i}", greedy + np.asarray(offset), "greedy"))
        if c.expert:
            cands.append(_Candidate("expert", None, "expert"))
        if c.revise:
            cands.append(_Candidate("smooth", None, "smooth"))
        return cands

    def branch(self, obs: dict, last_action: np.ndarray, history: np.ndarray, seed: int,
               step: int) -> list[dict]:
        """Pairs from the current state; the env is returned to it afterwards."""
        env = self.env
        snap = env.snapshot()
        gen = torch.Generator().manual_seed(int(seed) * 100_003 + int(step))
        inputs = self.policy.inputs_from_obs(obs)
        kept: list[_Candidate] = []
        for cand in self._candidates(inputs, gen):
            self._drive(cand, env.restore(snap), last_action, gen, history)
            chunk, mask = cand.chunk(self.h)
            if any(np.array_equal(mask, k.chunk(self.h)[1]) and np.allclose(chunk, k.chunk(self.h)[0], atol=1e-6)
                   for k in kept):
                continue  # the same chunk as an earlier candidate: never pair it with itself
            kept.append(cand)
        env.restore(snap)
        context = self._context(obs, inputs)
        return [{**context, **self._record(w, lo, rule, kind, seed, step)} for w, lo, rule, kind in self._pairs(kept)]

    def _pairs(self, kept: list[_Candidate]) -> list[tuple[_Candidate, _Candidate, str, str]]:
        goal, judge = self.env.goal, self.constitution
        out: list[tuple[_Candidate, _Candidate, str, str]] = []
        greedy = next((k for k in kept if k.source == "greedy"), None)
        if self.config.revise and greedy is not None and judge.violations(greedy.costs):
            for rev in (k for k in kept if k.source in ("expert", "smooth")):
                v = judge.compare(rev.costs, greedy.costs, goal)
                if v.winner == 0:
                    out.append((rev, greedy, v.rule, "revise"))
        if len(kept) > 1:
            best = kept[judge.best([k.costs for k in kept], goal)]
            ranked = []
            for k in kept:
                v = judge.compare(best.costs, k.costs, goal)
                if k is not best and v.winner == 0 and not any(w is best and lo is k for w, lo, _, _ in out):
                    ranked.append((RULE_INDEX[v.rule], -v.gap, k.source, k, v.rule))
            ranked.sort(key=lambda r: r[:3])
            out += [(best, k, rule, "rank") for *_, k, rule in ranked[: self.config.max_pairs_per_branch]]
        return out

    def _context(self, obs: dict, inputs) -> dict:
        """What the policy reads at the branch state: ego, actors, the heard command, cameras."""
        p, goal = self.policy, self.env.goal
        lc, pad = p.config.command_ids_max, p.layout.special("<pad>")
        ids = p.encode_command(goal.command, goal.lang, seed=self._seed)[:lc]
        command, mask = np.full(lc, pad, np.int64), np.zeros(lc, bool)
        command[: len(ids)], mask[: len(ids)] = ids, True
        ctx = {"ego": inputs.ego[0].numpy(), "actors": inputs.actors[0].numpy(), "command": command,
               "command_mask": mask, "ego_raw": np.asarray(obs["ego"], np.float32)}
        if p.config.cameras:
            ctx["frames"] = np.asarray(obs["cameras"], np.uint8)
        return ctx

    def _record(self, w: _Candidate, lo: _Candidate, rule: str, kind: str, seed: int, step: int) -> dict:
        wa, wm = w.chunk(self.h)
        la, lm = lo.chunk(self.h)
        return {
            "seed": seed, "step": step, "rule": rule, "kind": kind, "goal_label": self.env.goal.label,
            "chosen_source": w.source, "rejected_source": lo.source, "chosen_actions": wa,
            "rejected_actions": la, "chosen_mask": wm, "rejected_mask": lm,
            "chosen_costs": w.costs.astype(np.float32), "rejected_costs": lo.costs.astype(np.float32),
            "chosen_steps": w.trajectory.num_steps, "rejected_steps": lo.trajectory.num_steps,
        }

    # ------------------------------------------------------------------ one episode
    def episode(self, seed: int) -> list[dict]:
        """Drive one episode with the policy and return its pairs (dicts of PAIR_FIELDS)."""
        env, p, c = self.env, self.policy, self.config
        obs, _ = env.reset(seed=seed)
        p.reset()
        self._seed = seed
        p.hear(env.goal.command, env.goal.lang, seed=seed)
        history, last_action, records, branches, step = [env.ego_state()], np.zeros(2), [], 0, 0
        while True:
            if step >= c.first_branch and (step - c.first_branch) % c.stride == 0 and branches < c.max_branches:
                records += self.branch(obs, last_action, np.array(history[-3:-1]), seed, step)
                branches += 1
            last_action = np.clip(np.asarray(p.select_action(obs), np.float64), ACTION_LOW, ACTION_HIGH)
            obs, _, terminated, truncated, _ = env.step(last_action)
            history.append(env.ego_state())
            step += 1
            if terminated or truncated or (c.max_steps and step >= c.max_steps):
                return records


def stack_records(records: list[dict], policy) -> dict[str, np.ndarray]:
    """Rows -> the arrays of one shard (also for zero rows)."""
    h, lc, n_rules = policy.config.horizon, policy.config.command_ids_max, len(RULE_INDEX)
    obs = policy.observation
    empty = {"ego": (0, len(obs.ego_fields)), "actors": (0, obs.actors, len(obs.actor_fields)),
             "chosen_actions": (0, h, 2), "rejected_actions": (0, h, 2), "chosen_costs": (0, n_rules),
             "rejected_costs": (0, n_rules), "command": (0, lc), "command_mask": (0, lc),
             "chosen_mask": (0, h), "rejected_mask": (0, h), "ego_raw": (0, len(EGO_FIELDS))}
    out = {}
    for name in PAIR_FIELDS + (("frames",) if policy.config.cameras else ()):
        values = [r[name] for r in records]
        if name in ("rule", "kind", "goal_label", "chosen_source", "rejected_source"):
            out[name] = np.array(values, dtype="U16")
        elif name in ("seed", "step", "chosen_steps", "rejected_steps"):
            out[name] = np.array(values, dtype=np.int64)
        elif values:
            out[name] = np.stack(values)
        elif name == "frames":
            out[name] = np.zeros((0, len(policy.rig), policy.rig[0].height, policy.rig[0].width, 3), np.uint8)
        else:
            out[name] = np.zeros(empty[name], np.float32)
    for name in ("command",):
        out[name] = out[name].astype(np.int64)
    for name in ("command_mask", "chosen_mask", "rejected_mask"):
        out[name] = out[name].astype(bool)
    return out


def write_shard(directory: Path, seed: int, arrays: dict[str, np.ndarray]) -> Path:
    path = directory / "shards" / f"pairs_{seed:08d}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def write_manifest(directory: Path, manifest: dict) -> None:
    with atomic_output(directory / "pairs.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / "pairs.json"
    if not Path(directory).is_dir():
        raise ValueError(f"pairs directory {directory} does not exist")
    if not path.is_file():
        raise ValueError(f"{directory} holds no preference pairs (no pairs.json); make them with vla make-pairs")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{VERSION} manifest")
    return manifest


def read_pairs(directory: str | Path) -> dict[str, np.ndarray]:
    """All pairs of a directory, concatenated in manifest (seed) order."""
    manifest = read_manifest(directory)
    shards = [dict(np.load(Path(directory) / s["file"], allow_pickle=False)) for s in manifest["shards"]]
    if not shards or sum(len(s["seed"]) for s in shards) == 0:
        raise ValueError(f"{directory} holds no preference pairs yet")
    return {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}


def make_pairs(policy, env, seeds: list[int], out: str | Path, config: PairConfig, meta: dict,
               log: Callable[[str], None] = print) -> dict:
    """Make and store the pairs of every seed not yet done in ``out``; returns the manifest."""
    from vla.policy import require_control_actions

    require_control_actions(policy, "preference-pair making")
    out = Path(out)
    header = {"format": FORMAT, "version": VERSION, "config": json.loads(json.dumps(config.to_dict())),
              "horizon": policy.config.horizon, "cameras": bool(policy.config.cameras),
              "max_command_tokens": policy.config.command_ids_max, **meta}
    if (out / "pairs.json").exists():
        manifest = read_manifest(out)
        old = {k: v for k, v in manifest.items() if k != "shards"}
        if old != header:
            diff = next((k for k in header if old.get(k) != header[k]), "?")
            raise ValueError(f"{out} holds pairs made differently ({diff}: {old.get(diff)!r}); use a new --out")
    else:
        manifest = {**header, "shards": []}
    done = {s["seed"] for s in manifest["shards"]}
    maker = PairMaker(policy, env, config)
    for seed in seeds:
        if seed in done:
            continue
        records = maker.episode(seed)
        path = write_shard(out, seed, stack_records(records, policy))
        rules = {r: sum(1 for x in records if x["rule"] == r) for r in sorted({x["rule"] for x in records})}
        manifest["shards"].append({"seed": int(seed), "file": str(path.relative_to(out)), "pairs": len(records),
                                   "rules": rules})
        write_manifest(out, manifest)
        log(f"seed {seed}: {len(records)} pairs {rules}")
    return manifest
