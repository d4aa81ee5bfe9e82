"""The two kinds of actor IQL, CQL and BC train, behind one small interface.

* ``MLPActor``: a ``GaussianActor`` / ``TanhGaussianActor`` (``offline_rl.networks``) over the
  normalized state vector; ``weighted_nll`` = ``-mean_i w_i log pi(a_i|s_i)``.
* ``TransformerActor``: the transformer policy (``vla.policy.VLAPolicy``) reading its own
  inputs (``PolicyInputs``: ego, actors, heard command, cameras) built by ``EpisodeInputs``
  from the episodes the D4RL file was exported from. Its "log-likelihood" is the policy's own
  action-chunk loss on the EXECUTED actions ``a_t .. a_{t+H-1}``: ``weighted_nll`` =
  ``weighted_bin_ce(logits, bins, mask, w) + residual_weight * (w-weighted in-bin residual
  smooth-L1)``, the whole chunk weighted by the weight of its first transition.
  ``sample`` draws actions with ``generate_chunk(temperature=1)`` and scores them with a
  density uniform inside the chosen bins: ``log p(a) = sum_d [log P(bin_d) - log width_d]``
  (widths in the normalized action units).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from offline_rl.datasets import D4RLData
from offline_rl.replay import Normalizer, TransitionBatch
from sim.storage import episode_paths, read_episode

_EP = re.compile(r"ep_(\d+)\.h5")


class MLPActor:
    kind = "mlp"

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net

    def parameters(self):
        return self.net.parameters()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"actor": self.net}

    def log_prob(self, batch: TransitionBatch, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.net.log_prob(batch.observations, batch.actions, dtype)

    def weighted_nll(self, batch: TransitionBatch, weights: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``-mean(w log pi(a|s))``; ``dtype``: matmul input precision of the actor MLP."""
        return -(weights * self.log_prob(batch, dtype)).mean()


class TransformerActor:
    kind = "transformer"

    def __init__(self, policy, normalizer: Normalizer) -> None:
        from vla.policy import require_control_actions, require_token_likelihood

        require_control_actions(policy, "the offline-RL transformer actor")
        require_token_likelihood(policy, "the offline-RL transformer actor")
        self.policy = policy
        self.normalizer = normalizer
        tok = policy.action_tokenizer
        widths = np.asarray(tok.bin_widths, np.float64)  # (D, n_bins) physical
        unit = widths * 2.0 / (normalizer.action_high - normalizer.action_low)[:, None]
        self._log_width = torch.as_tensor(np.log(np.maximum(unit, 1e-12)), dtype=torch.float32)

    def parameters(self):
        return self.policy.model.parameters()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"actor": self.policy.model}

    def weighted_nll(self, batch: TransitionBatch, weights: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The AWR loss of the transformer (``dtype`` is for MLP actors; the transformer runs
        in its own precision)."""
        self.policy.train()
        return self.policy.weighted_loss(batch.inputs, weights)

    @torch.no_grad()
    def sample(self, inputs, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` sampled first actions per state: ``(B, k, A)`` normalized, log-density ``(B, k)``."""
        b = inputs.batch_size
        rep = inputs.select(torch.arange(b).repeat_interleave(k))
        self.policy.eval()
        out = self.policy.model.generate_chunk(rep, temperature=1.0)
        bins, residual = out.bins[:, 0].cpu().numpy(), out.residual[:, 0].cpu().numpy()
        physical = self.policy.action_tokenizer.decode(bins, residual)
        unit = torch.as_tensor(self.normalizer.action_to_unit(physical)).view(b, k, -1)
        log_w = self._log_width.gather(1, out.bins[:, 0].T.cpu()).T  # (B*k, D)
        logp = (out.logprob[:, 0].cpu() - log_w).sum(-1).view(b, k)
        return unit, logp


class EpisodeInputs:
    """The transformer policy's inputs for the rows of a D4RL file exported from
    ``episode_dir`` (``sim.storage.export_d4rl``: rows carry ``infos/episode_index`` and
    ``infos/step``). Chunk targets are the EXECUTED actions ``a_t .. a_{t+H-1}``."""

    def __init__(self, episode_dir: str | Path, data: D4RLData, policy) -> None:
        from sim.interface import EGO
        from tokenizers_mm.action import ActionTokenizer

        if "infos/episode_index" not in data.extras or "infos/step" not in data.extras:
            raise ValueError("the transformer actor needs a dataset with infos/episode_index and "
                             "infos/step (written by vla collect --d4rl / sim.storage.export_d4rl)")
        self.policy = policy
        paths = {int(m.group(1)): p for p in episode_paths(episode_dir) if (m := _EP.fullmatch(p.name))}
        ep_index, steps = data.extras["infos/episode_index"], data.extras["infos/step"].astype(np.int64)
        wanted = sorted({int(i) for i in np.unique(ep_index)})
        missing = [i for i in wanted if i not in paths]
        if missing:
            raise ValueError(f"{episode_dir}: no episode file for infos/episode_index {missing[0]} "
                             "(pass the directory the dataset was exported from with --episodes)")
        slot = {idx: j for j, idx in enumerate(wanted)}
        self.eps: list[dict] = []
        h = policy.config.horizon
        for idx in wanted:
            ep = read_episode(paths[idx], load_frames=policy.config.cameras)
            lane0 = float(ep.ego[0, EGO["lane_id"]])
            chunks, mask = ActionTokenizer.chunk(ep.actions, h)
            bins, res = policy.action_tokenizer.encode(chunks)
            ego, actors = policy.observation.episode(ep.ego, ep.actors, lane0, route=ep.route)
            self.eps.append({
                "ego": ego,
                "actors": actors,
                "command": policy.encode_command(ep.goal.command, ep.goal.lang),
                "frames": ep.frames, "bins": bins.astype(np.int64),
                "residual": res.astype(np.float32), "mask": mask, "actions": ep.actions,
            })
        self.rows = np.stack([np.array([slot[int(i)] for i in ep_index]), steps], 1)
        for r in np.linspace(0, len(data) - 1, num=min(len(data), 16)).astype(int):
            e, s = self.rows[r]
            if not np.allclose(self.eps[e]["actions"][s], data.actions[r], atol=1e-4):
                raise ValueError(f"{episode_dir}: episode actions differ from the dataset's at row {r}; "
                                 "pass the directory the dataset was exported from with --episodes")

    def batch(self, indices: np.ndarray, next_state: bool = False):
        from vla.inputs import collate

        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        eps = [self.eps[e] for e in rows[:, 0]]
        steps = rows[:, 1] + int(next_state)
        last = [len(ep["bins"]) - 1 for ep in eps]
        label = np.minimum(steps, last)  # targets / frames at s_T: the last recorded ones
        frames = [ep["frames"][s] for ep, s in zip(eps, label)] if self.policy.config.cameras else None
        return collate([ep["ego"][s] for ep, s in zip(eps, steps)], [ep["actors"][s] for ep, s in zip(eps, steps)],
                       [ep["command"] for ep in eps], self.policy.layout.special("<pad>"),
                       self.policy.config.command_ids_max, frames=frames,
                       action_bins=[ep["bins"][s] for ep, s in zip(eps, label)],
                       action_residual=[ep["residual"][s] for ep, s in zip(eps, label)],
                       action_mask=[ep["mask"][s] for ep, s in zip(eps, label)])
