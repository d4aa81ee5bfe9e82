"""benchmarks.paired_compare: B against A on the same episodes, from vla eval directories."""

from __future__ import annotations

import csv
import json

from benchmarks import paired_compare as pc


def _eval_dir(root, name, goal_success, seeds=(10, 11, 12, 13), commands=None):
    d = root / name
    d.mkdir()
    with open(d / "episodes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "goal_type", *pc.METRICS, *(["command"] if commands else [])])
        w.writeheader()
        for i, (s, g) in enumerate(zip(seeds, goal_success)):
            row = {"seed": s, "goal_type": "lane_left" if s % 2 else "keep_lane", "goal_success": g,
                   "collided": 0, "off_road": 0, "progress": 1.0, "jerk_long_p95": 1.0, "jerk_lat_p95": 2.0,
                   "comfort_fraction": 1.0}
            if commands:
                row["command"] = commands[i]
            w.writerow(row)
    return str(d)


def test_differences_pair_episodes_by_seed_within_each_training_seed(tmp_path, capsys):
    a = [_eval_dir(tmp_path, "a0", [0, 0, 1, 1]), _eval_dir(tmp_path, "a1", [0, 1, 0, 1])]
    b = [_eval_dir(tmp_path, "b0", [1, 1, 1, 1]), _eval_dir(tmp_path, "b1", [0, 1, 0, 1])]
    assert pc.main(["--a", *a, "--b", *b]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["pairs"] == 8
    assert report["b_minus_a"]["goal_success"]["mean"] == 2 / 8
    assert report["b_minus_a"]["collided"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 8}
    assert report["goal_success_per_dir"] == {"a": [0.5, 0.5], "b": [1.0, 0.5]}
    assert report["goal_success_by_type"]["b"] == {"keep_lane": "2/4", "lane_left": "4/4"}


def test_mismatched_inputs_are_one_line_errors(tmp_path, capsys):
    a = _eval_dir(tmp_path, "a", [1, 1, 1, 1])
    other = _eval_dir(tmp_path, "other", [1, 1, 1, 1], seeds=(20, 21, 22, 23))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episodes.csv").write_text("seed,goal_type\n1,keep_lane\n")
    for argv, needle in [(["--a", a, "--b", other], "different episodes"),
                         (["--a", a, a, "--b", a], "same number"),
                         (["--a", a, "--b", str(tmp_path / "bad")], "lacks the columns"),
                         (["--a", a, "--b", str(tmp_path / "nowhere")], "not readable")]:
        assert pc.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)


def test_goal_success_per_phrasing_when_the_files_name_the_command(tmp_path, capsys):
    said = ["hold this lane", "take the lane on your left", "hold this lane", "go one lane over, to the left"]
    a = _eval_dir(tmp_path, "a", [1, 0, 1, 1], commands=said)
    b = _eval_dir(tmp_path, "b", [1, 1, 0, 1], commands=said)
    assert pc.main(["--a", a, "--b", b]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["goal_success_by_command"] == {
        "a": {"keep_lane: hold this lane": "2/2", "lane_left: go one lane over, to the left": "1/1",
              "lane_left: take the lane on your left": "0/1"},
        "b": {"keep_lane: hold this lane": "1/2", "lane_left: go one lane over, to the left": "1/1",
              "lane_left: take the lane on your left": "1/1"}}
    assert "    0/1 |     1/1  lane_left: take the lane on your left" in out
    # files from before the column: no per-phrasing table, the rest as before
    old = _eval_dir(tmp_path, "old", [1, 1, 1, 1])
    assert pc.main(["--a", a, "--b", old]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["goal_success_by_command"] is None
