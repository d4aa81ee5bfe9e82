"""The CARLA backend: ``sim.interface.DrivingEnv`` over the real ``carla`` client (issue "The
CARLA backend"). ``make_env("carla", scenario, density, cameras=...)`` builds it; the server is
named by ``CarlaOptions`` (from ``CARLA_HOST`` / ``CARLA_PORT`` / ``CARLA_TOWN`` /
``CARLA_TIMEOUT`` / ``CARLA_TM_PORT`` by default, or the ``--carla-*`` flags of ``vla eval`` /
``vla collect`` / ``vla dagger``).

One episode:

* **Synchronous mode at 10 Hz** (``fixed_delta_seconds = DT``) and the traffic manager in
  synchronous mode, seeded with the episode's seed; the world's settings before the first
  episode are restored by ``close``.
* **A start, a command and a route from the seed**: candidate starts are the map's driving-lane
  waypoints outside junctions (``Map.generate_waypoints``; the offline maps of the tests have
  no spawn points), shuffled by the seed; ``highway`` issues lane / speed commands on roads with
  a same-direction neighbour lane where one is asked for, ``intersection`` issues a turn at the
  next junction. The first (start, command) whose route (``sim.carla_route.plan_route``) is
  ``route_length`` metres long is used. The command's target lane counts lanes from the left,
  like the embedded highway.
* **Traffic**: ``NPC_COUNTS[density]`` vehicles on other candidate waypoints, driven by the
  traffic manager (``set_autopilot(True, tm_port)``).
* **Sensors**: ``sensor.other.collision`` (a ``vehicle.*`` other actor -> ``collision_vehicle``,
  anything else -> ``collision_static``), ``sensor.other.lane_invasion``, and one
  ``sensor.camera.rgb`` per ``CameraSpec`` at ``sim.carla_frames.camera_to_carla(spec)``. A
  step waits for every camera's image of the tick it asked for (frames matched by frame id).
* **Actions** ``[accel, steer]`` in our units become ``carla.VehicleControl`` through
  ``CarlaControlMap`` (its figures need the live calibration, see its docstring).
* **The expert** is ``sim.carla_expert`` over the episode's route; ``expert_plan`` /
  ``expert_continuation`` roll it out on the bicycle (CARLA cannot snapshot a world).
* **Ends**: collision, off-road (``sim.carla_route.is_off_road``), route complete, route
  deviation (farther than ``DEVIATION_M`` from the route), or the scenario's step limit
  (``timeout``). A tick that fails (``RuntimeError``, e.g. the client's timeout) propagates out
  of ``step``; the episode runner records it as ``sim_error`` and the next ``reset``
  reconnects (``CONNECT_RETRIES`` tries).

What the protocol asks for and CARLA cannot give: ``snapshot`` / ``restore`` (no world state
save), hence no goal-feasibility check by simulation (``goal_feasible`` is None) and no
preference pairs on CARLA; ``goal_labels`` / ``goal_futures`` return None (no goal
relabelling from CARLA episodes yet).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sim.carla_expert import Vehicle
from sim.carla_expert import expert_action as route_expert_action
from sim.carla_expert import expert_plan as route_expert_plan
from sim.carla_frames import CarlaControlMap, camera_to_carla, pose_from_carla
from sim.carla_route import TURNS as ROUTE_TURNS
from sim.carla_route import Route, actor_path, is_off_road, plan_route
from sim.route import (ACTOR_PATH_POINTS, ACTOR_PATH_SPACING, ROUTE_AHEAD_TIME, ROUTE_MIN_AHEAD, route_features,
                       route_path)
from sim.features import state_vector
from sim.interface import (ACTION_HIGH, ACTION_LOW, ACTOR, ACTOR_FIELDS, ACTOR_RANGE, DT, EGO, EGO_FIELDS,
                           EVENT, EVENT_FIELDS, MAX_ACTORS, REWARD_FIELDS, Goal, RewardWeights, Scene,
                           goal_vector, reward_terms, step_outcome, wrap_angle)
from sim.scenarios import (HIGHWAY_GOAL_LABELS, HIGHWAY_SPEEDS, SPEED_TOLERANCE, TURN_COMMANDS, check_scenario,
                            highway_goal_for, turn_goal_for)

NPC_COUNTS = {"light": 5, "medium": 15, "dense": 30}
"""Traffic-manager vehicles per density."""
NPC_CLEARANCE_M = 30.0
"""No traffic is spawned closer than this to the ego's start: a car spawned a few metres ahead
in the ego's lane is a collision nobody could avoid, not a test of the driver."""
NPC_START_SPEED = {"highway": 15.0, "intersection": 8.0}
"""m/s the traffic starts with (CARLA spawns vehicles at rest)."""
DEVIATION_M = 6.0
"""Metres from the route (beyond a lane change's first lane) that end an episode as ``route_deviation``."""
CONNECT_RETRIES = 3
CONNECT_BACKOFF_S = 1.0
"""Seconds before the second connection try; doubled per try, at most 5."""
TURN_LABELS = ("turn_left", "turn_straight", "turn_right")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class CarlaOptions:
    """Where the server is and how episodes are set up."""

    host: str = "localhost"
    port: int = 2000
    town: str = ""
    """Map to load at the first reset (e.g. "Town01"); empty = keep the server's current map."""
    timeout: float = 10.0
    """Seconds the client waits for the server (connect and every tick)."""
    tm_port: int = 8000
    vehicle: str = "vehicle.lincoln.mkz_2020"
    """Ego blueprint (the first ``vehicle.*`` blueprint when the server has no such one)."""
    launch: bool = False
    """Start a server from ``$CARLA_ROOT`` (``CarlaUE4.sh`` or ``CarlaUnreal.sh``, off-screen) on a
    free port pair at the first reset and stop it on ``close`` (``CARLA_LAUNCH=1``)."""
    highway_route_m: float = 150.0
    turn_route_m: float = 60.0
    control: CarlaControlMap = field(default_factory=CarlaControlMap)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("CARLA host must not be empty")
        for name in ("port", "tm_port"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 < value < 65536):
                raise ValueError(f"CARLA {name} must be a TCP port in 1..65535, got {value!r}")
        for name in ("timeout", "highway_route_m", "turn_route_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CARLA {name} must be a positive number, got {value!r}")

    @staticmethod
    def from_environment(**overrides) -> CarlaOptions:
        """Options from ``CARLA_HOST``, ``CARLA_PORT``, ``CARLA_TOWN``, ``CARLA_TIMEOUT``,
        ``CARLA_TM_PORT`` (defaults where unset), then ``overrides`` that are not None."""
        values = {"host": os.environ.get("CARLA_HOST", "") or "localhost",
                  "port": int(_env_float("CARLA_PORT", 2000)), "town": os.environ.get("CARLA_TOWN", ""),
                  "timeout": _env_float("CARLA_TIMEOUT", 10.0), "tm_port": int(_env_float("CARLA_TM_PORT", 8000)),
                  "launch": os.environ.get("CARLA_LAUNCH", "") not in ("", "0")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return CarlaOptions(**values)


def connect(options: CarlaOptions):
    """A ``carla.Client`` talking to the server (its timeout set); the tests replace this with
    a test double of the server."""
    try:
        import carla
    except ImportError:
        raise ValueError("the CARLA backend needs the carla client: pip install -e .[carla] "
                         "(Linux, Python 3.10-3.12)") from None
    client = carla.Client(options.host, options.port)
    client.set_timeout(options.timeout)
    return client


SERVER_SCRIPTS = ("CarlaUE4.sh", "CarlaUnreal.sh")
SERVER_START_S = 120.0
"""Seconds a launched server gets to accept a client."""


def free_port_pair() -> int:
    """A TCP port p with p and p + 1 free (CARLA serves RPC on p and sensor streams on p + 1)."""
    import socket

    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of TCP ports for a CARLA server")


def launch_server(port: int):
    """Start ``$CARLA_ROOT``'s server off-screen on ``port``; returns the ``subprocess.Popen``."""
    import subprocess
    from pathlib import Path

    root = os.environ.get("CARLA_ROOT", "")
    if not root:
        raise ValueError("launching a CARLA server needs CARLA_ROOT (the server's install directory)")
    script = next((Path(root) / name for name in SERVER_SCRIPTS if (Path(root) / name).is_file()), None)
    if script is None:
        raise ValueError(f"CARLA_ROOT={root} holds no server script ({' or '.join(SERVER_SCRIPTS)})")
    return subprocess.Popen([str(script), "-RenderOffScreen", "-nosound", f"-carla-rpc-port={port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


class CarlaDrivingEnv:
    """``DrivingEnv`` over a CARLA server (see the module docstring)."""

    def __init__(self, scenario: str = "highway", density: str = "medium", cameras: Sequence = (),
                 rephrase: Callable | None = None, goals: str | None = None,
                 options: CarlaOptions | None = None) -> None:
        self.spec_ = check_scenario(scenario, density)
        self.scenario, self.density = scenario, density
        self.cameras = tuple(cameras)
        self.rephrase = rephrase
        self.options = options or CarlaOptions.from_environment()
        self.goal: Goal | None = None
        self.goal_feasible: bool | None = None
        self._wanted_m = self.options.highway_route_m if scenario == "highway" else self.options.turn_route_m
        self.route_length = self._wanted_m
        self.reward_weights = RewardWeights()
        self._client = self._world = self._map = None
        self._original_settings = None
        self._actors: list = []  # everything this env spawned (sensors first when destroyed)
        self._ego = None
        self._route: Route | None = None
        self._lane_route: Route | None = None
        self._state = np.zeros(len(EGO_FIELDS))
        self._frames: dict[int, dict[int, np.ndarray]] = {}
        self._pending_events: list[tuple[str, object]] = []
        self._broken = False
        self._server = None  # a server this env launched (CarlaOptions.launch)

    # ----------------------------------------------------------------- connection
    def _connect(self) -> None:
        last: Exception | None = None
        retries = CONNECT_RETRIES
        if self.options.launch and self._server is None:
            from dataclasses import replace

            port = free_port_pair()
            self._server = launch_server(port)
            self.options = replace(self.options, host="localhost", port=port)
            retries = max(CONNECT_RETRIES, int(SERVER_START_S / max(self.options.timeout, 1.0)))
        for attempt in range(retries):
            try:
                self._client = connect(self.options)
                world = self._client.get_world()
                if self.options.town and not world.get_map().name.endswith(self.options.town):
                    world = self._client.load_world(self.options.town)
                self._world = world
                if self._original_settings is None:
                    self._original_settings = world.get_settings()
                settings = world.get_settings()
                settings.synchronous_mode = True
                settings.fixed_delta_seconds = DT
                world.apply_settings(settings)
                self._map = world.get_map()
                self._broken = False
                return
            except RuntimeError as e:  # the client's own timeout / connection errors
                last = e
                time.sleep(min(CONNECT_BACKOFF_S * 2.0 ** attempt, 5.0))
        raise RuntimeError(f"CARLA server at {self.options.host}:{self.options.port} unreachable after "
                           f"{retries} tries: {' '.join(str(last).split())}")

    # ----------------------------------------------------------------- episode set-up
    def _candidates(self, rng: np.random.Generator) -> list:
        import carla

        wps = [w for w in self._map.generate_waypoints(5.0)
               if not w.is_junction and w.lane_type == carla.LaneType.Driving]
        if not wps:
            raise ValueError(f"map {self._map.name!r} has no driving lanes")
        return [wps[i] for i in rng.permutation(len(wps))]

    def _lane_index(self, wp) -> tuple[int, int]:
        """(index of ``wp``'s lane counted from the left among same-direction driving lanes,
        number of such lanes)."""
        import carla

        def count(w, step: str) -> int:
            n, seen = 0, 0
            w = getattr(w, step)()
            while w is not None and w.lane_type == carla.LaneType.Driving and w.lane_id * wp.lane_id > 0 and seen < 16:
                n, seen = n + 1, seen + 1
                w = getattr(w, step)()
            return n

        left = count(wp, "get_left_lane")
        return left, left + 1 + count(wp, "get_right_lane")

    def _pick_start(self, rng: np.random.Generator):
        labels = HIGHWAY_GOAL_LABELS if self.scenario == "highway" else TURN_LABELS
        for wp in self._candidates(rng)[:400]:
            xyz = wp.transform.location
            start = (xyz.x, -xyz.y)
            for i in rng.permutation(len(labels)):
                try:
                    route = plan_route(self._map, start, labels[i], self._wanted_m)
                except ValueError:
                    continue
                if route.length >= 0.9 * self._wanted_m:  # lanes through a turn are shorter or longer
                    return wp, labels[i], route
        raise ValueError(f"map {self._map.name!r}: no start with a {self._wanted_m:.0f} m route for any "
                         f"{self.scenario} command")

    def _blueprint(self, pattern: str):
        library = self._world.get_blueprint_library()
        found = library.filter(pattern)
        if not found:
            found = library.filter("vehicle.*")
        if not found:
            raise RuntimeError("the CARLA server offers no vehicle blueprints")
        return found[0]

    def _spawn_sensor(self, kind: str, transform, callback, attributes: dict | None = None):
        bp = self._world.get_blueprint_library().find(kind)
        for k, v in (attributes or {}).items():
            bp.set_attribute(k, str(v))
        sensor = self._world.spawn_actor(bp, transform, attach_to=self._ego)
        self._actors.insert(0, sensor)
        sensor.listen(callback)
        return sensor

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        import carla

        if self._client is None or self._broken:
            self._connect()
        self._destroy()
        seed = 0 if seed is None else int(seed)
        rng = np.random.default_rng([seed, 7])
        tm = self._client.get_trafficmanager(self.options.tm_port)
        tm.set_synchronous_mode(True)
        tm.set_random_device_seed(seed)
        wp, label, self._route = self._pick_start(rng)
        self.route_length = self._route.length
        start_xy = (wp.transform.location.x, -wp.transform.location.y)
        # a lane change's expert drives on in its own lane until moving over is safe
        self._lane_route = plan_route(self._map, start_xy, "keep_lane", self._wanted_m) \
            if label in ("lane_left", "lane_right") else None
        start_lane, lanes = self._lane_index(wp)
        self.goal = turn_goal_for(label.removeprefix("turn_")) if label in TURN_LABELS \
            else highway_goal_for(label, start_lane, lanes)
        if self.rephrase is not None:
            self.goal = self.rephrase(self.goal, rng)
        self.goal_feasible = None
        spawn = carla.Transform(carla.Location(wp.transform.location.x, wp.transform.location.y,
                                               wp.transform.location.z + 0.3), wp.transform.rotation)
        self._ego = self._world.spawn_actor(self._blueprint(self.options.vehicle), spawn)
        self._actors.append(self._ego)
        self._max_steer = self._steer_limit()
        speed = 0.8 * (HIGHWAY_SPEEDS["keep"] if self.scenario == "highway" else 10.0)
        yaw = math.radians(wp.transform.rotation.yaw)
        self._ego.set_target_velocity(carla.Vector3D(speed * math.cos(yaw), speed * math.sin(yaw), 0.0))
        self._spawn_traffic(rng, wp)
        self._pending_events = []
        self._frames = {}
        here = carla.Transform()
        self._spawn_sensor("sensor.other.collision", here, self._on_collision)
        self._spawn_sensor("sensor.other.lane_invasion", here, self._on_invasion)
        for i, spec in enumerate(self.cameras):
            location, (pitch, yaw_c, roll) = camera_to_carla(spec)
            self._spawn_sensor("sensor.camera.rgb",
                               carla.Transform(carla.Location(*location), carla.Rotation(pitch=pitch, yaw=yaw_c, roll=roll)),
                               lambda image, i=i: self._on_image(i, image),
                               {"image_size_x": spec.width, "image_size_y": spec.height, "fov": spec.fov_deg})
        self._steps, self._best_m, self._last_steer = 0, 0.0, 0.0
        self._frame = self._world.tick(self.options.timeout)
        self._prev = None
        self._state = self._read_ego(first=True)
        self._start_lane = start_lane
        return self._observation(), {"goal": self.goal, "events": np.zeros(len(EVENT_FIELDS), np.float32),
                                     "reward_terms": np.zeros(len(REWARD_FIELDS), np.float32)}

    def _steer_limit(self) -> float:
        try:
            return math.radians(float(self._ego.get_physics_control().wheels[0].max_steer_angle))
        except (AttributeError, IndexError, RuntimeError):
            return self.options.control.max_steer_angle

    def _spawn_traffic(self, rng: np.random.Generator, ego_wp) -> None:
        import carla

        ego_xy = np.array([ego_wp.transform.location.x, ego_wp.transform.location.y])
        tm = self._client.get_trafficmanager(self.options.tm_port)
        wanted = NPC_COUNTS[self.density]
        for wp in self._candidates(rng):
            if wanted <= 0:
                break
            loc = wp.transform.location
            if np.hypot(loc.x - ego_xy[0], loc.y - ego_xy[1]) < NPC_CLEARANCE_M:
                continue
            bp = self._blueprint("vehicle.*")
            npc = self._world.try_spawn_actor(bp, carla.Transform(carla.Location(loc.x, loc.y, loc.z + 0.3),
                                                                  wp.transform.rotation))
            if npc is None:
                continue
            yaw = math.radians(wp.transform.rotation.yaw)
            speed = NPC_START_SPEED[self.scenario]
            npc.set_target_velocity(carla.Vector3D(speed * math.cos(yaw), speed * math.sin(yaw), 0.0))
            npc.set_autopilot(True, self.options.tm_port)
            tm.update_vehicle_lights(npc, True)  # indicators on its turns: what obs["actor_paths"] reads
            self._actors.append(npc)
            wanted -= 1

    # ----------------------------------------------------------------- sensor callbacks
    def _on_collision(self, event) -> None:
        other = getattr(event, "other_actor", None)
        kind = "collision_vehicle" if other is not None and str(other.type_id).startswith("vehicle.") \
            else "collision_static"
        self._pending_events.append((kind, event))

    def _on_invasion(self, event) -> None:
        self._pending_events.append(("lane_invasion", event))

    def _on_image(self, index: int, image) -> None:
        bgra = np.frombuffer(bytes(image.raw_data), dtype=np.uint8).reshape(image.height, image.width, 4)
        self._frames.setdefault(int(image.frame), {})[index] = bgra[:, :, 2::-1].copy()

    # ----------------------------------------------------------------- stepping
    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        import carla

        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 2 finite numbers [accel m/s^2, steer rad], got {action!r}")
        a = np.clip(a, ACTION_LOW, ACTION_HIGH)
        control_map = self.options.control
        if abs(control_map.max_steer_angle - self._max_steer) > 1e-9:
            control_map = CarlaControlMap(control_map.max_accel, control_map.max_decel, control_map.drag_per_speed,
                                          self._max_steer)
        throttle, brake, steer = control_map.pedals_and_steer(a, self._state[EGO["speed"]])
        self._ego.apply_control(carla.VehicleControl(throttle=throttle, steer=steer, brake=brake))
        self._last_steer = float(a[1])
        try:
            self._frame = self._world.tick(self.options.timeout)
        except RuntimeError:
            self._broken = True  # the next reset reconnects
            raise
        self._steps += 1
        before = self._best_m
        self._state = self._read_ego()
        events = self._events()
        collided = bool(events[EVENT["collision_vehicle"]] + events[EVENT["collision_static"]] > 0)
        terms = reward_terms(events, self._best_m - before, self._state[EGO["speed"]], self.goal, self._goal_holds(),
                             crashed=collided)
        terminated, truncated, outcome = step_outcome(events, abs(self._lateral) > DEVIATION_M, self._steps,
                                                      self.spec_.max_steps)
        info = {"goal": self.goal, "events": events, "reward_terms": terms}
        if outcome:
            info["outcome"] = outcome
        reward = float(self.reward_weights.reward(terms[None])[0])
        return self._observation(), reward, terminated, truncated, info

    def _read_ego(self, first: bool = False) -> np.ndarray:
        t = self._ego.get_transform()
        x, y, yaw = pose_from_carla((t.location.x, t.location.y, t.location.z), t.rotation.yaw)
        vel = self._ego.get_velocity()
        speed = float(vel.x * math.cos(yaw) + (-vel.y) * math.sin(yaw))
        accel, yaw_rate = 0.0, 0.0
        if self._prev is not None:
            accel = (speed - self._prev[0]) / DT
            yaw_rate = wrap_angle(yaw - self._prev[1]) / DT
        self._prev = (speed, yaw)
        e = np.zeros(len(EGO_FIELDS))
        e[EGO["x"]], e[EGO["y"]], e[EGO["yaw"]], e[EGO["speed"]] = x, y, yaw, speed
        e[EGO["accel_long"]], e[EGO["yaw_rate"]], e[EGO["accel_lat"]] = accel, yaw_rate, speed * yaw_rate
        e[EGO["steer"]] = self._last_steer
        wp = self._map.get_waypoint(t.location)
        if wp is not None:
            wx, wy, wyaw = pose_from_carla((wp.transform.location.x, wp.transform.location.y, 0.0),
                                           wp.transform.rotation.yaw)
            e[EGO["lane_offset"]] = -math.sin(wyaw) * (x - wx) + math.cos(wyaw) * (y - wy)
            e[EGO["lane_heading_error"]] = wrap_angle(yaw - wyaw)
            left, count = self._lane_index(wp)
            e[EGO["lane_id"]] = left
            self._lanes_now = np.array([left, count - 1 - left], dtype=np.float32)
        else:
            self._lanes_now = np.full(2, np.nan, dtype=np.float32)
        limit_kmh = self._ego.get_speed_limit() if hasattr(self._ego, "get_speed_limit") else 0.0
        e[EGO["speed_limit"]] = float(limit_kmh or 0.0) / 3.6
        along, lateral = self._route.locate((x, y))
        self._lateral = lateral
        self._route_now = self._route_state(e, wp, along)
        self._route_path_now = route_path(self._route.points, along)
        self._off_road = is_off_road(self._map, (x, y))
        if not first and not self._off_road:
            self._best_m = max(self._best_m, min(along, self._route.length))
        e[EGO["progress"]] = min(1.0, self._best_m / self._route.length)
        return e

    def _route_state(self, ego: np.ndarray, wp, along: float) -> np.ndarray:
        """``sim.route.route_features`` of the ego: the junction distance along the episode's
        route; the point ahead on that route for a turn, on the current lane otherwise (as the
        embedded highway: a lane change is the command's business, not the route's)."""
        route = self._route
        features = route_features(route.points, route.junction, along, ego)
        if self.goal.label not in ROUTE_TURNS and wp is not None:
            ahead = wp.next(max(ROUTE_MIN_AHEAD, float(ego[EGO["speed"]]) * ROUTE_AHEAD_TIME))  # the lane's own curve
            if ahead:
                here = pose_from_carla((wp.transform.location.x, wp.transform.location.y, 0.0), 0.0)[:2]
                there = ahead[0].transform.location
                far = pose_from_carla((there.x, there.y, 0.0), 0.0)[:2]
                features[1:] = route_features(np.array([here, far]), None, 0.0, ego)[1:]
        return features

    def _events(self) -> np.ndarray:
        e = np.zeros(len(EVENT_FIELDS), dtype=np.float32)
        for kind, _ in self._pending_events:
            e[EVENT[kind]] = 1.0
        self._pending_events = []
        e[EVENT["off_road"]] = float(self._off_road)
        limit = self._state[EGO["speed_limit"]]
        e[EVENT["speeding"]] = float(limit > 0 and self._state[EGO["speed"]] > limit + 0.5)
        e[EVENT["route_complete"]] = float(self._best_m >= self._route.length - 1.0)
        return e

    def _goal_holds(self) -> bool:
        g, s = self.goal, self._state
        if g.kind == "lane_speed":
            if g.target_lane < 0:
                return abs(s[EGO["speed"]] - g.target_speed) < SPEED_TOLERANCE
            return int(s[EGO["lane_id"]]) == g.target_lane and abs(s[EGO["lane_offset"]]) < 1.0
        return self._best_m >= self._route.length - 20.0 and abs(self._lateral) < 2.0  # on the asked-for exit

    # ----------------------------------------------------------------- observations
    def _scan(self) -> np.ndarray:
        ego_id = self._ego.id
        x0, y0 = self._state[EGO["x"]], self._state[EGO["y"]]
        rows = []
        for v in self._world.get_actors().filter("vehicle.*"):
            if v.id == ego_id:
                continue
            t = v.get_transform()
            x, y, yaw = pose_from_carla((t.location.x, t.location.y, t.location.z), t.rotation.yaw)
            d = math.hypot(x - x0, y - y0)
            if d > ACTOR_RANGE:
                continue
            vel = v.get_velocity()
            ext = v.bounding_box.extent
            rows.append((d, [1.0, float(v.id), x, y, yaw, math.hypot(vel.x, vel.y), 2.0 * ext.x, 2.0 * ext.y], v))
        rows.sort(key=lambda r: r[0])
        out = np.zeros((MAX_ACTORS, len(ACTOR_FIELDS)), dtype=np.float32)
        for i, (_, row, _) in enumerate(rows[:MAX_ACTORS]):
            out[i] = row
        self._actor_vehicles = [v for _, _, v in rows[:MAX_ACTORS]]
        return out

    def _actor_paths(self) -> np.ndarray:
        """``obs["actor_paths"]`` (``sim.route.ACTOR_PATH_POINTS``): at the intersection, each actor's
        lane ahead from the map, through a junction along the branch its indicator shows (the
        Traffic Manager sets them, ``update_vehicle_lights``); elsewhere all zeros, as the
        embedded backend."""
        import carla

        out = np.zeros((MAX_ACTORS, ACTOR_PATH_POINTS, 2), dtype=np.float32)
        if self.scenario != "intersection":
            return out
        left, right = int(carla.VehicleLightState.LeftBlinker), int(carla.VehicleLightState.RightBlinker)
        for i, v in enumerate(self._actor_vehicles):
            lights = int(v.get_light_state())
            signal = 1 if lights & left else -1 if lights & right else 0
            row = self._actors_now[i]
            out[i] = actor_path(self._map, (float(row[ACTOR["x"]]), float(row[ACTOR["y"]])), signal,
                                ACTOR_PATH_POINTS, ACTOR_PATH_SPACING)
        return out

    def _observation(self) -> dict:
        actors = self._actors_now = self._scan()
        ego = self._state
        obs = {"ego": ego.astype(np.float32), "goal": goal_vector(self.goal, ego), "actors": actors,
               "state": state_vector(ego, actors, self.goal), "route": self._route_now,
               "route_path": self._route_path_now, "actor_paths": self._actor_paths(), "lanes": self._lanes_now}
        if self.cameras:
            # a server delivers sensor data on its own thread, possibly after tick() returned
            deadline = time.monotonic() + self.options.timeout
            while len(self._frames.get(int(self._frame), {})) < len(self.cameras) and time.monotonic() < deadline:
                time.sleep(0.001)
            images = self._frames.pop(int(self._frame), {})
            self._frames = {f: v for f, v in self._frames.items() if f > self._frame}
            missing = [self.cameras[i].name for i in range(len(self.cameras)) if i not in images]
            if missing:
                raise RuntimeError(f"CARLA sent no image of frame {self._frame} for cameras {missing} "
                                   f"within {self.options.timeout:g} s")
            obs["cameras"] = np.stack([images[i] for i in range(len(self.cameras))])
        return obs

    def ego_state(self) -> np.ndarray:
        return self._state.astype(np.float32)

    def actors(self) -> np.ndarray:
        return self._actors_now.copy()

    def _others(self) -> list[Vehicle]:
        a = self._actors_now
        return [Vehicle(float(r[ACTOR["x"]]), float(r[ACTOR["y"]]), float(r[ACTOR["yaw"]]), float(r[ACTOR["speed"]]))
                for r in a if r[ACTOR["present"]] > 0.5]

    def _pose(self) -> np.ndarray:
        return np.array([self._state[EGO[k]] for k in ("x", "y", "yaw", "speed")], dtype=np.float64)

    def _target_speed(self) -> float:
        if self.goal.kind == "lane_speed" and self.goal.target_lane < 0:
            return self.goal.target_speed / 0.9  # the expert drives at 0.9 x its limit
        limit = self._state[EGO["speed_limit"]]
        return limit if limit > 0 else (HIGHWAY_SPEEDS["keep"] if self.scenario == "highway" else 10.0) / 0.9

    # ----------------------------------------------------------------- the expert
    def expert_action(self) -> np.ndarray:
        return route_expert_action(self._route, self._pose(), self._others(), self._target_speed(),
                                   lane_route=self._lane_route)

    def expert_continuation(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        return route_expert_plan(self._route, self._pose(), self._others(), self._target_speed(), horizon,
                                 lane_route=self._lane_route)

    def expert_plan(self, horizon: int) -> np.ndarray:
        return self.expert_continuation(horizon)[0]

    def goal_labels(self) -> np.ndarray | None:
        return None

    def goal_futures(self, horizon: int) -> np.ndarray | None:
        return None

    def snapshot(self):
        raise NotImplementedError("CARLA cannot save and restore a world: snapshots (preference pairs, "
                                  "feasible-goal checks) need the embedded backend")

    def restore(self, snap) -> dict:
        raise NotImplementedError("CARLA cannot save and restore a world")

    def scene(self) -> Scene:
        a = self._actors_now
        present = a[:, ACTOR["present"]] > 0.5
        boxes = np.zeros((int(present.sum()), 7), dtype=np.float32)
        boxes[:, [0, 1, 2, 3, 4]] = a[present][:, [ACTOR["x"], ACTOR["y"], ACTOR["yaw"], ACTOR["length"], ACTOR["width"]]]
        boxes[:, 5] = 1.5
        return Scene(lanes=(), vehicles=boxes, ego_pose=self._state[[EGO["x"], EGO["y"], EGO["yaw"]]].copy())

    # ----------------------------------------------------------------- teardown
    def _destroy(self) -> None:
        for actor in self._actors:
            try:
                if hasattr(actor, "stop") and getattr(actor, "is_listening", False):
                    actor.stop()
                actor.destroy()
            except RuntimeError:
                pass  # the server already lost it
        self._actors = []
        self._ego = None

    def close(self) -> None:
        """Destroy what this env spawned, give the world its settings back, stop a server it
        launched."""
        if self._world is not None:
            try:
                self._destroy()
                if self._original_settings is not None:
                    self._world.apply_settings(self._original_settings)
                self._client.get_trafficmanager(self.options.tm_port).set_synchronous_mode(False)
            except RuntimeError:
                pass  # a dead server has nothing left to restore
            self._world = None
            self._client = None
        self._stop_server()

    def _stop_server(self) -> None:
        if self._server is None:
            return
        import signal
        import subprocess

        try:
            os.killpg(self._server.pid, signal.SIGTERM)
            self._server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self._server = None


def make_carla_env(scenario: str, density: str, cameras: Sequence = (), rephrase: Callable | None = None,
                   goals: str | None = None) -> CarlaDrivingEnv:
    """The ``sim.backends`` factory: options from the environment (``CarlaOptions.from_environment``)."""
    return CarlaDrivingEnv(scenario, density, cameras=cameras, rephrase=rephrase, goals=goals)


__all__ = ["CarlaDrivingEnv", "CarlaOptions", "connect", "make_carla_env", "NPC_COUNTS", "TURN_COMMANDS"]
