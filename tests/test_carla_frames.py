"""sim.carla_frames: our frames <-> CARLA's, checked against the real ``carla`` wheel's own
matrices where it is installed (it computes transforms without a server), and as plain math
everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.cameras import CameraSpec, default_rig, quat_from_rpy, quat_to_matrix
from sim.carla_frames import (
    CarlaControlMap,
    camera_to_carla,
    carla_rotation_matrix,
    pose_from_carla,
    pose_to_carla,
    rotation_from_carla,
    rotation_to_carla,
    to_carla_point,
)


def random_rotations(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return [quat_to_matrix(tuple(v / np.linalg.norm(v))) for v in q]


def test_round_trip_on_200_random_poses():
    for r in random_rotations(200):
        back = rotation_from_carla(*rotation_to_carla(r))
        assert np.abs(back - r).max() < 1e-9


def test_left_handed_conventions_by_example():
    # a camera turned 90 degrees to our left looks along CARLA's -y: yaw -90 (clockwise +)
    left = quat_to_matrix(quat_from_rpy(0.0, 0.0, math.pi / 2))
    assert rotation_to_carla(left) == pytest.approx((0.0, -90.0, 0.0), abs=1e-9)
    # ours: positive pitch tilts down; CARLA: positive pitch is nose up
    down = quat_to_matrix(quat_from_rpy(0.0, math.radians(5.0), 0.0))
    assert rotation_to_carla(down) == pytest.approx((-5.0, 0.0, 0.0), abs=1e-9)
    # ours: positive roll lowers the right side; CARLA: positive roll is right side down
    roll = quat_to_matrix(quat_from_rpy(math.radians(7.0), 0.0, 0.0))
    assert rotation_to_carla(roll) == pytest.approx((0.0, 0.0, 7.0), abs=1e-9)
    assert to_carla_point((1.0, 2.0, 3.0)).tolist() == [1.0, -2.0, 3.0]
    (loc, yaw_c) = pose_to_carla(10.0, 5.0, math.radians(30.0), 0.5)
    assert loc == (10.0, -5.0, 0.5) and yaw_c == pytest.approx(-30.0)
    assert pose_from_carla(loc, yaw_c) == pytest.approx((10.0, 5.0, math.radians(30.0)))
    assert pose_from_carla((0.0, 0.0, 0.0), 180.0)[2] == pytest.approx(math.pi)


def test_gimbal_lock_still_round_trips():
    for pitch in (90.0, -90.0):
        r = rotation_from_carla(pitch, 35.0, 0.0)
        assert np.abs(rotation_from_carla(*rotation_to_carla(r)) - r).max() < 1e-9


def test_against_the_real_wheel_on_200_random_poses():
    carla = pytest.importorskip("carla")
    from sim.carla_frames import carla_transform

    rng = np.random.default_rng(1)
    worst_matrix = worst_point = worst_trip = 0.0
    for r in random_rotations(200, seed=2):
        t_ours = rng.uniform(-50, 50, size=3)
        rot = rotation_to_carla(r)
        tf = carla_transform(to_carla_point(t_ours), rot)
        m = np.array(tf.get_matrix())
        assert m.shape == (4, 4)
        worst_matrix = max(worst_matrix, np.abs(m[:3, :3] - carla_rotation_matrix(*rot)).max())
        # a point in the body frame, through the wheel, back to ours == R p + t
        p = rng.uniform(-5, 5, size=3)
        moved = tf.transform(carla.Location(*to_carla_point(p)))
        got = to_carla_point([moved.x, moved.y, moved.z])
        worst_point = max(worst_point, np.abs(got - (r @ p + t_ours)).max())
        # ours -> CARLA -> ours, with the wheel holding the angles (float32 degrees)
        held = (tf.rotation.pitch, tf.rotation.yaw, tf.rotation.roll)
        worst_trip = max(worst_trip, np.abs(rotation_from_carla(*held) - r).max())
    assert worst_matrix < 1e-5 and worst_trip < 1e-5
    assert worst_point < 1e-4 * 50  # float32 locations of up to 55 m


def test_default_rig_cameras_map_onto_carla():
    rig = default_rig()
    for spec in rig:
        loc, (pitch, yaw, roll) = camera_to_carla(spec)
        assert loc[1] == pytest.approx(-spec.position[1]) and roll == pytest.approx(0.0, abs=1e-9)
        assert pitch == pytest.approx(-5.0, abs=1e-9)  # pitched 5 degrees down = CARLA nose down
    yaws = {s.name: camera_to_carla(s)[1][1] for s in rig}
    assert yaws["front"] == pytest.approx(0.0) and yaws["front_left"] == pytest.approx(-55.0)
    assert yaws["front_right"] == pytest.approx(55.0) and abs(yaws["back"]) == pytest.approx(180.0)
    with pytest.raises(ValueError):
        CameraSpec("bad", (0.0, 0.0), (1.0, 0.0, 0.0, 0.0))


def test_control_map():
    m = CarlaControlMap()
    throttle, brake, steer = m.pedals_and_steer(np.array([2.0, 0.1]), speed=10.0)
    assert throttle == pytest.approx((2.0 + 0.2) / 4.0) and brake == 0.0
    assert steer == pytest.approx(-0.1 / m.max_steer_angle)  # ours + = left, CARLA + = right
    throttle, brake, _ = m.pedals_and_steer(np.array([-6.0, 0.0]), speed=10.0)
    assert throttle == 0.0 and brake == 1.0  # -6 saturates CARLA's ~-5 full brake
    throttle, brake, _ = m.pedals_and_steer(np.array([0.0, 0.0]), speed=20.0)
    assert throttle == pytest.approx(0.1) and brake == 0.0  # holding speed needs some throttle
    for bad in ([np.nan, 0.0], [0.0], [1.0, np.inf]):
        with pytest.raises(ValueError, match="finite"):
            m.pedals_and_steer(np.array(bad), speed=0.0)
    with pytest.raises(ValueError, match="max_decel"):
        CarlaControlMap(max_decel=0.0)


def test_real_vehicle_control_when_the_wheel_is_installed():
    pytest.importorskip("carla")
    from sim.carla_frames import carla_control

    c = carla_control(CarlaControlMap(), np.array([-2.5, -0.2]), speed=5.0)
    assert c.brake == pytest.approx(0.5) and c.throttle == 0.0 and c.steer > 0  # a right turn
