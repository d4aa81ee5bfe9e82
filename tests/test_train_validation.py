"""``vla train bc --val-data``: the open-loop loss on held-out expert episodes and on the
training episodes during training, the measure of memorization (issue "Policies that drive",
item 2). Evaluating must not change what is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from app import cli


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "1", "--seed", "5",
                     "--cameras", "none", "--out", str(root / "data")]) == 0
    return root / "data"


BC = ["train", "bc", "--steps", "12", "--batch-size", "8", "--size", "tiny", "--no-cameras"]


def test_validation_is_logged_and_does_not_change_training(light_episode, held_out, tmp_path, capsys):
    assert cli.main([*BC, "--data", str(light_episode), "--out", str(tmp_path / "plain")]) == 0
    assert cli.main([*BC, "--data", str(light_episode), "--out", str(tmp_path / "val"),
                     "--val-data", str(held_out), "--val-every", "5", "--val-samples", "64"]) == 0
    out = capsys.readouterr().out
    plain = load_file(tmp_path / "plain" / "policy" / "model.safetensors")
    val = load_file(tmp_path / "val" / "policy" / "model.safetensors")
    assert plain.keys() == val.keys() and all(np.array_equal(plain[k], val[k]) for k in plain)
    rows = [json.loads(line) for line in (tmp_path / "val" / "train" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]
    for r in rows:
        assert np.isfinite(r["val_loss"]) and np.isfinite(r["train_loss"]) and 0 <= r["val_bin_acc"] <= 1
    assert rows[0]["train_loss"] != rows[1]["train_loss"]  # the policy trained between them
    summary = json.loads(out.strip().splitlines()[-2])  # the JSON line before "wrote ..."
    assert {"val_loss", "train_loss", "loss"} <= summary.keys()
    assert "open-loop validation: 64 held-out samples of 1 episodes, 64 of 1 training episodes" in out
    assert "open-loop loss at step 12: training episodes" in out


def test_open_loop_loss_is_repeatable_and_keeps_the_mode(light_episode):
    import torch

    from sim.storage import read_episodes
    from vla.config import SIZES, PolicyConfig
    from vla.data import DemoDataset, open_loop_loss
    from vla.policy import VLAPolicy, default_action_tokenizer

    torch.manual_seed(0)
    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action))
    data = DemoDataset(policy)
    for ep in read_episodes(light_episode, load_frames=False):
        data.add_episode(ep)
    idx = np.arange(len(data))
    policy.train()
    a = open_loop_loss(policy, data, idx, batch_size=7)
    b = open_loop_loss(policy, data, idx, batch_size=len(idx))
    assert policy.training
    assert a.keys() == b.keys() and {"loss", "bin_acc"} <= a.keys()
    assert a["loss"] == pytest.approx(b["loss"], rel=0.05)  # batch means weighted by size
    assert open_loop_loss(policy, data, idx, batch_size=7) == a
    augmented = DemoDataset(policy, augment_commands=1.0)  # every sample would hear another phrasing
    for ep in read_episodes(light_episode, load_frames=False):
        augmented.add_episode(ep)
    assert open_loop_loss(policy, augmented.plain_view(), idx, batch_size=7) == a  # ... but not in its plain view
    with pytest.raises(ValueError, match="no samples"):
        open_loop_loss(policy, data, idx[:0])


def test_a_finished_run_gets_its_figures_without_training(light_episode, held_out, tmp_path, capsys):
    """--val-data on a finished run (its checkpoint had no evaluation) trains nothing and prints
    the open-loop figures of the saved policy."""
    run = tmp_path / "run"
    assert cli.main([*BC, "--data", str(light_episode), "--out", str(run)]) == 0
    before = load_file(run / "policy" / "model.safetensors")
    capsys.readouterr()
    assert cli.main([*BC, "--data", str(light_episode), "--out", str(run), "--val-data", str(held_out)]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "open-loop loss at step 12" in out
    after = load_file(run / "policy" / "model.safetensors")
    assert all(np.array_equal(before[k], after[k]) for k in before)
