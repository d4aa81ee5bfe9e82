"""Crash-safe, append-only episode storage (HDF5 via h5py) and a D4RL-layout export.

Dataset directory
-----------------
::

    DIR/dataset.json            format version + creation info (may be absent; read when present)
    DIR/.lock                   flock'ed by the one EpisodeWriter that may append
    DIR/episodes/ep_000000.h5   one self-describing HDF5 file per finished episode
    DIR/episodes/ep_000001.h5   ...

An episode is written to ``.ep_NNNNNN.h5.tmp`` in the same directory, flushed, closed,
fsync'ed, ``os.replace``'d into place (atomic) and the directory is fsync'ed. Appending only
adds files, so a kill -9 at any moment leaves every earlier episode readable. Readers ignore
``.tmp`` files; a writer removes them when it opens the directory. One writer per directory
at a time (enforced with an flock): parallel rollout workers each write their own directory.

Episode file (``FORMAT_VERSION`` 1)
-----------------------------------
Root attrs: ``format_version`` (int), ``meta`` (JSON of ``Episode.meta()``: scenario,
density, seed, goal, outcome, route_length, policy, cameras, dt, num_steps). Datasets, all
with Fletcher-32 checksums so silent corruption is caught on read, each with an attr
``fields`` naming the columns of its last axis (checked on read against ``sim.interface``):
``ego`` (T+1, 13) f8, ``actors`` (T+1, MAX_ACTORS, 8) f8, ``actions`` (T, 2) f4,
``expert_actions`` (T, 2) f4 (NaN = not queried), ``events`` (T, 6) f4, ``reward_terms``
(T, 6) f4, ``frames`` (T, N_cams, H, W, 3) u1 (one step per chunk) only when recorded, and
``expert_plans`` (T, P, 2) f4 (the expert's own next P actions from each state, NaN past their
end; ``Episode.expert_plans``) only when recorded, and ``goal_labels`` (T, G, 2) f4 (the
expert's action under each highway goal, attr ``goals`` = ``HIGHWAY_GOAL_LABELS``;
``Episode.goal_labels``) only when recorded, and ``expert_futures`` (T, P, 4) f4 (the ego
poses of the expert's own continuation from each state, ``POSE_FIELDS``;
``Episode.expert_futures``) only when recorded, and ``goal_futures`` (T, G, P, 4) f4 (the
same under every other highway goal, attr ``goals``; ``Episode.goal_futures``) only when recorded.

D4RL export (``export_d4rl``)
-----------------------------
One HDF5 file, N = sum of T over episodes, one row per transition s_t -> s_{t+1}:
``observations`` / ``next_observations`` (N, STATE_DIM) f4 from ``sim.features.state_vector``;
``actions`` (N, 2) f4, the EXECUTED [accel m/s^2, steer rad]; ``expert_actions`` (N, 2) f4;
``rewards`` (N,) f4 = ``RewardWeights.reward(reward_terms)``, i.e.
``r_t = sum_k w_k * reward_terms[t, k]`` over ``sim.interface.REWARD_FIELDS``;
``terminals`` (N,) bool, True on the last step of an episode that ended by collision,
off_road or route_deviation; ``timeouts`` (N,) bool, True on the last step when the outcome is timeout or
route_complete (the episode was cut, not ended by failure: bootstrap from it);
``infos/episode_index`` (N,) i8 (the NNNNNN of the episode file), ``infos/step`` (N,) i4.
Root attrs: ``feature_names``, ``reward_weights``, ``action_fields`` (JSON), ``source``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from sim.atomic import atomic_output
from sim.cameras import CameraSpec
from sim.episode import OUTCOMES, Episode
from sim.features import STATE_DIM, state_feature_names, state_vector
from sim.interface import (ACTION_FIELDS, ACTOR_FIELDS, EGO_FIELDS, EVENT_FIELDS, POSE_FIELDS, REWARD_FIELDS, Goal,
                           RewardWeights)
from sim.route import ROUTE_FIELDS
from sim.scenarios import HIGHWAY_GOAL_LABELS

FORMAT_VERSION = 1
EPISODES_DIR = "episodes"
COMPRESSIONS = ("lzf", "gzip", None)
_EPISODE_RE = re.compile(r"ep_(\d{6,})\.h5")
TABLES: dict[str, tuple[tuple[str, ...], type]] = {
    "ego": (EGO_FIELDS, np.float64),
    "actors": (ACTOR_FIELDS, np.float64),
    "actions": (ACTION_FIELDS, np.float32),
    "expert_actions": (ACTION_FIELDS, np.float32),
    "events": (EVENT_FIELDS, np.float32),
    "reward_terms": (REWARD_FIELDS, np.float32),
}
"""Per-step datasets: column names of the last axis and the dtype stored / returned."""
OPTIONAL_TABLES: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]], int]] = {
    "expert_plans": (ACTION_FIELDS, {}, 3),
    "goal_labels": (ACTION_FIELDS, {"goals": HIGHWAY_GOAL_LABELS}, 3),
    "expert_futures": (POSE_FIELDS, {}, 3),
    "goal_futures": (POSE_FIELDS, {"goals": HIGHWAY_GOAL_LABELS}, 4),
    "route": (ROUTE_FIELDS, {}, 2),
}
"""Per-step (T, ..., F) float32 tables an episode may carry (the ``Episode`` fields of the same
names): the column names of the last axis (attr ``fields``), further attrs (checked on read)
and the number of axes. ``PER_STATE`` ones have a row per state, T+1, like ``ego``."""
PER_STATE = ("route",)
NAN_ALLOWED = ("expert_actions", *(name for name in OPTIONAL_TABLES if name not in PER_STATE))
"""Tables where NaN means "not recorded"; a per-state table is always measured, so finite."""
D4RL_KEYS: dict[str, tuple[tuple[int, ...], type]] = {
    "observations": ((STATE_DIM,), np.float32),
    "next_observations": ((STATE_DIM,), np.float32),
    "actions": ((len(ACTION_FIELDS),), np.float32),
    "expert_actions": ((len(ACTION_FIELDS),), np.float32),
    "rewards": ((), np.float32),
    "terminals": ((), bool),
    "timeouts": ((), bool),
    "infos/episode_index": ((), np.int64),
    "infos/step": ((), np.int32),
}
"""Export keys: per-row shape and dtype."""
TERMINAL_OUTCOMES = ("collision", "off_road", "route_deviation")
"""Failures: the D4RL ``terminals`` flag (no bootstrapping past them)."""
TIMEOUT_OUTCOMES = ("timeout", "route_complete", "sim_error")
"""Cut episodes: the D4RL ``timeouts`` flag (a simulator fault cuts an episode too: what came
next is unknown, not a failure of the driver)."""
if set(TERMINAL_OUTCOMES) | set(TIMEOUT_OUTCOMES) != set(OUTCOMES):
    raise RuntimeError(f"every episode outcome must be a terminal or a timeout: {OUTCOMES}")


class DatasetError(ValueError):
    """A dataset directory or file is missing, corrupted or of an unknown layout."""


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(" ".join(f"{path}: {problem}".split()))


def _check_values(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        bad = np.isinf(arr) if name in NAN_ALLOWED else ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise _fail(path, f"dataset {name!r} has {int(bad.sum())} non-finite values (first at {first})")


def write_episode(path: str | Path, ep: Episode, compression: str | None = "lzf") -> None:
    """Write ``ep`` to ``path`` atomically (temp file in the same directory + rename)."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    path = Path(path)
    arrays = {name: np.asarray(getattr(ep, name), dtype=dt) for name, (_, dt) in TABLES.items()}
    _check_values(path, arrays)
    optional = {name: np.asarray(getattr(ep, name), dtype=np.float32)
                for name in OPTIONAL_TABLES if getattr(ep, name) is not None}
    _check_values(path, optional)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["meta"] = json.dumps(ep.meta())
        for name, arr in arrays.items():
            ds = f.create_dataset(name, data=arr, compression=compression, fletcher32=True)
            ds.attrs["fields"] = list(TABLES[name][0])
        for name, arr in optional.items():
            ds = f.create_dataset(name, data=arr, compression=compression, fletcher32=True)
            columns, attrs, _ = OPTIONAL_TABLES[name]
            for key, names in {"fields": columns, **attrs}.items():
                ds.attrs[key] = list(names)
        if ep.frames is not None:
            chunks = (1, *ep.frames.shape[1:]) if ep.num_steps > 0 else True
            f.create_dataset("frames", data=ep.frames, chunks=chunks,
                             compression=compression, fletcher32=True)


def _names(ds: h5py.Dataset, key: str) -> list[str]:
    """A dataset's list-of-names attribute (empty when missing)."""
    raw = ds.attrs.get(key)
    return [] if raw is None else [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(raw)]


def _read_table(f: h5py.File, path: Path, name: str,
                layout: tuple[tuple[str, ...], type] | None = None) -> np.ndarray:
    if name not in f:
        raise _fail(path, f"missing dataset {name!r}")
    ds = f[name]
    expected, dtype = layout or TABLES[name]
    got = _names(ds, "fields")
    if tuple(got) != expected:
        diff = [f"{g!r} vs {e!r}" for g, e in zip(got, expected) if g != e]
        extra = [repr(x) for x in got[len(expected):]] + [repr(x) for x in expected[len(got):]]
        raise _fail(path, f"dataset {name!r} fields differ from sim.interface (file vs code): "
                          f"{', '.join(diff + extra)}")
    if ds.ndim < 2 or ds.shape[-1] != len(expected):
        raise _fail(path, f"dataset {name!r} has shape {ds.shape}, expected (T, ..., {len(expected)})")
    return np.asarray(ds[()], dtype=dtype)


def _episode_from_file(f: h5py.File, path: Path, load_frames: bool) -> Episode:
    version = f.attrs.get("format_version")
    if version is None or int(version) != FORMAT_VERSION:
        raise _fail(path, f"format_version {version} is not supported (this code reads {FORMAT_VERSION})")
    if "meta" not in f.attrs:
        raise _fail(path, "missing root attribute 'meta'")
    meta = json.loads(f.attrs["meta"])
    arrays = {name: _read_table(f, path, name) for name in TABLES}
    _check_values(path, arrays)
    if int(meta["num_steps"]) != arrays["actions"].shape[0]:
        raise _fail(path, f"meta says {meta['num_steps']} steps, actions has {arrays['actions'].shape[0]}")
    frames = None
    if load_frames and "frames" in f:
        if f["frames"].dtype != np.uint8:
            raise _fail(path, f"dataset 'frames' has dtype {f['frames'].dtype}, expected uint8")
        frames = f["frames"][()]
    optional = {}
    steps = arrays["actions"].shape[0]
    for name, (columns, attrs, ndim) in OPTIONAL_TABLES.items():
        if name not in f:
            continue
        arr = _read_table(f, path, name, (columns, np.float32))
        rows = steps + 1 if name in PER_STATE else steps
        if arr.ndim != ndim or arr.shape[0] != rows:
            middle = {2: "", 3: "K, ", 4: "G, K, "}[ndim]
            raise _fail(path, f"dataset {name!r} has shape {arr.shape}, expected ({rows}, {middle}{len(columns)})")
        for key, expected in attrs.items():
            if tuple(_names(f[name], key)) != expected:
                raise _fail(path, f"dataset {name!r} has {key} {_names(f[name], key)}, this code has {list(expected)}")
        optional[name] = arr
    _check_values(path, optional)
    scalars = {k: meta[k] for k in ("scenario", "density", "seed", "outcome", "route_length", "policy", "dt")}
    scalars["error"] = str(meta.get("error", ""))
    scalars["heard_at"] = int(meta.get("heard_at", 0))
    cameras = tuple(CameraSpec.from_dict(c) for c in meta["cameras"])
    return Episode(goal=Goal.from_dict(meta["goal"]), cameras=cameras, frames=frames, **optional,
                   **scalars, **arrays)


def read_episode(path: str | Path, load_frames: bool = True) -> Episode:
    """Read one episode file; ``load_frames=False`` skips the frames (fast, for metrics)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return _episode_from_file(f, path, load_frames)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise _fail(path, f"unreadable episode ({type(e).__name__}: {e})") from e


def _index(path: Path) -> int | None:
    m = _EPISODE_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def _scan(episodes_dir: Path) -> list[tuple[int, Path]]:
    found = [(_index(p), p) for p in episodes_dir.iterdir()]
    return sorted((i, p) for i, p in found if i is not None and p.is_file())


def episode_paths(root: str | Path) -> list[Path]:
    """Complete episode files of a dataset directory, in index order (never ``.tmp`` files)."""
    root = Path(root)
    if not root.is_dir():
        raise _fail(root, "dataset directory does not exist" if not root.exists() else "not a directory")
    _check_info(root / "dataset.json")
    episodes_dir = root / EPISODES_DIR
    paths = [p for _, p in _scan(episodes_dir)] if episodes_dir.is_dir() else []
    if not paths:
        raise _fail(root, f"no episodes in {EPISODES_DIR}/")
    return paths


def _check_info(info_path: Path, refusal: str = "") -> None:
    """A dataset's ``dataset.json`` may be absent (older or hand-made datasets); when present it
    must be readable and of this format: a damaged one means a damaged or foreign dataset."""
    if not info_path.exists():
        return
    try:
        info = json.loads(info_path.read_text())
        version = info.get("format_version") if isinstance(info, dict) else None
    except (OSError, ValueError) as e:
        raise _fail(info_path, f"unreadable ({type(e).__name__}: {e})") from e
    if version != FORMAT_VERSION:
        raise _fail(info_path, f"format_version {version} is not {FORMAT_VERSION}{refusal}")


def read_episodes(root: str | Path, load_frames: bool = True) -> Iterator[Episode]:
    """Every complete episode of a dataset directory, in index order."""
    for path in episode_paths(root):
        yield read_episode(path, load_frames=load_frames)


def _num_steps(path: Path) -> int:
    try:
        with h5py.File(path, "r") as f:
            return int(f["actions"].shape[0])
    except (OSError, KeyError, ValueError) as e:
        raise _fail(path, f"unreadable episode ({type(e).__name__}: {e})") from e


def episode_metas(root: str | Path) -> list[tuple[Path, dict]]:
    """(file, ``Episode.meta()``) of every complete episode of a dataset directory, in index
    order (headers only, fast); [] when it has none yet."""
    episodes_dir = Path(root) / EPISODES_DIR
    out = []
    for _, path in (_scan(episodes_dir) if episodes_dir.is_dir() else []):
        try:
            with h5py.File(path, "r") as f:
                out.append((path, json.loads(f.attrs["meta"])))
        except (OSError, KeyError, ValueError) as e:
            raise _fail(path, f"unreadable episode ({type(e).__name__}: {e})") from e
    return out


def count_episodes(root: str | Path) -> int:
    """Complete episodes in a dataset directory; 0 when it does not exist yet or has none."""
    episodes_dir = Path(root) / EPISODES_DIR
    return len(_scan(episodes_dir)) if episodes_dir.is_dir() else 0


def count_steps(root: str | Path) -> int:
    """Total number of steps (actions) over all episodes, without reading the arrays."""
    return sum(_num_steps(p) for p in episode_paths(root))


class EpisodeWriter:
    """Appends episodes to a dataset directory as ``episodes/ep_NNNNNN.h5``.

    Numbering resumes after the highest existing index. Holds an exclusive flock on
    ``DIR/.lock`` until ``close()`` (or process death), so two writers never share a directory.
    """

    def __init__(self, root: str | Path, compression: str | None = "lzf") -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.root = Path(root)
        self.compression = compression
        if self.root.exists() and not self.root.is_dir():
            raise _fail(self.root, "dataset root exists and is not a directory")
        self.episodes_dir = self.root / EPISODES_DIR
        try:
            self.episodes_dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.root / ".lock", "a")  # noqa: SIM115 - held until close()
        except OSError as e:
            raise _fail(self.root, f"cannot create dataset directory ({e})") from e
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._open_dataset()
        except BaseException as e:
            self._lock.close()
            if isinstance(e, BlockingIOError):
                raise _fail(self.root, "another EpisodeWriter has this dataset open") from e
            raise
        indices = [i for i, _ in _scan(self.episodes_dir)]
        self.next_index = max(indices) + 1 if indices else 0

    def _open_dataset(self) -> None:
        for tmp in [*self.episodes_dir.glob(".*.tmp"), *self.root.glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
        info_path = self.root / "dataset.json"
        if info_path.exists():
            _check_info(info_path, "; refusing to append")
            return
        info = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_by": __name__,
            "layout": f"{EPISODES_DIR}/ep_NNNNNN.h5, one HDF5 file per episode",
            "compression": self.compression,
            "fields": {name: list(fields) for name, (fields, _) in TABLES.items()},
        }
        with atomic_output(info_path) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")

    def append(self, ep: Episode) -> Path:
        """Write ``ep`` as the next episode file; returns its final path."""
        if self._lock.closed:
            raise _fail(self.root, "EpisodeWriter is closed")
        path = self.episodes_dir / f"ep_{self.next_index:06d}.h5"
        write_episode(path, ep, self.compression)
        self.next_index += 1
        return path

    def append_copy(self, source: str | Path) -> Path:
        """Append a copy of the complete episode file ``source`` (another dataset's), byte for
        byte, as the next episode; the copy is written to a temp file and renamed."""
        if self._lock.closed:
            raise _fail(self.root, "EpisodeWriter is closed")
        source = Path(source)
        if _index(source) is None or not source.is_file():
            raise _fail(source, "not a complete episode file (episodes/ep_NNNNNN.h5)")
        path = self.episodes_dir / f"ep_{self.next_index:06d}.h5"
        with atomic_output(path) as tmp:
            shutil.copyfile(source, tmp)
        self.next_index += 1
        return path

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _d4rl_episode(ep: Episode, weights: RewardWeights) -> dict[str, np.ndarray]:
    t = ep.num_steps
    states = np.stack([state_vector(ep.ego[i], ep.actors[i], ep.goal) for i in range(t + 1)])
    last = np.arange(t) == t - 1
    return {
        "observations": states[:-1],
        "next_observations": states[1:],
        "actions": ep.actions.astype(np.float32),
        "expert_actions": ep.expert_actions.astype(np.float32),
        "rewards": weights.reward(ep.reward_terms),
        "terminals": last & (ep.outcome in TERMINAL_OUTCOMES),
        "timeouts": last & (ep.outcome in TIMEOUT_OUTCOMES),
        "infos/step": np.arange(t, dtype=np.int32),
    }


def export_d4rl(root: str | Path, out_path: str | Path,
                reward_weights: RewardWeights | None = None) -> dict:
    """Write every episode of ``root`` as one D4RL-layout HDF5 file (see the module docstring).

    Streams episode by episode (frames are not read). Returns a summary dict.
    """
    weights = reward_weights if reward_weights is not None else RewardWeights()
    indexed = [(int(_index(p) or 0), p) for p in episode_paths(root)]
    n = sum(_num_steps(p) for _, p in indexed)
    summary = {"transitions": n, "episodes": len(indexed), "terminals": 0, "timeouts": 0}
    with atomic_output(Path(out_path)) as tmp, h5py.File(tmp, "w") as f:
        ds = {k: f.create_dataset(k, shape=(n, *s), dtype=dt) for k, (s, dt) in D4RL_KEYS.items()}
        row = 0
        for index, path in indexed:
            ep = read_episode(path, load_frames=False)
            rows = _d4rl_episode(ep, weights)
            rows["infos/episode_index"] = np.full(ep.num_steps, index, dtype=np.int64)
            for key, arr in rows.items():
                ds[key][row : row + ep.num_steps] = arr
            row += ep.num_steps
            summary["terminals"] += int(rows["terminals"].sum())
            summary["timeouts"] += int(rows["timeouts"].sum())
        if row != n:
            raise _fail(Path(root), f"episodes changed during export ({row} steps, expected {n})")
        f.attrs["feature_names"] = json.dumps(list(state_feature_names()))
        f.attrs["reward_weights"] = json.dumps(dataclasses.asdict(weights))
        f.attrs["action_fields"] = json.dumps(list(ACTION_FIELDS))
        f.attrs["source"] = str(Path(root).resolve())
    return {**summary, "path": str(out_path)}
