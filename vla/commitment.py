"""Commitment (``PolicyConfig.commit_margin``): on open road a plan policy keeps executing the plan
it has, continued from now, unless the model finds its new plan likelier by the margin.

Why: a policy re-plans every few steps, and two plans a step apart may disagree (a lane change
begun, then not); executing whichever is newest makes the car weave. Holding the executed plan
until the model clearly prefers another holds decisions. Never a brake: a new plan that slows
down is always taken (as the tracker never delays one). At junctions nothing is held: the
decision there must follow crossing traffic and the turn, and held plans collided more (dev).

A plan is scored by the model's teacher-forced probability, from the observation, of landing
within ``COMMIT_BIN_WINDOW`` bins of each of its tokens. The scores reuse what the decision
already computed: the new plan's decoding logits, and the kept plan's, scored in the same prefix
pass (``VLAModel.generate_chunk(score=...)``); only plans neither covers cost a pass, after the
kept prefix when there is one (``continuation_logits``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from sim.interface import DT
from sim.plan import PLAN_HIGH, PLAN_LOW, continue_plan, plan_times
from sim.route import JUNCTION_HORIZON

COMMIT_BRAKE_M = 1.0
"""m; a new plan that ends this much shorter than the one being executed (it slows down) is
always taken: commitment holds decisions, never a brake (as the tracker never delays one)."""

COMMIT_BIN_WINDOW = 2
"""A plan is scored for commitment by the probability of landing within this many bins of each
of its tokens (teacher-forced): a plan's own tokens are fine-grained, its decision is not."""


def open_road(obs: dict) -> bool:
    """No junction within ``sim.route.JUNCTION_HORIZON`` m along the route (``obs["route"]``, which
    both backends report whatever the policy reads): where commitment holds plans (and the
    following brake checks the car ahead)."""
    route = obs.get("route")
    return route is not None and float(np.asarray(route)[0]) >= JUNCTION_HORIZON


class Commitment:
    """A plan policy's commitment, and what the decision being made already computed for it.

    ``prefix``, ``known`` and ``to_score`` belong to one observation: the policy clears them
    (``clear``) before each decision and after each re-plan."""

    def __init__(self, policy) -> None:
        self.policy = policy  # the vla.policy.VLAPolicy it decides for
        self.clear()

    def clear(self) -> None:
        self.prefix = None  # this observation's prefix pass (vla.model.Prefix), kept by the decoding
        self.known: list[tuple[torch.Tensor, torch.Tensor]] = []  # chunks the model already scored here:
        # (H, D) bins and their (H, D, n_bins) teacher-forced logits
        self.to_score: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (plan, bins, residual):
        # the kept plan, for the decoding to score in its prefix pass

    def kept(self, obs: dict, held: tuple | None, frame: np.ndarray, pose: np.ndarray, t: int) -> np.ndarray | None:
        """Under ``commit_margin`` on open road, the plan being executed (``held``: plan, its frame,
        the pose it starts from, the step it was made) continued from step ``t`` in ``frame`` at
        ``pose``: what commitment may keep. None where nothing is held."""
        if not (self.policy.config.commit_margin > 0 and held is not None and open_road(obs)):
            return None
        old, old_frame, start, made = held
        return continue_plan(old, old_frame, start, (t - made) * DT, frame, float(pose[3]))

    def expect(self, kept: np.ndarray) -> None:
        """``kept`` will be weighed at this observation: encode it once, for the decoding's prefix
        pass to score (``prefix_bins``) and ``scores`` to find."""
        bins, residual = self.plan_bins([kept])
        self.to_score = (kept, bins[0], residual[0])

    def prefix_bins(self) -> np.ndarray | None:
        """The (1, H, D) bins the decoding should score in its prefix pass (``expect``), or None."""
        return None if self.to_score is None else self.to_score[1][None]

    def remember(self, out, scored: torch.Tensor | None) -> None:
        """Keep a decoding's prefix pass and its logits (``VLAModel.generate_chunk(keep_prefix=True)``
        output ``out``; a decoding's logits are its teacher-forced ones), and those of the chunk
        ``scored`` in that pass."""
        self.prefix = out.prefix
        self.known = [(out.bins[0], out.bin_logits[0])]
        if scored is not None:
            self.known.append((scored[0], out.scored_logits[0]))

    def choose(self, obs: dict, new: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
        """The plan to follow: ``new``, or ``kept`` (the method ``kept``'s answer) when the model does
        not find ``new`` likelier by ``commit_margin``. A new plan that slows down (ends
        ``COMMIT_BRAKE_M`` shorter) is always taken. With ``commit_lateral`` only the lateral path
        is held: the kept plan takes the new plan's speed gains."""
        if kept is None:
            return new
        config = self.policy.config
        if config.commit_lateral > 0:  # the speed is always the new plan's: hold the lateral path only
            kept = np.stack([new[:, 0], kept[:, 1]], axis=-1)
        elif (kept[-1, 0] - new[-1, 0]) * plan_times(len(kept))[-1] > COMMIT_BRAKE_M:
            return new
        score_kept, score_new = self.scores(obs, [kept, new])
        return kept if score_kept >= score_new - config.commit_margin else new

    def plan_bins(self, plans: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(P, H, D) bins and residuals of plans (K, 2), clipped to the plan bounds; the plan
        ``expect`` encoded is not encoded again."""
        cached = self.to_score
        rows = [(cached[1], cached[2]) if cached is not None and p is cached[0] else None for p in plans]
        todo = [p for p, row in zip(plans, rows) if row is None]
        if todo:
            clipped = np.clip(np.stack(todo), PLAN_LOW, PLAN_HIGH).astype(np.float32)
            fresh = zip(*self.policy.action_tokenizer.encode(clipped))
            rows = [row if row is not None else next(fresh) for row in rows]
        return np.stack([b for b, _ in rows]), np.stack([r for _, r in rows])

    @torch.inference_mode()
    def scores(self, obs: dict, plans: list[np.ndarray]) -> list[float]:
        """For each plan (K, 2): the model's teacher-forced log-probability, from ``obs``, of landing
        within ``COMMIT_BIN_WINDOW`` bins of each of its tokens. The logits of plans this
        observation's decoding already scored (``known``) are reused; the others in one pass: the
        action tokens after the kept prefix when there is one, else the whole forward."""
        policy = self.policy
        bins, residual = self.plan_bins(plans)
        device = next(policy.model.parameters()).device
        targets = torch.as_tensor(bins, device=device)
        known = [next((logits for b, logits in self.known if torch.equal(b, row)), None) for row in targets]
        todo = [i for i, logits in enumerate(known) if logits is None]
        if todo:
            if self.prefix is not None:  # this observation's prefix pass, kept by the decoding
                done = policy.inference_model.continuation_logits(self.prefix, targets[todo])
            else:
                inputs = replace(policy.inputs_from_obs(obs).select([0] * len(todo)),
                                 action_bins=torch.as_tensor(bins[todo]), action_residual=torch.as_tensor(residual[todo]),
                                 action_mask=torch.ones(len(todo), bins.shape[1], dtype=torch.bool))
                done = policy.chunk_logits(inputs.to(device))
            for i, logits in zip(todo, done):
                known[i] = logits
        logp = torch.log_softmax(torch.stack(known).float(), dim=-1)  # (P, H, D, n_bins)
        near = torch.arange(logp.shape[-1], device=logp.device)
        window = (near - targets[..., None]).abs() <= COMMIT_BIN_WINDOW
        return logp.masked_fill(~window, float("-inf")).logsumexp(-1).flatten(1).sum(1).tolist()
