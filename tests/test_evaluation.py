"""vla.evaluation.evaluate: the one closed-loop evaluation. A policy by name (rollout pool) and
the same policy as an object (this process) give the same episodes; files are written when
asked; no seeds is an error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.rollout import ConstantPolicy
from vla.evaluation import evaluate
from vla.parallel import RolloutPool


def test_by_name_in_workers_and_as_an_object_give_the_same_episodes(tmp_path):
    with RolloutPool(2) as pool:
        named = evaluate("constant", "highway", "light", [5, 6], pool=pool, out=tmp_path / "ev")
    local = evaluate(ConstantPolicy(), "highway", "light", [5, 6])
    assert [r["seed"] for r in named.rows] == [5, 6]
    assert [r["progress"] for r in named.rows] == [r["progress"] for r in local.rows]
    assert [r["collided"] for r in named.rows] == [r["collided"] for r in local.rows]
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert on_disk == named.metrics and on_disk["episodes"] == 2 and on_disk["policy"] == "constant"
    assert (tmp_path / "ev" / "episodes.csv").read_text().count("\n") == 3
    with pytest.raises(ValueError, match="at least one seed"):
        evaluate("constant", "highway", "light", [])


def test_in_process_options_wrap_record_and_frames(tmp_path):
    """What vla eval asks of it: a wrapper per episode, expert labels, one episode's frames
    (a blind baseline gets the frames rig), every episode seen in order; the metrics are those
    of the plain evaluation."""
    from sim.cameras import default_rig

    wrapped, seen = [], []

    def wrap(policy, seed):
        wrapped.append(seed)
        return policy

    rich = evaluate("constant", "highway", "light", [5, 6], wrap=wrap, record_expert=True, frames_episode=1,
                    frames_rig=default_rig(32, 32), on_episode=lambda i, ep: seen.append((i, ep)))
    plain = evaluate("constant", "highway", "light", [5, 6])
    assert wrapped == [5, 6] and [i for i, _ in seen] == [0, 1]
    assert seen[0][1].frames is None and seen[1][1].frames is not None and seen[1][1].frames.shape[1] == 6
    assert not np.isnan(seen[0][1].expert_actions).any()
    assert rich.metrics == plain.metrics
