"""Which driving policy a name on the command line means.

``POLICIES`` is an explicit dict of the baselines (``sim.rollout.BASELINES``): ``expert``,
``random``, ``constant``. A name that is not a baseline must be a checkpoint directory of the
transformer policy (``policy.json`` + ``model.safetensors``, e.g. ``RUN/iter_003/policy``).
Add new kinds of policy here, never by importing modules named after them.
"""

from __future__ import annotations

from collections.abc import Callable
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
    or another kind named by policy.json's "kind" field, loaded by the loader its module
    registered (``register_checkpoint_kind``)."""
    if name not in _LOADED:
        kind = _checkpoint_kind(name)
        if kind is None:
            from vla.policy import VLAPolicy

            _LOADED[name] = VLAPolicy.load(name)
        elif kind in CHECKPOINT_KINDS:
            _LOADED[name] = CHECKPOINT_KINDS[kind](name)
        else:
            known = ", ".join(sorted(CHECKPOINT_KINDS)) or "none"
            raise VLAError(f"{name}: checkpoint kind {kind!r} has no loader in this process (registered: {known}); "
                           "import the module that trains that kind (it calls register_checkpoint_kind)")
    return _LOADED[name]


CHECKPOINT_KINDS: dict[str, Callable[[str], DrivingPolicy]] = {}
"""policy.json "kind" -> loader(directory), for checkpoints that are not the transformer policy
(whose policy.json has no "kind"). Filled by the modules that train such policies when they are
imported (``offline_rl.policy`` registers "offline_rl_mlp"), so this core module names none of
them; ``vla.parallel`` hands the registered loaders to its worker processes."""


def register_checkpoint_kind(kind: str, loader: Callable[[str], DrivingPolicy]) -> None:
    """Let ``load_checkpoint`` (and ``vla eval --policy DIR``) load checkpoints whose policy.json
    says ``"kind": kind``. ``loader`` must be a module-level function (workers receive it pickled)."""
    if CHECKPOINT_KINDS.get(kind, loader) is not loader:
        raise ValueError(f"checkpoint kind {kind!r} is already registered to another loader")
    CHECKPOINT_KINDS[kind] = loader


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
