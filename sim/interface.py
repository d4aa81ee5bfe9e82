"""The simulator contract: what every backend (embedded highway-env, CARLA) gives a policy.

Frames and units
----------------
* World frame: right-handed, x east, y north, z up, metres. Yaw is counter-clockwise from +x,
  radians, wrapped to (-pi, pi].
* Ego frame (ISO 8855): origin at the ego's reference point on the ground, x forward, y left,
  z up. Camera extrinsics are given in this frame (see ``sim.cameras``).
* Actions are physical: ``[accel, steer]`` with ``accel`` the commanded longitudinal
  acceleration in m/s^2 and ``steer`` the front-wheel angle in radians, positive = turn left.
  Limits: ``ACTION_LOW`` / ``ACTION_HIGH``. Normalization belongs to the tokenizers, never here.
* Time: one env step is ``DT`` = 0.1 s (10 Hz).

Mapping onto CARLA (what a CARLA backend must do; it needs no change to this contract)
--------------------------------------------------------------------------------------
CARLA (Unreal) is left-handed: x forward/east, y right/south, z up, angles in degrees with yaw
clockwise seen from above.
* world ``(x, y)`` = ``(loc.x, -loc.y)``; ``yaw`` = ``-radians(transform.rotation.yaw)``.
* ``speed`` = norm of ``vehicle.get_velocity()``; ``accel_long`` / ``accel_lat`` = the world
  acceleration from ``get_acceleration()`` (y negated) projected on the ego's forward / left
  axes; ``yaw_rate`` = ``-radians(get_angular_velocity().z)``.
* action -> ``carla.VehicleControl`` (``sim.carla_frames.CarlaControlMap``): ``accel >= 0`` ->
  ``throttle``, ``accel < 0`` -> ``brake`` (CARLA has no acceleration command; the map's
  figures need calibrating against a server); ``steer`` -> ``control.steer = -steer /
  max_steer_angle`` where ``max_steer_angle`` comes from
  ``vehicle.get_physics_control().wheels[0].max_steer_angle`` (degrees, convert).
* events: ``collision_vehicle`` / ``collision_static`` from ``sensor.other.collision`` (actor
  type ``vehicle.*`` vs anything else); ``lane_invasion`` from ``sensor.other.lane_invasion``;
  ``off_road`` when ``map.get_waypoint(loc, project_to_road=False)`` is None or not a driving
  lane; ``progress`` along the backend's own route over the map topology (the wheel has no
  ``GlobalRoutePlanner``; metres along it / its length);
  ``speeding`` against ``vehicle.get_speed_limit()`` (km/h, convert).
* cameras: one ``sensor.camera.rgb`` per ``CameraSpec`` attached to the ego at
  ``sim.carla_frames.camera_to_carla(spec)`` (location with y negated; CARLA pitch = -ours,
  yaw = -ours, roll = ours, read from the mirrored rotation matrix and checked against the
  ``carla`` wheel's own ``Transform.get_matrix`` on random poses); ``fov`` = horizontal FOV in
  degrees, ``image_size_x/y`` = width/height.
* other actors: ``world.get_actors().filter('vehicle.*')`` with bounding-box extents x2.
* ``expert_action()``: CARLA's ``BehaviorAgent`` is not in the pip wheel (no
  ``agents.navigation``), and ``sim.highway_expert`` reads highway-env's road objects, so the CARLA
  backend needs its own route-following IDM over the map's waypoints (same laws, same params).

Everything a backend returns is built from the dataclasses and field tuples below, so metrics,
recording and the tokenizers never touch backend objects.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

DT = 0.1
"""Seconds per environment step (10 Hz)."""

ACTION_FIELDS = ("accel", "steer")
ACTION_LOW = np.array([-6.0, -np.pi / 4], dtype=np.float32)
ACTION_HIGH = np.array([4.0, np.pi / 4], dtype=np.float32)

EGO_FIELDS = (
    "x",  # world m
    "y",  # world m
    "yaw",  # world rad
    "speed",  # m/s, signed along the heading
    "accel_long",  # m/s^2, d(speed)/dt over the last step
    "accel_lat",  # m/s^2, speed * yaw_rate, positive to the left
    "yaw_rate",  # rad/s over the last step
    "steer",  # rad, last applied front-wheel angle, positive left
    "lane_offset",  # m, lateral offset from the current lane centre, positive left
    "lane_heading_error",  # rad, yaw minus lane heading, wrapped
    "lane_id",  # index of the current lane counted from the left (0 = leftmost)
    "speed_limit",  # m/s of the current lane
    "progress",  # fraction of the route completed, [0, 1]
)
EGO = {name: i for i, name in enumerate(EGO_FIELDS)}

POSE_FIELDS = ("x", "y", "yaw", "speed")
"""A pose row: world x, y (m), yaw (rad), speed (m/s): the ego's motion the plan tracker reads
(``sim.plan``) and the expert's continuations record (``Episode.expert_futures``)."""

ACTOR_FIELDS = ("present", "id", "x", "y", "yaw", "speed", "length", "width")
"""Per-actor row in world frame; rows with present == 0 are padding."""
ACTOR = {name: i for i, name in enumerate(ACTOR_FIELDS)}
MAX_ACTORS = 16
"""Nearest actors recorded per step (within ``ACTOR_RANGE`` metres)."""
ACTOR_RANGE = 100.0

EVENT_FIELDS = (
    "collision_vehicle",
    "collision_static",
    "off_road",
    "lane_invasion",
    "speeding",
    "route_complete",
)
EVENT = {name: i for i, name in enumerate(EVENT_FIELDS)}

REWARD_FIELDS = (
    "progress_m",  # metres gained along the route this step (off-road metres do not count)
    "collision",  # 1 on the step a collision happens
    "off_road",  # 1 while off the road
    "lane_invasion",  # 1 while the body crosses a lane marking
    "speed_error",  # |speed - goal target speed| / target speed (0 when no target speed)
    "goal",  # 1 while the goal condition holds (target lane + speed, or turned onto the exit)
)
REWARD = {name: i for i, name in enumerate(REWARD_FIELDS)}


def reward_terms(events: np.ndarray, progress_gain: float, speed: float, goal: Goal, goal_holds: bool,
                 crashed: bool) -> np.ndarray:
    """(len(REWARD_FIELDS),) reward terms of one step, the same rules on every backend:
    ``progress_gain`` metres, this step's collision / off-road / lane-invasion events, the
    relative speed error against a target speed, and the goal term while ``goal_holds`` and the
    car has not crashed."""
    t = np.zeros(len(REWARD_FIELDS), dtype=np.float32)
    t[REWARD["progress_m"]] = progress_gain
    t[REWARD["collision"]] = events[EVENT["collision_vehicle"]] + events[EVENT["collision_static"]]
    t[REWARD["off_road"]] = events[EVENT["off_road"]]
    t[REWARD["lane_invasion"]] = events[EVENT["lane_invasion"]]
    if goal.target_speed > 0:
        t[REWARD["speed_error"]] = abs(speed - goal.target_speed) / goal.target_speed
    t[REWARD["goal"]] = float(goal_holds and not crashed)
    return t


def step_outcome(events: np.ndarray, deviated: bool, steps: int, max_steps: int) -> tuple[bool, bool, str]:
    """(terminated, truncated, outcome) after a step, the same on every backend: collision,
    off-road, route complete, route deviation (``deviated``), then the step limit (timeout)."""
    outcome = ""
    if events[EVENT["collision_vehicle"]] or events[EVENT["collision_static"]]:
        outcome = "collision"
    elif events[EVENT["off_road"]]:
        outcome = "off_road"
    elif events[EVENT["route_complete"]]:
        outcome = "route_complete"
    elif deviated:
        outcome = "route_deviation"
    if outcome:
        return True, False, outcome
    if steps >= max_steps:
        return False, True, "timeout"
    return False, False, ""

def wrap_angle(angle):
    """An angle (rad; a float or an array) wrapped to [-pi, pi): the one convention for every
    heading difference in the stack (yaw rates, heading errors, turn angles)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi

@dataclass(frozen=True)
class RewardWeights:
    """Weights of the scalar reward ``r_t = sum_k w_k * reward_terms[t, k]``."""

    progress_m: float = 0.1
    """Per metre gained along the route this step (~0.25 per step at 25 m/s)."""
    collision: float = -10.0
    """On the step a collision happens."""
    off_road: float = -1.0
    """Per step spent off the road."""
    lane_invasion: float = -0.1
    """Per step the body crosses a lane marking."""
    speed_error: float = -0.1
    """Per unit of relative speed error |v - v_target| / v_target."""
    goal: float = 0.1
    """Per step the goal condition holds (target lane + speed, or on the requested exit)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(float(value)):
                raise ValueError(f"RewardWeights.{name} must be finite, got {value}")

    def vector(self) -> np.ndarray:
        """(len(REWARD_FIELDS),) float32 weights in ``REWARD_FIELDS`` order."""
        return np.array([getattr(self, f) for f in REWARD_FIELDS], dtype=np.float32)

    def reward(self, terms: np.ndarray) -> np.ndarray:
        """(..., len(REWARD_FIELDS)) reward terms -> (...) float32 rewards."""
        terms = np.asarray(terms, dtype=np.float32)
        if terms.shape[-1:] != (len(REWARD_FIELDS),):
            raise ValueError(f"reward terms need last axis {len(REWARD_FIELDS)}, got {terms.shape}")
        return (terms @ self.vector()).astype(np.float32)


if tuple(asdict(RewardWeights())) != REWARD_FIELDS:
    raise RuntimeError("RewardWeights fields must match REWARD_FIELDS")


TURNS = ("left", "straight", "right")
GOAL_KINDS = ("lane_speed", "turn")


@dataclass(frozen=True)
class Goal:
    """What the passenger asked for in this episode.

    ``lane_speed`` (highway): reach ``target_lane`` (0 = leftmost; -1 = any lane, for speed
    commands, which may overtake) and hold ``target_speed``.
    ``turn`` (intersection): take the ``turn`` exit ("left", "straight", "right").
    ``command`` is the canonical English command; the speech corpus rephrases it.
    """

    kind: str
    label: str  # goal type for per-type success, e.g. "lane_left", "speed_up", "turn_left"
    command: str
    target_lane: int = -1
    target_speed: float = 0.0
    turn: str = ""
    lang: str = "en"  # language of ``command`` ("en", "zh")

    def __post_init__(self) -> None:
        if self.kind not in GOAL_KINDS:
            raise ValueError(f"unknown goal kind {self.kind!r}; expected one of {GOAL_KINDS}")
        if self.kind == "turn" and self.turn not in TURNS:
            raise ValueError(f"turn goal needs turn in {TURNS}, got {self.turn!r}")
        if self.kind == "lane_speed" and (self.target_lane < -1 or self.target_speed <= 0):
            raise ValueError("lane_speed goal needs target_lane >= -1 (-1: any lane) and target_speed > 0")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.label,
            "command": self.command,
            "target_lane": self.target_lane,
            "target_speed": self.target_speed,
            "turn": self.turn,
            "lang": self.lang,
        }

    @staticmethod
    def from_dict(d: dict) -> Goal:
        return Goal(
            kind=str(d["kind"]),
            label=str(d["label"]),
            command=str(d["command"]),
            target_lane=int(d.get("target_lane", -1)),
            target_speed=float(d.get("target_speed", 0.0)),
            turn=str(d.get("turn", "")),
            lang=str(d.get("lang", "en")),
        )


GOAL_VECTOR_FIELDS = ("lane_delta", "target_speed", "turn_left", "turn_straight", "turn_right")


def goal_vector(goal: Goal, ego: np.ndarray) -> np.ndarray:
    """The goal as policy features: lanes to move (+ = left), target speed, turn one-hot."""
    lane_delta = 0.0
    if goal.kind == "lane_speed" and goal.target_lane >= 0:
        lane_delta = float(ego[EGO["lane_id"]] - goal.target_lane)
    turn = [float(goal.turn == t) for t in TURNS]
    return np.array([lane_delta, goal.target_speed, *turn], dtype=np.float32)


@dataclass(frozen=True)
class LaneGeom:
    """One lane's centre line in the world frame, for rendering and metrics.

    ``kind`` "straight": from ``start`` to ``end``. ``kind`` "arc": ``center``, ``radius``,
    phases in radians, ``ccw`` True when the lane runs counter-clockwise.
    ``lines`` = (left, right) marking type seen in the driving direction, one of
    "none", "striped", "solid".
    """

    kind: str
    width: float
    lines: tuple[str, str]
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    start_phase: float = 0.0
    end_phase: float = 0.0
    ccw: bool = True


@dataclass(frozen=True)
class Scene:
    """Everything a camera can see: lanes and vehicle boxes, world frame."""

    lanes: tuple[LaneGeom, ...]
    vehicles: np.ndarray  # (K, 7): x, y, yaw, length, width, height, colour_id
    ego_pose: np.ndarray = field(default_factory=lambda: np.zeros(3))  # x, y, yaw


@runtime_checkable
class DrivingEnv(Protocol):
    """What the stack needs from a simulator backend (made by ``sim.backends.make_env``).

    Gymnasium-style ``reset`` / ``step`` plus the queries DAgger, the plan labels, goal
    relabelling, preference pairs and the metrics are built on. Observations are dicts with
    ``ego`` (``EGO_FIELDS``), ``actors`` (``MAX_ACTORS`` x ``ACTOR_FIELDS``, world frame),
    ``goal``, ``state``, ``route`` (``sim.route.ROUTE_FIELDS``: the distance to the next junction
    and the route's point ahead in the lane frame), ``route_path`` (``sim.route.route_path``: the
    route's centre line 0-40 m ahead, world frame), ``actor_paths`` (``sim.route.ACTOR_PATH_POINTS``:
    each actor row's lane ahead through its signalled turn, world frame; all zeros where none is
    known, everywhere on the highway), ``lanes`` (2,): the same-direction driving lanes beside the
    ego's lane, to the left and to the right (0 in the outermost lane; NaN where the backend cannot
    tell), and, with a camera rig, ``cameras`` (N, H, W, 3) uint8;
    ``info`` holds
    ``events`` (``EVENT_FIELDS``), ``reward_terms`` (``REWARD_FIELDS``) and, once an episode
    ends, ``outcome``. Every array is in the frames and units of this module."""

    scenario: str
    density: str
    cameras: tuple
    goal: Goal | None
    """The episode's command (set by ``reset``)."""
    goal_feasible: bool | None
    """Whether the expert reaches ``goal`` from the start (None when not checked)."""
    route_length: float
    """Metres of route the episode measures progress along."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]: ...

    def step(self, action) -> tuple[dict, float, bool, bool, dict]: ...

    def expert_action(self) -> np.ndarray:
        """[accel, steer] of the expert for the CURRENT state, whatever drove there (read-only)."""

    def expert_plan(self, horizon: int) -> np.ndarray:
        """(horizon, 2) the expert's own next actions from the current state (env unchanged)."""

    def expert_continuation(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """The expert's next actions (horizon, 2) and the poses they reach (horizon, 4)."""

    def goal_labels(self) -> np.ndarray | None:
        """(goals, 2) the expert's action now under every goal of the family; None if none."""

    def goal_futures(self, horizon: int) -> np.ndarray | None:
        """(goals, horizon, 4) poses the expert reaches under every other goal; None if none."""

    def snapshot(self):
        """A private copy of the whole state (``restore`` it any number of times)."""

    def restore(self, snap) -> dict:
        """Return to a snapshot's state; the observation of that state."""

    def ego_state(self) -> np.ndarray:
        """(len(EGO_FIELDS),) the ego now."""

    def actors(self) -> np.ndarray:
        """(MAX_ACTORS, len(ACTOR_FIELDS)) the other vehicles now."""

    def scene(self) -> Scene:
        """Lanes and boxes for rendering and metrics."""

    def close(self) -> None: ...
