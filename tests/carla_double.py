"""A test double of a CARLA server: the subset of the client API that ``sim.carla_backend``
calls, over a kinematic world. Tests only (no server can run here).

Everything the real wheel computes on the client is the real thing: ``carla.Map`` built from an
OpenDRIVE file (waypoints, lanes, junctions), ``carla.Transform`` / ``Location`` / ``Rotation``
/ ``Vector3D`` / ``BoundingBox`` / ``WorldSettings`` / ``VehicleControl``. What a server would
do is modelled:

* the ego moves on the kinematic bicycle (``sim.plan.VehicleGeometry``) under the
  ``VehicleControl`` it was given, read back through the nominal ``CarlaControlMap`` figures
  (throttle x 4 m/s^2 minus drag, brake x 5 m/s^2, steer x 70 degrees, + = right) -- the
  figures a real vehicle must be calibrated to;
* traffic-manager vehicles follow their lane's waypoints at ``NPC_SPEED`` (slowing behind a
  vehicle ahead) and leave the world at the end of their road;
* the collision sensor fires when the ego's box first overlaps another vehicle's, the
  lane-invasion sensor when the ego's lane changes, cameras deliver a BGRA image per tick
  stamped with the tick's frame;
* ``fail_ticks``: world frames whose ``tick`` raises the client's timeout ``RuntimeError``.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import carla
import numpy as np

from sim.plan import VehicleGeometry

DATA = Path(__file__).parent / "data"
NPC_SPEED = 12.0  # m/s
SPEED_LIMIT_KMH = 100.0


def load_map(name: str) -> carla.Map:
    return carla.Map(name, (DATA / f"{name}.xodr").read_text())


class Blueprint:
    def __init__(self, id: str) -> None:
        self.id, self.attributes = id, {}

    def set_attribute(self, key: str, value: str) -> None:
        self.attributes[key] = str(value)

    def has_attribute(self, key: str) -> bool:
        return key in self.attributes


class BlueprintLibrary:
    IDS = ("vehicle.lincoln.mkz_2020", "vehicle.audi.a2", "sensor.other.collision", "sensor.other.lane_invasion",
           "sensor.camera.rgb")

    def find(self, id: str) -> Blueprint:
        if id not in self.IDS:
            raise IndexError(f"blueprint '{id}' not found")
        return Blueprint(id)

    def filter(self, pattern: str) -> list[Blueprint]:
        return [Blueprint(i) for i in self.IDS if fnmatch.fnmatch(i, pattern)]


class Actor:
    def __init__(self, world: World, id: int, type_id: str, transform: carla.Transform, parent=None,
                 attributes: dict | None = None) -> None:
        self.world, self.id, self.type_id, self.parent = world, id, type_id, parent
        self.attributes = dict(attributes or {})
        self.relative = transform
        self.is_alive = True

    def destroy(self) -> bool:
        self.is_alive = False
        self.world.actors.pop(self.id, None)
        return True


class Vehicle(Actor):
    bounding_box = carla.BoundingBox(carla.Location(0.0, 0.0, 0.75), carla.Vector3D(2.4, 1.0, 0.75))

    def __init__(self, world, id, type_id, transform, **kw) -> None:
        super().__init__(world, id, type_id, transform, **kw)
        # the pose in OUR frame (x, y, yaw, speed): the double integrates there
        self.pose = np.array([transform.location.x, -transform.location.y, -math.radians(transform.rotation.yaw), 0.0])
        self.control = carla.VehicleControl()
        self.autopilot = False
        self.accel = 0.0
        self.yaw_rate = 0.0
        self.light_state = carla.VehicleLightState.NONE

    def get_transform(self) -> carla.Transform:
        x, y, yaw, _ = self.pose
        return carla.Transform(carla.Location(float(x), float(-y), 0.0), carla.Rotation(yaw=-math.degrees(yaw)))

    def get_location(self) -> carla.Location:
        return self.get_transform().location

    def get_velocity(self) -> carla.Vector3D:
        _, _, yaw, v = self.pose
        return carla.Vector3D(float(v * math.cos(yaw)), float(-v * math.sin(yaw)), 0.0)

    def get_acceleration(self) -> carla.Vector3D:
        yaw = self.pose[2]
        return carla.Vector3D(float(self.accel * math.cos(yaw)), float(-self.accel * math.sin(yaw)), 0.0)

    def get_angular_velocity(self) -> carla.Vector3D:
        return carla.Vector3D(0.0, 0.0, float(-math.degrees(self.yaw_rate)))

    def get_speed_limit(self) -> float:
        return SPEED_LIMIT_KMH

    def get_physics_control(self):
        return SimpleNamespace(wheels=[SimpleNamespace(max_steer_angle=70.0) for _ in range(4)])

    def apply_control(self, control: carla.VehicleControl) -> None:
        self.control = control

    def set_autopilot(self, enabled: bool = True, port: int = 8000) -> None:
        self.autopilot = bool(enabled)

    def set_target_velocity(self, velocity: carla.Vector3D) -> None:
        self.pose[3] = math.hypot(velocity.x, velocity.y)

    def get_light_state(self) -> carla.VehicleLightState:
        return self.light_state  # the double's traffic goes straight on: no indicator unless a test sets one


class Sensor(Actor):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.callback = None

    def listen(self, callback) -> None:
        self.callback = callback

    @property
    def is_listening(self) -> bool:
        return self.callback is not None

    def stop(self) -> None:
        self.callback = None


class ActorList(list):
    def filter(self, pattern: str) -> ActorList:
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))


def _corners(pose: np.ndarray, length: float, width: float) -> np.ndarray:
    x, y, yaw = pose[:3]
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.array([[length / 2, width / 2], [length / 2, -width / 2], [-length / 2, -width / 2],
                     [-length / 2, width / 2]])
    return np.array([x, y]) + half @ np.array([[c, s], [-s, c]])


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals (4, 2)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


class World:
    def __init__(self, client: Client, carla_map: carla.Map) -> None:
        self.client, self.map = client, carla_map
        self.settings = carla.WorldSettings()
        self.actors: dict[int, Actor] = {}
        self.frame = 0
        self._ids = itertools.count(100)
        self.geometry = VehicleGeometry()
        self._touching: set[int] = set()
        self._lane: tuple | None = None
        self.ticks = 0

    # --------------------------------------------------------------- API subset
    def get_map(self) -> carla.Map:
        return self.map

    def get_settings(self) -> carla.WorldSettings:
        s = self.settings
        return carla.WorldSettings(synchronous_mode=s.synchronous_mode, no_rendering_mode=s.no_rendering_mode,
                                   fixed_delta_seconds=s.fixed_delta_seconds or 0.0)

    def apply_settings(self, settings: carla.WorldSettings) -> int:
        self.settings = settings
        return self.frame

    def get_blueprint_library(self) -> BlueprintLibrary:
        return BlueprintLibrary()

    def get_actors(self) -> ActorList:
        return ActorList(self.actors.values())

    def spawn_actor(self, bp: Blueprint, transform: carla.Transform, attach_to=None) -> Actor:
        actor = self.try_spawn_actor(bp, transform, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, bp: Blueprint, transform: carla.Transform, attach_to=None):
        if bp.id.startswith("vehicle."):
            new = Vehicle(self, next(self._ids), bp.id, transform, attributes=bp.attributes)
            for other in self._vehicles():
                if _overlap(_corners(new.pose, 6.0, 2.5), _corners(other.pose, 6.0, 2.5)):
                    return None
        else:
            new = Sensor(self, next(self._ids), bp.id, transform, parent=attach_to, attributes=bp.attributes)
        self.actors[new.id] = new
        return new

    def tick(self, seconds: float = 10.0) -> int:
        self.ticks += 1
        if self.frame + 1 in self.client.fail_ticks:
            self.client.fail_ticks.discard(self.frame + 1)
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the simulator, make sure "
                               "the simulator is ready and connected to localhost:2000")
        dt = self.settings.fixed_delta_seconds or 0.05
        for v in self._vehicles():
            self._drive_npc(v, dt) if v.autopilot else self._drive_ego(v, dt)
        self.frame += 1
        self._fire_sensors()
        return self.frame

    # --------------------------------------------------------------- the modelled server
    def _vehicles(self) -> list[Vehicle]:
        return [a for a in self.actors.values() if isinstance(a, Vehicle)]

    def _drive_ego(self, v: Vehicle, dt: float) -> None:
        c, speed = v.control, v.pose[3]
        accel = c.throttle * 4.0 - 0.02 * speed if c.brake <= 0 else -c.brake * 5.0
        steer = -c.steer * math.radians(70.0)
        before = v.pose.copy()
        v.pose = np.asarray(self.geometry.step(v.pose, np.array([accel, steer]), dt), dtype=np.float64)
        v.accel = (v.pose[3] - before[3]) / dt
        v.yaw_rate = math.atan2(math.sin(v.pose[2] - before[2]), math.cos(v.pose[2] - before[2])) / dt

    def _drive_npc(self, v: Vehicle, dt: float) -> None:
        x, y, yaw, speed = v.pose
        ahead = min((math.hypot(o.pose[0] - x, o.pose[1] - y) for o in self._vehicles() if o is not v
                     and math.cos(yaw) * (o.pose[0] - x) + math.sin(yaw) * (o.pose[1] - y) > 0
                     and abs(-math.sin(yaw) * (o.pose[0] - x) + math.cos(yaw) * (o.pose[1] - y)) < 1.5), default=1e9)
        target = NPC_SPEED if ahead > 20.0 else NPC_SPEED * max(0.0, (ahead - 8.0) / 12.0)
        speed += float(np.clip(target - speed, -4.0 * dt, 2.0 * dt))
        wp = self.map.get_waypoint(carla.Location(float(x), float(-y), 0.0))
        nxt = wp.next(max(speed * dt, 0.01)) if wp is not None and speed > 0.01 else [wp]
        if not nxt or nxt[0] is None:
            v.destroy()  # the end of its road: it leaves the world
            return
        t = nxt[0].transform
        v.pose = np.array([t.location.x, -t.location.y, -math.radians(t.rotation.yaw), speed])

    def _ego(self) -> Vehicle | None:
        return next((v for v in self._vehicles() if not v.autopilot), None)

    def _fire_sensors(self) -> None:
        ego = self._ego()
        if ego is None:
            return
        box = _corners(ego.pose, 2 * Vehicle.bounding_box.extent.x, 2 * Vehicle.bounding_box.extent.y)
        touching = {o.id for o in self._vehicles() if o is not ego
                    and _overlap(box, _corners(o.pose, 2 * o.bounding_box.extent.x, 2 * o.bounding_box.extent.y))}
        wp = self.map.get_waypoint(ego.get_location())
        lane = None if wp is None else (wp.road_id, wp.lane_id)
        for sensor in [a for a in self.actors.values() if isinstance(a, Sensor) and a.parent is ego and a.callback]:
            if sensor.type_id == "sensor.other.collision":
                for other in touching - self._touching:
                    sensor.callback(SimpleNamespace(frame=self.frame, actor=ego, other_actor=self.actors[other]))
            elif sensor.type_id == "sensor.other.lane_invasion":
                if self._lane is not None and lane is not None and lane[1] != self._lane[1] and lane[0] == self._lane[0]:
                    sensor.callback(SimpleNamespace(frame=self.frame, actor=ego, crossed_lane_markings=[]))
            elif sensor.type_id == "sensor.camera.rgb":
                w, h = int(sensor.attributes["image_size_x"]), int(sensor.attributes["image_size_y"])
                pixels = np.full((h, w, 4), (self.frame % 200, 80, 160, 255), dtype=np.uint8)  # B, G, R, A
                sensor.callback(SimpleNamespace(frame=self.frame, width=w, height=h, raw_data=pixels.tobytes()))
        self._touching, self._lane = touching, lane


class TrafficManager:
    def __init__(self) -> None:
        self.synchronous, self.seed = False, None

    def set_synchronous_mode(self, on: bool) -> None:
        self.synchronous = bool(on)

    def set_random_device_seed(self, seed: int) -> None:
        self.seed = int(seed)

    def update_vehicle_lights(self, actor, do_update: bool) -> None:
        actor.lights_by_tm = bool(do_update)


class Client:
    """``carla.Client`` of the double: one world on ``map_name`` (a file in tests/data)."""

    def __init__(self, map_name: str = "straight", fail_ticks=(), unreachable: bool = False) -> None:
        self.map_name = map_name
        self.fail_ticks = set(fail_ticks)
        self.unreachable = unreachable
        self.timeout = None
        self.world = World(self, load_map(map_name))
        self.tm = TrafficManager()
        self.connections = 0

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_world(self) -> World:
        if self.unreachable:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator, make sure the simulator is "
                               "ready and connected to localhost:2000")
        return self.world

    def load_world(self, name: str) -> World:
        if name != self.map_name:
            raise RuntimeError(f"map not found: {name}")
        return self.world

    def get_trafficmanager(self, port: int = 8000) -> TrafficManager:
        return self.tm
