"""Which driving policy a name on the command line means.

``POLICIES`` is an explicit dict of the baselines (``sim.rollout.BASELINES``): ``expert``,
``random``, ``constant``. A name that is not a baseline but an existing path will be a
checkpoint of the transformer policy; until that policy lands such paths are refused with a
clear error. Add new kinds of policy here, never by importing modules named after them.
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
    if Path(name).exists():
        raise VLAError(
            f"--policy {name}: checkpoint policies arrive with the transformer policy; "
            f"for now use one of: {choices}"
        )
    raise VLAError(f"unknown policy {name!r}; choose one of: {choices} (or a checkpoint path, later)")


def resolve_policy(name: str, env, seed: int) -> DrivingPolicy:
    """A fresh policy for one episode: a baseline by name (``env`` is what the expert reads,
    ``seed`` seeds the random policy), or, later, a checkpoint path."""
    check_policy(name)
    return POLICIES[name](env, seed)
