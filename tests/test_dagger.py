"""DAgger sessions end to end on CPU (tiny policy), and resume after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from methods import dagger
from methods.dagger import DaggerConfig, DaggerSession
from sim.storage import read_episodes
from vla.config import PolicyConfig

TINY_POLICY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=2, cameras=False)


def tiny_config(**overrides) -> DaggerConfig:
    base = dict(scenario="highway", density="light", iterations=1, expert_episodes=2, rollouts=2,
                eval_episodes=1, train_steps=8, batch_size=8, workers=1, policy=TINY_POLICY)
    return DaggerConfig(**{**base, **overrides})


def test_no_rollouts_is_the_equal_compute_bc_control(tmp_path):
    """rollouts=0: each iteration retrains on the expert episodes alone for train_steps more steps
    (warm-started), so DAgger can be compared at equal compute; nothing is rolled out."""
    lines = DaggerSession(tiny_config(rollouts=0), tmp_path / "run", log=lambda s: None).run_all()
    assert [line["iteration"] for line in lines] == [0, 1]
    assert lines[1]["dataset_episodes"] == 2 and lines[1]["dataset_steps"] == lines[0]["dataset_steps"]
    assert not (tmp_path / "run" / "data" / "iter_001" / "episodes").exists()
    before = load_file(str(tmp_path / "run" / "iter_000" / "policy" / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "iter_001" / "policy" / "model.safetensors"))
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)  # it trained
    with pytest.raises(ValueError, match="rollouts must be >= 0"):
        tiny_config(rollouts=-1)


def test_the_command_line_takes_no_rollouts(tmp_path):
    """vla dagger --rollouts 0 (the control the docs give) passes the flag checks; -1 does not."""
    from app.cli import build_parser
    from vla.errors import VLAError
    from vla.options import check_flags

    argv = ["dagger", "--out", str(tmp_path / "run"), "--rollouts", "0"]
    check_flags(build_parser(argv).parse_args(argv))
    argv[-1] = "-1"
    with pytest.raises(VLAError, match="--rollouts must be an integer >= 0"):
        check_flags(build_parser(argv).parse_args(argv))


def test_session_end_to_end(tmp_path):
    lines = DaggerSession(tiny_config(), tmp_path / "run", log=lambda s: None).run_all()
    assert [line["iteration"] for line in lines] == [0, 1]
    assert lines[0]["beta"] == 1.0 and lines[1]["beta"] == 0.5
    assert lines[1]["dataset_episodes"] == 4 and lines[1]["dataset_steps"] > lines[0]["dataset_steps"]
    on_disk = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    assert on_disk == json.loads(json.dumps(lines))
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("collision_rate", "progress_mean", "goal_success_rate", "jerk_long_p95", "comfort_fraction",
                "driving_score", "episodes"):
        assert key in final
    # DAgger data: the policy drove (beta < 1) and the expert labelled every visited state.
    rollouts = list(read_episodes(tmp_path / "run" / "data" / "iter_001", load_frames=False))
    assert all(ep.policy.endswith("iter_000/policy") for ep in rollouts)
    assert all(np.all(np.isfinite(ep.expert_actions)) for ep in rollouts)
    assert any(not np.allclose(ep.actions, ep.expert_actions) for ep in rollouts)


def test_a_session_can_start_from_a_trained_policy_and_recorded_expert_data(tmp_path):
    """--start-from / --expert-data: iteration 0 is the user's checkpoint and the user's
    episodes (copied byte for byte), evaluated like a BC iteration 0; DAgger rolls that
    checkpoint out and warm-starts from it."""
    first = DaggerSession(tiny_config(iterations=0), tmp_path / "bc", log=lambda s: None).run_all()
    checkpoint, data = tmp_path / "bc" / "iter_000" / "policy", tmp_path / "bc" / "data" / "iter_000"
    cfg = tiny_config(start_policy=str(checkpoint), expert_data=(str(data),))
    lines = DaggerSession(cfg, tmp_path / "run", log=lambda s: None).run_all()
    assert lines[0]["metrics"] == first[0]["metrics"] and lines[0]["train_loss"] is None
    assert lines[0]["dataset_steps"] == first[0]["dataset_steps"] and lines[1]["dataset_episodes"] == 4
    copied = sorted((tmp_path / "run" / "data" / "iter_000" / "episodes").glob("ep_*.h5"))
    assert [p.read_bytes() for p in copied] == [p.read_bytes() for p in sorted((data / "episodes").glob("ep_*.h5"))]
    wa = load_file(str(checkpoint / "model.safetensors"))
    wb = load_file(str(tmp_path / "run" / "iter_000" / "policy" / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    rollouts = list(read_episodes(tmp_path / "run" / "data" / "iter_001", load_frames=False))
    assert all(ep.policy.endswith("run/iter_000/policy") for ep in rollouts)
    assert DaggerSession(cfg, tmp_path / "run", log=lambda s: None).run_all() == lines  # resumes as done
    with pytest.raises(ValueError, match="holds 2 episodes"):
        DaggerSession(tiny_config(expert_data=(str(data),), expert_episodes=3), tmp_path / "few", log=lambda s: None)
    assert not (tmp_path / "few").exists()
    from app import cli

    assert cli.main(["dagger", "--start-from", str(checkpoint), "--expert-data", str(data), "--expert-episodes", "2",
                     "--density", "light", "--iterations", "1", "--rollouts", "1", "--train-steps", "2",
                     "--eval-episodes", "1", "--workers", "1", "--no-goal-relabel", "--out", str(tmp_path / "cli")]) == 0
    session = json.loads((tmp_path / "cli" / "session.json").read_text())
    assert session["policy"] == json.loads(json.dumps(TINY_POLICY.to_dict())) and session["start_policy"] == str(checkpoint)
    other = tiny_config(start_policy=str(checkpoint), policy=PolicyConfig(**{**TINY_POLICY.to_dict(), "d_model": 16}))
    with pytest.raises(ValueError, match="differs from the config saved"):
        DaggerSession(other, tmp_path / "other", log=lambda s: None).run_all()


def test_val_data_measures_each_iteration_open_loop_and_changes_no_training(tmp_path, capsys):
    """--val-data: every iteration's line carries its open-loop loss on held-out expert episodes
    and on its own training data (the start policy's too), iter_k/train/eval.jsonl has the
    checkpoints' figures, and the weights are those of the same session without it."""
    from app import cli

    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "1", "--seed", "77",
                     "--cameras", "none", "--out", str(tmp_path / "val")]) == 0
    plain = DaggerSession(tiny_config(), tmp_path / "plain", log=lambda s: None).run_all()
    measured = DaggerSession(tiny_config(val_data=(str(tmp_path / "val"),), val_samples=32), tmp_path / "measured",
                             log=lambda s: None).run_all()
    assert [x["train_loss"] for x in plain] == [x["train_loss"] for x in measured]
    for k in (0, 1):
        wa = load_file(str(tmp_path / "plain" / f"iter_00{k}" / "policy" / "model.safetensors"))
        wb = load_file(str(tmp_path / "measured" / f"iter_00{k}" / "policy" / "model.safetensors"))
        assert all(np.array_equal(wa[key].numpy(), wb[key].numpy()) for key in wa)
        loop = measured[k]["open_loop"]
        assert np.isfinite(loop["val_loss"]) and np.isfinite(loop["train_loss"]) and "open_loop" not in plain[k]
        rows = [json.loads(x) for x in (tmp_path / "measured" / f"iter_00{k}" / "train" / "eval.jsonl").read_text().splitlines()]
        assert rows and rows[-1]["val_loss"] == loop["val_loss"]
    # a finished session resumes with or without it, and the command line prints the figures
    assert DaggerSession(tiny_config(), tmp_path / "measured", log=lambda s: None).run_all() == measured
    capsys.readouterr()
    assert cli.main(["dagger", "--density", "light", "--iterations", "0", "--expert-episodes", "1",
                     "--train-steps", "2", "--eval-episodes", "1", "--workers", "1", "--size", "tiny", "--no-cameras",
                     "--no-goal-relabel", "--val-data", str(tmp_path / "val"), "--val-samples", "16",
                     "--out", str(tmp_path / "cli")]) == 0
    table = capsys.readouterr().out
    assert "open_loop_train" in table and "open_loop_val" in table
    start = DaggerSession(tiny_config(start_policy=str(tmp_path / "plain" / "iter_001" / "policy"),
                                      expert_data=(str(tmp_path / "plain" / "data" / "iter_000"),),
                                      val_data=(str(tmp_path / "val"),), val_samples=32, iterations=0),
                          tmp_path / "start", log=lambda s: None).run_all()
    assert np.isfinite(start[0]["open_loop"]["val_loss"])


def test_bad_val_data_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="also expert data"):
        tiny_config(expert_data=(str(tmp_path / "d"),), val_data=(str(tmp_path / "d"),))
    with pytest.raises(ValueError, match="val_samples must be >= 1"):
        tiny_config(val_data=(str(tmp_path / "d"),), val_samples=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        DaggerSession(tiny_config(val_data=(str(tmp_path / "empty"),)), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()


class _Crash(RuntimeError):
    pass


def test_resume_after_interruption_gives_the_same_dataset_and_steps(tmp_path, monkeypatch):
    straight = DaggerSession(tiny_config(), tmp_path / "a", log=lambda s: None).run_all()

    real_writer = dagger.EpisodeWriter

    class CrashingWriter(real_writer):
        def append(self, ep):
            path = super().append(ep)
            if "iter_001" in str(self.root):
                raise _Crash("killed after the first rollout of iteration 1")
            return path

    monkeypatch.setattr(dagger, "EpisodeWriter", CrashingWriter)
    with pytest.raises(_Crash):
        DaggerSession(tiny_config(), tmp_path / "b", log=lambda s: None).run_all()
    assert len(list((tmp_path / "b" / "data" / "iter_001" / "episodes").glob("ep_*.h5"))) == 1
    monkeypatch.setattr(dagger, "EpisodeWriter", real_writer)
    resumed = DaggerSession(tiny_config(), tmp_path / "b", log=lambda s: None).run_all()

    for a, b in zip(straight, resumed):
        assert a["dataset_steps"] == b["dataset_steps"] and a["train_loss"] == b["train_loss"]
    for k in ("iter_000", "iter_001"):
        eps_a = list(read_episodes(tmp_path / "a" / "data" / k, load_frames=False))
        eps_b = list(read_episodes(tmp_path / "b" / "data" / k, load_frames=False))
        assert [e.seed for e in eps_a] == [e.seed for e in eps_b]
        for ea, eb in zip(eps_a, eps_b):
            np.testing.assert_array_equal(ea.actions, eb.actions)
            np.testing.assert_array_equal(ea.expert_actions, eb.expert_actions)
    wa = load_file(str(tmp_path / "a" / "iter_001" / "policy" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "iter_001" / "policy" / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_a_different_config_is_refused_on_resume(tmp_path):
    DaggerSession(tiny_config(), tmp_path / "run", log=lambda s: None)
    with pytest.raises(ValueError, match="different config"):
        DaggerSession(tiny_config(train_steps=9), tmp_path / "run", log=lambda s: None)


def test_training_threads_default_to_one_per_worker_and_may_change_on_resume(tmp_path, monkeypatch):
    """threads=0 trains on one torch thread per rollout worker (they wait while it trains), no
    more than the cores this process may use, shared among torchrun's local ranks; a session
    resumes with another thread count (it does not change what is trained, only how fast)."""
    monkeypatch.setattr(dagger.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert DaggerSession(tiny_config(workers=2), tmp_path / "a", log=lambda s: None).train_threads() == 2
    assert DaggerSession(tiny_config(workers=8), tmp_path / "b", log=lambda s: None).train_threads() == 3
    assert DaggerSession(tiny_config(workers=2, threads=5), tmp_path / "c", log=lambda s: None).train_threads() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert DaggerSession(tiny_config(workers=8), tmp_path / "d", log=lambda s: None).train_threads() == 1
    resumed = DaggerSession(tiny_config(workers=2, threads=1), tmp_path / "a", log=lambda s: None)
    assert resumed.train_threads() == 1
    with pytest.raises(ValueError, match="threads"):
        tiny_config(threads=-1)


def test_a_resumed_session_may_only_raise_its_iterations(tmp_path):
    """Two iterations, then the same session extended to three, equal a three-iteration session
    run straight; fewer iterations than the saved session is refused."""
    two = DaggerSession(tiny_config(iterations=1), tmp_path / "ext", log=lambda s: None).run_all()
    assert len(two) == 2
    with pytest.raises(ValueError, match="different config .iterations"):
        DaggerSession(tiny_config(iterations=0), tmp_path / "ext", log=lambda s: None)
    extended = DaggerSession(tiny_config(iterations=2), tmp_path / "ext", log=lambda s: None).run_all()
    straight = DaggerSession(tiny_config(iterations=2), tmp_path / "straight", log=lambda s: None).run_all()
    assert [x["dataset_steps"] for x in extended] == [x["dataset_steps"] for x in straight]
    assert [x["train_loss"] for x in extended] == [x["train_loss"] for x in straight]
    assert json.loads((tmp_path / "ext" / "session.json").read_text())["iterations"] == 2
    assert json.loads((tmp_path / "ext" / "metrics.json").read_text()) == \
        json.loads((tmp_path / "ext" / "iter_002" / "eval" / "metrics.json").read_text())


def test_bad_config():
    with pytest.raises(ValueError, match="unknown scenario"):
        tiny_config(scenario="moon")
    with pytest.raises(ValueError, match="beta0"):
        tiny_config(beta0=1.5)
    with pytest.raises(ValueError, match="eval_episodes"):
        tiny_config(eval_episodes=0)


def test_session_with_goal_relabelling_records_and_trains_on_goal_labels(tmp_path):
    session = DaggerSession(tiny_config(iterations=0, goal_relabel=True), tmp_path / "run", log=lambda s: None)
    lines = session.run_all()
    episodes = list(read_episodes(tmp_path / "run" / "data" / "iter_000", load_frames=False))
    assert all(ep.goal_labels is not None and ep.goal_labels.shape[1] == 5 for ep in episodes)
    # every state also teaches the (possible) other goals
    assert lines[0]["dataset_steps"] > 3 * sum(ep.num_steps for ep in episodes)


def test_one_session_drives_several_scenarios_and_densities(tmp_path):
    """scenario / density lists: episode i of an iteration is in setting i mod S; the
    evaluation reports each setting and all of them pooled; a resumed run continues the same
    setting-by-setting order."""
    cfg = tiny_config(scenario="highway,intersection", iterations=1, expert_episodes=3, rollouts=2,
                      eval_episodes=2)
    assert cfg.settings == [("highway", "light"), ("intersection", "light")]
    lines = DaggerSession(cfg, tmp_path / "run", log=lambda s: None).run_all()
    scenarios = [ep.scenario for ep in read_episodes(tmp_path / "run" / "data" / "iter_000", load_frames=False)]
    assert scenarios == ["highway", "highway", "intersection"]
    assert set(lines[1]["per_setting"]) == {"highway_light", "intersection_light"}
    assert all(m["episodes"] == 1 for m in lines[1]["per_setting"].values())
    assert lines[1]["metrics"]["episodes"] == 2
    assert (tmp_path / "run" / "iter_001" / "eval" / "intersection_light" / "metrics.json").exists()
    with pytest.raises(ValueError, match="twice"):
        tiny_config(scenario="highway,highway")
    with pytest.raises(ValueError, match="unknown scenario"):
        tiny_config(scenario="highway,parking")


def test_vla_dagger_killed_with_sigkill_and_rerun_equals_an_uninterrupted_session(tmp_path):
    """kill -9 during a DAgger session (after its first rollout of iteration 1), rerun the same
    command: the same datasets per iteration and the same final weights as a session never
    killed (episodes depend only on seeds; training resumes exactly)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.numpy import load_file

    from sim.storage import count_episodes

    def command(out):
        return [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", "dagger",
                "--scenario", "highway", "--density", "light", "--iterations", "2", "--expert-episodes", "2",
                "--rollouts", "2", "--train-steps", "20", "--eval-episodes", "1", "--no-cameras", "--size", "tiny",
                "--workers", "1", "--out", str(out)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while count_episodes(tmp_path / "cut" / "data" / "iter_001") < 1 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "metrics.json").exists()  # it was killed before the end
    subprocess.run(command(tmp_path / "cut"), env=env, check=True, capture_output=True)
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True)

    def lines(run):
        return [{k: v for k, v in json.loads(x).items() if k in ("iteration", "dataset_episodes", "dataset_steps")}
                for x in (run / "iterations.jsonl").read_text().splitlines()]

    assert lines(tmp_path / "cut") == lines(tmp_path / "whole") and len(lines(tmp_path / "whole")) == 3
    a = load_file(str(tmp_path / "cut" / "iter_002" / "policy" / "model.safetensors"))
    b = load_file(str(tmp_path / "whole" / "iter_002" / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_the_rollout_goal_bias_reaches_the_learners_highway_rollouts_only():
    """--rollout-goal-bias: iteration 0 (expert data) and the intersection keep the usual draw;
    the learner's highway rollouts get the bias; a bad one is refused with its option's name."""
    from methods.dagger import DaggerConfig, rollout_spec

    c = DaggerConfig(scenario="highway,intersection", rollout_goal_bias="slow_down=0.5")
    assert rollout_spec(c, 0, "expert", "highway", "medium").goal_bias == ()
    assert rollout_spec(c, 1, "pol", "highway", "medium").goal_bias == (("slow_down", 0.5),)
    assert rollout_spec(c, 1, "pol", "intersection", "medium").goal_bias == ()
    assert DaggerConfig.from_dict(c.to_dict()).rollout_goal_bias == "slow_down=0.5"
    with pytest.raises(ValueError, match="rollout-goal-bias"):
        DaggerConfig(rollout_goal_bias="slow_down=2")


def test_the_rollout_start_speed_reaches_the_learners_highway_rollouts_only():
    """--rollout-start-speed: iteration 0 (expert data) and the intersection keep their starts; the
    learner's highway rollouts start in the range (their first recorded speed is in it); the
    range survives session.json; bad ranges, intersection-only sessions and CARLA are refused."""
    from dataclasses import replace

    from methods.dagger import DaggerConfig, rollout_spec
    from sim.interface import EGO
    from vla.parallel import _run

    c = DaggerConfig(scenario="highway,intersection", rollout_start_speed=[12, 14])
    assert c.rollout_start_speed == (12.0, 14.0)
    assert rollout_spec(c, 0, "expert", "highway", "medium").start_speed is None
    assert rollout_spec(c, 1, "pol", "intersection", "medium").start_speed is None
    spec = rollout_spec(c, 1, "pol", "highway", "medium")
    assert spec.start_speed == (12.0, 14.0)
    assert DaggerConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert DaggerConfig.from_dict({k: v for k, v in DaggerConfig().to_dict().items()
                                   if k != "rollout_start_speed"}).rollout_start_speed is None  # older sessions
    spec = replace(spec, policy="expert", cameras=False, record_frames=False, plan_horizon=0,
                   goal_labels=False, goal_futures=False)
    speeds = [_run(spec, seed, {}).ego[0, EGO["speed"]] for seed in (1, 2)]
    assert all(12.0 <= v <= 14.0 for v in speeds), speeds
    for bad, match in (({"rollout_start_speed": (20, 10)}, "rollout-start-speed"),
                       ({"rollout_start_speed": (12, float("nan"))}, "rollout-start-speed"),
                       ({"rollout_start_speed": (12, 14), "scenario": "intersection"}, "highway option"),
                       ({"rollout_start_speed": (12, 14), "backend": "carla"}, "embedded simulator")):
        with pytest.raises(ValueError, match=match):
            DaggerConfig(**bad)


def _rollout(actions, expert):
    from types import SimpleNamespace

    actions, expert = np.asarray(actions, np.float32), np.asarray(expert, np.float32)
    return SimpleNamespace(actions=actions, expert_actions=expert, num_steps=len(actions))


def test_disagreement_repeats_favour_the_states_where_the_learner_went_its_own_way():
    """A state at x times the mean disagreement is listed 1 + round(w (x - 1)) times, clipped to
    [1, MAX_REPEATS]; acceleration and steering are each scaled by their own mean difference."""
    from methods.dagger import MAX_REPEATS, disagreement_repeats

    expert = np.zeros((4, 2))
    # accel off by 0 / 0 / 0 / 4 m/s^2 and steer off by 0 / 0.03 / 0 / 0.01 rad
    a = _rollout([[0, 0], [0, 0.03], [0, 0], [4, 0.01]], expert)
    b = _rollout([[0, 0], [0, 0]], np.zeros((2, 2)))
    r = disagreement_repeats([a, b], 1.0)
    # means: accel 4/6, steer 0.04/6; per step |da|/A + |ds|/S = 0, 4.5, 0, 7.5, 0, 0 (mean 2), so x = 2.25 and 3.75
    assert r[0].tolist() == [1, 2, 1, 4] and r[1].tolist() == [1, 1]
    assert disagreement_repeats([a, b], 3.0)[0].tolist() == [1, 5, 1, MAX_REPEATS]
    assert all((x == 1).all() for x in disagreement_repeats([a, b], 0.0))
    same = _rollout([[1, 0.1], [2, 0.2]], [[1, 0.1], [2, 0.2]])
    assert disagreement_repeats([same], 2.0)[0].tolist() == [1, 1]  # the learner did what the expert would
    with pytest.raises(ValueError, match="NaN expert actions"):
        disagreement_repeats([_rollout([[0, 0]], [[np.nan, 0]])], 1.0)
    with pytest.raises(ValueError, match="disagreement-weight"):
        DaggerConfig(disagreement_weight=-1)


def test_a_session_with_disagreement_weight_lists_its_rollout_states_by_disagreement(tmp_path):
    """--disagreement-weight: the aggregate lists each rollout state as disagreement_repeats says
    (the expert data once), and the session config keeps the weight."""
    import dataclasses

    from methods.dagger import disagreement_repeats
    from vla.policy import VLAPolicy

    session = DaggerSession(tiny_config(disagreement_weight=2.0), tmp_path / "run", log=lambda s: None)
    lines = session.run_all()
    policy = VLAPolicy.load(tmp_path / "run" / "iter_001" / "policy")
    weighted = session._dataset(policy, 1)
    assert len(weighted) == lines[1]["dataset_steps"]
    session.config = dataclasses.replace(session.config, disagreement_weight=0.0)
    plain = session._dataset(policy, 1)
    rollouts = list(read_episodes(tmp_path / "run" / "data" / "iter_001", load_frames=False))
    repeats = disagreement_repeats(rollouts, 2.0)
    extra = sum(int((r - 1).sum()) for r in repeats)  # every rollout state is labelled (label_every 1)
    assert extra > 0 and len(weighted) == len(plain) + extra
    saved = json.loads((tmp_path / "run" / "session.json").read_text())
    assert DaggerConfig.from_dict(saved).disagreement_weight == 2.0
