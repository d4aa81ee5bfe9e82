"""D4RL / Minari-layout transition datasets: read, validate, write (HDF5 or npz).

Layout (D4RL's keys; one row per transition ``s_t, a_t -> r_t, s_{t+1}``, N rows)::

    observations       (N, S) float   state s_t
    actions            (N, A) float   action a_t (a 1-D array is read as A = 1)
    rewards            (N,)   float   r_t (an (N, 1) array is read as (N,))
    next_observations  (N, S) float   s_{t+1}
    terminals          (N,)   bool    the episode ENDED at s_{t+1} (no bootstrapping past it)
    timeouts           (N,)   bool    the episode was CUT after this step (bootstrap from s_{t+1})

Optional keys kept when present: ``expert_actions`` (N, A), ``infos/episode_index`` (N,),
``infos/step`` (N,). Root attributes (HDF5) / ``__attrs__`` (npz, a JSON string) are kept as
``D4RLData.attrs``. Driving episodes (``sim.storage`` directories) convert to this layout with
``sim.storage.export_d4rl`` and its documented reward ``RewardWeights`` (progress, collision,
off-road, lane invasion, speed error, goal): ``episodes_to_d4rl`` calls it, nothing is
duplicated here.

Every reader error is a ``ValueError`` naming the file and the key: a missing key, mismatched
lengths, NaN/inf in observations/actions/rewards, a non-numeric dtype or a wrong shape.
Writes are atomic (``sim.atomic.atomic_output``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from sim.atomic import atomic_output
from sim.storage import RewardWeights, export_d4rl

REQUIRED_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
OPTIONAL_KEYS = ("expert_actions", "infos/episode_index", "infos/step")
HDF5_SUFFIXES = (".h5", ".hdf5")
NPZ_SUFFIXES = (".npz",)
_FINITE_KEYS = ("observations", "actions", "rewards", "next_observations")


@dataclass(frozen=True)
class D4RLData:
    """A validated transition dataset (see the module docstring for the layout)."""

    observations: np.ndarray  # (N, S) float32
    actions: np.ndarray  # (N, A) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, S) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # OPTIONAL_KEYS present, (N, ...)
    attrs: dict[str, str] = field(default_factory=dict)  # file attributes, as strings

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every key -> array, in the file layout."""
        return {k: getattr(self, k) for k in REQUIRED_KEYS} | dict(self.extras)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode (split at terminals | timeouts; a trailing
        unfinished episode counts too)."""
        ends = np.flatnonzero(self.terminals | self.timeouts)
        if len(ends) == 0 or ends[-1] != len(self) - 1:
            ends = np.append(ends, len(self) - 1)
        sums = np.cumsum(self.rewards, dtype=np.float64)[ends]
        return np.diff(np.concatenate([[0.0], sums]))


def _fail(source: str, problem: str) -> ValueError:
    return ValueError(" ".join(f"{source}: {problem}".split()))


def _as_float(source: str, key: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise _fail(source, f"key {key!r} has dtype {arr.dtype}, expected a float array")
    return arr.astype(np.float32, copy=False)


def _as_flag(source: str, key: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype != bool and (not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all()):
        raise _fail(source, f"key {key!r} has dtype {arr.dtype}, expected bool (or 0/1)")
    return arr.astype(bool)


def validate(raw: dict[str, np.ndarray], source: str = "dataset",
             attrs: dict[str, str] | None = None) -> D4RLData:
    """Check and normalize a key -> array dict into ``D4RLData`` (one-line ValueError)."""
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise _fail(source, f"missing key {key!r} (a D4RL dataset needs {', '.join(REQUIRED_KEYS)})")
    arr = {k: np.asarray(raw[k]) for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in raw}
    for key in ("rewards", "terminals", "timeouts", "infos/episode_index", "infos/step"):
        if key in arr and arr[key].ndim == 2 and arr[key].shape[1] == 1:
            arr[key] = arr[key][:, 0]
        if key in arr and arr[key].ndim != 1:
            raise _fail(source, f"key {key!r} has shape {arr[key].shape}, expected (N,)")
    for key in ("actions", "expert_actions"):
        if key in arr and arr[key].ndim == 1:
            arr[key] = arr[key][:, None]
    for key in ("observations", "next_observations", "actions", "expert_actions"):
        if key in arr and arr[key].ndim != 2:
            raise _fail(source, f"key {key!r} has shape {arr[key].shape}, expected (N, dim)")
    n = arr["rewards"].shape[0]
    for key, a in arr.items():
        if a.shape[0] != n:
            raise _fail(source, f"key {key!r} has {a.shape[0]} rows but 'rewards' has {n}")
    if n == 0:
        raise _fail(source, "dataset has no transitions")
    if arr["next_observations"].shape != arr["observations"].shape:
        raise _fail(source, f"key 'next_observations' has shape {arr['next_observations'].shape}, "
                            f"'observations' {arr['observations'].shape}")
    for key in ("observations", "next_observations", "actions", "rewards", "expert_actions"):
        if key in arr:
            arr[key] = _as_float(source, key, arr[key])
    for key in _FINITE_KEYS:
        bad = ~np.isfinite(arr[key])
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise _fail(source, f"key {key!r} has {int(bad.sum())} NaN/inf values (first in row {first})")
    flags = {k: _as_flag(source, k, arr[k]) for k in ("terminals", "timeouts")}
    extras = {k: arr[k] for k in OPTIONAL_KEYS if k in arr}
    for key in ("infos/episode_index", "infos/step"):
        if key in extras and not np.issubdtype(extras[key].dtype, np.integer):
            raise _fail(source, f"key {key!r} has dtype {extras[key].dtype}, expected integers")
    return D4RLData(observations=arr["observations"], actions=arr["actions"], rewards=arr["rewards"],
                    next_observations=arr["next_observations"], extras=extras,
                    attrs=dict(attrs or {}), **flags)


def _kind(path: Path) -> str:
    if path.suffix.lower() in HDF5_SUFFIXES:
        return "hdf5"
    if path.suffix.lower() in NPZ_SUFFIXES:
        return "npz"
    raise _fail(str(path), f"unknown dataset format {path.suffix!r}: use "
                           f"{', '.join(HDF5_SUFFIXES + NPZ_SUFFIXES)}")


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    raw: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
            if key in f:
                if not isinstance(f[key], h5py.Dataset):
                    raise _fail(str(path), f"key {key!r} is a group, expected an array")
                raw[key] = f[key][()]
        attrs = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in f.attrs.items()}
    return raw, attrs


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with np.load(path, allow_pickle=False) as z:
        raw = {k: z[k] for k in z.files if k in REQUIRED_KEYS or k in OPTIONAL_KEYS}
        attrs = json.loads(str(z["__attrs__"])) if "__attrs__" in z.files else {}
    return raw, {str(k): str(v) for k, v in attrs.items()}


def load_d4rl(path: str | Path) -> D4RLData:
    """Read and validate a D4RL-layout HDF5 (``.h5``/``.hdf5``) or ``.npz`` file."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise _fail(str(path), "no such dataset file")
    try:
        raw, attrs = _read_hdf5(path) if kind == "hdf5" else _read_npz(path)
    except ValueError:
        raise
    except (OSError, KeyError, TypeError) as e:
        raise _fail(str(path), f"unreadable {kind} file ({type(e).__name__}: {e})") from e
    return validate(raw, str(path), attrs)


def save_d4rl(path: str | Path, data: D4RLData) -> Path:
    """Write ``data`` atomically as HDF5 or npz (by the suffix); returns the path."""
    path = Path(path)
    kind = _kind(path)
    arrays = data.arrays()
    with atomic_output(path, keep_suffix=True) as tmp:
        if kind == "hdf5":
            with h5py.File(tmp, "w") as f:
                for key, arr in arrays.items():
                    f.create_dataset(key, data=arr)
                for key, value in data.attrs.items():
                    f.attrs[key] = value
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, __attrs__=np.asarray(json.dumps(data.attrs)), **arrays)
    return path


def episodes_to_d4rl(episode_dir: str | Path, out_path: str | Path,
                     weights: RewardWeights | None = None) -> D4RLData:
    """Convert a ``sim.storage`` episode directory to a D4RL file (``export_d4rl``, reward
    ``sim.storage.RewardWeights``); an ``.npz`` target goes through an HDF5 temp file."""
    out_path = Path(out_path)
    if _kind(out_path) == "hdf5":
        export_d4rl(episode_dir, out_path, weights)
        return load_d4rl(out_path)
    tmp = out_path.with_name(f".{out_path.stem}.export.h5")
    try:
        export_d4rl(episode_dir, tmp, weights)
        data = load_d4rl(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    save_d4rl(out_path, data)
    return data


def reward_weights_from_json(text: str | None) -> RewardWeights:
    """``RewardWeights`` with the fields of a JSON object overridden, e.g. '{"collision": -20}'."""
    if not text:
        return RewardWeights()
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"reward weights are not a JSON object: {e}") from e
    names = {f.name for f in dataclasses.fields(RewardWeights)}
    if not isinstance(values, dict) or not set(values) <= names:
        raise ValueError(f"reward weights must be a JSON object with keys among {sorted(names)}, got {text}")
    return RewardWeights(**{k: float(v) for k, v in values.items()})
