"""The ``vla`` command line: outputs, determinism, one-line errors that write nothing, bench."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.interface import EGO
from sim.storage import read_episodes
from app import cli

REQUIRED_KEYS = {
    "collision_rate", "progress_mean", "goal_success_rate", "jerk_long_p95", "comfort_fraction",
    "ttc_min_p5", "driving_score", "goal_success_by_type", "episodes", "policy", "scenario",
    "density", "seed",
}
LIGHT = ["--scenario", "highway", "--density", "light", "--seed", "0"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_writes_outputs_deterministically(tmp_path, capsys):
    texts = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, stdout, _ = run(capsys, "eval", "--policy", "expert", *LIGHT, "--episodes", "2",
                              "--no-gif", "--out", str(out))
        assert code == 0
        assert "collision_rate" in stdout and "driving_score" in stdout
        metrics = json.loads((out / "metrics.json").read_text())
        assert REQUIRED_KEYS <= set(metrics)
        assert metrics["episodes"] == 2 and metrics["policy"] == "expert"
        assert (metrics["scenario"], metrics["density"], metrics["seed"]) == ("highway", "light", 0)
        lines = (out / "episodes.csv").read_text().splitlines()
        assert lines[0].startswith("seed,outcome,goal_type,collided,progress")
        assert [row.split(",")[0] for row in lines[1:]] == ["0", "1"]
        # what the passenger said is in the file: a held-out phrasing (the default split) of the goal
        from tokenizers_mm.corpus import PHRASINGS

        heard = {(p.label, p.text, p.lang) for p in PHRASINGS if p.heldout}
        for row in csv.DictReader(io.StringIO((out / "episodes.csv").read_text())):
            assert (row["goal_type"], row["command"], row["command_lang"]) in heard, row
        assert (out / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
        assert not (out / "cameras.gif").exists()
        assert not list(out.glob(".*tmp*"))
        texts.append((out / "metrics.json").read_text() + (out / "episodes.csv").read_text())
    assert texts[0] == texts[1]


def test_eval_gif_and_record(tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "run"
    code, _, _ = run(capsys, "eval", "--policy", "constant", *LIGHT, "--episodes", "1",
                     "--width", "32", "--height", "24", "--record", "--out", str(out))
    assert code == 0
    frames = iio.imread(out / "cameras.gif", index=None)
    assert 1 <= len(frames) <= 150 and frames.shape[-1] in (3, 4)
    (ep,) = list(read_episodes(out))
    assert ep.policy == "constant" and ep.frames is None
    assert np.isfinite(ep.expert_actions).all()  # --record labels every state


def test_collect_records_frames_and_expert_labels(tmp_path, capsys):
    out = tmp_path / "data"
    code, stdout, _ = run(capsys, "collect", *LIGHT, "--episodes", "1", "--width", "32",
                          "--height", "24", "--out", str(out))
    assert code == 0 and "recorded 1 episodes" in stdout
    (ep,) = list(read_episodes(out))
    assert ep.frames is not None and ep.frames.shape[1:] == (6, 24, 32, 3)
    assert ep.frames.shape[0] == ep.num_steps and ep.frames.any()
    assert np.isfinite(ep.expert_actions).all() and ep.seed == 0
    assert REQUIRED_KEYS <= set(json.loads((out / "metrics.json").read_text()))


BAD_INPUTS = [
    (["--scenario", "nowhere"], "unknown scenario 'nowhere'"),
    (["--density", "jammed"], "unknown density 'jammed'"),
    (["--episodes", "0"], "--episodes must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--policy", "nobody"], "unknown policy 'nobody'"),
    (["--width", "4"], "--width must be >= 8"),
]


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [(c, a, n) for c in ("eval", "collect") for a, n in BAD_INPUTS]
    + [("eval", ["--gif-episode", "3"], "--gif-episode must be in [0, 1)")],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, capsys, command, args, needle):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, command, "--episodes", "1", *args, "--out", str(out))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("vla: error: ") and needle in err
    assert not out.exists()


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    code, _, err = run(capsys, "eval", "--episodes", "1", "--out", str(target))
    assert code == 2 and f"--out {target} is a file, not a directory" in err
    assert err.count("\n") == 1 and target.read_text() == "keep me"
    code, _, err = run(capsys, "collect", "--episodes", "1", "--out", str(target / "sub"))
    assert code == 2 and "is a file, not a directory" in err


def test_a_path_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(b"")
    code, _, err = run(capsys, "eval", "--policy", str(ckpt), "--out", str(tmp_path / "o"))
    assert code == 2 and "is not a policy checkpoint directory" in err
    assert not (tmp_path / "o").exists()


def test_keyboard_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    from vla import evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "run_episode", interrupted)
    out = tmp_path / "o"
    code, _, err = run(capsys, "eval", *LIGHT, "--episodes", "1", "--no-gif", "--out", str(out))
    assert code == 130 and "vla: interrupted" in err and "Traceback" not in err
    assert not (out / "metrics.json").exists()


def test_bench_sim_last_line_is_json(capsys):
    code, stdout, _ = run(capsys, "bench", "sim", "--density", "light", "--steps", "20")
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    for key in ("env_steps_per_s", "env_steps_per_s_cameras", "expert_steps_per_s", "camera_frames_per_s",
                "env_steps_per_s_highway_env_road", "fast_road_speedup"):
        assert result[key] > 0
    assert "VLA_FAST_ROAD" not in os.environ  # the bench puts the switch back
    assert (result["scenario"], result["density"], result["steps"]) == ("highway", "light", 20)


def test_bench_policy_last_line_is_json(capsys):
    code, stdout, _ = run(capsys, "bench", "policy", "--size", "tiny", "--density", "light", "--steps", "5")
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    for key in ("chunk_latency_ms", "closed_loop_steps_per_s", "sim_steps_per_s", "train_samples_per_s",
                "closed_loop_ratio", "policy_ms_per_step", "closed_loop_env_ms_per_step"):
        assert result[key] > 0
    per_step = result["policy_ms_per_step"] + result["closed_loop_env_ms_per_step"]
    assert abs(1000 / result["closed_loop_steps_per_s"] - per_step) < 1e-6 * per_step + 1e-9  # the split adds up
    assert result["action"] == "plan" and result["replan_every"] == 5  # the default policy of vla dagger
    code, stdout, _ = run(capsys, "bench", "policy", "--size", "tiny", "--density", "light", "--steps", "5",
                          "--no-cameras", "--action", "control", "--replan-every", "2")
    last = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and last["action"] == "control" and last["replan_every"] == 2
    code, _, err = run(capsys, "bench", "policy", "--size", "huge")
    assert code == 2 and "unknown --size 'huge'" in err


def test_bench_policy_of_a_saved_policy(capsys, tmp_path):
    """--policy DIR benches a saved policy with its own settings; the size flags cannot be mixed
    in, and a directory without a policy is a one-line error."""
    from vla.config import PolicyConfig, SIZES
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame", commit_margin=1.5)
    VLAPolicy(config, default_action_tokenizer(config.n_bins, "plan")).save(tmp_path / "p")
    code, stdout, _ = run(capsys, "bench", "policy", "--policy", str(tmp_path / "p"), "--density", "light",
                          "--steps", "5")
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["policy"] == str(tmp_path / "p") and result["size"] == "tiny" and result["cameras"] == 0
    assert result["closed_loop_ratio"] > 0
    code, _, err = run(capsys, "bench", "policy", "--policy", str(tmp_path / "p"), "--size", "small")
    assert code == 2 and "--size cannot be given with --policy" in err
    code, _, err = run(capsys, "bench", "policy", "--policy", str(tmp_path / "nothing"))
    assert code == 2 and "nothing" in err and len(err.strip().splitlines()) == 1


def test_help_and_version(capsys):
    code, stdout, _ = run(capsys)
    assert code == 0 and "collect" in stdout and "eval" in stdout and "bench" in stdout
    code, stdout, _ = run(capsys, "--version")
    assert code == 0 and stdout.startswith("vla ")
    code, _, err = run(capsys, "eval", "--episodes", "two", "--out", "x")
    assert code == 2 and "invalid int value" in err


def test_console_entry_point_subprocess(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "eval", "--scenario", "nowhere", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vla: error: unknown scenario 'nowhere'; choose one of ['highway', 'intersection']"
    ]
    assert proc.stdout == "" and not out.exists()


def test_collect_records_expert_plans_for_a_policy_and_rejects_a_bad_horizon(tmp_path, capsys):
    out = tmp_path / "data"
    code, _, _ = run(capsys, "collect", "--policy", "constant", "--density", "light", "--episodes", "1",
                     "--cameras", "none", "--plan-horizon", "3", "--out", str(out))
    assert code == 0
    (ep,) = list(read_episodes(out, load_frames=False))
    assert ep.expert_plans.shape == (ep.num_steps, 3, 2)
    np.testing.assert_array_equal(ep.expert_plans[:, 0], ep.expert_actions)
    code, _, err = run(capsys, "collect", "--policy", "constant", "--episodes", "1", "--cameras", "none",
                       "--plan-horizon", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--plan-horizon" in err
    code, _, err = run(capsys, "collect", "--policy", "expert", "--episodes", "1", "--cameras", "none",
                       "--goal-labels", "--goal-futures", "--plan-horizon", "8", "--out", str(tmp_path / "y"))
    assert code == 2 and "--goal-futures needs" in err and not (tmp_path / "y").exists()


def test_collect_over_two_workers_records_the_same_dataset(tmp_path, capsys):
    """vla collect --workers: episodes depend only on their seeds (DART bursts and continuation
    labels included), so two processes record what one does, in the same order."""
    common = ["collect", *LIGHT, "--episodes", "2", "--cameras", "none", "--dart", "--goal-labels", "--goal-futures",
              "--plan-horizon", "20", "--label-every", "25"]
    assert run(capsys, *common, "--out", str(tmp_path / "one"))[0] == 0
    assert run(capsys, *common, "--workers", "2", "--out", str(tmp_path / "two"))[0] == 0
    one = list(read_episodes(tmp_path / "one", load_frames=False))
    two = list(read_episodes(tmp_path / "two", load_frames=False))
    assert [e.seed for e in one] == [e.seed for e in two] == [0, 1]
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.goal_futures, b.goal_futures)
    assert not np.allclose(one[0].actions, one[0].expert_actions)  # DART bursts were executed
    code, _, err = run(capsys, *common, "--workers", "0", "--out", str(tmp_path / "bad"))
    assert code == 2 and "--workers must be >= 1" in err and not (tmp_path / "bad").exists()
    for bad, says in ((["--dart-speed", "1.5"], "--dart-speed must be"), (["--dart-speed", "nan"], "--dart-speed must be")):
        code, _, err = run(capsys, *common, *bad, "--out", str(tmp_path / "bad"))
        assert code == 2 and says in err and not (tmp_path / "bad").exists()
    no_dart = [a for a in common if a != "--dart"]
    code, _, err = run(capsys, *no_dart, "--dart-speed", "0.01", "--out", str(tmp_path / "bad"))
    assert code == 2 and "--dart-speed needs --dart" in err and not (tmp_path / "bad").exists()


def test_dagger_refuses_a_bad_rollout_start_speed_in_one_line_before_writing(tmp_path, capsys):
    """vla dagger --rollout-start-speed: a range out of order, NaN, or a session without the
    highway is refused with the option's name, and nothing is written."""
    for bad, says in ((["--rollout-start-speed", "30", "10"], "need 5.0 <= lo <= hi"),
                      (["--rollout-start-speed", "10", "nan"], "need 5.0 <= lo <= hi"),
                      (["--scenario", "intersection", "--rollout-start-speed", "10", "30"], "highway option")):
        code, _, err = run(capsys, "dagger", *bad, "--out", str(tmp_path / "bad"))
        assert code == 2 and "--rollout-start-speed" in err and says in err, err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_collect_killed_with_sigkill_and_rerun_equals_an_uninterrupted_run(tmp_path):
    """kill -9 in the middle of vla collect, rerun the same command: the dataset holds each seed
    once, with the same episodes an uninterrupted run records, and metrics.json covers them all."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sim.storage import count_episodes, read_episodes

    def command(out):
        return [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", "collect",
                "--scenario", "highway", "--density", "light", "--episodes", "6", "--cameras", "none",
                "--seed", "40", "--out", str(out)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count_episodes(tmp_path / "cut") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= count_episodes(tmp_path / "cut") < 6
    subprocess.run(command(tmp_path / "cut"), env=env, check=True, capture_output=True)
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True)
    cut = sorted(read_episodes(tmp_path / "cut", load_frames=False), key=lambda e: e.seed)
    whole = sorted(read_episodes(tmp_path / "whole", load_frames=False), key=lambda e: e.seed)
    assert [e.seed for e in cut] == [e.seed for e in whole] == list(range(40, 46))
    for a, b in zip(cut, whole):
        assert np.array_equal(a.ego, b.ego) and np.array_equal(a.expert_actions, b.expert_actions)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["episodes"] == 6


def test_eval_with_the_user_s_own_phrasings(tmp_path, capsys):
    """vla eval --phrasings FILE.tsv: each episode hears one of the file's phrasings of its goal
    (goals the file does not cover keep the corpus's held-out phrasings)."""
    from sim.backends import make_env
    from vla.speech_commands import rephraser

    tsv = tmp_path / "mine.tsv"
    tsv.write_text("goal\tlanguage\tphrasing\n"
                   "keep_lane\ten\tjust carry on in this lane mate\n"
                   "keep_lane\tzh\t就这样开\n\n")
    env = make_env("embedded", "highway", "light", rephrase=rephraser(str(tsv)))
    heard = set()
    for seed in range(8):
        env.reset(seed=seed)
        if env.goal.label == "keep_lane":
            heard.add(env.goal.command)
        else:
            assert env.goal.command not in ("just carry on in this lane mate", "就这样开")
    assert heard and heard <= {"just carry on in this lane mate", "就这样开"}
    code, out, _ = run(capsys, "eval", *LIGHT, "--episodes", "3", "--no-gif", "--phrasings", str(tsv),
                       "--out", str(tmp_path / "o"))
    assert code == 0 and (tmp_path / "o" / "metrics.json").exists()
    # which of the user's words were followed: one line per phrasing heard, counts from episodes.csv
    rows = list(csv.DictReader(io.StringIO((tmp_path / "o" / "episodes.csv").read_text())))
    table = out[out.index("goal success by phrasing:"):].splitlines()
    for r in rows:
        expected = sum(float(x["goal_success"]) for x in rows if x["command"] == r["command"])
        n = sum(x["command"] == r["command"] for x in rows)
        assert f"{int(expected)}/{n}  {r['goal_type']}: {r['command']}" in "\n".join(table), (r, table)


def test_policy_ab_alternates_two_checkouts_and_pairs_their_runs(capsys, tmp_path):
    """benchmarks.policy_ab runs `vla bench policy` from each checkout in turn and prints the
    paired ratio differences; a directory that is not a checkout is refused in one line."""
    from pathlib import Path

    from benchmarks import policy_ab

    root = Path(__file__).resolve().parents[1]
    code = policy_ab.main(["--base", str(root), "--new", str(root), "--runs", "1",
                           "--size", "tiny", "--density", "light", "--steps", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run 1 base:" in out and "run 1 new:" in out and "new - base by run: " in out
    with pytest.raises(SystemExit):
        policy_ab.main(["--base", str(tmp_path)])
    assert "is not a checkout of this project" in capsys.readouterr().err
    rows = {"base": [dict.fromkeys(policy_ab.FIELDS, 0.5)], "new": [dict.fromkeys(policy_ab.FIELDS, 0.75)]}
    assert policy_ab.summarize(rows)[-1] == "closed_loop_ratio, new - base by run: +0.250 (mean +0.250)"


def test_collect_start_speed_records_episodes_from_the_drawn_speeds_and_refuses_bad_ranges(tmp_path, capsys):
    """vla collect --start-speed LO HI: every recorded episode starts within [LO, HI]; a bad
    range, another scenario or a recipe is refused in one line before anything is written."""
    common = ["collect", *LIGHT, "--episodes", "2", "--cameras", "none", "--policy", "expert"]
    assert run(capsys, *common, "--start-speed", "12", "14", "--out", str(tmp_path / "ok"))[0] == 0
    starts = [float(e.ego[0, EGO["speed"]]) for e in read_episodes(tmp_path / "ok", load_frames=False)]
    assert len(starts) == 2 and all(12.0 <= v <= 14.0 for v in starts)
    for bad, says in ((["--start-speed", "30", "20"], "--start-speed"), (["--start-speed", "12", "nan"], "--start-speed"),
                      (["--start-speed", "12", "32", "--scenario", "intersection"], "highway option")):
        code, _, err = run(capsys, *common, *bad, "--out", str(tmp_path / "bad"))
        assert code == 2 and says in err and not (tmp_path / "bad").exists()
