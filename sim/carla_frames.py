"""Conversions between this project's frames and CARLA's, and our physical actions as CARLA
controls: the first piece of the CARLA backend (issue "The CARLA backend").

CARLA (Unreal) is left-handed: x forward, y RIGHT, z up, metres; angles in degrees, yaw
clockwise seen from above, pitch nose up, roll right side down. Ours is right-handed (x
forward / east, y LEFT / north, z up; radians; ``sim.interface``). The two differ by the
mirror ``MIRROR = diag(1, -1, 1)``:

* a point or vector: ``p_carla = MIRROR @ p_ours``;
* a rotation matrix (body -> parent, e.g. a camera's ``CameraSpec.rotation_matrix``):
  ``R_carla = MIRROR @ R_ours @ MIRROR``; its CARLA Euler angles are read from ``R_carla`` in
  the order ``carla.Transform.get_matrix`` builds it (yaw about z, then pitch, then roll).

So a camera body frame (ours: x along the optical axis, y left, z up) becomes CARLA's camera
frame (x forward, y right, z up) with no further flip. Every function here is plain numpy;
``carla_transform`` / ``carla_control`` build the real client's objects when the ``carla``
wheel is installed (``pip install -e .[carla]``). The tests check these conversions against
the wheel's own ``Transform.get_matrix`` / ``transform`` on random poses.

What only a server can check (see ``CarlaControlMap``): how much acceleration a throttle
value gives at a speed, the full-brake deceleration, the wheel angle of ``steer = 1`` for the
spawned blueprint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.interface import ACTION_HIGH, ACTION_LOW

MIRROR = np.diag([1.0, -1.0, 1.0])
"""Ours <-> CARLA for points and vectors (its own inverse)."""


def to_carla_point(p: np.ndarray | tuple) -> np.ndarray:
    """(..., 3) points or vectors in our frame -> CARLA's (y negated)."""
    return np.asarray(p, dtype=np.float64) * np.array([1.0, -1.0, 1.0])


from_carla_point = to_carla_point  # the mirror is its own inverse


def carla_rotation_matrix(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """The (3, 3) body -> parent matrix CARLA builds from a ``carla.Rotation`` (the upper-left
    block of ``carla.Transform.get_matrix()``), in CARLA's own frame."""
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cr, sr = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    return np.array([[cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
                     [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
                     [sp, -cp * sr, cp * cr]])


def rotation_to_carla(r_ours: np.ndarray) -> tuple[float, float, float]:
    """Our (3, 3) body -> parent rotation -> CARLA ``(pitch, yaw, roll)`` in degrees. At
    pitch +-90 degrees (gimbal lock) yaw and roll are not unique; roll is then set to 0."""
    r = MIRROR @ np.asarray(r_ours, dtype=np.float64) @ MIRROR
    pitch = math.asin(max(-1.0, min(1.0, r[2, 0])))
    if abs(r[2, 0]) > 1.0 - 1e-12:
        return math.degrees(pitch), math.degrees(math.atan2(-r[0, 1], r[1, 1])), 0.0
    yaw = math.atan2(r[1, 0], r[0, 0])
    roll = math.atan2(-r[2, 1], r[2, 2])
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def rotation_from_carla(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """CARLA ``(pitch, yaw, roll)`` in degrees -> our (3, 3) body -> parent rotation."""
    return MIRROR @ carla_rotation_matrix(pitch_deg, yaw_deg, roll_deg) @ MIRROR


def pose_to_carla(x: float, y: float, yaw: float, z: float = 0.0) -> tuple[tuple[float, float, float], float]:
    """A vehicle pose in our world frame (m, rad) -> (CARLA location, CARLA yaw in degrees)."""
    return (float(x), -float(y), float(z)), -math.degrees(yaw)


def pose_from_carla(location: tuple[float, float, float], yaw_deg: float) -> tuple[float, float, float]:
    """A CARLA location + yaw (degrees) -> our world ``(x, y, yaw)``, yaw wrapped to (-pi, pi]."""
    yaw = -math.radians(yaw_deg)
    yaw = math.atan2(math.sin(yaw), math.cos(yaw))
    return float(location[0]), -float(location[1]), yaw if yaw > -math.pi else math.pi


def camera_to_carla(spec) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """A ``sim.cameras.CameraSpec``'s extrinsics -> (CARLA location relative to the ego,
    CARLA ``(pitch, yaw, roll)`` in degrees) for ``world.spawn_actor(camera_bp, transform,
    attach_to=ego)``; its ``fov`` attribute is ``spec.fov_deg`` (both use the horizontal FOV
    and ``f = W / (2 tan(fov / 2))``)."""
    return tuple(to_carla_point(spec.position).tolist()), rotation_to_carla(spec.rotation_matrix)


def carla_transform(location: tuple[float, float, float], rotation: tuple[float, float, float]):
    """A real ``carla.Transform`` from a CARLA location and ``(pitch, yaw, roll)`` (degrees)."""
    import carla

    pitch, yaw, roll = rotation
    return carla.Transform(carla.Location(*map(float, location)),
                           carla.Rotation(pitch=float(pitch), yaw=float(yaw), roll=float(roll)))


@dataclass(frozen=True)
class CarlaControlMap:
    """Our ``[accel m/s^2, steer rad (+ = left)]`` -> ``carla.VehicleControl`` fields.

    CARLA has no acceleration command: throttle and brake are pedal positions in [0, 1] whose
    effect depends on the vehicle, its gear and its speed. This map is the open-loop part of
    that conversion (a backend adds a speed-tracking correction on top): ``throttle = (accel +
    drag(v)) / max_accel``, ``brake = -accel / max_decel``. The defaults are nominal figures for
    CARLA's default sedan, NOT measured here (no server): a user calibrates them with the live
    test (``CARLA_HOST`` set), which drives fixed pedal steps and fits these numbers."""

    max_accel: float = 4.0
    """m/s^2 at full throttle from low speed."""
    max_decel: float = 5.0
    """m/s^2 at full brake (CARLA's sedan brakes at about -5: our -6 limit saturates)."""
    drag_per_speed: float = 0.02
    """m/s^2 of throttle needed per m/s of speed to hold it (rolling + air drag, linearized)."""
    max_steer_angle: float = math.radians(70.0)
    """rad of front-wheel angle at ``steer = 1``; read it from the spawned vehicle:
    ``vehicle.get_physics_control().wheels[0].max_steer_angle`` (degrees)."""

    def __post_init__(self) -> None:
        for name in ("max_accel", "max_decel", "max_steer_angle"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CarlaControlMap.{name} must be a positive number, got {value}")
        if not (math.isfinite(self.drag_per_speed) and self.drag_per_speed >= 0):
            raise ValueError(f"CarlaControlMap.drag_per_speed must be >= 0, got {self.drag_per_speed}")

    def pedals_and_steer(self, action: np.ndarray, speed: float) -> tuple[float, float, float]:
        """``(throttle, brake, steer)`` for one action at ``speed`` (m/s): pedals in [0, 1],
        CARLA's steer in [-1, 1] with + = RIGHT. Raises on a non-finite action."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 2 finite numbers [accel, steer], got {action.tolist()}")
        accel, steer = np.clip(action, ACTION_LOW, ACTION_HIGH)
        need = accel + self.drag_per_speed * max(float(speed), 0.0)
        throttle = float(np.clip(need / self.max_accel, 0.0, 1.0)) if accel >= 0 else 0.0
        brake = float(np.clip(-accel / self.max_decel, 0.0, 1.0)) if accel < 0 else 0.0
        return throttle, brake, float(np.clip(-steer / self.max_steer_angle, -1.0, 1.0))


def carla_control(control_map: CarlaControlMap, action: np.ndarray, speed: float):
    """A real ``carla.VehicleControl`` for one of our actions."""
    import carla

    throttle, brake, steer = control_map.pedals_and_steer(action, speed)
    return carla.VehicleControl(throttle=throttle, steer=steer, brake=brake)
