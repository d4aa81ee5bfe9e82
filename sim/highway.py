"""The embedded backend: highway-env scenarios behind the ``sim.interface`` contract.

highway-env draws its world with y pointing down the screen, so its frame is left-handed seen
from above (heading grows clockwise, lane ids grow to the right). We expose the same picture in
a right-handed frame: ``(x, y)_ours = (x, -y)_hw``, ``yaw_ours = -heading_hw``,
``steer_ours = -steering_hw``. Lane 0 is the leftmost lane in both.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
from highway_env.utils import wrap_to_pi

from sim import highway_expert as expert_mod
from sim import fast_road
from sim.cameras import CameraSpec
from sim.features import STATE_DIM, state_vector
from sim.highway_core import (LeanHighway, LeanIntersection, core_config, lane_geom, lane_points,
                              predict_constant_steering)
from sim.route import (ACTOR_PATH_POINTS, ACTOR_PATH_SPACING, ROUTE_AHEAD, ROUTE_FIELDS, ROUTE_PATH_POINTS,
                       points_along, route_features, route_path)
from sim.interface import (
    reward_terms,
    step_outcome,
    ACTION_FIELDS,
    ACTION_HIGH,
    ACTION_LOW,
    ACTOR_FIELDS,
    ACTOR_RANGE,
    DT,
    EGO,
    EGO_FIELDS,
    EVENT,
    EVENT_FIELDS,
    GOAL_VECTOR_FIELDS,
    MAX_ACTORS,
    POSE_FIELDS,
    REWARD,
    REWARD_FIELDS,
    TURNS,
    Goal,
    RewardWeights,
    Scene,
    goal_vector,
)
from sim.scenarios import (
    DRIVE_COMMANDS,
    SPEED_TOLERANCE,
    GOAL_CHOICES,
    HIGHWAY_GOAL_LABELS,
    GoalBias,
    biased_label,
    check_goal_bias,
    check_start_speed,
    check_scenario,
    highway_goal,
    highway_goal_for,
    highway_goal_labels,
    turn_goal,
    turn_goal_for,
)

VEHICLE_HEIGHT = 1.5
INTERSECTION_EXIT = 30.0  # metres into the exit lane where the route ends
WRECK_CLEAR_STEPS = 30  # traffic-on-traffic wrecks at the junction are towed after 3 s (_tow_wrecks)
TURN_EXITS = {"left": 1, "straight": 2, "right": 3}  # exit corner for an ego from corner 0


@dataclass(frozen=True)
class EnvSnapshot:
    """The whole state of an ``EmbeddedDrivingEnv`` at one moment (``snapshot`` / ``restore``).

    Private copies: restoring never changes the snapshot, so one snapshot can be restored any
    number of times (e.g. to branch K candidate continuations from one state)."""

    core: object  # deep copy of the highway-env env: road, vehicles, their controllers, its RNG
    episode: dict  # deep copy of the wrapper's per-episode attributes (_EPISODE_ATTRS)
    actor_ids: dict  # index in core.road.vehicles -> the actor id reported for that vehicle
    ids_issued: int  # actor ids handed out so far in the episode (the next new id)
    np_random: object  # deep copy of the wrapper's own gymnasium RNG (None before any reset)


_EPISODE_ATTRS = ("goal", "route_length", "_route", "_s0", "_steps", "_done_outcome",
                  "_best_progress_m", "_lanes", "_prev", "_ego", "_actors", "_start_lane", "goal_feasible",
                  "_route_poly", "_along")
"""What ``reset`` / ``step`` keep per episode besides the highway-env core and actor ids."""


class EmbeddedDrivingEnv(gym.Env):
    """A gymnasium env over highway-env with the stack's observation, events and expert.

    ``obs`` = {"ego", "goal", "actors", "state", and "cameras" (N, H, W, 3) uint8 when a rig is
    given}; ``info`` = {"events", "reward_terms", "outcome" (once done), "goal"}.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: str = "highway", density: str = "medium",
                 cameras: Sequence[CameraSpec] = (),
                 rephrase: Callable[[Goal, np.random.Generator], Goal] | None = None,
                 goals: str | None = None, goal_bias: GoalBias = (),
                 start_speed: tuple[float, float] | None = None) -> None:
        """``rephrase``: turns each episode's canonical command into what the passenger says
        (e.g. a phrasing of the speech corpus), drawn from the episode's seeded generator.

        ``goals``: how each episode's command is chosen. "feasible" (default): only commands the
        traffic allows: the goal types possible from the start are tried in a seeded random
        order and the first one the expert reaches when it drives the whole episode (on a
        private copy, before the episode starts) is issued; if it reaches none, the first is
        issued anyway and ``goal_feasible`` is False. This makes goal success a measure of the
        policy, not of the traffic (a blanket "speed up" to 30 m/s in traffic moving at 22 is
        met by nobody). Costs about one extra expert episode per reset. "any": a uniformly
        drawn goal type, reachable or not (the draw of earlier versions, same goal per seed).
        None: the environment variable ``VLA_GOALS`` if set, else "feasible" (the test suite
        sets "any" to save the extra episodes; the feasible draw has tests of its own).

        ``goal_bias`` ((label, p), ...; ``sim.scenarios.parse_goal_bias``): highway only. With
        probability p an episode tries ``label`` first (when it is possible from the start lane;
        under "feasible" it is still issued only if the expert reaches it, else the usual order
        goes on). The chance is drawn from a stream of its own, so without a bias every seed
        draws what it always drew. What DAgger uses to send its learner to the states of a goal
        type it misses (``vla dagger --rollout-goal-bias``).

        ``start_speed`` (lo, hi) m/s: highway only. Our car starts each episode at a speed drawn
        uniformly from [lo, hi] (a stream of its own, so the traffic, start lane and goal order of a
        seed are what they were; the goal is then chosen from that start) instead of highway-env's
        25 m/s. Expert data from such starts holds the expert's way back to its target speed from
        well under or over it, under every goal (``vla collect --start-speed``). None: 25 m/s."""
        goals = goals or os.environ.get("VLA_GOALS", "feasible")
        if goals not in GOAL_CHOICES:
            raise ValueError(f"unknown goals {goals!r}; choose one of {GOAL_CHOICES}")
        if goal_bias and scenario != "highway":
            raise ValueError(f"a goal bias picks highway commands; the {scenario} scenario has none")
        self.goals, self.goal_bias = goals, check_goal_bias(goal_bias)
        self.start_speed = check_start_speed(start_speed, scenario)
        self.goal_feasible: bool | None = None
        self.spec_ = check_scenario(scenario, density)
        self.scenario, self.density = scenario, density
        self.cameras = tuple(cameras)
        self.rephrase = rephrase
        core_cls = LeanHighway if scenario == "highway" else LeanIntersection
        self._core = core_cls(config=core_config(scenario, density))
        self._renderer = None
        if self.cameras:
            from sim.render import CameraRenderer

            self._renderer = CameraRenderer(self.cameras)
        self.action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        spaces = {
            "ego": gym.spaces.Box(-np.inf, np.inf, (len(EGO_FIELDS),), np.float32),
            "goal": gym.spaces.Box(-np.inf, np.inf, (len(GOAL_VECTOR_FIELDS),), np.float32),
            "actors": gym.spaces.Box(-np.inf, np.inf, (MAX_ACTORS, len(ACTOR_FIELDS)), np.float32),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "route": gym.spaces.Box(-np.inf, np.inf, (len(ROUTE_FIELDS),), np.float32),
            "route_path": gym.spaces.Box(-np.inf, np.inf, (ROUTE_PATH_POINTS, 2), np.float32),
            "actor_paths": gym.spaces.Box(-np.inf, np.inf, (MAX_ACTORS, ACTOR_PATH_POINTS, 2), np.float32),
            "lanes": gym.spaces.Box(0, np.inf, (2,), np.float32),
        }
        if self.cameras:
            h, w = self.cameras[0].height, self.cameras[0].width
            spaces["cameras"] = gym.spaces.Box(0, 255, (len(self.cameras), h, w, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.reward_weights = RewardWeights()
        self.goal: Goal | None = None
        self.route_length = self.spec_.route_length

    # ----------------------------------------------------------------- reset / step
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._core.reset(seed=seed)
        fast_road.install(self._core.road)  # the same traffic, its two hot spots in NumPy
        rng = np.random.default_rng(None if seed is None else [seed, 7])
        ego = self._core.vehicle
        self._ids: dict[int, int] = {}
        self._chains: dict[tuple, np.ndarray] = {}  # _lane_chain's cache (each reset builds a new road)
        self._steps = 0
        self._done_outcome = ""
        if self.scenario == "intersection":
            # highway-env predicts a plain Vehicle by deep-copying it, road and all, for every
            # pair it checks at the junction; the same integration on floats is ~100x cheaper.
            ego.predict_trajectory_constant_speed = partial(predict_constant_steering, ego)
        if self.start_speed is not None:
            lo, hi = self.start_speed
            ego.speed = float(np.random.default_rng(None if seed is None else [seed, 7, 2]).uniform(lo, hi))
        self._start_lane = int(ego.lane_index[2])
        self._lanes = tuple(lane_geom(lane) for lane in self._core.road.network.lanes_list())
        self._prev = (float(ego.speed), float(-ego.heading))
        first = None
        if self.goal_bias:
            first = biased_label(self.goal_bias, float(np.random.default_rng(None if seed is None else [seed, 7, 1]).random()))
            first = first if first in highway_goal_labels(self._start_lane) else None
        if self.goals == "any":
            if first is not None:
                self._set_goal(highway_goal_for(first, self._start_lane))
            else:
                self._set_goal(highway_goal(rng, self._start_lane) if self.scenario == "highway" else turn_goal(rng))
            self.goal_feasible = None
        else:
            self._set_feasible_goal(rng, first)
        if self.rephrase is not None:
            self.goal = self.rephrase(self.goal, rng)
        info = {"goal": self.goal, "events": np.zeros(len(EVENT_FIELDS), np.float32),
                "reward_terms": np.zeros(len(REWARD_FIELDS), np.float32)}
        return self._observation(), info

    def _set_goal(self, goal: Goal) -> None:
        """Make ``goal`` this episode's (route, progress origin, ego vector) at the start state."""
        ego = self._core.vehicle
        self.goal = goal
        if self.scenario == "highway":
            self._route = None
            self._s0 = float(ego.position[0])
            self._route_poly, self._along = None, 0.0
        else:
            exit_corner = TURN_EXITS[goal.turn]
            self._route = [("o0", "ir0", 0), ("ir0", f"il{exit_corner}", 0), (f"il{exit_corner}", f"o{exit_corner}", 0)]
            net = self._core.road.network
            s_start, _ = net.get_lane(self._route[0]).local_coordinates(ego.position)
            self._s0 = float(s_start)
            self.route_length = (net.get_lane(self._route[0]).length - s_start
                                 + net.get_lane(self._route[1]).length + INTERSECTION_EXIT)
            self._route_poly = self._route_polyline()
            self._along = 0.0
        self._best_progress_m = 0.0
        self._ego = self._ego_vector(accel=0.0, yaw_rate=0.0)
        self._actors = self._scan_actors()

    def _set_feasible_goal(self, rng: np.random.Generator, first: str | None = None) -> None:
        """Issue the first goal type (in a seeded random order, ``first`` tried before the others)
        the expert reaches; see ``goals`` and ``goal_bias``."""
        if self.scenario == "highway":
            labels = highway_goal_labels(self._start_lane)
            candidates = [highway_goal_for(label, self._start_lane) for label in labels]
        else:
            labels, candidates = [], [turn_goal_for(t) for t in TURNS]
        order = rng.permutation(len(candidates))
        if first is not None:
            order = [labels.index(first)] + [i for i in order if labels[i] != first]
        for i in order:
            self._set_goal(candidates[i])
            if self._expert_reaches_goal():
                self.goal_feasible = True
                return
        self._set_goal(candidates[order[0]])
        self.goal_feasible = False

    def speak(self, rng: np.random.Generator,
              labels: Sequence[str] = DRIVE_COMMANDS) -> tuple[Goal, dict] | None:
        """The passenger gives a new command NOW, during the drive (highway only): the first of
        ``labels`` (a seeded random order) that is possible from the current lane, differs from
        the current goal, asks for a change (not met already; "slow down" only above its target
        speed, "speed up" below) and the expert reaches from this state (as at the start, under
        ``goals="feasible"``; ``goals="any"``: the first possible one). It becomes the episode's
        goal, worded by ``rephrase``, and lane commands count from the lane the ego is in now
        (also for ``goal_labels`` / ``goal_futures`` from here on). Progress and the route are
        kept. Returns the new goal and the observation under it (its goal features changed), or
        None when no command qualifies (the goal is unchanged). ValueError at the
        intersection (a turn is decided before the junction, by the first command)."""
        if self.goal is None:
            raise RuntimeError("speak() before reset()")
        if self.scenario != "highway":
            raise ValueError(f"a command during the drive is for the highway, not the {self.scenario}")
        unknown = sorted(set(labels) - set(HIGHWAY_GOAL_LABELS))
        if unknown:
            raise ValueError(f"unknown highway commands {unknown}; choose from {list(HIGHWAY_GOAL_LABELS)}")
        lane = int(self._core.vehicle.lane_index[2])
        old = (self.goal, self._start_lane, self.goal_feasible)
        candidates = [lab for lab in labels if lab in highway_goal_labels(lane) and lab != self.goal.label]
        speed = float(self._ego[EGO["speed"]])
        for i in rng.permutation(len(candidates)):
            self.goal, self._start_lane = highway_goal_for(candidates[i], lane), lane
            if self._goal_holds() or (candidates[i] == "slow_down" and speed < self.goal.target_speed) or (
                    candidates[i] == "speed_up" and speed > self.goal.target_speed):
                continue  # met already, or a speed command that would mean the opposite: asks for nothing
            if self.goals == "any" or self._expert_reaches_goal():
                self.goal_feasible = None if self.goals == "any" else True
                if self.rephrase is not None:
                    self.goal = self.rephrase(self.goal, rng)
                return self.goal, self._observation()
        self.goal, self._start_lane, self.goal_feasible = old
        return None

    def _expert_reaches_goal(self) -> bool:
        """The expert drives the episode from here to its end on a private copy: does the goal
        hold at the last step, without a collision, leaving the road or the route?"""
        snap = self.snapshot()
        renderer, self._renderer = self._renderer, None
        try:
            while True:
                _, _, terminated, truncated, info = self.step(self.expert_action())
                if terminated or truncated:
                    return (info.get("outcome") in ("route_complete", "timeout")
                            and bool(info["reward_terms"][REWARD["goal"]] > 0.5))
        finally:
            self._renderer = renderer
            self._restore_state(snap, private=True)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 2 finite numbers [accel m/s^2, steer rad], got {action!r}")
        a = np.clip(a, ACTION_LOW, ACTION_HIGH)
        # a brake stops the car and holds it; it never drives it backward (highway-env's vehicles
        # go down to -40 m/s; a car has no reverse here, and CARLA's brake at a standstill holds)
        a[0] = max(a[0], -max(float(self._core.vehicle.speed), 0.0) / DT)
        norm = np.array([
            2.0 * (a[0] - ACTION_LOW[0]) / (ACTION_HIGH[0] - ACTION_LOW[0]) - 1.0,
            -a[1] / ACTION_HIGH[1],  # our steer is positive left; highway-env's positive right
        ])
        was_crashed = bool(self._core.vehicle.crashed)
        self._core.step(norm)
        self._steps += 1
        if self.scenario == "intersection":
            self._tow_wrecks()
        ego = self._core.vehicle
        speed, yaw = float(ego.speed), float(-ego.heading)
        accel = (speed - self._prev[0]) / DT
        yaw_rate = float(wrap_to_pi(yaw - self._prev[1])) / DT
        self._prev = (speed, yaw)
        progress_gain = self._update_progress()
        self._ego = self._ego_vector(accel=accel, yaw_rate=yaw_rate)
        events = self._events(collided_now=bool(ego.crashed) and not was_crashed)
        terms = reward_terms(events, progress_gain, self._ego[EGO["speed"]], self.goal, self._goal_holds(),
                             crashed=bool(self._core.vehicle.crashed))
        terminated, truncated, outcome = step_outcome(events, self._route is not None and self._wrong_exit(),
                                                      self._steps, self.spec_.max_steps)
        info = {"goal": self.goal, "events": events, "reward_terms": terms}
        if outcome:
            info["outcome"] = outcome
        reward = float(self.reward_weights.reward(terms[None])[0])
        return self._observation(), reward, terminated, truncated, info

    def _tow_wrecks(self) -> None:
        """Remove traffic that crashed into traffic ``WRECK_CLEAR_STEPS`` after the crash.

        highway-env's junction traffic sometimes collides with itself; the wrecks then stand in
        the junction for the rest of the episode and block every exit, so no driver, the expert
        included, can complete a route (the expert timed out in ~6% of 50 held-out episodes at
        medium and dense density, every one behind a wreck). A real road would stay blocked
        longer, but a benchmark episode that nobody can finish measures nothing. The ego's own
        crashes end the episode and are never towed."""
        ego, keep = self._core.vehicle, []
        for v in self._core.road.vehicles:
            if v is not ego and v.crashed:
                since = getattr(v, "wrecked_at", None)
                if since is None:
                    v.wrecked_at = self._steps
                elif self._steps - since >= WRECK_CLEAR_STEPS:
                    continue
            keep.append(v)
        self._core.road.vehicles = keep

    # ----------------------------------------------------------------- cloning
    def snapshot(self) -> EnvSnapshot:
        """A private copy of the current state (simulator, traffic, RNGs, episode bookkeeping).

        ``restore(snap)`` then the same actions reproduce the same continuation exactly. Taking
        a snapshot only reads the env. Cost: a deep copy of the road (~ms with 40 vehicles)."""
        if not hasattr(self, "_ego"):
            raise RuntimeError("snapshot() needs a reset() env")
        live = {id(v): i for i, v in enumerate(self._core.road.vehicles)}
        return EnvSnapshot(
            core=copy.deepcopy(self._core),
            episode=copy.deepcopy({name: getattr(self, name) for name in _EPISODE_ATTRS}),
            actor_ids={live[key]: vid for key, vid in self._ids.items() if key in live},
            ids_issued=len(self._ids),
            np_random=copy.deepcopy(getattr(self, "_np_random", None)),
        )

    def restore(self, snap: EnvSnapshot) -> dict:
        """Return to ``snap``'s state (the snapshot itself is left untouched); returns the
        observation of that state, as ``reset`` / ``step`` would have."""
        self._restore_state(snap, private=False)
        return self._observation()

    def expert_plan(self, horizon: int) -> np.ndarray:
        """(horizon, 2) the expert's OWN next actions from the current state: its action now,
        then the ones it would take after executing them, simulated on a private copy (the env
        is left exactly as it was; cameras are not rendered on the way). Rows past the end of
        that continuation (collision, route end) are NaN.

        This is the action chunk that labels a state a policy visited. The expert's actions
        recorded at the next states of a policy's rollout answer states the POLICY drove into
        (an over-correction after each of its mistakes), not what the expert would do from
        here; a chunk built from them teaches a policy that over-corrects, and a temporally
        ensembled policy then oscillates around the lane centre."""
        if horizon == 1:  # nothing to simulate
            return self.expert_action()[None].astype(np.float32)
        return self.expert_continuation(horizon)[0]

    def expert_continuation(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """The expert driving on from the current state for ``horizon`` steps on a private copy
        (see ``expert_plan``): its actions (horizon, 2) and the ego poses it reaches after each
        of them (horizon, 4) ``POSE_FIELDS``, NaN past the end of the continuation (and from a
        collision or off-road step on: a plan never leads there). The poses label a plan-head policy's visited states (``sim.plan``)."""
        if horizon < 1:
            raise ValueError(f"expert_plan horizon must be >= 1, got {horizon}")
        snap = self.snapshot()
        renderer, self._renderer = self._renderer, None
        try:
            plan, poses = self._drive_expert(horizon)
        finally:
            self._renderer = renderer
            self._restore_state(snap, private=True)
        return plan, poses

    def _drive_expert(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Let the expert drive THIS env for up to ``horizon`` steps (callers hold a snapshot):
        its actions and the poses reached, NaN from a collision / off-road step or the end on."""
        plan = np.full((horizon, len(ACTION_FIELDS)), np.nan, dtype=np.float32)
        poses = np.full((horizon, len(POSE_FIELDS)), np.nan, dtype=np.float64)
        plan[0] = self.expert_action()
        for k in range(horizon):
            _, _, terminated, truncated, info = self.step(plan[k])
            if info["events"][EVENT["collision_vehicle"]] or info["events"][EVENT["off_road"]]:
                break
            poses[k] = self._ego[[EGO[name] for name in POSE_FIELDS]]
            if terminated or truncated or k == horizon - 1:
                break
            plan[k + 1] = self.expert_action()
        return plan, poses

    def goal_futures(self, horizon: int) -> np.ndarray | None:
        """(len(HIGHWAY_GOAL_LABELS), horizon, 4) the ego poses the expert reaches in the next
        ``horizon`` steps had the passenger asked for each OTHER highway goal at the start (NaN
        for the episode's own goal, a lane change off the road, and past a continuation's end);
        None at the intersection. The plan-head counterpart of ``goal_labels``: every visited
        state then labels a plan under every command (``sim.plan.goal_plan_labels``). Each is an
        exact continuation on a private copy (``horizon`` simulator steps per goal; removing
        the far traffic to save time changed the expert's lane decisions by up to a lane, so
        it is not done); the env is left exactly as it was."""
        if horizon < 1:
            raise ValueError(f"goal_futures horizon must be >= 1, got {horizon}")
        if self._route is None:
            out = np.full((len(HIGHWAY_GOAL_LABELS), horizon, len(POSE_FIELDS)), np.nan, dtype=np.float32)
        else:
            return None
        others = [(i, label) for i, label in enumerate(HIGHWAY_GOAL_LABELS)
                  if label in highway_goal_labels(self._start_lane) and label != self.goal.label]
        if not others:
            return out
        snap = self.snapshot()
        renderer, self._renderer = self._renderer, None
        try:
            for n, (i, label) in enumerate(others):
                if n:
                    self._restore_state(snap, private=False)
                self.goal = highway_goal_for(label, self._start_lane)
                out[i] = self._drive_expert(horizon)[1]
        finally:
            self._renderer = renderer
            self._restore_state(snap, private=True)
        return out

    def _restore_state(self, snap: EnvSnapshot, private: bool) -> None:
        """Put ``snap``'s state back; ``private``: the snapshot is never used again, so its
        objects are taken over instead of copied."""
        core = snap.core if private else copy.deepcopy(snap.core)
        self._core = core
        for name, value in (snap.episode if private else copy.deepcopy(snap.episode)).items():
            setattr(self, name, value)
        # Actor ids are keyed by object identity, which the copy changes: re-key them. Ids of
        # vehicles that left the road get placeholder keys (negative, never an id()), so the
        # next new actor gets the same id as in the original run.
        vehicles = core.road.vehicles
        self._ids = {id(vehicles[i]): vid for i, vid in snap.actor_ids.items()}
        for k in range(snap.ids_issued - len(self._ids)):
            self._ids[-1 - k] = -1
        self._np_random = snap.np_random if private else copy.deepcopy(snap.np_random)

    # ----------------------------------------------------------------- queries
    def expert_action(self) -> np.ndarray:
        """IDM + goal-directed lane choice + lane keeping for the CURRENT state (read-only)."""
        return expert_mod.expert_action(self._core.road, self._core.vehicle, self.goal, self._route)

    def goal_labels(self) -> np.ndarray | None:
        """(len(HIGHWAY_GOAL_LABELS), 2): what the expert would do NOW had the passenger asked for
        each highway goal at the start (NaN for a lane change off the road); None at the
        intersection. The expert is a pure function of (state, goal), so every visited state
        supervises every command at once, as Learning by Cheating's privileged agent does for
        its high-level commands: the same state under different commands, different actions."""
        if self._route is not None:
            return None
        out = np.full((len(HIGHWAY_GOAL_LABELS), len(ACTION_FIELDS)), np.nan, dtype=np.float32)
        possible = highway_goal_labels(self._start_lane)
        for i, label in enumerate(HIGHWAY_GOAL_LABELS):
            if label in possible:
                goal = highway_goal_for(label, self._start_lane)
                out[i] = expert_mod.expert_action(self._core.road, self._core.vehicle, goal, None)
        return out

    def ego_state(self) -> np.ndarray:
        return self._ego.copy()

    def actors(self) -> np.ndarray:
        """The nearest actors of the current state (scanned once per state, in _observation)."""
        return self._actors.copy()

    def _scan_actors(self) -> np.ndarray:
        ego = self._core.vehicle
        rows = []
        for v in self._core.road.vehicles:
            if v is ego:
                continue
            d = float(np.hypot(*(v.position - ego.position)))
            if d <= ACTOR_RANGE:
                vid = self._ids.setdefault(id(v), len(self._ids))
                rows.append((d, [1.0, vid, v.position[0], -v.position[1], -v.heading, v.speed,
                                 v.LENGTH, v.WIDTH], v))
        rows.sort(key=lambda r: r[0])
        out = np.zeros((MAX_ACTORS, len(ACTOR_FIELDS)), dtype=np.float64)
        for i, (_, row, _) in enumerate(rows[:MAX_ACTORS]):
            out[i] = row
        self._actor_vehicles = [v for _, _, v in rows[:MAX_ACTORS]]
        return out

    def actor_paths(self) -> np.ndarray:
        """(MAX_ACTORS, ACTOR_PATH_POINTS, 2) float32 ``sim.route.ACTOR_PATH_POINTS`` of the actors of
        the current state: at the intersection, each car's lane centre ahead along the route it
        drives (every car here signals its turn, and CARLA's Traffic Manager sets the indicators
        too); on the highway all zeros (no junction, nothing for a path to add)."""
        out = np.zeros((MAX_ACTORS, ACTOR_PATH_POINTS, 2), dtype=np.float32)
        if self.scenario != "intersection":
            return out
        for i, v in enumerate(getattr(self, "_actor_vehicles", ())):
            index = getattr(v, "target_lane_index", None) or v.lane_index  # the lane it steers for, not the
            lane = self._core.road.network.get_lane(index)                 # nearest one (lanes overlap in a junction)
            s = float(lane.local_coordinates(v.position)[0])
            chain = self._lane_chain(index, tuple(getattr(v, "route", None) or ()))
            out[i] = points_along(chain, s + ACTOR_PATH_SPACING * np.arange(ACTOR_PATH_POINTS))
        return out

    def _lane_chain(self, index: tuple, route: tuple) -> np.ndarray:
        """(N, 2) world points 1 m apart along the lane ``index`` from its start, then the lanes a
        car with ``route`` takes after it, to ``ACTOR_PATH_SPACING * ACTOR_PATH_POINTS`` m past the
        lane's end (the map's end: extended straight). Cached per (lane, route), a few dozen per
        episode: sampling each car's lanes at every step cost twice as much (1.4 against 0.8 ms per
        step, measured on a busy machine)."""
        key = (index, route)
        chain = self._chains.get(key)
        if chain is None:
            net = self._core.road.network
            lane, pending, points = net.get_lane(index), list(route), []
            need = lane.length + ACTOR_PATH_SPACING * ACTOR_PATH_POINTS
            while True:
                points.append(lane_points(lane, np.arange(0.0, lane.length, 1.0)))
                need -= lane.length
                nxt = net.next_lane(index, route=pending, position=lane.position(lane.length, 0.0))  # pops `pending`
                if need <= 0.0 or nxt == index:
                    points.append(lane_points(lane, [lane.length]))  # its end point
                    break
                index, lane = nxt, net.get_lane(nxt)
            chain = self._chains[key] = np.concatenate(points)
        return chain

    def scene(self) -> Scene:
        ego = self._core.vehicle
        vehicles = [
            (v.position[0], -v.position[1], -v.heading, v.LENGTH, v.WIDTH, VEHICLE_HEIGHT,
             self._ids.setdefault(id(v), len(self._ids)))
            for v in self._core.road.vehicles
            if v is not ego
        ]
        arr = np.array(vehicles, dtype=np.float64).reshape(-1, 7)
        return Scene(lanes=self._lanes, vehicles=arr,
                     ego_pose=np.array([ego.position[0], -ego.position[1], -ego.heading]))

    def render_cameras(self) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("this env has no cameras; pass cameras=default_rig()")
        return self._renderer.render(self.scene())

    # ----------------------------------------------------------------- internals
    def _observation(self) -> dict:
        actors = self._actors = self._scan_actors()
        obs = {
            "ego": self._ego.astype(np.float32),
            "goal": goal_vector(self.goal, self._ego),
            "actors": actors.astype(np.float32),
            "state": state_vector(self._ego, actors, self.goal),
            "route": self.route_state(),
            "route_path": self.route_path(),
            "actor_paths": self.actor_paths(),
            "lanes": self._side_lanes(),
        }
        if self._renderer is not None:
            obs["cameras"] = self.render_cameras()
        return obs

    def _side_lanes(self) -> np.ndarray:
        """(2,) lanes of the ego's road beside its own, to the left and to the right (``lane_id``
        counts from the left)."""
        index = self._core.vehicle.lane_index
        n = len(self._core.road.network.all_side_lanes(index))
        return np.array([index[2], n - 1 - index[2]], dtype=np.float32)

    def _ego_vector(self, accel: float, yaw_rate: float) -> np.ndarray:
        ego = self._core.vehicle
        lane = ego.lane
        s, lat = lane.local_coordinates(ego.position)
        e = np.zeros(len(EGO_FIELDS), dtype=np.float64)
        e[EGO["x"]], e[EGO["y"]], e[EGO["yaw"]] = ego.position[0], -ego.position[1], -ego.heading
        e[EGO["speed"]], e[EGO["accel_long"]] = ego.speed, accel
        e[EGO["yaw_rate"]], e[EGO["accel_lat"]] = yaw_rate, ego.speed * yaw_rate
        e[EGO["steer"]] = -float(ego.action.get("steering", 0.0)) if ego.action else 0.0
        e[EGO["lane_offset"]] = -lat
        e[EGO["lane_heading_error"]] = -float(wrap_to_pi(ego.heading - lane.heading_at(s)))
        e[EGO["lane_id"]] = ego.lane_index[2]
        e[EGO["speed_limit"]] = lane.speed_limit or 0.0
        e[EGO["progress"]] = min(1.0, self._best_progress_m / self.route_length)
        return e

    def _route_polyline(self) -> tuple[np.ndarray, np.ndarray]:
        """The junction route's centre line in the world frame, 1 m apart from the start of its
        first lane to ``ROUTE_AHEAD`` past its end, and which points are in the junction (the
        connecting lane)."""
        net, points, junction = self._core.road.network, [], []
        for k, index in enumerate(self._route):
            lane = net.get_lane(index)
            end = lane.length if k < len(self._route) - 1 else min(lane.length, INTERSECTION_EXIT + 2 * ROUTE_AHEAD)
            points.append(lane_points(lane, np.arange(0.0, end, 1.0)))
            junction += [k == 1] * len(points[-1])
        return np.concatenate(points), np.array(junction)

    def route_state(self) -> np.ndarray:
        """(len(ROUTE_FIELDS),) ``sim.route.route_features`` of the ego now: on the highway the
        current lane ahead (no junction); at the intersection the episode's route."""
        if self._route is None:
            return route_features(self._lane_ahead(), None, 0.0, self._ego)
        pos = self._route_position()
        if pos is not None:
            self._along = pos + self._s0  # metres along the polyline, which starts at the first lane's s = 0
        points, junction = self._route_poly
        return route_features(points, junction, self._along, self._ego)

    def route_path(self) -> np.ndarray:
        """(ROUTE_PATH_POINTS, 2) ``sim.route.route_path`` of the ego now: the current lane ahead
        on the highway, the episode's route at the intersection (``route_state`` has updated
        where along it the ego is)."""
        if self._route is None:
            return route_path(self._lane_ahead(), 0.0)
        return route_path(self._route_poly[0], self._along)

    def _lane_ahead(self) -> np.ndarray:
        """(2, 2) world polyline of the ego's current lane centre from level with the ego to
        ``2 * ROUTE_AHEAD`` m ahead (the highway's route)."""
        ego = self._core.vehicle
        s, _ = ego.lane.local_coordinates(ego.position)
        ahead = [ego.lane.position(float(s), 0.0), ego.lane.position(float(s) + 2 * ROUTE_AHEAD, 0.0)]
        return np.array([(x, -y) for x, y in ahead])

    def _route_position(self) -> float | None:
        """Metres along the route of the ego's position, or None when it is off the route."""
        ego = self._core.vehicle
        if self._route is None:
            return float(ego.position[0]) - self._s0
        net, offset = self._core.road.network, -self._s0
        for index in self._route:
            lane = net.get_lane(index)
            s, lat = lane.local_coordinates(ego.position)
            if lane.on_lane(ego.position, s, lat, margin=1.0) and -1.0 <= s <= lane.length + 1.0:
                return offset + s
            offset += lane.length
        return None

    def _update_progress(self) -> float:
        pos = self._route_position()
        if pos is None or not self._core.vehicle.on_road:
            return 0.0  # off the road or off the route: no progress (CARLA's rule)
        gain = max(0.0, min(pos, self.route_length) - self._best_progress_m)
        self._best_progress_m += gain
        return gain

    def _events(self, collided_now: bool) -> np.ndarray:
        ego = self._core.vehicle
        e = np.zeros(len(EVENT_FIELDS), dtype=np.float32)
        e[EVENT["collision_vehicle"]] = float(collided_now)
        e[EVENT["off_road"]] = float(not ego.on_road)
        lane_half = ego.lane.width / 2.0
        e[EVENT["lane_invasion"]] = float(abs(self._ego[EGO["lane_offset"]]) + ego.WIDTH / 2.0 > lane_half)
        limit = self._ego[EGO["speed_limit"]]
        e[EVENT["speeding"]] = float(limit > 0 and ego.speed > limit + 0.5)
        e[EVENT["route_complete"]] = float(self._best_progress_m >= self.route_length - 1e-6)
        return e

    def _goal_holds(self) -> bool:
        ego, g = self._ego, self.goal
        if g.kind == "lane_speed":
            if g.target_lane < 0:  # speed command, any lane
                return abs(ego[EGO["speed"]] - g.target_speed) < SPEED_TOLERANCE
            # lane commands say nothing about speed
            return int(ego[EGO["lane_id"]]) == g.target_lane and abs(ego[EGO["lane_offset"]]) < 1.0
        lane_index = self._core.vehicle.lane_index
        return self._route is not None and lane_index[:2] == self._route[2][:2]

    def _wrong_exit(self) -> bool:
        """On another exit lane, clearly past the junction (lanes overlap inside it)."""
        ego = self._core.vehicle
        if not ego.lane_index[0].startswith("il") or ego.lane_index[:2] == self._route[2][:2]:
            return False
        s, _ = ego.lane.local_coordinates(ego.position)
        return s > 5.0
