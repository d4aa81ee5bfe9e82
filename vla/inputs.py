"""What the policy reads, as one typed batch, and how simulator observations become it.

Per sample (one decision step):
* ``frames``: the surround cameras at this step (uint8, rig order);
* ``ego``: ``EGO_INPUT_FIELDS`` scaled by ``EGO_SCALE``. ``lanes_moved`` = lanes moved to the
  LEFT since the command was heard (lane id at the episode's first step minus now): with it a
  reactive policy can tell "change to the left lane" done from not done, which the expert
  knows from its absolute target lane. The last applied steering / acceleration and what
  follows from them at 10 Hz (yaw rate, lateral and longitudinal acceleration) are left out on
  purpose: the expert's next action is strongly correlated with its last one, and a cloned
  policy that can see its own last action learns to copy it ("copycat" causal confusion, de
  Haan et al. 2019) and then drifts in closed loop, which we measured: a BC policy whose
  steering ignored a 1.5 m drift;
* ``actors``: the nearest ``STATE_ACTORS`` vehicles, scaled; in the ego's body frame or its lane
  frame (``Observation``, picked by ``PolicyConfig.observation`` from ``OBSERVATIONS``);
* ``command``: the passenger's spoken command as vocabulary ids (IPA symbols or text bytes),
  padded with ``<pad>`` and masked;
* targets (training only): the action chunk as bins + in-bin residuals + a validity mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from sim.features import ACTOR_STATE_FIELDS, STATE_ACTORS, actors_in_ego_frame
from sim.gap_checks import merge_safe
from sim.interface import ACTOR, EGO
from sim.route import ROUTE_FIELDS

EGO_INPUT_FIELDS = ("speed", "lane_offset", "lane_heading_error", "lane_id", "speed_limit", "progress",
                    "lanes_moved")
EGO_SCALE = np.array([30.0, 2.0, 0.5, 3.0, 30.0, 1.0, 2.0], dtype=np.float32)
ACTOR_SCALE = np.array([1.0, 50.0, 10.0, 1.0, 1.0, 10.0, 10.0, 5.0, 2.0], dtype=np.float32)
assert len(EGO_SCALE) == len(EGO_INPUT_FIELDS) and len(ACTOR_SCALE) == len(ACTOR_STATE_FIELDS)

LANE_ACTOR_FIELDS = ("present", "s", "d", "cos_dyaw", "sin_dyaw", "dvs", "dvd", "length", "width",
                     "inv_gap", "closing_rate")
"""Per actor in the LANE frame of the ego (``sim.plan.plan_frame``: origin on the ego's lane
centre level with the ego, s along the lane, d to its left): position, heading relative to the
lane, velocity relative to the ego's, size, and the two numbers car following is made of:
``inv_gap = sign(s) / max(|s| - BUMPERS, 1)`` (1/m, larger = closer) and ``closing_rate =
-dvs * sign(s) / max(|s| - BUMPERS, 1)`` (1/s, > 0 = closing in; the inverse time to contact)."""
GAP_FIELDS = ("merge_ok_left", "merge_ok_right")
"""1.0 when a lane change to that side is safe now by MOBIL's criterion, read from the observed
actors (``sim.gap_checks.merge_safe``, the merge check beside the network), else 0.0. The expert
decides "change now or wait" by that criterion alone (``sim.highway_expert._lane_change_safe``);
without it the network reads the threshold from the actor tokens only approximately, and in
dev it waited 1 s or more after a lane command in half the episodes, wherever the check and the
expert would have gone. Opt-in (``lane_gaps``): on held-out seeds it did not act sooner on
held-out words and followed fewer commands (docs/audio_policy.md, "Why the first plans wait")."""
ROUTE_SCALE = np.array([50.0, 20.0, 10.0], dtype=np.float32)
"""``sim.route.ROUTE_FIELDS`` scales: junction distance (m), the route's point ahead (m, m)."""
assert len(ROUTE_SCALE) == len(ROUTE_FIELDS)
LANE_ACTOR_SCALE = np.array([1.0, 50.0, 8.0, 1.0, 1.0, 10.0, 2.0, 5.0, 2.0, 0.25, 0.5], dtype=np.float32)
BUMPERS = 5.0
"""m between the centres of two cars whose bumpers touch (two 5 m cars)."""


def nearest_actor_rows(ego: np.ndarray, actors: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``actors`` (MAX_ACTORS rows) of the ``k`` nearest present actors, nearest
    first: the order of the actor tokens of every ``Observation``."""
    present = np.flatnonzero(actors[:, ACTOR["present"]] > 0.5)
    d = np.hypot(actors[present, ACTOR["x"]] - ego[EGO["x"]], actors[present, ACTOR["y"]] - ego[EGO["y"]])
    return present[np.argsort(d, kind="stable")][:k]


def lane_frame_actor_rows(ego: np.ndarray, actors: np.ndarray, k: int = STATE_ACTORS) -> np.ndarray:
    """(MAX_ACTORS, A) world rows -> (k, len(LANE_ACTOR_FIELDS)) rows in the ego's lane frame,
    nearest first, zero rows for absent actors."""
    from sim.plan import plan_frame, to_frame

    frame = plan_frame(ego)
    a = actors[nearest_actor_rows(ego, actors, k)]
    sd = to_frame(frame, a[:, [ACTOR["x"], ACTOR["y"]]])
    rel = a[:, ACTOR["yaw"]] - frame[2]
    ego_rel = ego[EGO["lane_heading_error"]]
    dvs = a[:, ACTOR["speed"]] * np.cos(rel) - ego[EGO["speed"]] * np.cos(ego_rel)
    dvd = a[:, ACTOR["speed"]] * np.sin(rel) - ego[EGO["speed"]] * np.sin(ego_rel)
    side = np.sign(sd[:, 0])
    gap = np.maximum(np.abs(sd[:, 0]) - BUMPERS, 1.0)
    rows = np.stack([np.ones(len(a)), sd[:, 0], sd[:, 1], np.cos(rel), np.sin(rel), dvs, dvd,
                     a[:, ACTOR["length"]], a[:, ACTOR["width"]], side / gap,
                     np.clip(-dvs * side / gap, -5.0, 5.0)], axis=-1)
    out = np.zeros((k, len(LANE_ACTOR_FIELDS)), dtype=np.float32)
    out[: len(rows)] = rows
    return out


@dataclass(frozen=True)
class Observation:
    """What the policy's ego and actor tokens are made of (``PolicyConfig.observation`` names
    one of ``OBSERVATIONS``); features are scaled to about unit range."""

    name: str
    ego_fields: tuple[str, ...]
    ego_scale: np.ndarray
    actor_fields: tuple[str, ...]
    actor_scale: np.ndarray
    actor_rows: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    """(ego row, (MAX_ACTORS, A) world actor rows, k) -> (k, len(actor_fields)) unscaled rows."""
    actors: int = STATE_ACTORS
    """Actor tokens per step (the nearest ones)."""
    route: bool = False
    """The ego token also reads ``sim.route.ROUTE_FIELDS`` (the backend's ``obs["route"]``,
    an episode's ``route`` table), the last fields of ``ego_fields``."""
    gaps: bool = False
    """The ego token also reads ``GAP_FIELDS`` (computed from the ego row and the actors), just
    before the route's fields."""

    def ego_features(self, ego: np.ndarray, start_lane: float, route: np.ndarray | None = None,
                     actors: np.ndarray | None = None) -> np.ndarray:
        """(len(ego_fields),) scaled ego features of one state; ``lanes_moved`` counts lanes
        moved to the left since ``start_lane`` (the lane the command was heard in); ``route``:
        the state's ``ROUTE_FIELDS`` row (needed when ``self.route``); ``actors``: the state's
        (MAX_ACTORS, A) world rows (needed when ``self.gaps``)."""
        extra = (ROUTE_FIELDS if self.route else ()) + (GAP_FIELDS if self.gaps else ())
        names = self.ego_fields[: len(self.ego_fields) - len(extra)]
        raw = [start_lane - ego[EGO["lane_id"]] if n == "lanes_moved" else ego[EGO[n]] for n in names]
        if self.gaps:
            if actors is None:
                raise ValueError(f"observation {self.name!r} reads the merge check's gaps, but no actors were given")
            raw += [float(merge_safe(ego, actors, side)) for side in (1, -1)]
        if self.route:
            if route is None:
                raise ValueError(f"observation {self.name!r} reads the route (sim.route), but none was given: "
                                 "the backend's obs has no 'route', or the episode was recorded without it")
            raw = [*raw, *np.asarray(route, dtype=np.float64).reshape(len(ROUTE_FIELDS))]
        return (np.asarray(raw, dtype=np.float32) / self.ego_scale).astype(np.float32)

    def actor_features(self, ego: np.ndarray, actors: np.ndarray) -> np.ndarray:
        """(actors, len(actor_fields)) scaled features of the nearest actors."""
        return (self.actor_rows(ego, actors, self.actors) / self.actor_scale).astype(np.float32)

    def episode(self, ego: np.ndarray, actors: np.ndarray, start_lane: float,
                route: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features of every state of an episode: ((T, E), (T, K, A)) for ego rows (T, ...) and
        ``route`` rows (>= T, len(ROUTE_FIELDS); ``Episode.route``) when the observation reads
        the route."""
        t = len(ego)
        if not t:
            return (np.zeros((0, len(self.ego_fields)), np.float32),
                    np.zeros((0, self.actors, len(self.actor_fields)), np.float32))
        if self.route and (route is None or len(route) < t):
            raise ValueError(f"observation {self.name!r} reads the route (sim.route), but the episode has "
                             f"{'no route table' if route is None else f'{len(route)} route rows for {t} states'}: "
                             "record it again with this code")
        rows = route if self.route else [None] * t
        return (np.stack([self.ego_features(ego[i], start_lane, rows[i], actors[i]) for i in range(t)]),
                np.stack([self.actor_features(ego[i], actors[i]) for i in range(t)]))


OBSERVATIONS = {
    "ego_frame": Observation("ego_frame", EGO_INPUT_FIELDS, EGO_SCALE, ACTOR_STATE_FIELDS, ACTOR_SCALE,
                             actors_in_ego_frame),
    "lane_frame": Observation("lane_frame", EGO_INPUT_FIELDS, EGO_SCALE, LANE_ACTOR_FIELDS, LANE_ACTOR_SCALE,
                              lane_frame_actor_rows),
    "lane_route": Observation("lane_route", EGO_INPUT_FIELDS + ROUTE_FIELDS, np.concatenate([EGO_SCALE, ROUTE_SCALE]),
                              LANE_ACTOR_FIELDS, LANE_ACTOR_SCALE, lane_frame_actor_rows, route=True),
    "lane_gaps": Observation("lane_gaps", EGO_INPUT_FIELDS + GAP_FIELDS, np.concatenate([EGO_SCALE, np.ones(2, np.float32)]),
                             LANE_ACTOR_FIELDS, LANE_ACTOR_SCALE, lane_frame_actor_rows, gaps=True),
}
"""``ego_frame``: actors as offsets in the ego's body frame (the first layout; checkpoints
without ``PolicyConfig.observation`` use it). ``lane_frame``: actors placed along and across
the ego's lane, with inverse gap and closing rate (what the expert's car following and
lane-change safety checks read). ``lane_route``: ``lane_frame`` plus where the route goes
(``sim.route``: the distance to the next junction and the route's point 2 s ahead), what the
expert's junction decisions read. ``lane_gaps``: ``lane_frame`` plus ``GAP_FIELDS``, whether
a lane change to either side is safe now, what the expert's lane decisions read."""


@dataclass(frozen=True)
class PolicyInputs:
    frames: torch.Tensor | None  # (B, N, H, W, 3) uint8, or None for a camera-less policy
    ego: torch.Tensor  # (B, len(EGO_INPUT_FIELDS)) float32, scaled
    actors: torch.Tensor  # (B, STATE_ACTORS, len(ACTOR_STATE_FIELDS)) float32, scaled
    command: torch.Tensor  # (B, Lc) int64 vocabulary ids, <pad> where masked
    command_mask: torch.Tensor  # (B, Lc) bool, True = a real token
    action_bins: torch.Tensor | None = None  # (B, H, D) int64 target bins
    action_residual: torch.Tensor | None = None  # (B, H, D) float32 target residuals in [-0.5, 0.5]
    action_mask: torch.Tensor | None = None  # (B, H) bool, False past the episode's end
    actor_future: torch.Tensor | None = None  # (B, K, F, 2) float32 scaled displacement of each actor token's car
    actor_future_mask: torch.Tensor | None = None  # (B, K, F) bool, True where that car is still seen
    command_label: torch.Tensor | None = None  # (B,) int64 index in tokenizers_mm.corpus.LABELS of the heard command

    @property
    def batch_size(self) -> int:
        return int(self.ego.shape[0])

    def to(self, device: torch.device | str) -> PolicyInputs:
        moved = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                 for f in fields(self)}
        return PolicyInputs(**moved)

    def select(self, index: torch.Tensor | np.ndarray) -> PolicyInputs:
        idx = torch.as_tensor(index, dtype=torch.long)
        picked = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                  for f in fields(self)}
        return PolicyInputs(**picked)


def pad_commands(commands: list[np.ndarray], pad_id: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences to a common length (at most ``max_len``; longer ones are cut)."""
    length = max(1, min(max_len, max((len(c) for c in commands), default=1)))
    out = np.full((len(commands), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(commands), length), dtype=bool)
    for i, c in enumerate(commands):
        c = np.asarray(c, dtype=np.int64)[:length]
        out[i, : len(c)] = c
        mask[i, : len(c)] = True
    return out, mask


def collate(ego: Sequence[np.ndarray], actors: Sequence[np.ndarray], commands: Sequence[np.ndarray],
            pad_id: int, max_command_tokens: int, frames: Sequence[np.ndarray] | None = None,
            action_bins: Sequence[np.ndarray] | None = None, action_residual: Sequence[np.ndarray] | None = None,
            action_mask: Sequence[np.ndarray] | None = None, actor_future: Sequence[np.ndarray] | None = None,
            actor_future_mask: Sequence[np.ndarray] | None = None,
            command_label: Sequence[int] | None = None) -> PolicyInputs:
    """Per-sample arrays -> one ``PolicyInputs`` batch: the one place batches are assembled (the
    dataset, the policy's own observations, preference pairs, the offline-RL actor). Commands are
    vocabulary id sequences of any length, right-padded here (``pad_commands``)."""
    command, mask = pad_commands(list(commands), pad_id, max_command_tokens)

    def stacked(rows):
        return None if rows is None else torch.as_tensor(np.stack(list(rows)))

    return PolicyInputs(frames=stacked(frames), ego=stacked(ego), actors=stacked(actors),
                        command=torch.as_tensor(command), command_mask=torch.as_tensor(mask),
                        action_bins=stacked(action_bins), action_residual=stacked(action_residual),
                        action_mask=stacked(action_mask), actor_future=stacked(actor_future),
                        actor_future_mask=stacked(actor_future_mask),
                        command_label=None if command_label is None else torch.as_tensor(np.asarray(command_label,
                                                                                                     dtype=np.int64)))


FORECAST_STEPS = (10, 20)
"""Simulator steps ahead (1 s, 2 s) at which the auxiliary forecast predicts each actor."""
FORECAST_SCALE = np.array([20.0, 4.0], dtype=np.float32)
"""Metres along / across the ego's lane that scale a forecast displacement to about unit size."""


def actor_forecasts(ego: np.ndarray, actors: np.ndarray, k: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """PlanT-style forecasting targets of an episode's first ``steps`` states: for each actor
    token (the ``k`` nearest cars at s_t), where that car is ``FORECAST_STEPS`` later, as the
    displacement from where it is now in the ego's lane frame at t (``sim.plan.plan_frame``),
    divided by ``FORECAST_SCALE``. Returns ((T, k, F, 2) float32, (T, k, F) bool mask: the car
    is still reported then). ``ego`` / ``actors`` hold the episode's T + 1 recorded states."""
    from sim.plan import plan_frame, to_frame

    f = len(FORECAST_STEPS)
    out = np.zeros((steps, k, f, 2), dtype=np.float32)
    mask = np.zeros((steps, k, f), dtype=bool)
    xy = [ACTOR["x"], ACTOR["y"]]
    last = len(ego) - 1
    for t in range(steps):
        rows = nearest_actor_rows(ego[t], actors[t], k)
        if not len(rows):
            continue
        frame = plan_frame(ego[t])
        now = to_frame(frame, actors[t][rows][:, xy])
        ids = actors[t][rows, ACTOR["id"]]
        for h, n in enumerate(FORECAST_STEPS):
            if t + n > last:
                break
            later = actors[t + n]
            seen = later[:, ACTOR["present"]] > 0.5
            where = {float(i): r for r, i in enumerate(later[:, ACTOR["id"]]) if seen[r]}
            for j, aid in enumerate(ids):
                r = where.get(float(aid))
                if r is not None:
                    out[t, j, h] = (to_frame(frame, later[r, xy][None])[0] - now[j]) / FORECAST_SCALE
                    mask[t, j, h] = True
    return out, mask
