"""The speed balance of the training samples (``DemoDataset(balance_speed=True)``, ``--balance-speed``)."""

from __future__ import annotations

import numpy as np
import pytest

from vla.data import MAX_BALANCE_REPEATS, SPEED_CLASS_MPS, DemoDataset, balance_repeats, speed_classes


def test_balance_repeats_even_out_the_classes_of_each_label_up_to_the_cap():
    groups = np.array([[0, 1]] * 6 + [[0, 0]] * 3 + [[0, 2]] * 1  # label 0: 6 hold, 3 slower, 1 faster
                      + [[1, 1]] * 4  # label 1: one class only
                      + [[2, 1]] * 100 + [[2, 2]] * 1)  # label 2: 100 to 1, capped
    rep = balance_repeats(groups)
    assert rep[:6].tolist() == [1] * 6 and rep[6:9].tolist() == [2] * 3 and rep[9] == 6
    assert rep[10:14].tolist() == [1] * 4
    assert (rep[14:114] == 1).all() and rep[114] == MAX_BALANCE_REPEATS
    assert balance_repeats(np.zeros((0, 2), np.int64)).shape == (0,)


def test_speed_classes_read_the_last_known_waypoint():
    from vla.policy import default_action_tokenizer

    tok = default_action_tokenizer(64, "plan")
    gain = np.array([-2.0, 0.0, 2.0, 0.2 * SPEED_CLASS_MPS, 0.0])
    plans = np.zeros((5, 4, 2))
    plans[:, :, 0] = gain[:, None] * np.linspace(0.25, 1.0, 4)
    plans[4, 3, 0] = 5.0  # an unknown last waypoint that would speed up
    mask = np.ones((5, 4), bool)
    mask[4, 3] = False
    bins, residual = tok.encode(plans)
    assert speed_classes(tok, bins, residual, mask).tolist() == [0, 1, 2, 1, 1]


@pytest.fixture(scope="module")
def plan_episode():
    from sim.highway import EmbeddedDrivingEnv
    from sim.rollout import ExpertPolicy, run_episode

    env = EmbeddedDrivingEnv("highway", "light", goals="any")
    return run_episode(env, ExpertPolicy(env), seed=2, record_frames=False, plan_horizon=20,
                       goal_labels=True, goal_futures=True, plan_every=4)


def _plan_policy(action="plan"):
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action=action)
    return VLAPolicy(config, default_action_tokenizer(16, action))


def test_a_balanced_dataset_lists_each_sample_by_its_class_and_trains(plan_episode):
    policy = _plan_policy()
    plain, balanced = DemoDataset(policy, goal_relabel=True), DemoDataset(policy, goal_relabel=True, balance_speed=True)
    plain.add_episode(plan_episode), balanced.add_episode(plan_episode)
    rep = balance_repeats(balanced._groups)
    assert len(balanced) == int(rep.sum()) > len(plain)
    assert balanced.counterfactual_samples == plain.counterfactual_samples
    np.testing.assert_array_equal(np.unique(balanced._index, axis=0), np.unique(plain._index, axis=0))
    # each listed row is drawn its class's repeats times, and within a label no class is drawn
    # less than the most common one's count / the cap
    rows, counts = np.unique(balanced._index, axis=0, return_counts=True)
    order = np.lexsort(plain._index.T[::-1])
    np.testing.assert_array_equal(counts, rep[order])
    for label in np.unique(balanced._groups[:, 0]):
        same = balanced._groups[:, 0] == label
        drawn = [int(rep[same][balanced._groups[same, 1] == k].sum()) for k in range(3)]
        listed = [int((balanced._groups[same, 1] == k).sum()) for k in range(3)]
        assert min(d for d in drawn if d) >= max(listed) / MAX_BALANCE_REPEATS / 1.5
    # the classes are the labels' own: recompute them from a batch of each group
    row = int(np.flatnonzero(balanced._groups[:, 1] != 1)[0])
    b = balanced.batch(np.flatnonzero((balanced._index == plain._index[row]).all(1))[:1])
    klass = speed_classes(policy.action_tokenizer, b.action_bins.numpy(), b.action_residual.numpy(),
                          b.action_mask.numpy())
    assert klass[0] == balanced._groups[row, 1]
    # a second episode makes the draw again
    before = len(balanced)
    balanced.add_episode(plan_episode)
    assert len(balanced) == 2 * before


def test_balance_speed_needs_a_plan_policy(plan_episode):
    from methods.dagger import DaggerConfig
    from vla.config import PolicyConfig

    with pytest.raises(ValueError, match="--balance-speed balances plans by their speed"):
        DemoDataset(_plan_policy("control"), balance_speed=True)
    with pytest.raises(ValueError, match="--balance-speed"):
        DaggerConfig(policy=PolicyConfig(action="control"), balance_speed=True)
    assert DaggerConfig(policy=PolicyConfig(action="plan"), balance_speed=True).balance_speed
