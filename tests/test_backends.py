"""sim.backends: one constructor over a registry. Adding a backend is one class that implements
sim.interface.DrivingEnv plus one registry line; shown with a replay backend that plays a
recorded episode back through the same episode runner and rollout pool as the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from sim import backends
from sim.episode import Episode
from sim.interface import EVENT_FIELDS, REWARD_FIELDS, DrivingEnv
from sim.rollout import ExpertPolicy, run_episode
from vla.parallel import RolloutPool, RolloutSpec


class ReplayEnv:
    """Plays one recorded episode back whatever the actions; its expert is the recorded one."""

    cameras = ()

    def __init__(self, episode: Episode, scenario: str, density: str, **_) -> None:
        self.ep, self.scenario, self.density = episode, scenario, density
        self.goal, self.goal_feasible, self.route_length = episode.goal, None, episode.route_length
        self.t = 0

    def _obs(self) -> dict:
        return {"ego": self.ep.ego[self.t], "actors": self.ep.actors[self.t]}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {"events": np.zeros(len(EVENT_FIELDS), np.float32),
                             "reward_terms": np.zeros(len(REWARD_FIELDS), np.float32)}

    def step(self, action):
        info = {"events": self.ep.events[self.t], "reward_terms": self.ep.reward_terms[self.t]}
        self.t += 1
        done = self.t == self.ep.num_steps
        if done:
            info["outcome"] = self.ep.outcome
        return self._obs(), 0.0, done and self.ep.outcome != "timeout", done and self.ep.outcome == "timeout", info

    def expert_action(self):
        return self.ep.expert_actions[self.t]

    def expert_plan(self, horizon):
        return self.ep.expert_actions[self.t:self.t + horizon]

    def expert_continuation(self, horizon):
        raise NotImplementedError

    def goal_labels(self):
        return None

    def goal_futures(self, horizon):
        return None

    def snapshot(self):
        return self.t

    def restore(self, snap):
        self.t = snap
        return self._obs()

    def ego_state(self):
        return self.ep.ego[self.t].copy()

    def actors(self):
        return self.ep.actors[self.t].copy()

    def scene(self):
        raise NotImplementedError

    def close(self):
        pass


@pytest.fixture()
def recorded():
    env = backends.make_env("embedded", "highway", "light")
    return run_episode(env, ExpertPolicy(env), seed=3, record_frames=False)


def test_a_new_backend_is_one_class_and_one_registry_line(recorded, monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "replay", lambda **kw: ReplayEnv(recorded, **kw))
    env = backends.make_env("replay", "highway", "light")
    assert isinstance(env, DrivingEnv)
    again = run_episode(env, ExpertPolicy(env), seed=3, record_frames=False)
    np.testing.assert_array_equal(again.ego, recorded.ego)
    np.testing.assert_array_equal(again.actions, recorded.expert_actions)
    assert again.outcome == recorded.outcome
    spec = RolloutSpec("highway", "light", "expert", "canonical", cameras=False, record_frames=False,
                       backend="replay")
    with RolloutPool(1) as pool:  # in-process: the registration above is visible
        (pooled,) = pool.run(spec, [3])
    np.testing.assert_array_equal(pooled.ego, recorded.ego)


def test_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown simulator backend 'carla2'"):
        backends.make_env("carla2")
    with pytest.raises(ValueError, match="needs a name and a factory"):
        backends.register_backend("", None)
