"""Scenario families, traffic density levels and goal sampling for the embedded simulator.

Two families, each with named density levels (``DENSITIES``):

* ``highway``: a straight 4-lane highway (lane speed limit 30 m/s). The route is the next
  ``route_length`` metres along the road. Goals: change one lane left or right, or keep the
  lane (cruising at 25 m/s; success is the lane), speed up to 30 m/s or slow down to 20 m/s
  (any lane, overtaking allowed; success is the speed within 2.5 m/s).
* ``intersection``: a 4-way junction; the ego approaches from the south on the minor road
  (lower priority than the east-west road) and must turn left, go straight or turn right.
  The route ends 30 m into the chosen exit.

Everything random in an episode (start lane, traffic, goal) derives from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.interface import Goal


@dataclass(frozen=True)
class Density:
    """Traffic knobs of one named level; which fields matter depends on the scenario."""

    vehicles_count: int  # highway: vehicles spawned ahead of the ego
    spacing: float  # highway: highway-env ``vehicles_density`` (higher = closer)
    initial_vehicles: int  # intersection: vehicles placed at reset
    spawn_probability: float  # intersection: chance per second that a new vehicle enters


@dataclass(frozen=True)
class Scenario:
    name: str
    route_length: float  # highway: metres to drive; intersection: computed from lanes
    max_steps: int  # time limit in 10 Hz steps
    densities: dict[str, Density]


DENSITIES = ("light", "medium", "dense")

SCENARIOS: dict[str, Scenario] = {
    "highway": Scenario(
        name="highway",
        route_length=250.0,
        max_steps=250,
        densities={
            "light": Density(vehicles_count=12, spacing=0.7, initial_vehicles=0, spawn_probability=0.0),
            "medium": Density(vehicles_count=25, spacing=1.0, initial_vehicles=0, spawn_probability=0.0),
            "dense": Density(vehicles_count=40, spacing=1.5, initial_vehicles=0, spawn_probability=0.0),
        },
    ),
    "intersection": Scenario(
        name="intersection",
        route_length=0.0,
        max_steps=250,
        densities={
            "light": Density(vehicles_count=0, spacing=0.0, initial_vehicles=5, spawn_probability=0.25),
            "medium": Density(vehicles_count=0, spacing=0.0, initial_vehicles=10, spawn_probability=0.5),
            "dense": Density(vehicles_count=0, spacing=0.0, initial_vehicles=15, spawn_probability=0.8),
        },
    ),
}

HIGHWAY_LANES = 4
HIGHWAY_SPEEDS = {"slow_down": 20.0, "keep": 25.0, "speed_up": 30.0}
SPEED_TOLERANCE = 2.5
"""m/s around a commanded target speed that counts as reached (goal success, the constitution)."""
GOAL_CHOICES = ("feasible", "any")
"""How an env picks each episode's command (``EmbeddedDrivingEnv(goals=...)``)."""
HIGHWAY_GOAL_LABELS = ("lane_left", "lane_right", "speed_up", "slow_down", "keep_lane")
DRIVE_COMMANDS = ("lane_left", "lane_right", "speed_up", "slow_down")
"""The commands a passenger gives during the drive (``env.speak``): each asks for a change the
car must start (``keep_lane`` mid-drive asks for nothing new)."""
TURN_COMMANDS = {
    "left": "turn left at the intersection",
    "straight": "go straight through the intersection",
    "right": "turn right at the intersection",
}


def check_scenario(scenario: str, density: str) -> Scenario:
    """The scenario, or a ValueError naming the bad argument and the valid choices."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    if density not in SCENARIOS[scenario].densities:
        raise ValueError(f"unknown density {density!r}; choose one of {list(DENSITIES)}")
    return SCENARIOS[scenario]


def highway_goal(rng: np.random.Generator, start_lane: int) -> Goal:
    """Sample one highway command; lane changes only toward lanes that exist."""
    labels = highway_goal_labels(start_lane)
    return highway_goal_for(labels[int(rng.integers(len(labels)))], start_lane)


GoalBias = tuple[tuple[str, float], ...]
"""(highway goal label, probability) pairs: how often an episode's command is that label first
(``parse_goal_bias``, ``EmbeddedDrivingEnv(goal_bias=...)``)."""


def parse_goal_bias(text: str) -> GoalBias:
    """``"slow_down=0.5"`` or ``"slow_down=0.4,lane_left=0.2"`` -> ((label, p), ...): each
    episode tries ``label`` first with probability p (the labels' chances add up to at most 1;
    the rest of the time the draw is the usual one). "" -> () (no bias). ValueError names the
    bad part."""
    pairs: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        label, eq, value = part.partition("=")
        label = label.strip()
        if not eq or label not in HIGHWAY_GOAL_LABELS:
            raise ValueError(f"goal bias {part!r}: expected LABEL=P with LABEL one of {', '.join(HIGHWAY_GOAL_LABELS)}")
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"goal bias {part!r}: {value!r} is not a probability") from None
        pairs.append((label, p))
    return check_goal_bias(pairs)


def check_goal_bias(pairs) -> GoalBias:
    """``pairs`` as a ``GoalBias`` after checking it: highway labels, each once, probabilities
    in [0, 1] adding up to at most 1 (ValueError otherwise)."""
    pairs = tuple((str(label), float(p)) for label, p in pairs)
    labels = [label for label, _ in pairs]
    for label, p in pairs:
        if label not in HIGHWAY_GOAL_LABELS:
            raise ValueError(f"goal bias label {label!r}: expected one of {', '.join(HIGHWAY_GOAL_LABELS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"goal bias {label}={p}: the probability must be in [0, 1]")
        if labels.count(label) > 1:
            raise ValueError(f"goal bias names {label!r} twice")
    if sum(p for _, p in pairs) > 1.0 + 1e-9:
        raise ValueError(f"goal bias {pairs}: the probabilities add up to more than 1")
    return pairs


START_SPEED_RANGE = (5.0, 35.0)
"""The start speeds (m/s) ``check_start_speed`` accepts: the highway's goal speeds are 20-30."""


def check_start_speed(start_speed, scenario: str) -> tuple[float, float] | None:
    """``start_speed`` (lo, hi) m/s as floats after checking it (ValueError otherwise): the
    highway only, finite, lo <= hi, both within ``START_SPEED_RANGE``. None stays None."""
    if start_speed is None:
        return None
    if scenario != "highway":
        raise ValueError(f"a start speed range is a highway option; the {scenario} scenario starts its cars itself")
    try:
        lo, hi = (float(v) for v in start_speed)
    except (TypeError, ValueError):
        raise ValueError(f"start speed must be two numbers (lo, hi) in m/s, got {start_speed!r}") from None
    low, high = START_SPEED_RANGE
    if not (low <= lo <= hi <= high):  # also refuses NaN
        raise ValueError(f"start speed ({lo}, {hi}) m/s: need {low} <= lo <= hi <= {high}")
    return lo, hi


def biased_label(bias: GoalBias, u: float) -> str | None:
    """The label a uniform draw ``u`` in [0, 1) picks from ``bias`` (None: no bias this time)."""
    edge = 0.0
    for label, p in bias:
        edge += p
        if u < edge:
            return label
    return None


def highway_goal_labels(start_lane: int, lanes: int = HIGHWAY_LANES) -> list[str]:
    """The highway commands that make sense from ``start_lane`` of ``lanes`` (no change off the road)."""
    return [
        lab
        for lab in HIGHWAY_GOAL_LABELS
        if not (lab == "lane_left" and start_lane == 0)
        and not (lab == "lane_right" and start_lane == lanes - 1)
    ]


def highway_goal_for(label: str, start_lane: int, lanes: int = HIGHWAY_LANES) -> Goal:
    """The canonical goal ``label`` heard in lane ``start_lane`` (0 = leftmost) of ``lanes``."""
    if label not in highway_goal_labels(start_lane, lanes):
        raise ValueError(f"highway goal {label!r} is not possible from lane {start_lane}")
    lane, speed = start_lane, HIGHWAY_SPEEDS["keep"]
    command = "keep your lane"
    if label == "lane_left":
        lane, command = start_lane - 1, "change to the left lane"
    elif label == "lane_right":
        lane, command = start_lane + 1, "change to the right lane"
    elif label in ("speed_up", "slow_down"):
        lane, speed, command = -1, HIGHWAY_SPEEDS[label], label.replace("_", " ")
    return Goal(kind="lane_speed", label=label, command=command, target_lane=lane, target_speed=speed)


def turn_goal(rng: np.random.Generator) -> Goal:
    return turn_goal_for(("left", "straight", "right")[int(rng.integers(3))])


def turn_goal_for(turn: str) -> Goal:
    """The canonical intersection goal: take the ``turn`` exit."""
    return Goal(kind="turn", label=f"turn_{turn}", command=TURN_COMMANDS[turn], turn=turn)


def canonical_command(label: str) -> str:
    """The canonical English command of a highway or turn label (a goal's ``label``; not chit-chat's
    ``none``): the words the canonical goals above are told in."""
    if label in HIGHWAY_GOAL_LABELS:
        return highway_goal_for(label, 1).command
    if label.startswith("turn_") and label[5:] in TURN_COMMANDS:
        return turn_goal_for(label[5:]).command
    raise ValueError(f"no canonical command for label {label!r}")
