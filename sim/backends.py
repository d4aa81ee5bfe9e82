"""Simulator backends behind one constructor: ``make_env(backend, scenario, density, ...)``.

``BACKENDS`` is an explicit registry, name -> factory; a factory takes the keyword arguments of
``make_env`` and returns a ``sim.interface.DrivingEnv``. Adding a backend is one module that
implements the protocol and one entry here (or ``register_backend`` for a backend that lives
outside the package, e.g. in a test). Factories import their simulator lazily, so importing
``sim`` never imports highway-env or ``carla``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.interface import DrivingEnv

DEFAULT_BACKEND = "embedded"


def _embedded(scenario: str, density: str, cameras: Sequence = (), rephrase: Callable | None = None,
              goals: str | None = None, goal_bias: Sequence[tuple[str, float]] = (),
              start_speed: tuple[float, float] | None = None) -> DrivingEnv:
    from sim.highway import EmbeddedDrivingEnv

    return EmbeddedDrivingEnv(scenario, density, cameras=cameras, rephrase=rephrase, goals=goals,
                              goal_bias=tuple(goal_bias), start_speed=start_speed)


def _carla(scenario: str, density: str, cameras: Sequence = (), rephrase: Callable | None = None,
           goals: str | None = None) -> DrivingEnv:
    from sim.carla_backend import make_carla_env  # the server is named by CARLA_HOST / CARLA_PORT / ...

    return make_carla_env(scenario, density, cameras=cameras, rephrase=rephrase, goals=goals)


BACKENDS: dict[str, Callable[..., DrivingEnv]] = {"embedded": _embedded, "carla": _carla}
"""backend name -> factory(scenario, density, cameras=(), rephrase=None, goals=None)."""


def register_backend(name: str, factory: Callable[..., DrivingEnv]) -> None:
    """Add (or replace) a backend under ``name``."""
    if not name or not callable(factory):
        raise ValueError(f"a backend needs a name and a factory, got {name!r}, {factory!r}")
    BACKENDS[name] = factory


def make_env(backend: str = DEFAULT_BACKEND, scenario: str = "highway", density: str = "medium",
             cameras: Sequence = (), rephrase: Callable | None = None, goals: str | None = None,
             goal_bias: Sequence[tuple[str, float]] = (),
             start_speed: tuple[float, float] | None = None) -> DrivingEnv:
    """A simulator of ``backend`` in ``scenario`` / ``density`` with the camera rig ``cameras``;
    ``rephrase`` words each episode's command (``vla.speech_commands.rephraser``), ``goals`` picks
    how commands are drawn (the backend's choices; None = its default), ``goal_bias`` how often a
    highway command is tried first and ``start_speed`` (lo, hi) the range our car's start speed
    is drawn from (``EmbeddedDrivingEnv``; the embedded simulator only)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown simulator backend {backend!r}; choose one of {sorted(BACKENDS)}")
    extra = {}
    if goal_bias:
        if backend != "embedded":
            raise ValueError(f"a goal bias is an option of the embedded simulator, not of the {backend} backend")
        extra["goal_bias"] = tuple(goal_bias)
    if start_speed is not None:
        if backend != "embedded":
            raise ValueError(f"a start speed range is an option of the embedded simulator, not of the {backend} backend")
        extra["start_speed"] = tuple(start_speed)
    return BACKENDS[backend](scenario=scenario, density=density, cameras=tuple(cameras), rephrase=rephrase,
                             goals=goals, **extra)
