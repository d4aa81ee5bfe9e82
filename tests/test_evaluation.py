"""vla.evaluation.evaluate: the one closed-loop evaluation. A policy by name (rollout pool) and
the same policy as an object (this process) give the same episodes; files are written when
asked; no seeds is an error."""

from __future__ import annotations

import json

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
