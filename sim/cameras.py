"""Camera specs (extrinsics + intrinsics), the default surround rig, and pinhole projection.

Conventions
-----------
* Extrinsics are relative to the ego frame (x forward, y left, z up, metres; see
  ``sim.interface``). ``position`` is the optical centre. ``rotation`` is a unit quaternion
  ``(w, x, y, z)`` that rotates vectors from the camera body frame into the ego frame.
* Camera body frame: x along the optical axis, y left, z up (the ego's axes for an identity
  rotation, so the identity camera looks straight ahead).
* Intrinsics: horizontal field of view ``fov_deg`` in (0, 180), ``width`` x ``height`` pixels,
  square pixels, principal point at the image centre. Focal length
  ``f = (width / 2) / tan(fov / 2)`` (CARLA's convention).
* Pixel of a point at body coordinates (x, y, z) with x > 0:
  ``u = cx - f * y / x``, ``v = cy - f * z / x`` (u right, v down, origin top-left,
  ``cx = width / 2``, ``cy = height / 2``, pixel centres at half-integers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraSpec:
    """One camera: name, pose on the ego (position + quaternion) and pinhole intrinsics."""

    name: str
    position: tuple[float, float, float]  # metres, ego frame
    rotation: tuple[float, float, float, float]  # unit quaternion (w, x, y, z), camera -> ego
    fov_deg: float = 90.0
    width: int = 96
    height: int = 64

    def __post_init__(self) -> None:
        if len(self.position) != 3 or not all(math.isfinite(v) for v in self.position):
            raise ValueError(f"camera {self.name!r}: position must be 3 finite numbers")
        if len(self.rotation) != 4 or not all(math.isfinite(v) for v in self.rotation):
            raise ValueError(f"camera {self.name!r}: rotation must be 4 finite numbers (w, x, y, z)")
        norm = math.sqrt(sum(v * v for v in self.rotation))
        if norm < 1e-9:
            raise ValueError(f"camera {self.name!r}: rotation quaternion has zero norm")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"camera {self.name!r}: fov_deg must be in (0, 180), got {self.fov_deg}")
        if self.width < 2 or self.height < 2:
            raise ValueError(f"camera {self.name!r}: width and height must be >= 2 pixels")
        # Store the unit quaternion so every consumer sees the same rotation.
        object.__setattr__(self, "rotation", tuple(float(v) / norm for v in self.rotation))
        object.__setattr__(self, "position", tuple(float(v) for v in self.position))

    @property
    def focal(self) -> float:
        return (self.width / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def rotation_matrix(self) -> np.ndarray:
        """(3, 3) matrix R with ego_vec = R @ camera_vec."""
        return quat_to_matrix(self.rotation)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "position": list(self.position),
            "rotation": list(self.rotation),
            "fov_deg": self.fov_deg,
            "width": self.width,
            "height": self.height,
        }

    @staticmethod
    def from_dict(d: dict) -> CameraSpec:
        return CameraSpec(
            name=str(d["name"]),
            position=tuple(d["position"]),
            rotation=tuple(d["rotation"]),
            fov_deg=float(d["fov_deg"]),
            width=int(d["width"]),
            height=int(d["height"]),
        )


def quat_to_matrix(q: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """Quaternion (w, x, y, z) for intrinsic z-y'-x'' rotations (yaw, then pitch, then roll),
    radians, right-handed about the ego axes: positive yaw turns the camera left, positive
    pitch tilts it down (x toward -z), positive roll lowers its right side."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    )


def quat_to_rpy_deg(q: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Inverse of ``quat_from_rpy``, in degrees (roll, pitch, yaw)."""
    r = quat_to_matrix(q)
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    roll = math.atan2(r[2, 1], r[2, 2])
    yaw = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(roll), math.degrees(pitch), math.degrees(yaw)


DEFAULT_RIG_LAYOUT = (
    # name, x, y, z, yaw (deg, left positive), fov
    ("front", 1.5, 0.0, 1.6, 0.0, 90.0),
    ("front_left", 1.2, 0.8, 1.6, 55.0, 90.0),
    ("front_right", 1.2, -0.8, 1.6, -55.0, 90.0),
    ("back", -1.8, 0.0, 1.6, 180.0, 90.0),
    ("back_left", -1.0, 0.8, 1.6, 125.0, 90.0),
    ("back_right", -1.0, -0.8, 1.6, -125.0, 90.0),
)
"""Six surround cameras, nuScenes-like: 90 degrees each, overlapping, pitched 5 degrees down."""


def default_rig(width: int = 96, height: int = 64, pitch_deg: float = 5.0) -> tuple[CameraSpec, ...]:
    """The default 6-camera surround rig at the given resolution."""
    return tuple(
        CameraSpec(
            name=name,
            position=(x, y, z),
            rotation=quat_from_rpy(0.0, math.radians(pitch_deg), math.radians(yaw)),
            fov_deg=fov,
            width=width,
            height=height,
        )
        for name, x, y, z, yaw, fov in DEFAULT_RIG_LAYOUT
    )


def ego_to_camera(spec: CameraSpec, points_ego: np.ndarray) -> np.ndarray:
    """(..., 3) points in the ego frame -> (..., 3) in the camera body frame."""
    r = spec.rotation_matrix
    return (np.asarray(points_ego, dtype=np.float64) - np.asarray(spec.position)) @ r


def project(spec: CameraSpec, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (..., 3) ego-frame points to pixels.

    Returns ``(uv, in_front)``: ``uv`` (..., 2) float pixel coordinates (u right, v down) and a
    boolean mask of points in front of the camera (x_cam > 1 cm). Points behind get NaN.
    """
    pc = ego_to_camera(spec, points_ego)
    depth = pc[..., 0]
    in_front = depth > 1e-2
    safe = np.where(in_front, depth, np.nan)
    f = spec.focal
    u = spec.width / 2.0 - f * pc[..., 1] / safe
    v = spec.height / 2.0 - f * pc[..., 2] / safe
    return np.stack([u, v], axis=-1), in_front


def pixel_rays_ego(spec: CameraSpec) -> np.ndarray:
    """(H, W, 3) unit ray directions in the ego frame through each pixel centre."""
    f = spec.focal
    u = np.arange(spec.width) + 0.5
    v = np.arange(spec.height) + 0.5
    uu, vv = np.meshgrid(u, v)
    rays_cam = np.stack(
        [np.ones_like(uu), (spec.width / 2.0 - uu) / f, (spec.height / 2.0 - vv) / f], axis=-1
    )
    rays = rays_cam @ spec.rotation_matrix.T
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)
