"""benchmarks.plan_study end to end at a tiny size: arms of one kind share their recording."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import plan_study
from sim.storage import read_episodes


def test_plan_study_arms_share_the_recording_and_pair_up(tmp_path):
    out = tmp_path / "study"
    argv = ["--out", str(out), "--density", "light", "--seeds", "0", "--arms", "control_dart", "plan_dart",
            "plan_dart_relabel", "plan_dart_forecast", "--label-every", "25", "--expert-episodes", "2", "--train-steps", "4",
            "--batch-size", "8", "--eval-episodes", "2", "--workers", "1", "--threads", "1", "--size", "tiny"]
    assert plan_study.main(argv) == 0
    a = list(read_episodes(out / "seed_0" / "control_dart" / "data" / "iter_000", load_frames=False))
    b = list(read_episodes(out / "seed_0" / "plan_dart" / "data" / "iter_000", load_frames=False))
    c = list(read_episodes(out / "seed_0" / "plan_dart_relabel" / "data" / "iter_000", load_frames=False))
    assert len(a) == len(b) == len(c) == 2
    assert a[0].goal_futures is None and c[0].goal_futures is not None  # relabelled arms record their own
    np.testing.assert_array_equal(c[0].actions, a[0].actions)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.actions, y.actions)
        assert not np.allclose(x.actions, x.expert_actions)  # DART bursts were executed
    record = json.loads((out / "study.json").read_text())
    d = list(read_episodes(out / "seed_0" / "plan_dart_forecast" / "data" / "iter_000", load_frames=False))
    for x, y in zip(b, d):  # the auxiliary-head arm trains on plan_dart's very episodes ...
        np.testing.assert_array_equal(x.actions, y.actions)
    saved = json.loads((out / "seed_0" / "plan_dart_forecast" / "iter_000" / "policy" / "policy.json").read_text())
    plain = json.loads((out / "seed_0" / "plan_dart" / "iter_000" / "policy" / "policy.json").read_text())
    assert saved["config"]["forecast_weight"] == plan_study.FORECAST_WEIGHT  # ... with the forecasting loss
    assert plain["config"]["forecast_weight"] == 0.0
    assert set(record["summary"]["light"]) == {"expert", "control_dart", "plan_dart", "plan_dart_relabel",
                                               "plan_dart_forecast"}
    assert record["paired_vs_baseline"]["plan_dart"]["collided"]["n"] == 2
    bad = [*argv[:6], "--arms", "control", "bogus", *argv[11:]]
    assert plan_study.main(bad) == 2
