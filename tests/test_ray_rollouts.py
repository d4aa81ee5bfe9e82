"""Rollouts on Ray (``vla.ray_pool``, ``--ray``): actors on a local 2-CPU runtime give exactly
the local pool's episodes (the expert, a learned checkpoint, camera frames), a worker killed
mid-episode is replaced and its episode run again, ``vla collect --ray`` records the dataset
``vla collect`` does, and an address nobody answers is one line of error."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import signal
import socket
import time

import numpy as np
import pytest
import ray

from app import cli
from sim.storage import read_episodes
from vla import parallel
from vla.config import SIZES, PolicyConfig
from vla.parallel import RolloutPool, RolloutSpec, make_pool
from vla.policy import VLAPolicy, default_action_tokenizer
from vla.ray_pool import RayRolloutPool

LIGHT = ["--scenario", "highway", "--density", "light", "--seed", "0"]


@pytest.fixture(scope="module", autouse=True)
def runtime():
    """One local Ray runtime for the module (each pool below finds it and leaves it running)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        yield
        ray.shutdown()


def assert_same_episodes(want, got) -> None:
    assert [e.seed for e in got] == [e.seed for e in want]
    for a, b in zip(want, got):
        for field in dataclasses.fields(a):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                np.testing.assert_array_equal(x, y, err_msg=f"seed {a.seed}: {field.name}")
            else:
                assert x == y, f"seed {a.seed}: {field.name}"


def test_ray_actors_give_the_local_pools_episodes(tmp_path):
    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(tmp_path / "policy")
    specs = [RolloutSpec("highway", "light", "expert", cameras=True, camera_size=(16, 16)),
             RolloutSpec("highway", "light", str(tmp_path / "policy"), cameras=False, record_frames=False,
                         plan_horizon=4)]
    seeds = [3, 0, 1, 2]
    with make_pool(2, ray=True) as pool:
        assert isinstance(pool, RayRolloutPool)
        for spec in specs:
            seen = []
            got = pool.run(spec, seeds, on_episode=lambda ep: seen.append(ep.seed))
            assert seen == seeds
            assert_same_episodes(RolloutPool(1).run(spec, seeds), got)
            assert all(ep.ego.flags.writeable for ep in got)  # not views of Ray's object store
    assert got[0].frames is None and got[0].policy == str(tmp_path / "policy")
    assert ray.is_initialized()  # the pool did not start the runtime, so it left it running


def _kill_a_running_actor(ep) -> int:
    """SIGKILL a rollout actor that is running an episode right now (Ray titles it so)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(path, "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"ray::_RolloutActor.run"):
                os.kill(int(path.split("/")[2]), signal.SIGKILL)
                return int(path.split("/")[2])
        time.sleep(0.01)
    raise AssertionError("no rollout actor was running an episode")


def test_a_worker_that_dies_mid_episode_is_replaced_and_its_episode_rerun(tmp_path, monkeypatch, capsys):
    spec = RolloutSpec("highway", "medium", "expert", cameras=False, record_frames=False)
    seeds = [0, 1, 2, 3]
    want = RolloutPool(1).run(spec, seeds)
    killed = []
    with RayRolloutPool(2) as pool:
        got = pool.run(spec, seeds, on_episode=lambda ep: killed or killed.append(_kill_a_running_actor(ep)))
    assert_same_episodes(want, got)
    assert killed and "a Ray rollout worker died; restarting it" in capsys.readouterr().err
    # the fault injection of vla.parallel reaches the actors: the worker starting seed 2 exits
    monkeypatch.setenv(parallel.FAULT_ENV, f"2:{tmp_path / 'died'}")
    with RayRolloutPool(2) as pool:
        assert_same_episodes(want, pool.run(spec, seeds))
    # (the seed its actor ran before may be lost too: its reply can die with the actor)
    rerun = re.search(r"running seeds ([0-9, ]+) again", capsys.readouterr().err)
    assert (tmp_path / "died").exists() and rerun and "2" in rerun[1].split(", ")
    monkeypatch.setenv(parallel.FAULT_ENV, f"0:{tmp_path / 'died_again'}")
    monkeypatch.setattr(parallel, "MAX_POOL_RESTARTS", 0)
    with RayRolloutPool(2) as pool, pytest.raises(RuntimeError, match="died 1 times running seed 0; giving up"):
        pool.run(spec, seeds)


def test_collect_and_eval_on_ray_write_what_they_write_without(tmp_path, capsys):
    common = ["collect", *LIGHT, "--episodes", "3", "--cameras", "none", "--plan-horizon", "4"]
    assert cli.main([*common, "--out", str(tmp_path / "local")]) == 0
    assert cli.main([*common, "--ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    assert_same_episodes(list(read_episodes(tmp_path / "local", load_frames=False)),
                         list(read_episodes(tmp_path / "ray", load_frames=False)))
    common = ["eval", *LIGHT, "--episodes", "2", "--no-gif"]
    assert cli.main([*common, "--out", str(tmp_path / "eval_local")]) == 0
    assert cli.main([*common, "--ray", "--out", str(tmp_path / "eval_ray")]) == 0
    capsys.readouterr()
    for name in ("metrics.json", "episodes.csv"):
        assert (tmp_path / "eval_local" / name).read_text() == (tmp_path / "eval_ray" / name).read_text()


def test_an_unreachable_address_is_one_line_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.main(["collect", *LIGHT, "--episodes", "1", "--cameras", "none", "--ray", f"127.0.0.1:{port}",
                     "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x").exists()
    assert err.count("\n") == 1 and f"--ray 127.0.0.1:{port}: no Ray cluster reachable there" in err
    code = cli.main(["eval", *LIGHT, "--episodes", "1", "--ray", "--out", str(tmp_path / "e")])
    assert code == 2 and "pass --no-gif" in capsys.readouterr().err


def test_dagger_sessions_take_ray_and_resume_with_or_without_it(tmp_path):
    import argparse

    from app.commands.train import configure_dagger
    from methods.dagger import DaggerConfig, DaggerSession
    from methods.session_options import dagger_config

    p = argparse.ArgumentParser()
    configure_dagger(p)
    args = p.parse_args(["--out", str(tmp_path / "run"), "--ray", "--no-cameras"])
    config = dagger_config(args, args.scenario, args.density, args.seed)
    assert config.ray == "local" and isinstance(make_pool(config.workers, config.ray), RayRolloutPool)
    assert isinstance(make_pool(2), RolloutPool) and isinstance(make_pool(2, None), RolloutPool)
    assert isinstance(DaggerSession(config, tmp_path / "run", log=lambda s: None).pool, RayRolloutPool)
    again = DaggerSession(dataclasses.replace(config, ray=None), tmp_path / "run", log=lambda s: None)
    assert isinstance(again.pool, RolloutPool)  # where the episodes run does not change them
    with pytest.raises(ValueError, match="DaggerConfig.ray"):
        dataclasses.replace(config, ray=" ")
