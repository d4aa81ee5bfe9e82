"""The simulator protocol (``sim.interface.DrivingEnv``), checked the same way on every backend:
the embedded simulator and CARLA (through tests/carla_double.py, a kinematic double of the
server; maps and transforms are the real ``carla`` wheel's). A new backend adds itself to
``BACKEND_CASES``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sim.episode import OUTCOMES
from sim.interface import (ACTION_HIGH, ACTION_LOW, ACTOR_FIELDS, EGO, EGO_FIELDS, EVENT_FIELDS, MAX_ACTORS,
                           POSE_FIELDS, REWARD_FIELDS, DrivingEnv, Goal, Scene)
from sim.rollout import ExpertPolicy, run_episode

BACKEND_CASES = [("embedded", "highway"), ("embedded", "intersection"), ("carla", "highway"),
                 ("carla", "intersection")]


@pytest.fixture(params=BACKEND_CASES, ids=[f"{b}-{s}" for b, s in BACKEND_CASES])
def make(request, monkeypatch):
    """A factory of envs of one (backend, scenario) case, light traffic, optional camera rig."""
    backend, scenario = request.param
    if backend == "carla":
        pytest.importorskip("carla")
        sys.path.insert(0, str(Path(__file__).parent))
        import carla_double

        from sim import carla_backend

        client = carla_double.Client("straight" if scenario == "highway" else "junction")
        monkeypatch.setattr(carla_backend, "connect", lambda options: client)
    from sim.backends import make_env

    made = []

    def build(cameras=()):
        made.append(make_env(backend, scenario, "light", cameras=cameras))
        return made[-1]

    yield build
    for env in made:
        env.close()


def _check_obs(obs: dict, cameras: tuple) -> None:
    assert obs["ego"].shape == (len(EGO_FIELDS),) and obs["ego"].dtype == np.float32
    assert obs["actors"].shape == (MAX_ACTORS, len(ACTOR_FIELDS)) and obs["actors"].dtype == np.float32
    assert obs["goal"].dtype == np.float32 and obs["state"].dtype == np.float32
    assert all(np.isfinite(obs[k]).all() for k in ("ego", "actors", "goal", "state"))
    if cameras:
        assert obs["cameras"].shape == (len(cameras), cameras[0].height, cameras[0].width, 3)
        assert obs["cameras"].dtype == np.uint8
    else:
        assert "cameras" not in obs


def _check_info(info: dict) -> None:
    assert info["events"].shape == (len(EVENT_FIELDS),) and info["reward_terms"].shape == (len(REWARD_FIELDS),)


def test_reset_and_step_give_the_documented_arrays(make):
    from sim.cameras import default_rig

    rig = tuple(default_rig(24, 16))
    env = make(rig)
    assert isinstance(env, DrivingEnv)
    obs, info = env.reset(seed=3)
    _check_obs(obs, rig)
    _check_info(info)
    assert isinstance(env.goal, Goal) and env.route_length > 0
    assert env.ego_state().shape == (len(EGO_FIELDS),) and env.actors().shape == (MAX_ACTORS, len(ACTOR_FIELDS))
    np.testing.assert_allclose(env.ego_state(), obs["ego"], atol=1e-5)
    action = env.expert_action()
    assert action.shape == (2,) and np.all(action >= ACTION_LOW - 1e-6) and np.all(action <= ACTION_HIGH + 1e-6)
    plan = env.expert_plan(10)
    actions, poses = env.expert_continuation(10)
    assert plan.shape == (10, 2) and actions.shape == (10, 2) and poses.shape == (10, len(POSE_FIELDS))
    before = env.ego_state()
    env.expert_plan(10)
    np.testing.assert_array_equal(env.ego_state(), before)  # asking the expert moves nothing
    obs, reward, terminated, truncated, info = env.step(action)
    _check_obs(obs, rig)
    _check_info(info)
    assert np.isfinite(reward) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(env.scene(), Scene)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.inf, 0.0]))


def test_an_expert_episode_ends_with_an_outcome_and_monotone_progress(make):
    env = make()
    ep = run_episode(env, ExpertPolicy(env), seed=5, record_frames=False)
    assert ep.outcome in OUTCOMES and ep.outcome != "sim_error"
    progress = ep.ego[:, EGO["progress"]]
    assert np.all((progress >= 0) & (progress <= 1)) and np.all(np.diff(progress) >= 0)
    assert ep.outcome == "route_complete"  # light traffic: the expert finishes its route
    again = run_episode(env, ExpertPolicy(env), seed=5, record_frames=False)
    np.testing.assert_allclose(again.ego, ep.ego, atol=1e-6)  # the same seed, the same episode


def test_close_twice_is_harmless(make):
    env = make()
    env.reset(seed=0)
    env.close()
    env.close()


def test_wrap_angle_maps_every_angle_into_minus_pi_to_pi_and_keeps_those_inside():
    """sim.interface.wrap_angle: one convention, [-pi, pi), for floats and arrays alike (pi itself
    maps to -pi); an angle already inside is unchanged and a full turn changes nothing."""
    import math

    import numpy as np

    from sim.interface import wrap_angle

    inside = np.array([-math.pi, -1.0, 0.0, 0.5, math.pi - 1e-9])
    np.testing.assert_allclose(wrap_angle(inside), inside, atol=1e-12)
    np.testing.assert_allclose(wrap_angle(inside + 4 * math.pi), inside, atol=1e-9)
    assert wrap_angle(math.pi) == pytest.approx(-math.pi)
    assert isinstance(wrap_angle(7.0), float) and wrap_angle(7.0) == pytest.approx(7.0 - 2 * math.pi)
    assert wrap_angle(-3 * math.pi / 2) == pytest.approx(math.pi / 2)
