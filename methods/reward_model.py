"""A Bradley-Terry trajectory reward model trained on the preference pairs, and best-of-N.

``TrajectoryScorer`` is a small network of its own (not the policy): an MLP over the context's
state features (scaled ego features, the nearest actors in the ego frame, the mean embedding of
the heard command's ids) and the action chunk (normalized to [-1, 1] by the action limits,
plus its validity mask). Cameras are not read: the constitution judges kinematics, which the
state features carry. Trained with the Bradley-Terry loss on the same pairs as DPO,

    L = -log sigmoid(r(x, y_w) - r(x, y_l)),

through the shared training loop (``ScorerMethod``). At inference ``BestOfNPolicy`` asks the
policy for N chunks (the greedy one and N-1 samples at ``temperature``), scores them and drives
the best, so a deployed policy chooses without a simulator.

A scorer directory holds ``scorer.json`` (``ScorerConfig`` + format) and ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sim.atomic import atomic_output
from sim.interface import ACTION_HIGH, ACTION_LOW
from vla.inputs import OBSERVATIONS, PolicyInputs

FORMAT = "vla-trajectory-scorer"
VERSION = 1


@dataclass(frozen=True)
class ScorerConfig:
    horizon: int
    """Steps of the scored action chunk (the policy's horizon)."""
    vocab_size: int
    """Size of the vocabulary the command ids come from (the policy's layout)."""
    hidden: int = 128
    """Width of the MLP."""
    layers: int = 2
    """Hidden layers of the MLP."""
    command_dim: int = 16
    """Width of the command embedding."""
    observation: str = "ego_frame"
    """The policy's ego / actor features (``PolicyConfig.observation``) the scorer reads."""
    lr: float = 1e-3
    """Learning rate (AdamW) when training."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""

    def __post_init__(self) -> None:
        for name in ("horizon", "vocab_size", "hidden", "layers", "command_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ScorerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("ScorerConfig.lr must be > 0 and weight_decay >= 0")


class TrajectoryScorer(nn.Module):
    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        self.command = nn.Embedding(config.vocab_size, config.command_dim)
        obs = OBSERVATIONS[config.observation]
        n_in = (len(obs.ego_fields) + obs.actors * len(obs.actor_fields) + config.command_dim
                + config.horizon * 3)
        layers: list[nn.Module] = []
        for i in range(config.layers):
            layers += [nn.Linear(n_in if i == 0 else config.hidden, config.hidden), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(config.hidden, 1))
        self.register_buffer("action_mid", torch.tensor((ACTION_HIGH + ACTION_LOW) / 2, dtype=torch.float32), persistent=False)
        self.register_buffer("action_half", torch.tensor((ACTION_HIGH - ACTION_LOW) / 2, dtype=torch.float32), persistent=False)

    def forward(self, inputs: PolicyInputs, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) scores of chunks ``actions`` (B, H, 2) in contexts ``inputs`` (B rows)."""
        b = actions.shape[0]
        mask = torch.ones(actions.shape[:2], dtype=torch.bool) if mask is None else mask
        cmd_mask = inputs.command_mask.float()[..., None]
        cmd = (self.command(inputs.command) * cmd_mask).sum(1) / cmd_mask.sum(1).clamp(min=1.0)
        acts = ((actions.float() - self.action_mid) / self.action_half) * mask[..., None]
        x = torch.cat([inputs.ego.float(), inputs.actors.float().reshape(b, -1), cmd,
                       acts.reshape(b, -1), mask.float()], dim=1)
        return self.mlp(x)[:, 0]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_output(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        meta = {"format": FORMAT, "version": VERSION, "config": asdict(self.config)}
        with atomic_output(directory / "scorer.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))

    @staticmethod
    def load(directory: str | Path) -> TrajectoryScorer:
        directory = Path(directory)
        meta_path = directory / "scorer.json"
        if not meta_path.is_file() or not (directory / "model.safetensors").is_file():
            raise ValueError(f"{directory} is not a trajectory scorer (needs scorer.json and model.safetensors; "
                             "train one with vla train dpo --loss bt-reward)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{meta_path} is not a {FORMAT} v{VERSION} file")
        scorer = TrajectoryScorer(ScorerConfig(**meta["config"]))
        scorer.load_state_dict(load_file(str(directory / "model.safetensors")))
        return scorer.eval()


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """(B,) Bradley-Terry negative log-likelihood that the chosen wins."""
    return -F.logsigmoid(chosen - rejected)


class ScorerMethod:
    """Trains a ``TrajectoryScorer`` on ``methods.dpo.PairBatch`` batches (shared loop)."""

    name = "bt-reward"

    def __init__(self, scorer: TrajectoryScorer, heldout=None) -> None:
        self.scorer, self.heldout = scorer, heldout
        c = scorer.config
        self.optimizer = torch.optim.AdamW(scorer.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def _scores(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.scorer(batch.inputs, batch.actions, batch.inputs.action_mask)
        return r[: batch.pairs], r[batch.pairs:]

    def update(self, batch) -> dict[str, float]:
        self.scorer.train()
        w, lo = self._scores(batch)
        loss = bt_loss(w, lo).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        w, lo = w.detach(), lo.detach()
        return {"loss": loss.item(), "pref_acc": float((w > lo).float().mean()),
                "reward_margin": float((w - lo).mean())}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.heldout is None or len(self.heldout) == 0:
            return {}
        self.scorer.eval()
        w, lo = self._scores(self.heldout.batch(np.arange(len(self.heldout))))
        return {"heldout_loss": float(bt_loss(w, lo).mean()), "heldout_pref_acc": float((w > lo).float().mean()),
                "heldout_reward_margin": float((w - lo).mean()), "heldout_pairs": float(len(w))}

    def state_dict(self) -> dict:
        return {"model": self.scorer.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scorer.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def config_dict(self) -> dict:
        return {"method": self.name, "scorer": asdict(self.scorer.config)}


class BestOfNPolicy:
    """A driving policy that executes the best-scoring of N candidate chunks at every re-plan.

    Candidates: the policy's greedy chunk and N-1 chunks sampled at ``temperature`` (a generator
    seeded with ``seed`` + the episode count, so runs are reproducible). Chunk execution (queue,
    temporal ensembling) is the wrapped policy's own ``select_action``, fed with the chosen
    chunks instead of the greedy ones."""

    def __init__(self, policy, scorer: TrajectoryScorer, n: int, temperature: float = 1.0, seed: int = 0) -> None:
        from vla.policy import require_control_actions

        require_control_actions(policy, "best-of-N")
        if n < 1 or not temperature > 0:
            raise ValueError(f"best-of-N needs N >= 1 and temperature > 0, got N={n}, temperature={temperature}")
        if scorer.config.horizon != policy.config.horizon:
            raise ValueError(f"the scorer scores {scorer.config.horizon}-step chunks, the policy predicts "
                             f"{policy.config.horizon}")
        if scorer.config.vocab_size != policy.layout.size:
            raise ValueError("the scorer was trained with a different vocabulary than the policy's")
        self.policy, self.scorer, self.n, self.temperature = policy, scorer.eval(), int(n), float(temperature)
        self.name = f"{policy.name}+best-of-{n}"
        self._seed, self._episodes = int(seed), 0
        self._gen = torch.Generator().manual_seed(self._seed)

    def reset(self) -> None:
        self.policy.reset()
        self._gen = torch.Generator().manual_seed(self._seed + self._episodes)
        self._episodes += 1

    def hear(self, command: str, lang: str = "en", seed: int = 0) -> None:
        self.policy.hear(command, lang, seed=seed)

    @torch.no_grad()
    def best_chunk(self, obs: dict) -> np.ndarray:
        """(H, 2) the best-scoring of the N candidate chunks for this observation."""
        p = self.policy
        p.model.eval()
        inputs = p.inputs_from_obs(obs)
        chunks = p.predict_chunk_batch(inputs)
        if self.n > 1:
            samples = p.predict_chunk_batch(inputs.select(np.zeros(self.n - 1, np.int64)), self.temperature, self._gen)
            chunks = np.concatenate([chunks, samples])
        scores = self.scorer(inputs.select(np.zeros(len(chunks), np.int64)), torch.as_tensor(chunks, dtype=torch.float32))
        return chunks[int(torch.argmax(scores))].astype(np.float32)

    def select_action(self, obs: dict) -> np.ndarray:
        """The wrapped policy's ``select_action`` (its queue / ensembling) planning with
        ``best_chunk`` instead of its greedy chunk."""
        return self.policy.select_action(obs, plan=self.best_chunk)
