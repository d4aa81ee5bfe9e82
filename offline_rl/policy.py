"""A trained MLP actor as a policy: a checkpoint directory, and a driving / gym policy.

Checkpoint directory (what ``vla eval --policy DIR`` loads through ``vla.policies_registry``)::

    DIR/policy.json        {"kind": "offline_rl_mlp", "format_version", "name", "method",
                            "actor" (gaussian | tanh_gaussian), "obs_dim", "action_dim",
                            "hidden", "n_hidden", "normalizer" (offline_rl.replay.Normalizer)}
    DIR/model.safetensors  the actor network's weights

``MLPPolicy.select_action(obs)`` reads ``obs["state"]`` (``sim.features.state_vector`` of the
current state, as the embedded simulator returns it) or a plain observation array (gym),
normalizes it as in training and returns the actor's deterministic action in physical units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from offline_rl.networks import ACTORS
from offline_rl.replay import Normalizer
from sim.atomic import atomic_output
from vla.policies_registry import register_checkpoint_kind

KIND = "offline_rl_mlp"
FORMAT_VERSION = 1
META_FILE, WEIGHTS_FILE = "policy.json", "model.safetensors"


class MLPPolicy:
    """An MLP actor + its normalizer; a ``sim.rollout.DrivingPolicy`` and a gym policy."""

    rig: tuple = ()  # no cameras: vla eval renders none for it

    def __init__(self, net: torch.nn.Module, normalizer: Normalizer, name: str = "offline_rl_mlp",
                 meta: dict | None = None) -> None:
        self.net, self.normalizer, self.name = net.eval(), normalizer, name
        self.meta = dict(meta or {})

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def act(self, states: np.ndarray) -> np.ndarray:
        """Raw states ``(S,)`` or ``(N, S)`` -> physical actions ``(A,)`` or ``(N, A)``."""
        s = np.asarray(states, dtype=np.float32)
        single = s.ndim == 1
        s = s[None] if single else s
        if s.shape[-1] != len(self.normalizer.obs_mean):
            raise ValueError(f"policy {self.name} reads states of size {len(self.normalizer.obs_mean)}, "
                             f"got {s.shape[-1]}")
        unit = self.net.act(torch.from_numpy(self.normalizer.obs(s))).numpy()
        out = self.normalizer.action_from_unit(unit)
        return out[0] if single else out

    def select_action(self, obs) -> np.ndarray:
        state = obs["state"] if isinstance(obs, dict) else obs
        return self.act(state)


def save_mlp_policy(directory: str | Path, net: torch.nn.Module, normalizer: Normalizer,
                    method: str, hidden: int, n_hidden: int, name: str | None = None) -> Path:
    """Write ``net`` (a ``GaussianActor`` / ``TanhGaussianActor``) as a checkpoint directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": KIND, "format_version": FORMAT_VERSION, "name": name or str(directory),
            "method": method, "actor": net.kind, "obs_dim": len(normalizer.obs_mean),
            "action_dim": len(normalizer.action_low), "hidden": hidden, "n_hidden": n_hidden,
            "normalizer": normalizer.to_dict()}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_output(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    with atomic_output(directory / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return directory


def is_mlp_checkpoint(directory: str | Path) -> bool:
    """True when ``directory/policy.json`` says ``"kind": "offline_rl_mlp"``."""
    path = Path(directory) / META_FILE
    try:
        return path.is_file() and json.loads(path.read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_mlp_policy(directory: str | Path) -> MLPPolicy:
    directory = Path(directory)
    meta_path, weights = directory / META_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise ValueError(f"{directory} is not a policy checkpoint (needs {META_FILE} and {WEIGHTS_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != KIND or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: not an {KIND} checkpoint of format_version {FORMAT_VERSION}")
    if meta.get("actor") not in ACTORS:
        raise ValueError(f"{meta_path}: unknown actor {meta.get('actor')!r}; expected one of {sorted(ACTORS)}")
    net = ACTORS[meta["actor"]](int(meta["obs_dim"]), int(meta["action_dim"]), int(meta["hidden"]),
                                int(meta["n_hidden"]))
    net.load_state_dict(load_file(str(weights)))
    return MLPPolicy(net, Normalizer.from_dict(meta["normalizer"]), name=str(directory), meta=meta)


register_checkpoint_kind(KIND, load_mlp_policy)  # vla eval / the rollout workers can load these now
