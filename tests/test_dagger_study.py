"""The BC-vs-DAgger study: matched label budgets, shared held-out seeds, the summary math."""

from __future__ import annotations

import json

import pytest

from benchmarks import dagger_study


def test_summary_mean_spread_and_pooled_goal_types():
    recs = [
        {"collision_rate": 0.1, "progress_mean": 0.8, "goal_success_by_type": {"lane_left": {"successes": 1, "episodes": 2}}},
        {"collision_rate": 0.3, "progress_mean": 0.6, "goal_success_by_type": {"lane_left": {"successes": 2, "episodes": 2},
                                                                                "speed_up": {"successes": 0, "episodes": 1}}},
    ]
    s = dagger_study.summarize({"bc": recs})["bc"]
    assert s["metrics"]["collision_rate"]["mean"] == pytest.approx(0.2)
    assert s["metrics"]["collision_rate"]["std"] == pytest.approx(0.1414213, rel=1e-5)  # sample std
    assert s["metrics"]["jerk_lat_p95"]["n"] == 0 and s["metrics"]["jerk_lat_p95"]["mean"] is None
    assert s["goal_success_by_type"]["lane_left"] == {"successes": 3, "episodes": 4, "rate": 0.75}
    assert s["goal_success_by_type"]["speed_up"]["rate"] == 0.0
    table = dagger_study.format_summary({"dense": {"bc": s}})
    assert "0.200 ± 0.141" in table and "lane_left 3/4" in table


def test_tiny_study_matches_label_budgets_and_shares_eval_seeds(tmp_path):
    out = tmp_path / "study"
    argv = ["--out", str(out), "--densities", "light", "--seeds", "0", "--eval-episodes", "2",
            "--iter-eval-episodes", "1", "--iterations", "1", "--expert-episodes", "1", "--rollouts", "1",
            "--train-steps", "4", "--batch-size", "8", "--workers", "1", "--size", "tiny", "--no-cameras"]
    assert dagger_study.main(argv) == 0
    run = out / "light" / "seed_0"
    bc = json.loads((run / "bc" / "session.json").read_text())
    dag = json.loads((run / "dagger" / "session.json").read_text())
    assert bc["iterations"] == 0 and dag["iterations"] == 1
    assert bc["expert_episodes"] == dag["expert_episodes"] + dag["iterations"] * dag["rollouts"]
    assert bc["train_steps"] == (dag["iterations"] + 1) * dag["train_steps"]
    seeds = {arm: json.loads((path / "metrics.json").read_text())["seed"]
             for arm, path in (("bc", run / "eval_bc"), ("dagger", run / "eval_dagger"),
                               ("expert", out / "light" / "eval_expert"))}
    assert set(seeds.values()) == {dagger_study.STUDY_SEED_OFFSET}
    summary = json.loads((out / "study.json").read_text())["summary"]["light"]
    assert set(summary) == {"expert", "bc", "dagger"} and summary["bc"]["runs"] == 1
    # a second run resumes: nothing is retrained or re-evaluated
    before = (run / "eval_bc" / "metrics.json").stat().st_mtime_ns
    assert dagger_study.main(argv) == 0
    assert (run / "eval_bc" / "metrics.json").stat().st_mtime_ns == before


def _fake_study(root, seed, bc_collided, dagger_collided):
    """A finished dagger_study directory for one training seed (two held-out episodes)."""
    (root / "study.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text("{}")
    expert = root / "dense" / "eval_expert"
    expert.mkdir(parents=True)
    (expert / "metrics.json").write_text(json.dumps({"collision_rate": 0.0}))
    for arm, collided in (("bc", bc_collided), ("dagger", dagger_collided)):
        d = root / "dense" / f"seed_{seed}" / f"eval_{arm}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"collision_rate": sum(collided) / len(collided)}))
        rows = ["seed,collided,off_road,progress,goal_success,driving_score"]
        rows += [f"{3000000 + i},{c},0,0.5,1,0.5" for i, c in enumerate(collided)]
        (d / "episodes.csv").write_text("\n".join(rows) + "\n")


def test_combine_pairs_episodes_across_studies_and_refuses_bad_input(tmp_path, capsys):
    from benchmarks import dagger_combine

    _fake_study(tmp_path / "s0", 0, bc_collided=[1, 1], dagger_collided=[0, 1])
    _fake_study(tmp_path / "s1", 1, bc_collided=[1, 0], dagger_collided=[0, 0])
    out = tmp_path / "all"
    assert dagger_combine.main(["--out", str(out), str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    dense = json.loads((out / "study.json").read_text())["result"]["dense"]
    assert dense["seeds"] == ["seed_0", "seed_1"]
    assert dense["arms"]["bc"]["metrics"]["collision_rate"]["mean"] == pytest.approx(0.75)
    assert dense["arms"]["dagger"]["metrics"]["collision_rate"]["mean"] == pytest.approx(0.25)
    paired = dense["paired"]["collided"]  # differences -1, 0, -1, 0
    assert paired["n"] == 4 and paired["mean"] == pytest.approx(-0.5)
    assert -1.0 <= paired["lo"] <= paired["mean"] <= paired["hi"] <= 0.0
    assert dense["paired"]["progress"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 4}
    assert "| collided | -0.500 |" in (out / "study.md").read_text()
    # the same training seed twice, or an unfinished study: one-line errors, exit 2
    assert dagger_combine.main(["--out", str(out), str(tmp_path / "s0"), str(tmp_path / "s0")]) == 2
    assert "appears in two studies" in capsys.readouterr().err
    assert dagger_combine.main(["--out", str(out), str(tmp_path / "missing")]) == 2
    assert "not a finished dagger_study run" in capsys.readouterr().err
