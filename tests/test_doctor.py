"""vla doctor: every problem under a directory is listed, nothing is changed, the exit code says
whether anything was wrong."""

from __future__ import annotations

import hashlib

import pytest

from app import cli


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def run_dir(tmp_path):
    from sim.storage import export_d4rl
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(tmp_path / "run" / "policy")
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "3",
                     "--cameras", "none", "--out", str(tmp_path / "run" / "data")]) == 0
    export_d4rl(tmp_path / "run" / "data", tmp_path / "run" / "d4rl.h5")
    return tmp_path / "run"


def test_a_healthy_run_is_all_fine(run_dir, capsys):
    capsys.readouterr()
    assert cli.main(["doctor", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "episodes: 3 of 3 readable" in out and "all fine" in out and "BAD" not in out
    assert "ok   checkpoint" in out and "ok   d4rl" in out


def test_every_problem_is_listed_and_nothing_changes(run_dir, capsys):
    episodes = sorted((run_dir / "data" / "episodes").glob("ep_*.h5"))
    episodes[0].write_bytes(episodes[0].read_bytes()[:1000])
    episodes[2].write_bytes(b"garbage")
    (run_dir / "policy" / "policy.json").write_text("{broken")
    (run_dir / "data" / "metrics.json").write_text("[1,")
    before = _digest(run_dir)
    capsys.readouterr()
    assert cli.main(["doctor", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert out.count("BAD") == 4, out
    assert "episodes: 1 of 3 readable" in out and "4 with problems" in out
    assert "policy.json" in out and "metrics.json" in out
    assert _digest(run_dir) == before


def test_a_missing_path_is_one_error(tmp_path, capsys):
    assert cli.main(["doctor", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("vla: error: ")
