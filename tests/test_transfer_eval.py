"""benchmarks.transfer_eval: every policy of a plan_study drives another setting, arms are
summarized and paired against the first, and a rerun keeps what is done."""

from __future__ import annotations

import pytest

from benchmarks import transfer_eval
from vla.config import SIZES, PolicyConfig
from vla.policy import VLAPolicy, default_action_tokenizer


def test_transfer_eval_of_a_small_study(tmp_path, monkeypatch):
    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    for arm in ("plan_dart", "plan_dart_relabel"):
        for seed in (0, 1):
            VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(
                tmp_path / f"seed_{seed}" / arm / "iter_000" / "policy")
    argv = ["--study", str(tmp_path), "--density", "light", "--episodes", "2", "--workers", "1"]
    assert transfer_eval.main(argv) == 0
    out = tmp_path / "transfer_highway_light"
    summary = (out / "summary.md").read_text()
    assert "| plan_dart (x2) |" in summary and "| expert (x1) |" in summary
    assert "plan_dart_relabel minus plan_dart, paired over 4 episodes" in summary
    evaluated = []
    monkeypatch.setattr("vla.evaluation.evaluate", lambda *a, **k: evaluated.append(a) or pytest.fail("redone"))
    assert transfer_eval.main(argv) == 0 and not evaluated  # everything was kept
    assert transfer_eval.main(["--study", str(tmp_path / "nothing"), "--episodes", "2"]) == 2
