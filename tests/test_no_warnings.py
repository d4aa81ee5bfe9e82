"""No warnings on a clean run (issue "Reliability", item 5): evaluating a learned policy calls
transformers / torch through their current APIs (the decoder no longer hands transformers a
legacy past_key_values tuple), so a short ``vla eval`` emits no warning at all."""

from __future__ import annotations

import warnings

from app import cli
from vla.config import SIZES, PolicyConfig
from vla.policy import VLAPolicy, default_action_tokenizer


def test_eval_of_a_learned_policy_warns_nothing(tmp_path, capsys):
    config = PolicyConfig(**SIZES["tiny"], cameras=True, camera_width=32, camera_height=32, action="plan",
                          observation="lane_frame")
    VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(tmp_path / "policy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code = cli.main(["eval", "--policy", str(tmp_path / "policy"), "--scenario", "highway", "--density",
                         "light", "--episodes", "1", "--out", str(tmp_path / "out")])
    capsys.readouterr()
    assert code == 0
    assert not seen, [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in seen]
