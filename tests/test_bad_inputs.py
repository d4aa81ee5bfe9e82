"""The bad-input corpus (issue "Reliability", item 1): every case is a command given a damaged
file or an impossible flag. Each must end with exit code 2 and ONE line ``vla: error: ...``
that names what is wrong, print no traceback, and change nothing already on disk.

The inputs are built once per module (a tiny policy checkpoint, one recorded episode, a D4RL
file) and each case damages a fresh copy of what it needs."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from app import cli


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny blind plan policy, a dataset of one expert episode, a D4RL file of it."""
    from sim.storage import export_d4rl
    from vla.config import SIZES, PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs")
    config = PolicyConfig(**SIZES["tiny"], cameras=False, action="plan", observation="lane_frame")
    VLAPolicy(config, default_action_tokenizer(config.n_bins, config.action)).save(root / "policy")
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "1",
                     "--cameras", "none", "--out", str(root / "data")]) == 0
    export_d4rl(root / "data", root / "d4rl.h5")
    return root


def _tree_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for top in paths:
        for p in sorted([top] if top.is_file() else top.rglob("*")):
            if p.is_file():
                h.update(str(p).encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def _episode_file(data: Path) -> Path:
    return next((data / "episodes").glob("ep_*.h5"))


def _edit_h5(path: Path, edit: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def _set(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        value = fn(f[name][()])
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=value)
        for k, v in attrs.items():
            f[name].attrs[k] = v
    return edit


def _policy_json(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        path = d / "policy" / "policy.json"
        meta = json.loads(path.read_text())
        out = edit(meta)
        path.write_text(out if isinstance(out, str) else json.dumps(meta if out is None else out))
    return damage


def _config(**changes) -> Callable[[Path], None]:
    def edit(meta: dict) -> None:
        meta["config"].update(changes)
    return _policy_json(edit)


def _weights(data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        path = d / "policy" / "model.safetensors"
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return damage


def _episode(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    return lambda d: _edit_h5(_episode_file(d / "data"), edit)


def _d4rl(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    return lambda d: _edit_h5(d / "d4rl.h5", edit)


def _nothing(d: Path) -> None:
    pass


EVAL = ["eval", "--policy", "{d}/policy", "--episodes", "1", "--scenario", "highway", "--density", "light"]
BC = ["train", "bc", "--data", "{d}/data", "--steps", "2", "--no-cameras", "--size", "tiny"]
IQL = ["train", "iql", "--data", "{d}/d4rl.h5", "--steps", "2", "--eval-episodes", "0"]
DAGGER = ["dagger", "--iterations", "1", "--expert-episodes", "1", "--rollouts", "1", "--train-steps", "2",
          "--eval-episodes", "1", "--no-cameras"]

# (case id, argv with {d} for the case directory, damage to apply, what the error line must say)
CASES = [
    # policy checkpoints (vla eval)
    ("ckpt-weights-truncated", EVAL, _weights(lambda b: b[: len(b) // 2]), "model.safetensors"),
    ("ckpt-weights-garbage", EVAL, _weights(b"\x00garbage" * 100), "model.safetensors"),
    ("ckpt-weights-empty", EVAL, _weights(b""), "model.safetensors"),
    ("ckpt-json-not-json", EVAL, _policy_json(lambda m: "{not json"), "policy.json"),
    ("ckpt-json-empty", EVAL, _policy_json(lambda m: ""), "policy.json"),
    ("ckpt-json-a-list", EVAL, _policy_json(lambda m: [1, 2]), "policy.json"),
    ("ckpt-json-no-config", EVAL, _policy_json(lambda m: {k: v for k, v in m.items() if k != "config"}), "config"),
    ("ckpt-config-wrong-type", EVAL, _config(n_layers="wide"), "n_layers"),
    ("ckpt-config-unknown-field", EVAL, _config(wings=2), "wings"),
    ("ckpt-config-bad-value", EVAL, _config(n_bins=1), "n_bins"),
    ("ckpt-weights-do-not-match", EVAL, _config(d_model=64), "model.safetensors"),
    ("ckpt-unknown-action", EVAL, _config(action="teleport"), "action"),
    ("ckpt-unknown-observation", EVAL, _config(observation="sonar"), "observation"),
    ("ckpt-no-weights", EVAL, lambda d: (d / "policy" / "model.safetensors").unlink(), "not a policy checkpoint"),
    # eval flags
    ("eval-episodes-0", [*EVAL, "--episodes", "0"], _nothing, "--episodes"),
    ("eval-scenario", [*EVAL, "--scenario", "moon"], _nothing, "moon"),
    ("eval-density", [*EVAL, "--density", "jammed"], _nothing, "jammed"),
    ("eval-seed", [*EVAL, "--seed", "-4"], _nothing, "--seed"),
    ("eval-out-is-a-file", [*EVAL, "--out", "{d}/policy/policy.json"], _nothing, "is a file"),
    ("eval-temperature-nan", [*EVAL, "--temperature", "nan"], _nothing, "--temperature"),
    ("eval-best-of-no-scorer", [*EVAL, "--best-of", "2"], _nothing, "--scorer"),
    ("eval-phrasings", [*EVAL, "--phrasings", "klingon"], _nothing, "klingon"),
    ("eval-talk-at-the-junction", [*EVAL, "--talk", "drive", "--scenario", "intersection"], _nothing, "--talk drive"),
    ("eval-talk", [*EVAL, "--talk", "often"], _nothing, "--talk"),
    ("eval-phrasings-tsv-missing", [*EVAL, "--phrasings", "{d}/mine.tsv"], _nothing, "mine.tsv"),
    ("eval-phrasings-tsv-no-header", [*EVAL, "--phrasings", "{d}/mine.tsv"],
     lambda d: (d / "mine.tsv").write_text("lane_left\ten\tgo left\n"), "header"),
    ("eval-phrasings-tsv-unknown-goal", [*EVAL, "--phrasings", "{d}/mine.tsv"],
     lambda d: (d / "mine.tsv").write_text("goal\tlanguage\tphrasing\nfly\ten\tup we go\n"), "mine.tsv:2"),
    ("eval-phrasings-tsv-missing-column", [*EVAL, "--phrasings", "{d}/mine.tsv"],
     lambda d: (d / "mine.tsv").write_text("goal\tlanguage\tphrasing\nlane_left\tgo left\n"), "mine.tsv:2"),
    ("eval-phrasings-tsv-empty-phrasing", [*EVAL, "--phrasings", "{d}/mine.tsv"],
     lambda d: (d / "mine.tsv").write_text("goal\tlanguage\tphrasing\nlane_left\ten\t \n"), "empty phrasing"),
    ("eval-snr-db", [*EVAL, "--snr-db", "loud"], _nothing, "--snr-db"),
    ("eval-phrasings-tsv-bad-language", [*EVAL, "--phrasings", "{d}/mine.tsv"],
     lambda d: (d / "mine.tsv").write_text("goal\tlanguage\tphrasing\nlane_left\tfr\tà gauche\n"), "'fr'"),
    # episode datasets (vla train bc)
    ("data-missing", [*BC[:3], "{d}/nowhere", *BC[4:]], _nothing, "nowhere"),
    ("data-empty-dir", BC, lambda d: shutil.rmtree(d / "data" / "episodes") or (d / "data" / "episodes").mkdir(),
     "no episodes"),
    ("data-episode-truncated", BC, lambda d: _episode_file(d / "data").write_bytes(
        _episode_file(d / "data").read_bytes()[:2000]), "ep_"),
    ("data-episode-garbage", BC, lambda d: _episode_file(d / "data").write_bytes(b"not hdf5" * 50), "ep_"),
    ("data-nan-actions", BC, _episode(_set("actions", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3,
                                                                          np.nan, a))), "actions"),
    ("data-inf-ego", BC, _episode(_set("ego", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5,
                                                                  np.inf, a))), "ego"),
    ("data-actions-wrong-shape", BC, _episode(_set("actions", lambda a: np.zeros((a.shape[0], 3), a.dtype))),
     "actions"),
    ("data-no-actions", BC, _episode(lambda f: f.__delitem__("actions")), "actions"),
    ("data-dataset-json-corrupt", BC, lambda d: (d / "data" / "dataset.json").write_text("{oops"), "dataset.json"),
    # training flags
    ("bc-steps-0", [*BC, "--steps", "0"], _nothing, "--steps"),
    ("bc-lr-nan", [*BC, "--lr", "nan"], _nothing, "--lr"),
    ("bc-lr-negative", [*BC, "--lr", "-1"], _nothing, "--lr"),
    ("bc-batch-0", [*BC, "--batch-size", "0"], _nothing, "--batch-size"),
    ("bc-forecast-negative", [*BC, "--forecast-weight", "-1"], _nothing, "--forecast-weight"),
    ("bc-replan-0", [*BC, "--replan-every", "0"], _nothing, "replan"),
    ("bc-val-data-missing", [*BC, "--val-data", "{d}/nowhere"], _nothing, "nowhere"),
    ("bc-val-data-is-trained-on", [*BC, "--val-data", "{d}/data"], _nothing, "also in --data"),
    ("bc-val-every-negative", [*BC, "--val-data", "{d}/nowhere", "--val-every", "-1"], _nothing, "--val-every"),
    ("bc-val-every-without-val-data", [*BC, "--val-every", "5"], _nothing, "need --val-data"),
    ("bc-paraphrase-range", [*BC, "--paraphrase", "1.5"], _nothing, "--paraphrase"),
    ("bc-paraphrase-blind", [*BC, "--paraphrase", "0.5", "--command", "none"], _nothing, "paraphrase"),
    ("bc-balance-speed-control", [*BC, "--balance-speed", "--action", "control"], _nothing, "--balance-speed"),
    # D4RL files (vla train iql)
    ("d4rl-missing", [*IQL[:3], "{d}/nothing.h5", *IQL[4:]], _nothing, "nothing.h5"),
    ("d4rl-not-hdf5", IQL, lambda d: (d / "d4rl.h5").write_bytes(b"plain text" * 10), "d4rl.h5"),
    ("d4rl-no-rewards", IQL, _d4rl(lambda f: f.__delitem__("rewards")), "rewards"),
    ("d4rl-short-actions", IQL, _d4rl(_set("actions", lambda a: a[:-1])), "actions"),
    ("d4rl-nan-rewards", IQL, _d4rl(_set("rewards", lambda a: np.full_like(a, np.nan))), "rewards"),
    ("d4rl-string-rewards", IQL, _d4rl(_set("rewards", lambda a: np.array([b"x"] * len(a)))), "rewards"),
    # DAgger sessions
    ("dagger-iterations", [*DAGGER, "--iterations", "-1"], _nothing, "--iterations"),
    ("dagger-rollouts", [*DAGGER, "--rollouts", "-1"], _nothing, "--rollouts"),
    ("dagger-scenario", [*DAGGER, "--scenario", "highway,moon"], _nothing, "moon"),
    ("dagger-density", [*DAGGER, "--density", "medium,jammed"], _nothing, "jammed"),
    ("dagger-expert-episodes", [*DAGGER, "--expert-episodes", "0"], _nothing, "expert"),
    ("dagger-beta", [*DAGGER, "--beta0", "1.5"], _nothing, "beta"),
    ("dagger-balance-speed-control", [*DAGGER, "--balance-speed", "--action", "control"], _nothing, "--balance-speed"),
    ("dagger-val-data-missing", [*DAGGER, "--val-data", "{d}/nowhere"], _nothing, "nowhere"),
    ("dagger-val-data-is-expert-data", [*DAGGER, "--expert-data", "{d}/data", "--val-data", "{d}/data"], _nothing,
     "also expert data"),
    ("dagger-val-samples-without-val-data", [*DAGGER, "--val-samples", "5"], _nothing, "needs --val-data"),
    ("dagger-threads-negative", [*DAGGER, "--threads", "-1"], _nothing, "threads must be >= 0"),
    ("dagger-out-is-a-file", [*DAGGER, "--out", "{d}/d4rl.h5"], _nothing, "is a file"),
    ("dagger-start-from-missing", [*DAGGER, "--start-from", "{d}/nope"], _nothing, "nope"),
    ("dagger-start-from-other-size", [*DAGGER, "--start-from", "{d}/policy", "--size", "base"], _nothing, "d_model"),
    ("dagger-expert-data-missing", [*DAGGER, "--expert-data", "{d}/none"], _nothing, "none"),
    ("dagger-expert-data-too-few", [*DAGGER, "--expert-data", "{d}/data", "--expert-episodes", "3"], _nothing,
     "holds 1 episodes"),
]


@pytest.mark.parametrize(("argv", "damage", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(base, tmp_path, capsys, argv, damage, needle):
    d = tmp_path / "case"
    shutil.copytree(base, d)
    damage(d)
    argv = [a.replace("{d}", str(d)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(d / "out")]
    before = _tree_hash([d])
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err and err.startswith("vla: error: ") and err.count("\n") == 1, err[-2000:]
    assert needle in err, err
    assert _tree_hash([d]) == before, "the failed command changed files on disk"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
