"""Commands during the drive: the passenger speaks again (``env.speak``, ``DriveTalk``), the
policy hears the new words mid-episode, and the metrics time how soon the car acts on them."""

from __future__ import annotations

import numpy as np
import pytest

from sim.episode import Episode
from sim.interface import ACTOR_FIELDS, EGO, EGO_FIELDS, EVENT_FIELDS, MAX_ACTORS, REWARD, REWARD_FIELDS, Goal
from sim.rollout import DriveTalk, ExpertPolicy, run_episode
from sim.scenarios import DRIVE_COMMANDS, highway_goal_for


def _expert_steps(env, seed: int, steps: int) -> dict:
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(env.expert_action())
    return obs


def test_a_command_during_the_drive_counts_from_the_lane_the_car_is_in_and_keeps_the_progress():
    from sim.highway import EmbeddedDrivingEnv

    env = EmbeddedDrivingEnv("highway", "light", goals="feasible")  # (the tests' default is "any")
    said = []
    for seed in range(4):
        _expert_steps(env, seed, 30)
        first, lane = env.goal, int(env.ego_state()[EGO["lane_id"]])
        progress = env._best_progress_m
        goal, obs = env.speak(np.random.default_rng(seed))
        said.append(goal.label)
        assert goal.label in DRIVE_COMMANDS and goal.label != first.label and env.goal == goal
        assert env._best_progress_m == progress  # the route and what was driven of it are kept
        if goal.target_lane >= 0:
            assert goal.target_lane == lane + (1 if goal.label == "lane_right" else -1)
            assert obs["goal"][0] == lane - goal.target_lane  # the observation is the new goal's
        else:
            assert obs["goal"][1] == goal.target_speed
        while True:  # the expert meets it: under "feasible" speak() issues only what the expert reaches
            _, _, term, trunc, info = env.step(env.expert_action())
            if term or trunc:
                break
        assert info["reward_terms"][REWARD["goal"]] > 0.5, (seed, goal, info.get("outcome"))
    assert len(set(said)) >= 2
    _expert_steps(env, 0, 30)  # the same state and generator: the same command
    assert env.speak(np.random.default_rng(0))[0].label == said[0]
    with pytest.raises(ValueError, match="unknown highway commands"):
        env.speak(np.random.default_rng(0), ["fly"])
    junction = EmbeddedDrivingEnv("intersection", "light")
    junction.reset(seed=0)
    with pytest.raises(ValueError, match="highway"):
        junction.speak(np.random.default_rng(0))


def test_an_episode_records_when_its_command_was_heard_and_keeps_it_on_disk(tmp_path):
    from benchmarks.metrics import METRIC_DOCS, TALK_METRIC_DOCS, aggregate, episode_metrics
    from sim.highway import EmbeddedDrivingEnv
    from sim.storage import EpisodeWriter, read_episodes

    env = EmbeddedDrivingEnv("highway", "light")
    talk = DriveTalk(earliest_s=2.0, latest_s=4.0)
    eps = [run_episode(env, ExpertPolicy(env), seed, query_expert=False, record_frames=False, talk=talk)
           for seed in range(3)]
    for ep in eps:
        assert 20 <= ep.heard_at <= 40 and ep.heard_at == talk.draw(ep.seed)[0]
        assert ep.goal.label in DRIVE_COMMANDS and ep.outcome == "route_complete"
    again = run_episode(env, ExpertPolicy(env), 1, query_expert=False, record_frames=False, talk=talk)
    assert (again.heard_at, again.goal) == (eps[1].heard_at, eps[1].goal)
    quiet = run_episode(env, ExpertPolicy(env), 1, query_expert=False, record_frames=False)
    assert quiet.heard_at == 0
    with EpisodeWriter(tmp_path / "d") as w:
        w.append(eps[0])
        w.append(quiet)
    back, back_quiet = read_episodes(tmp_path / "d", load_frames=False)
    assert (back.heard_at, back.goal, back_quiet.heard_at) == (eps[0].heard_at, eps[0].goal, 0)
    rows = [episode_metrics(ep) for ep in eps]
    assert all(0 < r["act_latency_s"] < 5 and r["goal_success"] == 1 for r in rows)
    agg = aggregate(rows)
    assert set(agg) == set(METRIC_DOCS) | set(TALK_METRIC_DOCS) and agg["talk_episodes"] == 3
    assert agg["act_within_1s_rate"] == np.mean([r["act_latency_s"] <= 1.0 for r in rows])
    assert set(aggregate([episode_metrics(quiet)])) == set(METRIC_DOCS)  # no talk, no talk keys
    assert np.isnan(episode_metrics(quiet)["act_latency_s"])
    for bad in ({"earliest_s": 0.0}, {"earliest_s": 5.0, "latest_s": 4.0}, {"labels": ("keep_lane",)},
                {"labels": ()}):
        with pytest.raises(ValueError, match="talk"):
            DriveTalk(**bad)
    with pytest.raises(ValueError, match="heard_at"):
        Episode(**{**_fields(np.zeros((3, len(EGO_FIELDS)))), "heard_at": 5})


def _fields(ego: np.ndarray, goal: Goal | None = None, heard_at: int = 0) -> dict:
    t = len(ego) - 1
    return dict(scenario="highway", density="light", seed=0, goal=goal or highway_goal_for("keep_lane", 1),
                outcome="timeout", route_length=100.0, policy="test", cameras=(), ego=ego,
                actors=np.zeros((t + 1, MAX_ACTORS, len(ACTOR_FIELDS))), actions=np.zeros((t, 2), np.float32),
                expert_actions=np.zeros((t, 2), np.float32), events=np.zeros((t, len(EVENT_FIELDS)), np.float32),
                reward_terms=np.zeros((t, len(REWARD_FIELDS)), np.float32), heard_at=heard_at)


def test_act_latency_is_the_first_response_toward_the_command_after_hearing_it():
    from benchmarks.metrics import ACT_ACCEL, ACT_LATERAL_SPEED, act_latency

    ego = np.zeros((41, len(EGO_FIELDS)))
    ego[:, EGO["speed"]], ego[:, EGO["lane_id"]] = 25.0, 2
    ego[14:, EGO["lane_heading_error"]] = np.arcsin(1.2 * ACT_LATERAL_SPEED / 25.0)  # drifting left from state 14
    ego[6, EGO["lane_heading_error"]] = 0.1  # before the command: not a response to it
    left, right = highway_goal_for("lane_left", 2), highway_goal_for("lane_right", 2)
    assert act_latency(Episode(**_fields(ego, left, heard_at=10))) == pytest.approx(0.4)
    assert act_latency(Episode(**_fields(ego, right, heard_at=10))) == np.inf  # it drifts the wrong way
    assert np.isnan(act_latency(Episode(**_fields(ego, left, heard_at=0))))  # heard before the drive
    ego[:, EGO["lane_heading_error"]] = 0.0
    ego[30:, EGO["lane_id"]] = 1  # crossed into the commanded lane at state 30
    assert act_latency(Episode(**_fields(ego, left, heard_at=10))) == pytest.approx(2.0)
    speed = np.full(41, 25.0)
    speed[21:] = 25.0 - 1.5 * ACT_ACCEL * 0.1 * np.arange(1, 21)  # braking from state 21
    ego[:, EGO["speed"]] = speed
    slow = highway_goal_for("slow_down", 2)
    assert act_latency(Episode(**_fields(ego, slow, heard_at=10))) == pytest.approx(1.1)
    assert act_latency(Episode(**_fields(ego, highway_goal_for("speed_up", 2), heard_at=10))) == np.inf


def _drive_a_little(policy, env, seed: int = 1) -> dict:
    obs, _ = env.reset(seed=seed)
    policy.reset()
    policy.hear("keep your lane")
    for _ in range(3):
        obs, *_ = env.step(policy.select_action(obs))
    for _ in range(25):  # the expert moves the car; the policy's anchor stays where it heard
        obs, *_ = env.step(env.expert_action())
    obs = dict(obs)
    obs["ego"] = np.array(obs["ego"])
    obs["ego"][EGO["lane_id"]] = policy._start_lane + 1  # as if it had changed lane since
    return obs


def _plan_policy(**config):
    import torch

    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          observation="lane_frame", **config)
    torch.manual_seed(0)
    return VLAPolicy(config, default_action_tokenizer(16, "plan"))


def test_a_policy_hearing_during_the_drive_reads_the_state_as_if_it_had_heard_there():
    """The new words replace the old at the next decision; lane commands count from the lane
    the car is in then (its inputs equal a policy's that heard them at the start from there)
    and the plan made for the old command is dropped, not committed to."""
    import torch

    from sim.highway import EmbeddedDrivingEnv
    from vla.policy import VLAPolicy

    policy = _plan_policy()
    env = EmbeddedDrivingEnv("highway", "light")
    obs = _drive_a_little(policy, env)
    before = policy.inputs_from_obs(obs)
    policy.hear("change to the left lane")
    t = policy._t
    policy.select_action(obs)
    assert policy._plan[3] == t and policy.last_heard == "command"  # a new plan at once, for the new command
    fresh = VLAPolicy(policy.config, policy.action_tokenizer)
    fresh.load_state_dict(policy.state_dict())
    fresh.reset()
    fresh.hear("change to the left lane")
    want, heard = fresh.inputs_from_obs(obs), policy.inputs_from_obs(obs)
    torch.testing.assert_close(heard.ego, want.ego)
    torch.testing.assert_close(heard.command, want.command)
    assert not torch.equal(before.ego, heard.ego) and not torch.equal(before.command, heard.command)


@pytest.mark.parametrize("named", ["none", "lane_left"])
def test_words_the_label_head_names_none_change_nothing(named):
    """A policy with the command-label head weighs words heard during the drive: chit-chat
    (named ``none``) leaves its command, its lane anchor and its plan as they were."""
    import torch

    from sim.highway import EmbeddedDrivingEnv
    from tokenizers_mm.corpus import LABELS

    policy = _plan_policy(command_label_weight=1.0)
    head = policy.model.command_head
    with torch.no_grad():  # make the head name everything `named`
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[LABELS.index(named)] = 10.0
    env = EmbeddedDrivingEnv("highway", "light")
    obs = _drive_a_little(policy, env)
    command, anchor, plan = policy._command, policy._start_lane, policy._plan
    policy.hear("play some music")
    policy.select_action(obs)
    assert policy.last_heard == named
    if named == "none":
        assert policy._command is command and policy._start_lane == anchor and policy._plan[3] == plan[3]
    else:
        assert not np.array_equal(policy._command, command) and policy._start_lane == anchor + 1
        assert policy._plan[3] == policy._t - 1


def _head_saying_none(policy, p: float) -> None:
    """Set the command-label head to give 'none' probability ``p`` whatever it hears, the other
    labels sharing the rest."""
    _head_saying(policy, "none", p)


@pytest.mark.parametrize("threshold, ignored", [(0.95, False), (0.7, True)])
def test_words_are_chitchat_only_when_the_head_is_sure(threshold, ignored):
    """The head gives 'none' 0.8 (its argmax): below ``chitchat_threshold`` the words still
    become the command (a chit-chat-trained head names unfamiliar commands 'none' too), at or
    above it they are ignored."""
    from sim.highway import EmbeddedDrivingEnv

    policy = _plan_policy(command_label_weight=1.0)
    policy.set_execution(chitchat_threshold=threshold)
    _head_saying_none(policy, 0.8)
    obs = _drive_a_little(policy, EmbeddedDrivingEnv("highway", "light"))
    command = policy._command
    policy.hear("play some music")
    policy.select_action(obs)
    assert policy.last_heard == ("none" if ignored else "command")
    assert (policy._command is command) == ignored


def test_chitchat_probability_reads_the_head_and_leaves_the_policy_as_it_was():
    from benchmarks.chitchat_probe import sweep
    from sim.highway import EmbeddedDrivingEnv

    policy = _plan_policy(command_label_weight=1.0)
    _head_saying_none(policy, 0.8)
    obs = _drive_a_little(policy, EmbeddedDrivingEnv("highway", "light"))
    command, anchor = policy._command, policy._start_lane
    assert abs(policy.chitchat_probability(obs, "play some music") - 0.8) < 1e-5
    assert policy._command is command and policy._start_lane == anchor
    with pytest.raises(ValueError, match="no command-label head"):
        _plan_policy().chitchat_probability(obs, "play some music")
    rows = {r["threshold"]: r for r in sweep({("none", "en", "a"): 0.97, ("none", "en", "b"): 0.6,
                                              ("lane_left", "en", "c"): 0.1, ("speed_up", "en", "d"): 0.99})}
    assert rows[0.5] == {"threshold": 0.5, "commands_adopted": 0.5, "chitchat_ignored": 1.0, "balanced": 0.75}
    assert rows[0.95]["chitchat_ignored"] == 0.5 and rows[0.99]["commands_adopted"] == 0.5


def test_chitchat_samples_teach_the_label_head_only():
    from sim.highway import EmbeddedDrivingEnv
    from tokenizers_mm.corpus import LABELS, PHRASINGS
    from vla.data import DemoDataset

    policy = _plan_policy(command_label_weight=1.0)
    env = EmbeddedDrivingEnv("highway", "light")
    ep = run_episode(env, ExpertPolicy(env), 0, record_frames=False, plan_horizon=20)
    data = DemoDataset(policy, chitchat=0.5)
    data.add_episode(ep)
    np.random.seed(0)
    batch = data.batch(np.arange(len(data)))
    chat = batch.command_label.numpy() == LABELS.index("none")
    assert 0.3 < chat.mean() < 0.7
    assert not batch.action_mask.numpy()[chat].any() and batch.action_mask.numpy()[~chat, 0].all()
    pad = policy.layout.special("<pad>")
    said = {tuple(policy.encode_command(p.text, p.lang)) for p in PHRASINGS if p.label == "none" and not p.heldout}
    rows = batch.command.numpy()[chat]
    assert all(tuple(int(v) for v in r if v != pad) in said for r in rows)
    with pytest.raises(ValueError, match="label"):
        DemoDataset(_plan_policy(), chitchat=0.5)
    with pytest.raises(ValueError, match="chitchat"):
        DemoDataset(policy, chitchat=1.5)


def test_only_the_states_after_a_command_heard_during_the_drive_train_on_it():
    from sim.highway import EmbeddedDrivingEnv
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    env = EmbeddedDrivingEnv("highway", "light")
    ep = run_episode(env, ExpertPolicy(env), 0, record_frames=False, goal_labels=True, talk=DriveTalk())
    assert ep.heard_at > 0
    config = PolicyConfig(**SIZES["tiny"], cameras=False)
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins))
    from dataclasses import replace

    talked, whole = DemoDataset(policy, goal_relabel=True), DemoDataset(policy, goal_relabel=True)
    talked.add_episode(ep)
    whole.add_episode(replace(ep, heard_at=0))
    steps = talked._index[:, 1]
    assert steps.min() == ep.heard_at and (talked._index[:, 2] == -1).sum() == ep.num_steps - ep.heard_at
    assert (whole._index[:, 2] == -1).sum() == ep.num_steps
    assert talked.counterfactual_samples > 0  # relabelled from the lane the command was heard in


def test_eval_talk_drive_prints_how_soon_the_car_acted(tmp_path, capsys):
    import json

    from app import cli

    code = cli.main(["eval", "--policy", "expert", "--scenario", "highway", "--density", "light", "--episodes", "2",
                     "--no-gif", "--talk", "drive", "--out", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert code == 0 and "spoken during the drive: 2 episodes" in out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["talk_episodes"] == 2 and 0 <= metrics["act_within_1s_rate"] <= 1
    assert "act_latency_s" in (tmp_path / "e" / "episodes.csv").read_text().splitlines()[0]


def test_chitchat_during_the_drive_reaches_the_policy_and_changes_no_goal():
    from sim.highway import EmbeddedDrivingEnv
    from tokenizers_mm.corpus import PHRASINGS
    from vla.speech_commands import rephraser

    class Listener(ExpertPolicy):
        def reset(self) -> None:
            self.heard, self.t = [], 0

        def hear(self, command: str, lang: str = "en", seed: int = 0) -> None:
            self.heard.append((self.t, command))

        def select_action(self, obs: dict) -> np.ndarray:
            self.t += 1
            return super().select_action(obs)

    env = EmbeddedDrivingEnv("highway", "light", rephrase=rephraser("heldout"))
    talk = DriveTalk(chitchat=True)
    listener = Listener(env)
    ep = run_episode(env, listener, 2, query_expert=False, record_frames=False, talk=talk)
    quiet = run_episode(env, ExpertPolicy(env), 2, query_expert=False, record_frames=False)
    (start, first), (when, chat) = listener.heard
    assert start == 0 and first == quiet.goal.command and when == talk.draw(2)[0]
    assert chat in {p.text for p in PHRASINGS if p.label == "none" and p.heldout}
    assert ep.heard_at == 0 and ep.goal == quiet.goal
    np.testing.assert_array_equal(ep.actions, quiet.actions)  # the env did not change; the expert drove on


def _head_saying(policy, label: str, p: float) -> None:
    """Set the command-label head to name ``label`` with probability ``p`` whatever it hears, the
    other labels sharing the rest."""
    import math

    import torch

    from tokenizers_mm.corpus import LABELS

    with torch.no_grad():
        policy.model.command_head.weight.zero_()
        policy.model.command_head.bias.zero_()
        policy.model.command_head.bias[LABELS.index(label)] = math.log(p / (1 - p) * (len(LABELS) - 1))


@pytest.mark.parametrize("readback, sure, read_back", [(0.5, 0.9, True), (0.95, 0.9, False), (0.0, 0.9, False)])
def test_read_back_acts_on_the_canonical_command_of_the_label_the_head_names(readback, sure, read_back):
    """With command_readback P, words the head names a command label with probability >= P are
    read as that label's canonical command, before the drive (at the first state) and during it;
    below P, or with it off, the words are read as heard."""
    from sim.highway import EmbeddedDrivingEnv
    from sim.scenarios import canonical_command

    policy = _plan_policy(command_label_weight=1.0)
    policy.set_execution(command_readback=readback)
    _head_saying(policy, "lane_left", sure)
    canonical = policy.encode_command(canonical_command("lane_left"))
    said = policy.encode_command("take the lane on your left")
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=1)
    policy.reset()
    policy.hear("take the lane on your left")
    np.testing.assert_array_equal(policy._command, said)  # nothing read back before a state is seen
    obs, *_ = env.step(policy.select_action(obs))
    np.testing.assert_array_equal(policy._command, canonical if read_back else said)
    policy.hear("hold this lane")  # during the drive: the head still names lane_left
    policy.select_action(obs)
    np.testing.assert_array_equal(policy._command, canonical if read_back else policy.encode_command("hold this lane"))


def test_read_back_keeps_chitchat_out_and_names_every_label():
    from sim.highway import EmbeddedDrivingEnv
    from tokenizers_mm.corpus import LABELS
    from vla.config import PolicyConfig
    from sim.scenarios import canonical_command

    policy = _plan_policy(command_label_weight=1.0)
    policy.set_execution(command_readback=0.5, chitchat_threshold=0.95)
    _head_saying(policy, "none", 0.8)  # 'none' but under the chit-chat threshold: the words are adopted as heard
    obs = _drive_a_little(policy, EmbeddedDrivingEnv("highway", "light"))
    policy.hear("play some music")
    policy.select_action(obs)
    np.testing.assert_array_equal(policy._command, policy.encode_command("play some music"))
    assert canonical_command("turn_left") == "turn left at the intersection"
    assert {canonical_command(label) for label in LABELS if label != "none"} >= {"change to the left lane", "slow down"}
    with pytest.raises(ValueError, match="none"):
        canonical_command("none")
    with pytest.raises(ValueError, match="command_readback"):
        PolicyConfig(command_readback=1.5)


def test_the_counterfactual_branch_leaves_the_episode_as_it_was_and_times_the_response_against_it():
    """DriveTalk.counterfactual_s: the branch driven without the words starts at the moment they
    were said and changes nothing in the episode itself (same states, actions and outcome as
    without it); act_latency_cf counts a departure from that branch toward the commanded lane,
    or a speed difference, and not a lateral departure away from the lane."""
    from dataclasses import replace

    from benchmarks.metrics import ACT_CF_LATERAL, TALK_CF_METRIC_DOCS, act_latency_cf, aggregate, episode_metrics
    from sim.highway import EmbeddedDrivingEnv

    env = EmbeddedDrivingEnv("highway", "light")
    plain = DriveTalk(earliest_s=2.0, latest_s=4.0, labels=("lane_left", "lane_right"))
    branch = replace(plain, counterfactual_s=2.0)
    eps = []
    for seed in range(2):
        ep = run_episode(env, ExpertPolicy(env), seed, query_expert=False, record_frames=False, talk=branch)
        same = run_episode(env, ExpertPolicy(env), seed, query_expert=False, record_frames=False, talk=plain)
        assert same.unheard_ego is None and ep.heard_at == same.heard_at > 0 and ep.goal == same.goal
        np.testing.assert_array_equal(ep.ego, same.ego)  # the branch changed nothing in the episode
        np.testing.assert_array_equal(ep.actions, same.actions)
        assert ep.outcome == same.outcome and ep.unheard_ego.shape == (21, len(EGO_FIELDS))
        np.testing.assert_array_equal(ep.unheard_ego[0], ep.ego[ep.heard_at])  # it starts at the moment
        assert not np.array_equal(ep.unheard_ego[-1], ep.ego[ep.heard_at + 20])  # and the expert did act
        assert 0 < act_latency_cf(ep) <= 2.0 and np.isnan(act_latency_cf(same))
        eps.append(ep)
    agg = aggregate([episode_metrics(ep) for ep in eps])
    assert set(TALK_CF_METRIC_DOCS) <= set(agg) and agg["act_cf_episodes"] == 2
    assert agg["act_within_1s_cf_met_rate"] == agg["act_within_1s_cf_rate"] == 1.0  # the expert meets them all
    missed = [{**episode_metrics(eps[0]), "goal_success": 0.0}, episode_metrics(eps[1])]
    assert aggregate(missed)["act_within_1s_cf_met_rate"] == 0.5 and aggregate(missed)["act_within_1s_cf_rate"] == 1.0

    ep, h = eps[0], eps[0].heard_at
    toward = 1.0 if ep.goal.target_lane < ep.ego[h, EGO["lane_id"]] else -1.0
    mine = ep.ego[h:h + 21].copy()
    mine[:, EGO["lane_id"]] = ep.ego[h, EGO["lane_id"]]  # (never in the target lane in this rebuilt episode)
    ego = ep.ego.copy()
    ego[h:h + 21] = mine
    k = np.arange(21)

    def latency(shift_y: np.ndarray, shift_v: np.ndarray) -> float:
        u = mine.copy()  # the car without the words: where it is now, moved by the shifts
        u[:, EGO["y"]] -= shift_y  # (the lane runs along x on this highway)
        u[:, EGO["speed"]] -= shift_v
        return act_latency_cf(replace(ep, ego=ego, unheard_ego=u))

    none = np.zeros(21)
    assert latency(none, none) == float("inf")  # drives as it would have: no response
    assert latency(toward * (ACT_CF_LATERAL + 0.05) * (k >= 4), none) == pytest.approx(0.4)
    assert latency(-toward * 1.0 * (k >= 2), none) == float("inf")  # away from the lane: not this command
    assert latency(none, -0.4 * (k >= 6)) == pytest.approx(0.6)  # slower than it would have been: acting
    with pytest.raises(ValueError, match="counterfactual_s"):
        DriveTalk(counterfactual_s=-1.0)
