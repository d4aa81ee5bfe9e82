"""benchmarks.command_follow: open-loop command following in action space."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def goal_episode(tmp_path_factory):
    """One light-traffic expert episode with the expert's plans under every goal at every 4th state."""
    from sim.highway import EmbeddedDrivingEnv
    from sim.rollout import ExpertPolicy, run_episode
    from sim.storage import EpisodeWriter

    root = tmp_path_factory.mktemp("goal_episode")
    env = EmbeddedDrivingEnv("highway", "light", goals="any")
    ep = run_episode(env, ExpertPolicy(env), seed=2, record_frames=False, plan_horizon=20,
                     goal_labels=True, goal_futures=True, plan_every=4)
    with EpisodeWriter(root / "data") as w:
        w.append(ep)
    return root / "data"


def _policy(command="ipa", action="plan"):
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action=action, observation="lane_frame", command=command)
    torch.manual_seed(0)
    return VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))


def test_a_policy_that_always_plans_one_goal_follows_only_that_goal(goal_episode, monkeypatch):
    from benchmarks import command_follow as cf
    from sim.scenarios import HIGHWAY_GOAL_LABELS

    policy = _policy()
    at = cf.states(policy, str(goal_episode), 500, seed=0)
    assert at and all(s["known"].sum() >= 2 for s in at)
    keep = HIGHWAY_GOAL_LABELS.index("keep_lane")

    def always_keep_lane(inputs):  # logits peaked on the keep-lane plan of each state, whatever was heard
        bins = inputs.action_bins.view(-1, len(HIGHWAY_GOAL_LABELS), *inputs.action_bins.shape[1:])
        favoured = bins[:, keep].repeat_interleave(len(HIGHWAY_GOAL_LABELS), 0)
        return torch.nn.functional.one_hot(favoured, policy.config.n_bins).float() * 5.0

    monkeypatch.setattr(policy, "chunk_logits", always_keep_lane)
    report = cf.summarize(cf.follow(policy, at, cf._phrasings("canonical")))
    assert report["by_goal"]["keep_lane"] == 1.0
    assert report["compared"] > 0
    others = [r for g, r in report["by_goal"].items() if g != "keep_lane" and r is not None]
    assert others and max(others) == 0.0  # their plans differ from keep lane's wherever they were compared


def test_the_command_runs_end_to_end_and_reports_json(goal_episode, tmp_path, capsys):
    from benchmarks import command_follow as cf

    _policy().save(tmp_path / "p")
    assert cf.main(["--policy", str(tmp_path / "p"), "--data", str(goal_episode), "--states", "30",
                    "--phrasings", "heldout", "--out", str(tmp_path / "o")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= report["follow_rate"] <= 1.0 and 0.0 <= report["follow_rate_canonical"] <= 1.0
    assert report["states"] <= 30 and set(report["by_goal"]) <= {"lane_left", "lane_right", "speed_up", "slow_down",
                                                                 "keep_lane"}
    assert json.loads((tmp_path / "o" / "command_follow.json").read_text())["follow_rate"] == report["follow_rate"]


def test_bad_inputs_are_one_line_errors(goal_episode, light_episode, tmp_path, capsys):
    from benchmarks import command_follow as cf

    _policy().save(tmp_path / "p")
    _policy(action="control").save(tmp_path / "c")
    cases = [
        (["--data", str(tmp_path / "nowhere")], "not a directory"),
        (["--data", str(light_episode)], "no highway state"),
        (["--data", str(goal_episode), "--phrasings", "sometimes"], "--phrasings"),
        (["--data", str(goal_episode), "--states", "0"], "--states"),
    ]
    for extra, needle in cases:
        assert cf.main(["--policy", str(tmp_path / "p"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (extra, err)
    assert cf.main(["--policy", str(tmp_path / "c"), "--data", str(goal_episode)]) == 2
    assert "plan-head" in capsys.readouterr().err


def test_a_spoken_policy_hears_each_phrasing_in_several_renditions(goal_episode, monkeypatch):
    """Audio / heard policies: every phrasing is heard in ``renditions`` renditions (seeds 0..R-1),
    each tested at every state, so the counts scale with R; text policies hear each once."""
    from benchmarks import command_follow as cf

    policy = _policy()
    at = cf.states(policy, str(goal_episode), 40, seed=0)
    heard = []
    encode = policy.encode_command

    def recording(text, lang="en", seed=0):
        heard.append((text, seed))
        return encode(text, lang)

    monkeypatch.setattr(policy, "encode_command", recording)
    once = cf.summarize(cf.follow(policy, at, cf._phrasings("canonical"), renditions=3))
    assert {s for _, s in heard} == {0}  # an ipa policy: one rendition whatever is asked
    heard.clear()
    monkeypatch.setattr(cf, "SPOKEN_MODALITIES", ("ipa",))  # now treat it as a spoken policy
    thrice = cf.summarize(cf.follow(policy, at, cf._phrasings("canonical"), renditions=3))
    assert sorted({s for _, s in heard}) == [0, 1, 2] and len(heard) == 3 * len(cf._phrasings("canonical"))
    assert thrice["compared"] == 3 * once["compared"] > 0


def test_hearing_options_are_checked(goal_episode, tmp_path, capsys):
    from benchmarks import command_follow as cf

    _policy().save(tmp_path / "p")
    for extra, needle in ((["--renditions", "0"], "--renditions"), (["--snr-db", "loud"], "--snr-db")):
        assert cf.main(["--policy", str(tmp_path / "p"), "--data", str(goal_episode), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (extra, err)
