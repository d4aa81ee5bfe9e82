"""benchmarks.paired_compare: B against A on the same episodes, from vla eval directories."""

from __future__ import annotations

import csv
import json

from benchmarks import paired_compare as pc


def _eval_dir(root, name, goal_success, seeds=(10, 11, 12, 13), commands=None, talk=None):
    """``talk``: per episode (heard_at_s, act_latency_s[, act_latency_cf_s]), the columns of ``vla eval
    --talk drive``."""
    d = root / name
    d.mkdir()
    with open(d / "episodes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "goal_type", *pc.METRICS, *(["command"] if commands else []),
                                          *(["heard_at_s", "act_latency_s"] if talk else []),
                                          *(["act_latency_cf_s"] if talk and len(talk[0]) > 2 else [])])
        w.writeheader()
        for i, (s, g) in enumerate(zip(seeds, goal_success)):
            row = {"seed": s, "goal_type": "lane_left" if s % 2 else "keep_lane", "goal_success": g,
                   "collided": 0, "off_road": 0, "progress": 1.0, "jerk_long_p95": 1.0, "jerk_lat_p95": 2.0,
                   "comfort_fraction": 1.0}
            if commands:
                row["command"] = commands[i]
            if talk:
                row["heard_at_s"], row["act_latency_s"] = talk[i][:2]
                if len(talk[i]) > 2:
                    row["act_latency_cf_s"] = talk[i][2]
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


def test_commands_during_the_drive_pair_only_episodes_where_both_arms_heard_one(tmp_path, capsys):
    # episode 13: arm A never heard a command during the drive (0 s), so it is left out of the talk pairs
    a = _eval_dir(tmp_path, "a", [1, 0, 1, 1], talk=[(4.0, 0.5), (3.5, 1.8), (5.0, "inf"), (0.0, "nan")])
    b = _eval_dir(tmp_path, "b", [1, 1, 1, 0], talk=[(4.0, 0.3), (3.5, 0.6), (5.0, 1.0), (4.2, 0.4)])
    assert pc.main(["--a", a, "--b", b]) == 0
    out = capsys.readouterr().out
    talk = json.loads(out.strip().splitlines()[-1])["talk"]
    assert talk["pairs"] == 3
    assert talk["within_1s"]["a"] == 1 / 3 and talk["within_1s"]["b"] == 1.0  # 1.0 s counts as within
    assert talk["within_1s"]["b_minus_a"]["mean"] == 2 / 3
    assert talk["goal"]["a"] == 2 / 3 and talk["goal"]["b"] == 1.0
    assert "acted within 1 s" in out
    assert talk["cf_pairs"] == 0 and talk["within_1s_cf"] is None  # no branch without the words: no such pairs
    # with the counterfactual column: pairs where both arms drove the branch (episode 11: A has none)
    a = _eval_dir(tmp_path, "acf", [1, 0, 1, 1], talk=[(4.0, 0.5, 0.4), (3.5, 1.8, "nan"), (5.0, "inf", 2.5),
                                                        (4.1, 0.3, 0.2)])
    b = _eval_dir(tmp_path, "bcf", [1, 1, 1, 0], talk=[(4.0, 0.3, 0.3), (3.5, 0.6, 0.5), (5.0, 1.0, 0.9),
                                                        (4.2, 0.4, 1.5)])
    assert pc.main(["--a", a, "--b", b]) == 0
    out = capsys.readouterr().out
    talk = json.loads(out.strip().splitlines()[-1])["talk"]
    assert talk["pairs"] == 4 and talk["cf_pairs"] == 3
    assert talk["within_1s_cf"]["a"] == 2 / 3 and talk["within_1s_cf"]["b"] == 2 / 3
    assert "against the car without the words (3 pairs)" in out
    plain = _eval_dir(tmp_path, "plain", [1, 1, 1, 1])  # no talk columns: no talk section
    assert pc.main(["--a", plain, "--b", plain]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["talk"] is None
