"""Which driving policy a name on the command line means.

``POLICIES`` is an explicit dict of the baselines (``sim.rollout.BASELINES``): ``expert``,
``random``, ``constant``. A name that is not a baseline must be a checkpoint directory of the
transformer policy (``policy.json`` + ``model.safetensors``, e.g. ``RUN/iter_003/policy``).
Add new kinds of policy here, never by importing modules named after them.
"""

from __future__ import annotations

from pathlib import Path

from sim.rollout import BASELINES, DrivingPolicy
from vla.errors import VLAError

POLICIES = dict(BASELINES)
"""name -> factory(env, seed) for the built-in driving policies."""


def check_policy(name: str) -> None:
    """Raise ``VLAError`` unless ``name`` is a policy ``resolve_policy`` can build (no env needed)."""
    choices = ", ".join(sorted(POLICIES))
    if name in POLICIES:
        return
    if is_checkpoint(name):
        return
    if Path(name).exists():
        raise VLAError(f"--policy {name} is not a policy checkpoint directory (needs policy.json and "
                       "model.safetensors, e.g. RUN/iter_003/policy)")
    raise VLAError(f"unknown policy {name!r}; choose one of: {choices}, or a checkpoint directory")


def is_checkpoint(name: str) -> bool:
    path = Path(name)
    return (path / "policy.json").is_file() and (path / "model.safetensors").is_file()


_LOADED: dict[str, DrivingPolicy] = {}


def load_checkpoint(name: str) -> DrivingPolicy:
    """The policy of a checkpoint directory (loaded once per process): the transformer policy,
    or another kind named by policy.json's "kind" field (``CHECKPOINT_KINDS``)."""
    if name not in _LOADED:
        kind = _checkpoint_kind(name)
        if kind in CHECKPOINT_KINDS:
            _LOADED[name] = CHECKPOINT_KINDS[kind](name)
        else:
            from vla.policy import VLAPolicy

            _LOADED[name] = VLAPolicy.load(name)
    return _LOADED[name]


def _load_offline_rl_mlp(name: str) -> DrivingPolicy:
    from offline_rl.policy import load_mlp_policy

    return load_mlp_policy(name)


CHECKPOINT_KINDS = {"offline_rl_mlp": _load_offline_rl_mlp}
"""policy.json "kind" -> loader(directory), for checkpoints that are not the transformer policy
(whose policy.json has no "kind"): an MLP actor trained by offline RL (``offline_rl.policy``)."""


def _checkpoint_kind(name: str) -> str | None:
    import json

    try:
        meta = json.loads((Path(name) / "policy.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def resolve_policy(name: str, env, seed: int) -> DrivingPolicy:
    """The policy for one episode: a baseline by name (``env`` is what the expert reads,
    ``seed`` seeds the random policy) or a checkpoint directory (reset by the episode runner)."""
    check_policy(name)
    if name in POLICIES:
        return POLICIES[name](env, seed)
    return load_checkpoint(name)
