"""The perspective renderer agrees with ``sim.cameras.project`` and with the lane conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.cameras import CameraSpec, default_rig, project, quat_from_rpy
from sim.interface import LaneGeom, Scene
from sim.render import GROUND_COLOURS, VEHICLE_COLOURS, CameraRenderer, render_grid

SHADES = (1.15, 0.9, 0.8, 0.65)


def road(lines=(("solid", "striped"),)) -> tuple[LaneGeom, ...]:
    """Lanes 4 m wide along +x from x = -100 (s = x + 100); lane i centred at y = -4 i."""
    return tuple(
        LaneGeom("straight", 4.0, tuple(ln), start=(-100.0, -4.0 * i), end=(1000.0, -4.0 * i))
        for i, ln in enumerate(lines)
    )


def car(x: float, y: float, yaw: float = 0.0, colour: int = 0, length: float = 4.5,
        width: float = 1.9, height: float = 1.5) -> list[float]:
    return [x, y, yaw, length, width, height, colour]


def scene(vehicles=(), lanes=None, ego=(0.0, 0.0, 0.0)) -> Scene:
    return Scene(
        lanes=road() if lanes is None else lanes,
        vehicles=np.array(vehicles, dtype=np.float64).reshape(-1, 7),
        ego_pose=np.array(ego, dtype=np.float64),
    )


def pixel(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return img[int(uv[1]), int(uv[0])].astype(int)


def is_shade_of(rgb: np.ndarray, colour_id: int, shades=SHADES) -> bool:
    base = VEHICLE_COLOURS[colour_id].astype(float)
    return any(np.abs(rgb - np.clip(base * k, 0, 255)).max() <= 2 for k in shades)


def cam(yaw_deg: float = 0.0, y: float = 0.0, size=(192, 128)) -> CameraSpec:
    return CameraSpec("c", (0.0, y, 1.5), quat_from_rpy(0.0, 0.0, math.radians(yaw_deg)),
                      90.0, size[0], size[1])


def vehicle_mask(renderer: CameraRenderer, vehicles) -> np.ndarray:
    full, empty = renderer.render(scene(vehicles)), renderer.render(scene())
    return (full != empty).any(-1)


def test_vehicle_lands_where_project_puts_it_and_not_in_back_camera():
    rig = default_rig()
    r = CameraRenderer(rig)
    frames = r.render(scene([car(20.0, 0.0, colour=0)]))
    assert frames.shape == (6, 64, 96, 3) and frames.dtype == np.uint8
    front = [s.name for s in rig].index("front")
    rear_face_centre = np.array([20.0 - 2.25, 0.0, 0.75])
    uv, ok = project(rig[front], rear_face_centre)
    assert ok
    rgb = pixel(frames[front], uv)
    assert is_shade_of(rgb, 0, shades=(0.8,)), rgb  # the rear face's shade: culling is right
    assert np.abs(rgb - GROUND_COLOURS[1]).max() > 40
    empty = r.render(scene())
    back = [s.name for s in rig].index("back")
    np.testing.assert_array_equal(frames[back], empty[back])


def mask_centre_u(mask: np.ndarray) -> float:
    assert mask.sum() > 20
    return float(np.nonzero(mask)[1].mean() + 0.5)


def test_camera_yaw_and_translation_shift_the_vehicle_right():
    vehicles = [car(20.0 + 2.25, 0.0, colour=1)]  # rear face 20 m ahead of the cameras
    base, turned, moved = (cam(), cam(yaw_deg=10.0), cam(y=1.0))
    f = base.focal
    u0 = mask_centre_u(vehicle_mask(CameraRenderer([base]), vehicles)[0])
    u_turn = mask_centre_u(vehicle_mask(CameraRenderer([turned]), vehicles)[0])
    u_move = mask_centre_u(vehicle_mask(CameraRenderer([moved]), vehicles)[0])
    assert abs(u0 - base.width / 2) < 0.5
    assert abs((u_turn - u0) - f * math.tan(math.radians(10.0))) < 1.5
    assert abs((u_move - u0) - f / 20.0) < 1.0


def transformed(s: Scene, theta: float, shift: tuple[float, float]) -> Scene:
    c, si = math.cos(theta), math.sin(theta)

    def pt(p):
        return (c * p[0] - si * p[1] + shift[0], si * p[0] + c * p[1] + shift[1])

    lanes = tuple(
        LaneGeom(ln.kind, ln.width, ln.lines, start=pt(ln.start), end=pt(ln.end),
                 center=pt(ln.center), radius=ln.radius, start_phase=ln.start_phase + theta,
                 end_phase=ln.end_phase + theta, ccw=ln.ccw)
        for ln in s.lanes
    )
    v = s.vehicles.copy()
    v[:, 0], v[:, 1] = c * s.vehicles[:, 0] - si * s.vehicles[:, 1] + shift[0], \
        si * s.vehicles[:, 0] + c * s.vehicles[:, 1] + shift[1]
    v[:, 2] += theta
    ego = np.array([*pt(s.ego_pose[:2]), s.ego_pose[2] + theta])
    return Scene(lanes=lanes, vehicles=v, ego_pose=ego)


def test_frame_invariance_under_world_rigid_motion():
    lanes = road((("solid", "striped"), ("striped", "solid"))) + (
        LaneGeom("arc", 4.0, ("solid", "striped"), center=(40.0, 60.0), radius=60.0,
                 start_phase=-math.pi / 2, end_phase=0.0, ccw=True),
    )
    vehicles = [car(25.0, 0.3, 0.05, 2), car(-15.0, -4.0, 0.0, 5), car(8.0, 6.0, 1.2, 3),
                car(45.0, 3.0, 0.4, 8)]
    a = scene(vehicles, lanes, ego=(10.0, -3.0, 0.15))
    b = transformed(a, theta=2.3, shift=(-3217.5, 845.25))
    r = CameraRenderer(default_rig())
    img_a, img_b = r.render(a), r.render(b)
    differing = (img_a != img_b).any(-1).mean()
    assert differing < 1e-3, differing
    assert len(np.unique(img_a.reshape(-1, 3), axis=0)) > 10  # not a trivially blank image


def test_road_sky_and_markings_where_projected():
    spec = cam()
    r = CameraRenderer([spec])
    lanes = road((("solid", "striped"), ("striped", "none")))
    img = r.render(scene(lanes=lanes))[0]
    sky = img[3, spec.width // 2].astype(int)
    assert sky[2] > sky[0] + 40  # blue above the horizon
    asphalt = pixel(img, project(spec, np.array([10.0, 0.0, 0.0]))[0])
    assert np.abs(asphalt - GROUND_COLOURS[1]).max() <= 3
    grass = pixel(img, project(spec, np.array([10.0, 4.0, 0.0]))[0])
    assert np.abs(grass - GROUND_COLOURS[0]).max() <= 3

    def white_near(x: float, y: float) -> bool:
        u, v = project(spec, np.array([x, y, 0.0]))[0].astype(int)
        patch = img[v - 1: v + 2, u - 1: u + 2].astype(int)
        return bool((np.abs(patch - GROUND_COLOURS[2]).max(-1) <= 3).any())

    assert white_near(12.0, 2.0)  # solid left edge of lane 0
    assert white_near(9.5, -2.0)  # s = 109.5, 109.5 % 9 = 1.5: a dash
    assert not white_near(14.0, -2.0)  # s = 114, 114 % 9 = 6: a gap
    assert not white_near(12.0, -6.0)  # lane 1 right side is "none"


def test_arc_lane_left_side_faces_the_centre_when_ccw():
    spec = cam()
    r = CameraRenderer([spec])
    # Starts at the origin heading east and bends left (its centre is 50 m to the north).
    arc = LaneGeom("arc", 4.0, ("solid", "none"), center=(0.0, 50.0), radius=50.0,
                   start_phase=-math.pi / 2, end_phase=0.0, ccw=True)
    img = r.render(scene(lanes=(arc,)))[0]
    phase = -math.pi / 2 + 0.2
    on_centre = np.array([50.0 * math.cos(phase), 50.0 + 50.0 * math.sin(phase), 0.0])
    assert np.abs(pixel(img, project(spec, on_centre)[0]) - GROUND_COLOURS[1]).max() <= 3
    inner = np.array([48.0 * math.cos(phase), 50.0 + 48.0 * math.sin(phase), 0.0])
    u, v = project(spec, inner)[0].astype(int)
    patch = img[v - 1: v + 2, u - 1: u + 2].astype(int)
    assert (np.abs(patch - GROUND_COLOURS[2]).max(-1) <= 3).any()


def test_nearer_vehicle_hides_farther_one():
    spec = cam()
    near = car(15.0, 0.0, colour=0)
    far = car(30.0, 0.0, colour=1, height=3.5)
    img = CameraRenderer([spec]).render(scene([near, far]))[0]
    uv, _ = project(spec, np.array([15.0 - 2.25, 0.0, 0.75]))
    assert is_shade_of(pixel(img, uv), 0, shades=(0.8,))
    uv_top, _ = project(spec, np.array([30.0 - 2.25, 0.0, 3.2]))  # the far one sticks out above
    assert is_shade_of(pixel(img, uv_top), 1, shades=(0.8,))


def test_box_straddling_the_near_plane_is_clipped_not_mangled():
    rig = default_rig()
    r = CameraRenderer(rig)
    names = [s.name for s in rig]
    wall = car(0.0, -3.0, colour=1, length=40.0, width=2.0, height=2.0)  # x from -20 to 20
    full, empty = r.render(scene([wall])), r.render(scene())
    front = names.index("front")
    drawn = (full[front] != empty[front]).any(-1)
    assert drawn.sum() > 100
    assert not drawn[:, : rig[front].width // 2].any()  # the wall is on the camera's right
    assert all(is_shade_of(rgb, 1) for rgb in full[front][drawn].astype(int))
    assert (full[names.index("front_right")] != empty[names.index("front_right")]).any()
    # The part behind x = 1.56 is off-screen for the front camera: cutting it off changes nothing.
    cut = car((1.56 + 20.0) / 2, -3.0, colour=1, length=20.0 - 1.56, width=2.0, height=2.0)
    cut_img = r.render(scene([cut]))[front]
    assert (cut_img != full[front]).any(-1).sum() <= 0.02 * drawn.sum()


def test_mismatched_camera_sizes_raise():
    with pytest.raises(ValueError, match="share one"):
        CameraRenderer([cam(size=(96, 64)), cam(size=(64, 48))])


def test_render_grid_layout():
    rig = default_rig()
    frames = np.stack([np.full((64, 96, 3), 10 * (i + 1), np.uint8) for i in range(6)])
    names = [s.name for s in rig]
    grid = render_grid(frames, names, labels=False)
    assert grid.shape == (2 * 64 + 1, 3 * 96 + 2, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == frames[names.index("front_left"), 0, 0, 0]
    assert grid[0, 97, 0] == frames[names.index("front"), 0, 0, 0]
    assert grid[65, 2 * 97, 0] == frames[names.index("back_right"), 0, 0, 0]
    assert (grid[64] == 0).all() and (grid[:, 96] == 0).all()
    labelled = render_grid(frames, names)
    assert labelled.shape == grid.shape and (labelled != grid).any()
    assert render_grid(frames[:4]).shape == (2 * 64 + 1, 2 * 96 + 1, 3)
