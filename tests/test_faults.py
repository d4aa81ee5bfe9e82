"""Simulator faults (issue "Reliability", item 3): a step that raises, a step that hangs past
the watchdog and a non-finite state each end THAT episode as ``sim_error`` with its reason, and
the evaluation goes on with the next one. Injected through a test backend that wraps the
embedded simulator (the backend registry is the fault-injection hook)."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest

from sim import backends, rollout
from sim.episode import Episode
from sim.interface import EGO
from sim.rollout import ConstantPolicy, run_episode
from sim.storage import EpisodeWriter, read_episodes

FAULT_STEP = 5
FAULTS = {101: "raise", 102: "hang", 103: "nan"}


class FaultyEnv:
    """The embedded simulator, except at step ``FAULT_STEP`` of the seeds in ``FAULTS``."""

    def __init__(self, **kwargs) -> None:
        self._env = backends.make_env("embedded", **kwargs)
        self._mode, self._t, self._poisoned = None, 0, False

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, *, seed=None, options=None):
        self._mode, self._t, self._poisoned = FAULTS.get(seed), 0, False
        return self._env.reset(seed=seed, options=options)

    def step(self, action):
        self._t += 1
        if self._t == FAULT_STEP and self._mode == "raise":
            raise RuntimeError("lost connection to the server")
        if self._t == FAULT_STEP and self._mode == "hang":
            time.sleep(30.0)
        if self._t == FAULT_STEP and self._mode == "nan":
            self._poisoned = True
        return self._env.step(action)

    def ego_state(self):
        ego = self._env.ego_state()
        if self._poisoned:
            ego = ego.copy()
            ego[EGO["speed"]] = math.nan
        return ego


@pytest.fixture
def faulty(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "faulty", lambda **kw: FaultyEnv(**kw))
    monkeypatch.setattr(rollout, "STEP_TIMEOUT", 0.5)
    return "faulty"


def test_each_fault_ends_its_episode_and_the_next_one_runs(faulty, tmp_path):
    from vla.evaluation import evaluate

    t0 = time.monotonic()
    result = evaluate(ConstantPolicy(), "highway", "light", [101, 102, 103, 104], backend=faulty, out=tmp_path)
    assert time.monotonic() - t0 < 25.0  # the hang was cut by the watchdog, not waited out
    rows = {int(r["seed"]): r for r in result.rows}
    assert rows[101]["outcome"] == "sim_error" and "RuntimeError in step: lost connection" in rows[101]["error"]
    assert rows[102]["outcome"] == "sim_error" and "watchdog" in rows[102]["error"]
    assert rows[103]["outcome"] == "sim_error" and "non-finite state" in rows[103]["error"]
    assert rows[104]["outcome"] != "sim_error" and rows[104]["error"] == ""
    for seed in (101, 102, 103):  # the steps before the fault are kept
        assert rows[seed]["num_steps"] == FAULT_STEP - 1
    assert result.metrics["sim_error_rate"] == pytest.approx(0.75)
    with open(tmp_path / "episodes.csv", newline="") as f:
        errors = {r["seed"]: r["error"] for r in csv.DictReader(f)}
    assert "lost connection" in errors["101"] and errors["104"] == ""


def test_a_faulted_episode_is_stored_and_read_back(faulty, tmp_path):
    env = backends.make_env(faulty, scenario="highway", density="light")
    ep = run_episode(env, ConstantPolicy(), 101, query_expert=True, record_frames=False)
    assert ep.outcome == "sim_error" and ep.num_steps == FAULT_STEP - 1
    with EpisodeWriter(tmp_path) as w:
        w.append(ep)
    back = next(iter(read_episodes(tmp_path, load_frames=False)))
    assert back.outcome == "sim_error" and back.error == ep.error
    with pytest.raises(ValueError, match="does not match outcome"):
        Episode(**{**ep.__dict__, "error": ""})


def test_a_non_finite_action_is_the_policy_s_bug_and_raises(faulty):
    class Broken(ConstantPolicy):
        def select_action(self, obs):
            return np.array([math.nan, 0.0])

    env = backends.make_env(faulty, scenario="highway", density="light")
    with pytest.raises(ValueError, match="non-finite action"):
        run_episode(env, Broken(), 104, query_expert=False, record_frames=False)


def test_the_watchdog_leaves_an_outer_alarm_alone(monkeypatch):
    import signal

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with rollout._watchdog(5.0):
            pass
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.3  # still pending after the step
        time.sleep(0.5)
        assert fired == [1]
        signal.setitimer(signal.ITIMER_REAL, 2.0)  # a later outer alarm: the watchdog runs, then gives it back
        with rollout._watchdog(0.5):
            pass
        assert 1.5 < signal.getitimer(signal.ITIMER_REAL)[0] <= 2.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_rollout_worker_that_dies_is_replaced_and_its_episode_rerun(tmp_path, monkeypatch, capsys):
    from vla import parallel
    from vla.parallel import RolloutPool, RolloutSpec

    spec = RolloutSpec("highway", "light", "constant", cameras=False, query_expert=False, record_frames=False)
    alone = RolloutPool(1).run(spec, [0, 1, 2, 3])
    monkeypatch.setenv(parallel.FAULT_ENV, f"2:{tmp_path / 'died'}")
    with RolloutPool(2) as pool:
        episodes = pool.run(spec, [0, 1, 2, 3])
    assert (tmp_path / "died").exists()  # a worker did die on seed 2
    assert "a rollout worker died" in capsys.readouterr().err
    assert [e.seed for e in episodes] == [0, 1, 2, 3]
    for a, b in zip(alone, episodes):
        assert np.array_equal(a.ego, b.ego) and a.outcome == b.outcome
    monkeypatch.setenv(parallel.FAULT_ENV, f"1:{tmp_path / 'died_again'}")
    monkeypatch.setattr(parallel, "MAX_POOL_RESTARTS", 0)
    with RolloutPool(2) as pool, pytest.raises(RuntimeError, match="rollout workers died 1 times"):
        pool.run(spec, [0, 1, 2])
