"""benchmarks.learning_curve end to end at a tiny size: one shared expert pool, nested budgets,
both arms per budget in two settings, paired intervals and the plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import learning_curve
from sim.storage import read_episodes


def test_learning_curve_shares_the_pool_and_pairs_the_arms(tmp_path):
    out = tmp_path / "curve"
    argv = ["--out", str(out), "--scenarios", "highway", "--densities", "light", "medium", "--budgets", "4", "8",
            "--seeds", "0", "--eval-episodes", "2", "--iterations", "1", "--steps-per-episode", "1",
            "--min-steps", "2", "--batch-size", "8", "--workers", "1", "--size", "tiny", "--label-every", "20"]
    assert learning_curve.main(argv) == 0
    pool = [list(read_episodes(out / "pool" / f"highway_{d}", load_frames=False)) for d in ("light", "medium")]
    assert [len(p) for p in pool] == [4, 4]  # the largest budget / 2 settings
    bc8 = list(read_episodes(out / "seed_0" / "bc_8" / "data" / "iter_000", load_frames=False))
    dagger8 = list(read_episodes(out / "seed_0" / "dagger_8" / "data" / "iter_000", load_frames=False))
    assert [ep.seed for ep in bc8] == [ep.seed for ep in pool[0] + pool[1]]  # setting by setting
    assert [ep.seed for ep in dagger8] == [ep.seed for ep in pool[0][:2] + pool[1][:2]]  # half the labels
    np.testing.assert_array_equal(bc8[0].actions, pool[0][0].actions)
    rollouts = list(read_episodes(out / "seed_0" / "dagger_8" / "data" / "iter_001", load_frames=False))
    assert len(rollouts) == 4 and all(ep.policy.endswith("iter_000/policy") for ep in rollouts)  # B / 2
    record = json.loads((out / "study.json").read_text())
    light = record["summary"]["highway_light"]
    assert set(light["arms"]) == {"bc", "dagger"} and set(light["arms"]["bc"]) == {"4", "8"}
    assert light["paired"]["8"]["collided"]["n"] == 2  # 1 seed x 2 held-out episodes
    assert light["half_labels"]["4"]["progress"]["n"] == 2  # DAgger at 4 against BC at 8
    assert (out / "learning_curve.png").stat().st_size > 0
    (out / "study.json").unlink()
    assert learning_curve.main([*argv, "--seeds", "0", "7", "--summarize-only"]) == 0  # seed 7 never ran
    again = json.loads((out / "study.json").read_text())["summary"]["highway_light"]
    assert again["arms"]["bc"]["8"]["runs"] == 1 and again["paired"] == light["paired"]
    assert learning_curve.main([*argv[:2], "--budgets", "6", *argv[10:]]) == 2  # 6 does not split


def test_budgets_must_split_over_settings_and_iterations():
    learning_curve.check_budgets([8, 16], settings=2, iterations=2)
    with pytest.raises(ValueError, match="budget 6"):
        learning_curve.check_budgets([6], settings=2, iterations=1)
