"""The transformer policy: learning, KV-cached decoding, save/load, the chunk queue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.highway import EmbeddedDrivingEnv
from sim.rollout import ExpertPolicy, run_episode
from tokenizers_mm.action import ActionTokenizer
from vla.config import PolicyConfig
from vla.data import DemoDataset
from vla.policy import VLAPolicy
from methods.bc import BCConfig, BCMethod

TINY = dict(d_model=32, n_layers=2, n_heads=2, n_bins=16, horizon=3, camera_width=32,
            camera_height=32, camera_patch=16)


@pytest.fixture(scope="module")
def episodes():
    from sim.cameras import default_rig

    env = EmbeddedDrivingEnv("highway", "light", cameras=default_rig(32, 32))
    return [run_episode(env, ExpertPolicy(env), seed) for seed in range(2)]


def make_policy(episodes, **overrides) -> VLAPolicy:
    torch.manual_seed(0)
    cfg = PolicyConfig(**{**TINY, **overrides})
    acts = np.concatenate([e.actions for e in episodes])
    return VLAPolicy(cfg, ActionTokenizer.fit(acts, cfg.n_bins, "uniform", q_low=0.0, q_high=1.0))


def test_loss_decreases_on_a_fixed_batch(episodes):
    policy = make_policy(episodes)
    data = DemoDataset(policy)
    for ep in episodes:
        data.add_episode(ep)
    batch = data.batch(np.arange(16))
    method = BCMethod(policy, BCConfig(lr=3e-3, warmup_steps=0, total_steps=60))
    first = method.update(batch)["loss"]
    for _ in range(59):
        last = method.update(batch)["loss"]
    assert np.isfinite(last) and last < 0.5 * first


def test_kv_cached_decoding_equals_full_recomputation(episodes):
    policy = make_policy(episodes).eval()
    data = DemoDataset(policy)
    data.add_episode(episodes[0])
    batch = data.batch(np.array([0, 5, 9]))
    out = policy.model.generate_chunk(batch, temperature=1.0, generator=torch.Generator().manual_seed(3))
    forced = type(batch)(**{**batch.__dict__, "action_bins": out.bins})
    logits, residuals = policy.model(forced)
    torch.testing.assert_close(logits, out.bin_logits, atol=1e-4, rtol=1e-4)
    chosen = residuals.gather(-1, out.bins[..., None])[..., 0]
    torch.testing.assert_close(chosen, out.residual, atol=1e-5, rtol=1e-5)


def test_save_load_gives_identical_actions(episodes, tmp_path):
    policy = make_policy(episodes, command="text").eval()
    env = EmbeddedDrivingEnv("highway", "light", cameras=policy.rig)
    obs, _ = env.reset(seed=4)
    policy.hear(env.goal.command)
    a = policy.predict_action_chunk(obs)
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    loaded.hear(env.goal.command)
    np.testing.assert_array_equal(a, loaded.predict_action_chunk(obs))
    assert a.shape == (3, 2) and np.all(np.isfinite(a))


@pytest.mark.parametrize("observation", ["ego_frame", "lane_frame", "lane_route", "lane_gaps"])
def test_both_observations_train_and_act(episodes, observation):
    policy = make_policy(episodes, observation=observation, cameras=False)
    data = DemoDataset(policy)
    for ep in episodes:
        data.add_episode(ep)
    batch = data.batch(np.arange(min(8, len(data))))
    assert batch.actors.shape[-1] == len(policy.observation.actor_fields)
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    policy.reset()
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=5)
    assert np.all(np.isfinite(policy.select_action(obs)))


def test_command_changes_the_prediction(episodes):
    policy = make_policy(episodes).eval()
    env = EmbeddedDrivingEnv("highway", "light", cameras=policy.rig)
    obs, _ = env.reset(seed=4)
    policy.hear("change to the left lane")
    left = policy.model.generate_chunk(policy.inputs_from_obs(obs)).bin_logits
    policy.hear("slow down")
    slow = policy.model.generate_chunk(policy.inputs_from_obs(obs)).bin_logits
    assert not torch.allclose(left, slow)


def test_select_action_ensembles_and_resets(episodes):
    policy = make_policy(episodes).eval()
    env = EmbeddedDrivingEnv("highway", "light", cameras=policy.rig)
    obs, _ = env.reset(seed=1)
    policy.reset()
    first = policy.select_action(obs)
    np.testing.assert_allclose(first, policy.predict_action_chunk(obs)[0], atol=1e-6)
    obs, *_ = env.step(first)
    policy.select_action(obs)
    assert len(policy._queue) == 2  # this step's chunk and the previous one
    policy.reset()
    assert len(policy._queue) == 0


def test_bad_inputs(episodes, tmp_path):
    with pytest.raises(ValueError, match="n_heads|heads"):
        PolicyConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="camera_patch"):
        PolicyConfig(camera_patch=7)
    with pytest.raises(ValueError, match="not a policy checkpoint"):
        VLAPolicy.load(tmp_path)
    policy = make_policy(episodes)
    env = EmbeddedDrivingEnv("highway", "light")  # no cameras
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="reads cameras"):
        policy.predict_action_chunk(obs)


def test_dataset_labels_policy_states_with_the_experts_plan(episodes):
    """A state a policy visited is labelled with the expert's own plan from it; without plans
    the chunk is the recorded expert actions (what the expert did when it drove)."""
    import dataclasses

    policy = make_policy(episodes, cameras=False)
    ep = episodes[0]
    rng = np.random.default_rng(0)
    plans = rng.uniform(-0.05, 0.05, size=(ep.num_steps, 4, 2)).astype(np.float32)
    plans[-1, 2:] = np.nan  # this continuation ended after 2 actions
    data = DemoDataset(policy)
    data.add_episode(dataclasses.replace(ep, expert_plans=plans))
    data.add_episode(ep)
    t = ep.num_steps - 1
    b = data.batch(np.array([5, t, ep.num_steps + 5]))
    decoded = policy.action_tokenizer.decode(b.action_bins.numpy(), b.action_residual.numpy())
    np.testing.assert_allclose(decoded[0], np.clip(plans[5, :3], policy.action_tokenizer.low,
                                                   policy.action_tokenizer.high), atol=1e-5)
    assert b.action_mask[1].tolist() == [True, True, False]
    np.testing.assert_allclose(decoded[2], np.clip(ep.expert_actions[5:8], policy.action_tokenizer.low,
                                                   policy.action_tokenizer.high), atol=1e-5)
    short = dataclasses.replace(ep, expert_plans=plans[:, :2])
    with pytest.raises(ValueError, match="horizon"):
        DemoDataset(policy).add_episode(short)


def test_command_augmentation_draws_train_phrasings_of_the_same_goal(episodes):
    from tokenizers_mm.corpus import PHRASINGS

    policy = make_policy(episodes, cameras=False)
    label = episodes[0].goal.label
    train = {tuple(policy.encode_command(p.text, p.lang)) for p in PHRASINGS if p.split == "train" and p.label == label}
    heldout = {tuple(policy.encode_command(p.text, p.lang)) for p in PHRASINGS if p.split == "heldout" and p.label == label}
    recorded = tuple(policy.encode_command(episodes[0].goal.command, episodes[0].goal.lang))

    def heard(p: float) -> set:
        data = DemoDataset(policy, augment_commands=p)
        data.add_episode(episodes[0])
        np.random.seed(0)
        out = set()
        for _ in range(30):
            b = data.batch(np.zeros(8, np.int64))
            out |= {tuple(c[m].tolist()) for c, m in zip(b.command.numpy(), b.command_mask.numpy())}
        return out

    assert heard(0.0) == {recorded}
    always = heard(1.0)
    assert always <= train and len(always) >= 5 and not always & heldout
    with pytest.raises(ValueError, match="augment_commands"):
        DemoDataset(policy, augment_commands=1.5)


def test_a_sample_predicts_the_same_alone_and_padded_in_a_batch(episodes):
    """Commands are padded in the middle of the sequence: positions must not move with the
    padding, or a policy trained on padded batches acts differently alone in closed loop.
    Also the KV cache against full recomputation on a padded batch."""
    import dataclasses

    policy = make_policy(episodes, cameras=False).eval()
    short = dataclasses.replace(episodes[0], goal=dataclasses.replace(episodes[0].goal, command="left"))
    long = dataclasses.replace(episodes[1], goal=dataclasses.replace(
        episodes[1].goal, command="please move over into the lane on the left when it is safe to do so"))
    data = DemoDataset(policy)
    data.add_episode(short)
    data.add_episode(long)
    batch = data.batch(np.array([3, short.num_steps + 3]))
    assert not batch.command_mask[0].all()  # the short command is padded
    alone = data.batch(np.array([3]))
    assert alone.command_mask.all()
    with torch.no_grad():
        logits_batch, res_batch = policy.model(batch)
        logits_alone, res_alone = policy.model(alone)
    torch.testing.assert_close(logits_batch[:1], logits_alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res_batch[:1], res_alone, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(policy.predict_chunk_batch(batch)[:1], policy.predict_chunk_batch(alone), atol=1e-5)
    out = policy.model.generate_chunk(batch, temperature=1.0, generator=torch.Generator().manual_seed(3))
    forced = type(batch)(**{**batch.__dict__, "action_bins": out.bins})
    logits, _ = policy.model(forced)
    torch.testing.assert_close(logits, out.bin_logits, atol=1e-4, rtol=1e-4)


def test_goal_relabelling_adds_one_first_action_sample_per_other_goal(episodes):
    """Each state also teaches the other commands: the expert's action under that goal, heard
    as a train phrasing of that goal, with only the chunk's first action supervised."""
    import dataclasses

    from sim.scenarios import HIGHWAY_GOAL_LABELS
    from tokenizers_mm.corpus import PHRASINGS

    policy = make_policy(episodes, cameras=False)
    ep = episodes[0]
    labels = np.random.default_rng(0).uniform(-0.05, 0.05, size=(ep.num_steps, len(HIGHWAY_GOAL_LABELS), 2))
    labels[:, 0] = np.nan  # lane_left impossible here
    ep = dataclasses.replace(ep, goal_labels=labels.astype(np.float32))
    plain = DemoDataset(policy)
    plain.add_episode(ep)
    data = DemoDataset(policy, goal_relabel=True)
    data.add_episode(ep)
    others = [g for g in HIGHWAY_GOAL_LABELS[1:] if g != ep.goal.label]
    assert len(plain) == ep.num_steps and data.counterfactual_samples == ep.num_steps * len(others)
    assert len(data) == ep.num_steps * (1 + len(others))
    g = HIGHWAY_GOAL_LABELS.index(others[0])
    row = int(np.flatnonzero((data._index[:, 1] == 7) & (data._index[:, 2] == g))[0])
    np.random.seed(0)
    b = data.batch(np.array([row]))
    assert b.action_mask[0].tolist() == [True, False, False]
    decoded = policy.action_tokenizer.decode(b.action_bins.numpy(), b.action_residual.numpy())[0, 0]
    np.testing.assert_allclose(decoded, np.clip(labels[7, g], policy.action_tokenizer.low,
                                                policy.action_tokenizer.high), atol=1e-5)
    heard = tuple(b.command[0][b.command_mask[0]].tolist())
    assert heard in {tuple(policy.encode_command(p.text, p.lang)) for p in PHRASINGS
                     if p.split == "train" and p.label == others[0]}


def test_goal_relabelling_stops_once_the_ego_has_left_its_start_lane(episodes):
    """Goals count lanes from the lane the command was heard in, so after a lane change the other
    goals' labels would drive back or two lanes over: those states keep only their own label."""
    import dataclasses

    from sim.interface import EGO
    from sim.scenarios import HIGHWAY_GOAL_LABELS

    policy = make_policy(episodes, cameras=False)
    ep = episodes[0]
    labels = np.zeros((ep.num_steps, len(HIGHWAY_GOAL_LABELS), 2), np.float32)
    ego = ep.ego.copy()
    moved = ep.num_steps // 2
    ego[moved:, EGO["lane_id"]] -= 1  # one lane to the left from here on
    data = DemoDataset(policy, goal_relabel=True)
    data.add_episode(dataclasses.replace(ep, ego=ego, goal_labels=labels))
    others = len(HIGHWAY_GOAL_LABELS) - 1
    assert data.counterfactual_samples == moved * others
    relabelled_steps = data._index[data._index[:, 2] >= 0, 1]
    assert relabelled_steps.max() == moved - 1
    assert len(data) == ep.num_steps + moved * others  # every state keeps its own goal's sample


def test_lane_frame_observation_places_actors_along_and_across_the_lane():
    from sim.interface import ACTOR_FIELDS, EGO_FIELDS, MAX_ACTORS
    from vla.inputs import OBSERVATIONS

    ego = np.zeros(len(EGO_FIELDS))
    ego[EGO_FIELDS.index("speed")] = 25.0
    ego[EGO_FIELDS.index("yaw")] = 0.1  # 0.1 rad off the lane, 0.5 m right of its centre
    ego[EGO_FIELDS.index("lane_heading_error")] = 0.1
    ego[EGO_FIELDS.index("lane_offset")] = -0.5
    actors = np.zeros((MAX_ACTORS, len(ACTOR_FIELDS)))
    lane = np.array([np.cos(0.0), np.sin(0.0)])
    centre = np.array([0.0, 0.5])  # the lane centre level with the ego (lane heading 0)
    for i, (s, d, v) in enumerate([(20.0, 0.0, 20.0), (-12.0, 4.0, 30.0)]):
        x, y = centre + s * lane + d * np.array([0.0, 1.0])
        actors[i, [ACTOR_FIELDS.index(n) for n in ("present", "x", "y", "yaw", "speed", "length", "width")]] = \
            [1, x, y, 0.0, v, 5.0, 2.0]
    obs = OBSERVATIONS["lane_frame"]
    rows = obs.actor_rows(ego, actors, 8)
    f = {n: i for i, n in enumerate(obs.actor_fields)}
    ahead, behind = rows[1], rows[0]  # nearest first
    assert behind[f["s"]] == pytest.approx(-12.0) and behind[f["d"]] == pytest.approx(4.0)
    assert ahead[f["s"]] == pytest.approx(20.0) and ahead[f["d"]] == pytest.approx(0.0, abs=1e-9)
    assert ahead[f["dvs"]] == pytest.approx(20.0 - 25.0 * np.cos(0.1))
    assert ahead[f["inv_gap"]] == pytest.approx(1 / 15) and ahead[f["closing_rate"]] > 0  # closing in on it
    assert behind[f["closing_rate"]] > 0  # the faster car behind closes in too
    assert rows[2:].sum() == 0
    assert obs.actor_features(ego, actors).shape == (8, len(obs.actor_fields))


def test_lane_gaps_observation_reads_the_merge_checks_verdict_per_side():
    """``lane_gaps`` = ``lane_frame``'s ego fields + whether a change to each side is safe now:
    a car just behind in the left lane, closing in, makes the left unsafe; the empty right lane is safe."""
    from sim.gap_checks import merge_safe
    from sim.interface import ACTOR_FIELDS, EGO_FIELDS, MAX_ACTORS
    from vla.inputs import GAP_FIELDS, OBSERVATIONS

    ego = np.zeros(len(EGO_FIELDS))
    ego[[EGO_FIELDS.index(n) for n in ("speed", "speed_limit", "lane_id")]] = [25.0, 30.0, 1.0]
    actors = np.zeros((MAX_ACTORS, len(ACTOR_FIELDS)))
    actors[0, [ACTOR_FIELDS.index(n) for n in ("present", "x", "y", "yaw", "speed", "length", "width")]] = \
        [1, -8.0, 4.0, 0.0, 30.0, 5.0, 2.0]  # 8 m behind in the lane to the left (y left), faster than us
    obs = OBSERVATIONS["lane_gaps"]
    feats = obs.ego_features(ego, 1.0, actors=actors)
    assert obs.ego_fields[-2:] == GAP_FIELDS and len(feats) == len(obs.ego_fields)
    np.testing.assert_array_equal(feats[-2:], [0.0, 1.0])
    assert not merge_safe(ego, actors, 1) and merge_safe(ego, actors, -1)
    base = OBSERVATIONS["lane_frame"].ego_features(ego, 1.0)
    np.testing.assert_array_equal(feats[:-2], base)  # the other fields are lane_frame's
    actors[0, [ACTOR_FIELDS.index("x"), ACTOR_FIELDS.index("speed")]] = [-60.0, 25.0]  # far behind, our speed: safe
    np.testing.assert_array_equal(obs.ego_features(ego, 1.0, actors=actors)[-2:], [1.0, 1.0])
    with pytest.raises(ValueError, match="gaps"):
        obs.ego_features(ego, 1.0)


def test_a_checkpoint_saved_before_observations_existed_loads_as_ego_frame(episodes, tmp_path):
    import json

    make_policy(episodes, observation="ego_frame", cameras=False).save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    del meta["config"]["observation"]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    assert VLAPolicy.load(tmp_path / "p").config.observation == "ego_frame"


@pytest.mark.parametrize("action", ["control", "plan"])
def test_replan_every_predicts_once_per_k_steps_and_acts_in_between(episodes, action):
    from vla.policy import default_action_tokenizer

    cfg = PolicyConfig(**{**TINY, "cameras": False, "action": action, "replan_every": 3})
    policy = VLAPolicy(cfg, default_action_tokenizer(cfg.n_bins, action)).eval()
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=6)
    calls = []

    def counted(o):
        calls.append(1)
        return policy.predict_action_chunk(o)

    actions = []
    for _ in range(7):
        actions.append(policy.select_action(obs, plan=counted))
        obs, *_ = env.step(actions[-1])
    assert len(calls) == 3  # steps 0, 3, 6
    assert np.all(np.isfinite(actions))
    policy.reset()
    policy.select_action(obs, plan=counted)
    assert len(calls) == 4  # a new episode plans at once
    with pytest.raises(ValueError, match="replan_every"):
        PolicyConfig(replan_every=0)


@pytest.mark.parametrize("breakage, needle", [
    ("truncate_weights", "not a readable safetensors file"),
    ("garbage_weights", "not a readable safetensors file"),
    ("json_not_json", "not readable as JSON"),
    ("json_empty", "not readable as JSON"),
    ("json_list", "expected a JSON object"),
    ("missing_config", "missing field(s) ['config']"),
    ("wrong_type", "PolicyConfig.d_model must be an integer >= 1, got 'wide'"),
    ("extra_key", "unknown PolicyConfig fields"),
    ("changed_width", "weights do not fit the config"),
])
def test_a_broken_checkpoint_is_one_error_naming_the_file(episodes, tmp_path, breakage, needle):
    import json

    make_policy(episodes, cameras=False).save(tmp_path / "p")
    meta_path, weights = tmp_path / "p" / "policy.json", tmp_path / "p" / "model.safetensors"
    meta = json.loads(meta_path.read_text())
    if breakage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif breakage == "garbage_weights":
        weights.write_bytes(b"\x00garbage" * 10)
    elif breakage == "json_not_json":
        meta_path.write_text("{not json")
    elif breakage == "json_empty":
        meta_path.write_text("")
    elif breakage == "json_list":
        meta_path.write_text("[]")
    elif breakage == "missing_config":
        del meta["config"]
        meta_path.write_text(json.dumps(meta))
    elif breakage == "wrong_type":
        meta["config"]["d_model"] = "wide"
        meta_path.write_text(json.dumps(meta))
    elif breakage == "extra_key":
        meta["config"]["bogus"] = 1
        meta_path.write_text(json.dumps(meta))
    elif breakage == "changed_width":
        meta["config"]["d_model"] = 64
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as err:
        VLAPolicy.load(tmp_path / "p")
    message = str(err.value)
    assert needle in message and "\n" not in message.strip()
    assert str(tmp_path / "p") in message


def test_execution_defaults_follow_the_action_space():
    """Unset ensemble_decay / replan_every read the action space's defaults, also in a config
    copied to another action space; saved configs without replan_every re-plan every step."""
    from dataclasses import replace

    from vla.config import DEFAULT_ENSEMBLE_DECAY, DEFAULT_REPLAN_EVERY

    control = PolicyConfig()
    plan = replace(control, action="plan")
    assert (control.decay, control.replan_period) == (DEFAULT_ENSEMBLE_DECAY["control"], DEFAULT_REPLAN_EVERY["control"])
    assert (plan.decay, plan.replan_period) == (DEFAULT_ENSEMBLE_DECAY["plan"], DEFAULT_REPLAN_EVERY["plan"])
    assert replace(plan, replan_every=2, ensemble_decay=0.3).replan_period == 2
    saved = plan.to_dict()
    del saved["replan_every"]
    assert PolicyConfig.from_dict(saved).replan_period == 1


def test_actor_forecast_targets_follow_each_token_s_car_by_id():
    """The forecasting targets: where the car behind each actor token is 1 and 2 s later, in the
    ego's lane frame at t (scaled), matched by actor id; masked once that car is gone."""
    from sim.interface import ACTOR_FIELDS, EGO_FIELDS, MAX_ACTORS
    from vla.inputs import FORECAST_SCALE, actor_forecasts

    steps = 31
    ego = np.zeros((steps, len(EGO_FIELDS)))
    ego[:, EGO_FIELDS.index("x")] = 25.0 * 0.1 * np.arange(steps)
    actors = np.zeros((steps, MAX_ACTORS, len(ACTOR_FIELDS)))
    col = {n: ACTOR_FIELDS.index(n) for n in ACTOR_FIELDS}
    for t in range(steps):
        # row order shuffled over time: the match must be by id, not by row
        a, b = (0, 1) if t % 2 else (1, 0)
        actors[t, a, [col["present"], col["id"], col["x"], col["y"], col["speed"]]] = [1, 7, 30 + 2.0 * t, 4.0, 20]
        if t < 15:  # the second car leaves the scene after 1.4 s
            actors[t, b, [col["present"], col["id"], col["x"], col["y"], col["speed"]]] = [1, 9, 5.0, 0.0, 0]
    target, mask = actor_forecasts(ego, actors, k=8, steps=steps - 1)
    assert target.shape == (30, 8, 2, 2) and mask.shape == (30, 8, 2)
    # at t = 0 the parked car (id 9, 5 m ahead) is nearest, then the moving one (id 7)
    assert mask[0, 0].tolist() == [True, False]  # id 9 seen at 1 s, gone at 2 s
    np.testing.assert_allclose(target[0, 0, 0], [0.0, 0.0])
    np.testing.assert_allclose(target[0, 1, 0] * FORECAST_SCALE, [20.0, 0.0])  # 2 m per step for 10 steps
    np.testing.assert_allclose(target[0, 1, 1] * FORECAST_SCALE, [40.0, 0.0])
    assert not mask[25].any()  # beyond the episode's end nothing is known
    assert not mask[:, 2:].any()  # absent tokens


def test_a_forecasting_policy_trains_its_head_on_recorded_episodes(episodes):
    policy = make_policy(episodes, cameras=False, observation="lane_frame", forecast_weight=0.5)
    data = DemoDataset(policy)
    for ep in episodes:
        data.add_episode(ep)
    batch = data.batch(np.arange(min(16, len(data))))
    assert batch.actor_future.shape == (batch.batch_size, 8, 2, 2)
    loss, logs = policy.compute_loss(batch)
    assert "forecast" in logs and np.isfinite(logs["forecast"])
    loss.backward()
    assert policy.model.forecast_head.weight.grad.abs().sum() > 0
    plain = make_policy(episodes, cameras=False, observation="lane_frame")
    assert plain.model.forecast_head is None and "forecast" not in plain.compute_loss(data.batch(np.arange(4)))[1]


def test_command_ngrams_count_every_gram_with_boundaries_and_ignore_pads():
    from vla.model import command_ngrams

    command = torch.tensor([[5, 6, 7, 0, 0], [9, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ids, valid = command_ngrams(command, mask, 1000)
    # "5 6 7": 3 unigrams, 4 bigrams (<b>5, 56, 67, 7<e>), 3 trigrams (<b>56, 567, 67<e>); "9": 1 + 2 + 0
    assert valid.sum(1).tolist() == [10, 3]
    assert ids.shape == valid.shape and int(ids.min()) >= 0 and int(ids.max()) < 1000
    again, _ = command_ngrams(command, mask, 1000)
    assert torch.equal(ids, again)
    # the pads' ids never matter: the same real ids with other pads give the same valid grams
    other, valid2 = command_ngrams(torch.tensor([[5, 6, 7, 3, 4]]), mask[:1], 1000)
    assert torch.equal(valid2, valid[:1]) and torch.equal(other[valid2], ids[:1][valid[:1]])
    # reversed words share the unigrams, not the bigrams
    rev, _ = command_ngrams(torch.tensor([[7, 6, 5, 0, 0]]), mask[:1], 1000)
    assert sorted(rev[0, :5][valid[0, :5]].tolist()) == sorted(ids[0, :5][valid[0, :5]].tolist())
    assert set(rev[0][valid[0]].tolist()) != set(ids[0][valid[0]].tolist())


def test_a_command_bag_policy_reads_one_command_token_trains_and_saves(episodes, tmp_path):
    policy = make_policy(episodes, cameras=False, command_bag=64)
    data = DemoDataset(policy)
    for ep in episodes:
        data.add_episode(ep)
    batch = data.batch(np.arange(8))
    emb, mask = policy.model.embed_command(batch.command, batch.command_mask)
    assert emb.shape == (8, 1, policy.config.d_model) and mask.shape == (8, 1) and bool(mask.all())
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    assert policy.model.command_bag.weight.grad is not None and policy.model.command_bag.weight.grad.abs().sum() > 0
    policy.eval()
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=4)
    policy.hear("change to the left lane")
    a = policy.predict_action_chunk(obs)
    policy.save(tmp_path / "bag")
    loaded = VLAPolicy.load(tmp_path / "bag")
    assert loaded.config.command_bag == 64
    loaded.hear("change to the left lane")
    np.testing.assert_array_equal(a, loaded.predict_action_chunk(obs))
    loaded.hear("slow down")
    assert not np.array_equal(a, loaded.predict_action_chunk(obs))


@pytest.mark.parametrize("bad, needle", [(dict(command_bag=-1), "integer >= 0"),
                                         (dict(command_bag=16, command="none"), "command 'ipa', 'text' or 'heard'")])
def test_command_bag_config_errors_name_the_field(bad, needle):
    with pytest.raises(ValueError, match=needle):
        PolicyConfig(**{**TINY, **bad})


def test_command_bag_dropout_acts_in_training_only_and_keeps_an_ngram(episodes):
    policy = make_policy(episodes, cameras=False, command_bag=64, command_bag_dropout=0.5)
    data = DemoDataset(policy)
    data.add_episode(episodes[0])
    batch = data.batch(np.arange(4))
    model = policy.model
    model.eval()
    first, _ = model.embed_command(batch.command, batch.command_mask)
    again, _ = model.embed_command(batch.command, batch.command_mask)
    torch.testing.assert_close(first, again)  # no dropout when predicting
    model.train()
    torch.manual_seed(1)
    dropped = [model.embed_command(batch.command, batch.command_mask)[0] for _ in range(4)]
    assert any(not torch.allclose(d, first) for d in dropped)
    assert all(torch.isfinite(d).all() and d.abs().sum() > 0 for d in dropped)
    # a one-phone command has 3 n-grams; dropping at 0.99 still keeps one of them (never an empty mean)
    one = make_policy(episodes, cameras=False, command_bag=64, command_bag_dropout=0.99).model.train()
    emb, mask = one.embed_command(torch.tensor([[7, 0, 0]]), torch.tensor([[True, False, False]]))
    assert bool(mask.all()) and emb.abs().sum() > 0
    with pytest.raises(ValueError, match="command_bag_dropout"):
        PolicyConfig(**{**TINY, "command_bag": 8, "command_bag_dropout": 1.0})


def test_a_thought_policy_decodes_after_the_label_it_names_and_saves(episodes, tmp_path):
    """command_thought: the KV-cached decoding (the head's own label fed back) equals the
    teacher-forced forward over the same label; the label token changes the plan; training
    swaps labels only in training; the policy saves, loads and acts identically."""
    from tokenizers_mm.corpus import LABELS

    policy = make_policy(episodes, cameras=False, command_label_weight=1.0, command_thought=True,
                         command_thought_noise=0.5).eval()
    data = DemoDataset(policy)
    data.add_episode(episodes[0])
    batch = data.batch(np.array([0, 5, 9]))
    assert batch.command_label is not None
    model = policy.model
    out = model.generate_chunk(batch, temperature=1.0, generator=torch.Generator().manual_seed(3), keep_prefix=True)
    own = type(batch)(**{**batch.__dict__, "action_bins": out.bins, "command_label": None})  # the head's own reading
    logits, residuals = model(own)
    torch.testing.assert_close(logits, out.bin_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(residuals.gather(-1, out.bins[..., None])[..., 0], out.residual, atol=1e-5, rtol=1e-5)
    # the kept prefix ends with the thought token: chunks scored after it match the forward
    one = type(batch)(**{k: (v[:1] if torch.is_tensor(v) else v) for k, v in own.__dict__.items()})
    one_out = model.generate_chunk(one, keep_prefix=True)
    assert one_out.prefix.length == model.prefix(one)[0].shape[1] + 1
    scored = model.continuation_logits(one_out.prefix, out.bins[:2])
    forced = type(one)(**{**one.__dict__, "action_bins": out.bins[:1]})
    torch.testing.assert_close(scored[:1], model(forced)[0], atol=1e-4, rtol=1e-4)
    # the thought is read: another label, other plan logits (eval mode: no swaps)
    said = model.command_head(model.action_features(batch)).argmax(-1)
    other = type(batch)(**{**batch.__dict__, "action_bins": out.bins, "command_label": (said + 1) % len(LABELS)})
    assert not torch.allclose(model(other)[0], logits, atol=1e-4)
    same = type(batch)(**{**batch.__dict__, "action_bins": out.bins, "command_label": said})
    torch.testing.assert_close(model(same)[0], logits, atol=1e-5, rtol=1e-5)
    # training: the true label, swapped at random with probability command_thought_noise
    model.train()
    torch.manual_seed(0)
    many = type(batch)(**{**batch.__dict__, "command_label": torch.zeros(400, dtype=torch.long)})
    swapped = (model.thought_labels(many, None, None) != 0).float().mean().item()
    assert 0.3 < swapped < 0.6  # 0.5 x 8/9 of draws land on another label
    model.eval()
    assert bool((model.thought_labels(many, None, None) == 0).all())
    loss, logs = policy.compute_loss(data.batch(np.arange(8)))
    loss.backward()
    assert model.thought.weight.grad is not None and model.thought.weight.grad.abs().sum() > 0
    assert "command_ce" in logs
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=4)
    policy.eval().hear("change to the left lane")
    a = policy.predict_action_chunk(obs)
    policy.save(tmp_path / "thought")
    loaded = VLAPolicy.load(tmp_path / "thought")
    assert loaded.config.command_thought and loaded.model.thought is not None
    loaded.hear("change to the left lane")
    np.testing.assert_array_equal(a, loaded.predict_action_chunk(obs))


@pytest.mark.parametrize("bad, needle", [(dict(command_thought=True), "command_label_weight > 0"),
                                         (dict(command_thought=True, command_label_weight=1.0, head="diffusion"),
                                          "head 'bins'"),
                                         (dict(command_thought_noise=1.5), "command_thought_noise")])
def test_command_thought_config_errors_name_the_field(bad, needle):
    with pytest.raises(ValueError, match=needle):
        PolicyConfig(**{**TINY, **bad})


def test_repeats_list_a_recorded_sample_that_many_times(episodes):
    """DemoDataset.add_episode(repeats=...): step t's recorded sample is listed repeats[t] times
    (drawn that much more often), and repeats that are not one integer >= 1 per step are refused."""
    policy = make_policy(episodes, cameras=False)
    ep = episodes[0]
    repeats = np.ones(ep.num_steps, np.int64)
    repeats[[3, 7]] = [4, 2]
    data = DemoDataset(policy)
    data.add_episode(ep, repeats)
    assert len(data) == ep.num_steps + 3 + 1
    steps = data._index[:, 1].tolist()
    assert steps.count(3) == 4 and steps.count(7) == 2 and steps.count(5) == 1
    one = DemoDataset(policy)
    one.add_episode(ep)
    assert len(one) == ep.num_steps
    for bad in (repeats[:-1], np.zeros(ep.num_steps, np.int64), np.full(ep.num_steps, 1.5)):
        with pytest.raises(ValueError, match="repeats must be"):
            DemoDataset(policy).add_episode(ep, bad)
