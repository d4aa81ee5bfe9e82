"""Flat state vectors: what MLP baselines, offline-RL critics and the D4RL export see.

Layout (float32), documented once here and reported by ``state_feature_names()``:
* ego: speed, accel_long, accel_lat, yaw_rate, steer, lane_offset, lane_heading_error,
  lane_id, speed_limit, progress
* goal: ``sim.interface.GOAL_VECTOR_FIELDS``
* the ``STATE_ACTORS`` nearest present actors, in the ego frame (x forward, y left), nearest
  first, zero-padded: present, dx, dy, cos(dyaw), sin(dyaw), dvx, dvy, length, width
"""

from __future__ import annotations

import numpy as np

from sim.interface import ACTOR, EGO, GOAL_VECTOR_FIELDS, Goal, goal_vector

STATE_ACTORS = 8
EGO_STATE_FIELDS = (
    "speed",
    "accel_long",
    "accel_lat",
    "yaw_rate",
    "steer",
    "lane_offset",
    "lane_heading_error",
    "lane_id",
    "speed_limit",
    "progress",
)
ACTOR_STATE_FIELDS = ("present", "dx", "dy", "cos_dyaw", "sin_dyaw", "dvx", "dvy", "length", "width")


def state_feature_names() -> tuple[str, ...]:
    actor_names = tuple(f"actor{i}_{f}" for i in range(STATE_ACTORS) for f in ACTOR_STATE_FIELDS)
    return EGO_STATE_FIELDS + tuple(f"goal_{g}" for g in GOAL_VECTOR_FIELDS) + actor_names


STATE_DIM = len(state_feature_names())


def actors_in_ego_frame(ego: np.ndarray, actors: np.ndarray, k: int = STATE_ACTORS) -> np.ndarray:
    """(MAX_ACTORS, A) world rows -> (k, len(ACTOR_STATE_FIELDS)) ego-frame rows, nearest first."""
    x, y, yaw, speed = (ego[EGO[n]] for n in ("x", "y", "yaw", "speed"))
    c, s = np.cos(yaw), np.sin(yaw)
    present = actors[:, ACTOR["present"]] > 0.5
    a = actors[present]
    dxw, dyw = a[:, ACTOR["x"]] - x, a[:, ACTOR["y"]] - y
    dx, dy = c * dxw + s * dyw, -s * dxw + c * dyw
    dyaw = a[:, ACTOR["yaw"]] - yaw
    vxw = a[:, ACTOR["speed"]] * np.cos(a[:, ACTOR["yaw"]]) - speed * c
    vyw = a[:, ACTOR["speed"]] * np.sin(a[:, ACTOR["yaw"]]) - speed * s
    dvx, dvy = c * vxw + s * vyw, -s * vxw + c * vyw
    rows = np.stack(
        [np.ones_like(dx), dx, dy, np.cos(dyaw), np.sin(dyaw), dvx, dvy,
         a[:, ACTOR["length"]], a[:, ACTOR["width"]]],
        axis=-1,
    )
    rows = rows[np.argsort(np.hypot(dx, dy), kind="stable")][:k]
    out = np.zeros((k, len(ACTOR_STATE_FIELDS)), dtype=np.float32)
    out[: len(rows)] = rows
    return out


def state_vector(ego: np.ndarray, actors: np.ndarray, goal: Goal) -> np.ndarray:
    """One flat float32 vector of length ``STATE_DIM`` for state (ego, actors) under goal."""
    ego_part = np.array([ego[EGO[n]] for n in EGO_STATE_FIELDS], dtype=np.float32)
    return np.concatenate(
        [ego_part, goal_vector(goal, ego), actors_in_ego_frame(ego, actors).reshape(-1)]
    ).astype(np.float32)
