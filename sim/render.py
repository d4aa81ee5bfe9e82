"""Perspective RGB rendering of a ``Scene`` for a camera rig (CPU: numpy + OpenCV).

Conventions (exactly those of ``sim.cameras`` and ``sim.interface``)
--------------------------------------------------------------------
* World frame x east, y north, yaw CCW; ego frame x forward, y left, z up; the ground is z = 0.
* A camera-body point (x, y, z), x > 0, lands at ``u = cx - f*y/x``, ``v = cy - f*z/x`` with
  pixel centres at half-integers, so pixel ``(row, col) = (floor(v), floor(u))`` holds it:
  a point ``sim.cameras.project`` maps to ``uv`` is drawn at ``image[int(v), int(u)]``.
* Output: ``(N, H, W, 3)`` uint8 **RGB**, cameras in the order of the specs; all cameras share
  one (H, W).
* Lanes: ``LaneGeom`` lateral is positive to the LEFT of the driving direction, ``lines`` is
  (left, right). Arcs: ``ccw`` True means s grows counter-clockwise (the left side faces the
  centre). Markings are white within 0.12 m of a lane edge, widened to half a pixel step
  across the line (from each pixel's ground Jacobian) so far lines stay 1 px wide instead of
  breaking up, unless a pixel step exceeds half the lane width; "striped" = 3 m on, 6 m off
  along the lane's s.

Method: the ground is ray cast once per camera (the ego-frame z = 0 hit of every pixel ray,
kept within ``max_range``); per frame the lanes are moved into the ego frame (a few scalars
each) and every ground point is classified as grass / asphalt / marking, then shaded with
distance haze. Vehicles are boxes (bottom on z = 0), drawn over the ground with
``cv2.fillPoly`` far-to-near per camera (painter's algorithm) with back-face culling, faces
clipped against the near plane x_cam = 0.05 m. The ego itself is never drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sim.cameras import CameraSpec, pixel_rays_ego
from sim.interface import LaneGeom, Scene

VEHICLE_COLOURS = np.array(
    [(200, 40, 40), (40, 80, 200), (230, 190, 40), (240, 120, 30), (130, 60, 170),
     (40, 170, 190), (235, 235, 230), (30, 30, 35), (150, 30, 90), (170, 120, 70)],
    dtype=np.uint8,
)
"""(M, 3) RGB palette (red, blue, yellow, orange, purple, cyan, white, black, maroon, brown);
a vehicle's colour_id indexes it modulo M."""

SKY_ZENITH = np.array([90, 140, 210], dtype=np.float32)
SKY_HORIZON = np.array([190, 205, 215], dtype=np.float32)
GROUND_COLOURS = np.array([[96, 122, 78], [88, 88, 92], [235, 235, 230]], dtype=np.float32)
"""Ground classes: 0 grass, 1 asphalt, 2 lane marking."""
NEAR_PLANE = 0.05  # m, camera x below which faces are clipped
MARK_HALF_WIDTH = 0.12  # m
DASH_ON, DASH_PERIOD = 3.0, 9.0  # m, "striped" markings
SHIFT = 4  # fillPoly fractional bits
LINE_CODES = {"none": 0, "striped": 1, "solid": 2}

# Box corners (local x forward, y left): bottom ring then top ring, front-left first.
_RING = [[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]]
_CORNER_SIGNS = np.array([[*xy, z] for z in (0.0, 1.0) for xy in _RING])
_FACES = np.array([[4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]])
"""Visible-candidate faces (the bottom is never seen): top, front, right, rear, left."""
_FACE_SHADE = np.array([1.15, 0.9, 0.65, 0.8, 0.65])


@dataclass(frozen=True)
class _Camera:
    pos: np.ndarray  # (3,) ego frame
    rot: np.ndarray  # (3, 3) ego_vec = rot @ cam_vec
    f: float
    cx: float
    cy: float

    def pixels(self, pc: np.ndarray) -> np.ndarray:
        """(..., 3) camera points with x > 0 -> (..., 2) int32 cv2 coords, ``SHIFT`` bits."""
        uv = np.stack([self.cx - self.f * pc[..., 1] / pc[..., 0],
                       self.cy - self.f * pc[..., 2] / pc[..., 0]], axis=-1)
        return np.round((uv - 0.5) * (1 << SHIFT)).astype(np.int32)  # cv2 centres at integers


@dataclass(frozen=True)
class _LaneTable:
    """Lanes of one kind as arrays (L,), world frame; arcs use ``a`` = centre, ``d`` unused."""

    a: np.ndarray  # (L, 2) straight: start; arc: centre
    d: np.ndarray  # (L, 2) straight: unit direction
    length: np.ndarray  # (L,)
    half_width: np.ndarray  # (L,)
    left: np.ndarray  # (L,) line codes
    right: np.ndarray  # (L,)
    radius: np.ndarray  # (L,) arcs
    phase0: np.ndarray  # (L,) arcs: start phase
    sign: np.ndarray  # (L,) arcs: +1 ccw, -1 clockwise
    bbox: np.ndarray  # (L, 4) xmin, ymin, xmax, ymax incl. half width


def _lane_table(lanes: Sequence[LaneGeom]) -> _LaneTable:
    rows = []
    for lane in lanes:
        if any(t not in LINE_CODES for t in lane.lines):
            raise ValueError(f"lane line types must be in {tuple(LINE_CODES)}, got {lane.lines}")
        hw = lane.width / 2.0
        left, right = LINE_CODES[lane.lines[0]], LINE_CODES[lane.lines[1]]
        if lane.kind == "straight":
            (x0, y0), (x1, y1) = lane.start, lane.end
            length = math.hypot(x1 - x0, y1 - y0)
            dx, dy = ((x1 - x0) / length, (y1 - y0) / length) if length > 0 else (1.0, 0.0)
            box = (min(x0, x1) - hw, min(y0, y1) - hw, max(x0, x1) + hw, max(y0, y1) + hw)
            rows.append((x0, y0, dx, dy, length, hw, left, right, 0.0, 0.0, 1.0, *box))
        elif lane.kind == "arc":
            sign = 1.0 if lane.ccw else -1.0
            sweep = sign * (lane.end_phase - lane.start_phase)
            sweep = sweep + 2 * math.pi if sweep <= 0 else sweep
            (cx, cy), r = lane.center, lane.radius + hw
            rows.append((cx, cy, 1.0, 0.0, lane.radius * sweep, hw, left, right, lane.radius,
                         lane.start_phase, sign, cx - r, cy - r, cx + r, cy + r))
        else:
            raise ValueError(f"unknown lane kind {lane.kind!r}; expected 'straight' or 'arc'")
    m = np.array(rows, dtype=np.float64).reshape(-1, 15)
    return _LaneTable(
        a=m[:, 0:2], d=m[:, 2:4], length=m[:, 4], half_width=m[:, 5],
        left=m[:, 6].astype(np.int8), right=m[:, 7].astype(np.int8),
        radius=m[:, 8], phase0=m[:, 9], sign=m[:, 10], bbox=m[:, 11:],
    )


def _lane_masks(
    s: np.ndarray, lat: np.ndarray, normal: tuple[np.ndarray, np.ndarray], jac: np.ndarray,
    t: _LaneTable, idx: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(P, L) lane coordinates of the lanes ``idx`` -> (on any lane, on any marking), (P,).

    ``normal`` is the lanes' left unit normal in the ego frame, ``jac`` (P, 4) the ground
    step per pixel (d/du x, y, d/dv x, y); their product is the lateral metres per pixel.
    """
    length, hw = t.length[idx].astype(np.float32), t.half_width[idx].astype(np.float32)
    nx, ny = normal
    step = np.maximum(
        np.abs(jac[:, 0:1] * nx + jac[:, 1:2] * ny), np.abs(jac[:, 2:3] * nx + jac[:, 3:4] * ny)
    )
    mark_hw = np.where(step <= hw, np.maximum(0.5 * step, MARK_HALF_WIDTH), MARK_HALF_WIDTH)
    inside = (s >= 0) & (s <= length)
    on = (inside & (np.abs(lat) <= hw)).any(axis=1)
    mark = np.zeros(s.shape[0], dtype=bool)
    dash = None
    for side, codes in ((1.0, t.left[idx]), (-1.0, t.right[idx])):
        if not codes.any():
            continue
        show = codes == LINE_CODES["solid"]
        if (codes == LINE_CODES["striped"]).any():
            dash = np.mod(s, DASH_PERIOD) < DASH_ON if dash is None else dash
            show = show | ((codes == LINE_CODES["striped"]) & dash)
        near = np.abs(lat - side * hw) < mark_hw
        mark |= (inside & near & show).any(axis=1)
    return on, mark


def _classify_ground(
    pts: np.ndarray, jac: np.ndarray, straight: _LaneTable, arcs: _LaneTable,
    ego_pose: np.ndarray, reach: float,
) -> np.ndarray:
    """Ego-frame ground points (P, 2) -> class per point (0 grass, 1 asphalt, 2 marking)."""
    ex, ey, eyaw = (float(v) for v in ego_pose[:3])
    c, s_ = math.cos(eyaw), math.sin(eyaw)
    on = np.zeros(len(pts), dtype=bool)
    mark = np.zeros(len(pts), dtype=bool)
    px, py = pts[:, 0:1], pts[:, 1:2]
    for table, is_arc in ((straight, False), (arcs, True)):
        b = table.bbox
        gap_x = np.maximum(np.maximum(b[:, 0] - ex, ex - b[:, 2]), 0.0)
        gap_y = np.maximum(np.maximum(b[:, 1] - ey, ey - b[:, 3]), 0.0)
        idx = np.flatnonzero(np.hypot(gap_x, gap_y) <= reach)
        if idx.size == 0:
            continue
        # Lane anchors (start or centre) into the ego frame: R(-yaw) (a - e).
        rx, ry = table.a[idx, 0] - ex, table.a[idx, 1] - ey
        ax = (c * rx + s_ * ry).astype(np.float32)
        ay = (-s_ * rx + c * ry).astype(np.float32)
        qx, qy = px - ax, py - ay  # (P, L)
        if is_arc:
            r = np.hypot(qx, qy)
            sign = table.sign[idx].astype(np.float32)
            phase0 = (table.phase0[idx] - eyaw).astype(np.float32)
            dphi = np.mod(sign * (np.arctan2(qy, qx) - phase0), np.float32(2 * math.pi))
            s = dphi * table.radius[idx].astype(np.float32)
            lat = sign * (table.radius[idx].astype(np.float32) - r)
            r = np.maximum(r, np.float32(1e-6))
            normal = (-sign * qx / r, -sign * qy / r)
        else:
            dx0, dy0 = table.d[idx, 0], table.d[idx, 1]
            dx = (c * dx0 + s_ * dy0).astype(np.float32)
            dy = (-s_ * dx0 + c * dy0).astype(np.float32)
            s = qx * dx + qy * dy
            lat = dx * qy - dy * qx
            normal = (-dy, dx)
        lane_on, lane_mark = _lane_masks(s, lat, normal, jac, table, idx)
        on |= lane_on
        mark |= lane_mark
    return np.where(mark, np.uint8(2), on.astype(np.uint8))


class CameraRenderer:
    """Renders ``Scene`` s for a fixed rig; all per-camera geometry is precomputed here."""

    def __init__(self, specs: Sequence[CameraSpec], max_range: float = 120.0) -> None:
        specs = tuple(specs)
        if not specs:
            raise ValueError("CameraRenderer needs at least one CameraSpec")
        sizes = {(s.height, s.width) for s in specs}
        if len(sizes) != 1:
            listing = ", ".join(f"{s.name}={s.width}x{s.height}" for s in specs)
            raise ValueError(f"all cameras must share one (height, width); got {listing}")
        if max_range <= 0:
            raise ValueError(f"max_range must be > 0, got {max_range}")
        self.specs = specs
        self.max_range = float(max_range)
        self.height, self.width = sizes.pop()
        self._cams = [
            _Camera(np.asarray(s.position), s.rotation_matrix, s.focal, s.width / 2, s.height / 2)
            for s in specs
        ]
        self._reach = self.max_range + max(math.hypot(*s.position[:2]) for s in specs) + 1.0
        self._precompute_ground()
        shades = np.clip(VEHICLE_COLOURS[:, None, :] * _FACE_SHADE[None, :, None], 0, 255)
        self._face_colours = [[tuple(int(v) for v in face) for face in c] for c in shades]
        self._lanes_key: tuple[LaneGeom, ...] | None = None
        self._tables: tuple[_LaneTable, _LaneTable] | None = None

    def _precompute_ground(self) -> None:
        """Ray cast every pixel onto z = 0; build the sky base and per-point ground colours."""
        n_pix = self.height * self.width
        base, idx, pts, dist, jac = [], [], [], [], []
        for i, (spec, cam) in enumerate(zip(self.specs, self._cams)):
            rays = pixel_rays_ego(spec).reshape(-1, 3)
            up = np.clip(rays[:, 2] / 0.5, 0.0, 1.0)[:, None]
            base.append(SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * up)
            down = rays[:, 2] < -1e-9
            t = np.where(down, -cam.pos[2] / np.where(down, rays[:, 2], -1.0), 0.0)
            hit = cam.pos + t[:, None] * rays
            horiz = np.hypot(hit[:, 0] - cam.pos[0], hit[:, 1] - cam.pos[1])
            keep = np.flatnonzero(down & (horiz <= self.max_range))
            idx.append(i * n_pix + keep)
            pts.append(hit[keep, :2])
            dist.append(horiz[keep])
            rays_cam = rays[keep] @ cam.rot
            jac.append(_ground_jacobian(cam, rays_cam / rays_cam[:, :1]))
        self._base = np.concatenate(base).round().astype(np.uint8)  # (N*H*W, 3)
        self._ground_idx = np.concatenate(idx)
        self._ground_pts = np.concatenate(pts).astype(np.float32)  # (P, 2) ego frame
        self._ground_jac = np.concatenate(jac).astype(np.float32)  # (P, 4)
        haze = (np.concatenate(dist) / self.max_range) ** 2  # 0 near, 1 at max_range
        table = GROUND_COLOURS[None] + (SKY_HORIZON - GROUND_COLOURS)[None] * haze[:, None, None]
        self._ground_table = table.round().astype(np.uint8).reshape(-1, 3)  # (P*3, 3)
        self._ground_rows = np.arange(len(self._ground_pts)) * 3

    def _lane_tables(self, lanes: tuple[LaneGeom, ...]) -> tuple[_LaneTable, _LaneTable]:
        if self._tables is None or (lanes is not self._lanes_key and lanes != self._lanes_key):
            self._tables = (
                _lane_table([lane for lane in lanes if lane.kind != "arc"]),
                _lane_table([lane for lane in lanes if lane.kind == "arc"]),
            )
            self._lanes_key = lanes
        return self._tables

    def render(self, scene: Scene) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB images of ``scene`` seen from the rig on the ego."""
        ego = np.asarray(scene.ego_pose, dtype=np.float64)
        straight, arcs = self._lane_tables(tuple(scene.lanes))
        cls = _classify_ground(
            self._ground_pts, self._ground_jac, straight, arcs, ego, self._reach
        )
        out = self._base.copy()
        out[self._ground_idx] = self._ground_table[self._ground_rows + cls]
        out = out.reshape(len(self.specs), self.height, self.width, 3)
        boxes = _vehicle_boxes(np.asarray(scene.vehicles, dtype=np.float64).reshape(-1, 7), ego)
        if boxes is not None:
            for img, cam in zip(out, self._cams):
                self._draw_boxes(img, cam, boxes)
        return out

    def _draw_boxes(self, img: np.ndarray, cam: _Camera, boxes: _Boxes) -> None:
        """Painter's algorithm over the boxes seen by one camera, in place on ``img``."""
        pc = (boxes.corners - cam.pos) @ cam.rot  # (K, 8, 3) camera body frame
        x, y, z = pc[..., 0], pc[..., 1], pc[..., 2]
        tan_h, tan_v = cam.cx / cam.f, cam.cy / cam.f  # outside a frustum side plane: hidden
        hidden = (
            (x <= NEAR_PLANE).all(1) | (y >= tan_h * x).all(1) | (y <= -tan_h * x).all(1)
            | (z >= tan_v * x).all(1) | (z <= -tan_v * x).all(1)
        )
        dist = np.linalg.norm(boxes.centres - cam.pos, axis=1)
        shown = np.flatnonzero(~hidden & (dist <= self.max_range))
        if shown.size == 0:
            return
        order = shown[np.argsort(-dist[shown], kind="stable")]
        facing = np.einsum("kfi,kfi->kf", boxes.normals, boxes.face_centres - cam.pos) < 0
        pix = cam.pixels(np.where(x[..., None] > NEAR_PLANE, pc, 1.0))  # straddlers redone below
        straddles = (x <= NEAR_PLANE).any(1)
        for k in order.tolist():
            colours = self._face_colours[boxes.colour[k]]
            for fi in np.flatnonzero(facing[k]).tolist():
                face = _FACES[fi]
                pts = pix[k, face]
                if straddles[k]:
                    poly = _clip_near(pc[k, face])
                    if len(poly) < 3:
                        continue
                    pts = cam.pixels(poly)
                cv2.fillPoly(img, [pts], colours[fi], lineType=cv2.LINE_8, shift=SHIFT)


def _ground_jacobian(cam: _Camera, rays_cam: np.ndarray) -> np.ndarray:
    """(P, 4) d(ground x, y)/du and /dv for camera rays (1, (cx-u)/f, (cy-v)/f), ego frame."""
    r = rays_cam @ cam.rot.T  # (P, 3) ego-frame rays, ground point g = p - p_z r / r_z
    out = []
    for col in (1, 2):  # dr/du = -R[:, 1] / f, dr/dv = -R[:, 2] / f
        dr = -cam.rot[:, col] / cam.f
        dg = -cam.pos[2] * (dr[None, :2] / r[:, 2:3] - r[:, :2] * dr[2] / r[:, 2:3] ** 2)
        out.append(dg)
    return np.concatenate(out, axis=1)


@dataclass(frozen=True)
class _Boxes:
    corners: np.ndarray  # (K, 8, 3) ego frame
    centres: np.ndarray  # (K, 3)
    normals: np.ndarray  # (K, 5, 3) outward, unnormalized, faces in _FACES order
    face_centres: np.ndarray  # (K, 5, 3)
    colour: list[int]  # palette index per box


def _vehicle_boxes(vehicles: np.ndarray, ego_pose: np.ndarray) -> _Boxes | None:
    """World (K, 7) vehicle rows -> ego-frame boxes, or None when there are none."""
    if len(vehicles) == 0:
        return None
    ex, ey, eyaw = ego_pose[:3]
    c, s = math.cos(eyaw), math.sin(eyaw)
    rx, ry = vehicles[:, 0] - ex, vehicles[:, 1] - ey
    x, y = c * rx + s * ry, -s * rx + c * ry
    yaw = vehicles[:, 2] - eyaw
    half = np.stack([vehicles[:, 3] / 2, vehicles[:, 4] / 2, vehicles[:, 5]], axis=1)  # (K, 3)
    local = _CORNER_SIGNS[None] * half[:, None, :]  # (K, 8, 3)
    cy_, sy_ = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    corners = np.stack(
        [x[:, None] + cy_ * local[..., 0] - sy_ * local[..., 1],
         y[:, None] + sy_ * local[..., 0] + cy_ * local[..., 1],
         local[..., 2]],
        axis=-1,
    )
    face_centres = corners[:, _FACES].mean(axis=2)  # (K, 5, 3)
    centres = np.stack([x, y, vehicles[:, 5] / 2], axis=1)
    normals = face_centres - centres[:, None]  # outward (unnormalized) for a box
    colour = (vehicles[:, 6].astype(np.int64) % len(VEHICLE_COLOURS)).tolist()
    return _Boxes(corners, centres, normals, face_centres, colour)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: keep the part of a (V, 3) camera-frame polygon with x >= NEAR_PLANE."""
    out = []
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        a_in, b_in = a[0] >= NEAR_PLANE, b[0] >= NEAR_PLANE
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (NEAR_PLANE - a[0]) / (b[0] - a[0]) * (b - a))
    return np.array(out).reshape(-1, 3)


GRID_LAYOUT = (("front_left", "front", "front_right"), ("back_left", "back", "back_right"))


def render_grid(
    frames: np.ndarray, names: Sequence[str] | None = None, labels: bool = True
) -> np.ndarray:
    """Tile (N, H, W, 3) frames into a 2-row uint8 image with 1-px black separators.

    With the six default-rig names the rows are front_left/front/front_right and
    back_left/back/back_right; otherwise frames keep their order, ceil(N/2) per row.
    ``labels`` writes each camera's name in small text when ``names`` is given.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    n, h, w = frames.shape[:3]
    if names is not None and len(names) != n:
        raise ValueError(f"got {n} frames but {len(names)} names")
    order: list[list[int]]
    if names is not None and set(names) == {m for row in GRID_LAYOUT for m in row} and n == 6:
        order = [[list(names).index(m) for m in row] for row in GRID_LAYOUT]
    else:
        cols = max(1, math.ceil(n / 2))
        order = [list(range(r, min(r + cols, n))) for r in range(0, n, cols)]
    cols = max(len(row) for row in order)
    grid = np.zeros((len(order) * (h + 1) - 1, cols * (w + 1) - 1, 3), dtype=np.uint8)
    for r, row in enumerate(order):
        for c, i in enumerate(row):
            tile = frames[i].copy()
            if labels and names is not None:
                cv2.putText(tile, str(names[i]), (2, 9), cv2.FONT_HERSHEY_PLAIN, 0.6,
                            (255, 255, 255), 1, cv2.LINE_AA)
            grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = tile
    return grid
