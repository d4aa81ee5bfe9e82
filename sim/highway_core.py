"""The highway-env core under the embedded backend (``sim.highway``): lean highway-env envs that
skip highway-env's own observation, the junction's traffic model, the core's config per scenario
and density, and highway-env's lanes and predictions in our frame (``(x, y)_ours = (x, -y)_hw``;
see ``sim.highway``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from highway_env.envs.highway_env import HighwayEnv
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.road.lane import CircularLane, LineType
from highway_env.vehicle.behavior import IDMVehicle

from sim.interface import ACTION_HIGH, ACTION_LOW, DT, LaneGeom
from sim.scenarios import HIGHWAY_LANES, check_scenario

LINE_KINDS = {LineType.NONE: "none", LineType.STRIPED: "striped", LineType.CONTINUOUS: "solid",
              LineType.CONTINUOUS_LINE: "solid"}
"""highway-env's line types as ``LaneGeom.lines`` names them."""


class NoObservation:
    """highway-env computes a (slow, pandas-based) observation each step; we build our own."""

    def space(self) -> gym.spaces.Space:
        return gym.spaces.Box(0.0, 0.0, shape=(0,), dtype=np.float32)

    def observe(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


class LeanHighway(HighwayEnv):
    def define_spaces(self) -> None:
        super().define_spaces()
        self.observation_type = NoObservation()
        self.observation_space = self.observation_type.space()


class LeanIntersection(IntersectionEnv):
    def define_spaces(self) -> None:
        super().define_spaces()
        self.observation_type = NoObservation()
        self.observation_space = self.observation_type.space()


class TrafficIDM(IDMVehicle):
    """Traffic for the intersection: highway-env tunes its traffic by setting class attributes,
    so it gets a class of its own and the highway's IDMVehicle stays untouched.

    It brakes to a stop and never into reverse. highway-env lets a vehicle's speed fall to its
    ``MIN_SPEED`` (-40 m/s), and IDM asks a car standing closer than its minimum gap for a
    negative acceleration, so a car that had stopped short of another at the junction backed
    up: in 120 recorded dev episodes some car did so in 86, at up to 3.3 m/s, and the car we hit
    had been reversing in the last 2 s in 5 of 17 collisions. Real traffic (and CARLA's Traffic
    Manager) stops and waits."""

    def step(self, dt: float) -> None:
        super().step(dt)  # integrates the position with the speed at the start of the step (>= 0)
        if self.speed < 0.0:
            self.speed = 0.0


def predict_constant_steering(vehicle, times: np.ndarray) -> tuple[list, list]:
    """Same result as ``Vehicle.predict_trajectory_constant_speed`` (kinematic bicycle, zero
    acceleration, current steering) without deep-copying the vehicle."""
    steering = float(vehicle.action.get("steering", 0.0)) if vehicle.action else 0.0
    beta = np.arctan(0.5 * np.tan(steering))
    x, y = float(vehicle.position[0]), float(vehicle.position[1])
    heading, speed = float(vehicle.heading), float(vehicle.speed)
    positions, headings, t_prev = [], [], 0.0
    for t in times:
        dt = float(t) - t_prev
        t_prev = float(t)
        x += speed * np.cos(heading + beta) * dt
        y += speed * np.sin(heading + beta) * dt
        heading += speed * np.sin(beta) / (vehicle.LENGTH / 2) * dt
        positions.append(np.array([x, y]))
        headings.append(heading)
    return positions, headings


def lane_points(lane, along: np.ndarray) -> np.ndarray:
    """(len(along), 2) points of ``lane``'s centre line at those metres along it, in our world
    frame (highway-env's y negated)."""
    return np.array([lane.position(float(s), 0.0) for s in along], dtype=np.float64).reshape(-1, 2) * np.array([1.0, -1.0])


def core_config(scenario: str, density: str) -> dict:
    d = check_scenario(scenario, density).densities[density]
    action = {
        "type": "ContinuousAction",
        "acceleration_range": (float(ACTION_LOW[0]), float(ACTION_HIGH[0])),
        "steering_range": (float(ACTION_LOW[1]), float(ACTION_HIGH[1])),
    }
    common = {"action": action, "simulation_frequency": 10, "policy_frequency": 10, "duration": 1e9}
    if scenario == "highway":
        return {**common, "lanes_count": HIGHWAY_LANES, "vehicles_count": d.vehicles_count,
                "vehicles_density": d.spacing}
    return {**common, "initial_vehicle_count": d.initial_vehicles,
            # highway-env tries one spawn per env step; its default assumes 1 step per second
            "spawn_probability": 1.0 - (1.0 - d.spawn_probability) ** DT, "destination": "o1",
            "other_vehicles_type": f"{TrafficIDM.__module__}.TrafficIDM"}


def lane_geom(lane) -> LaneGeom:
    lines = (LINE_KINDS[lane.line_types[0]], LINE_KINDS[lane.line_types[1]])
    if isinstance(lane, CircularLane):
        return LaneGeom(kind="arc", width=float(lane.width), lines=lines,
                        center=(float(lane.center[0]), -float(lane.center[1])), radius=float(lane.radius),
                        start_phase=-float(lane.start_phase), end_phase=-float(lane.end_phase),
                        ccw=not lane.clockwise)
    return LaneGeom(kind="straight", width=float(lane.width), lines=lines,
                    start=(float(lane.start[0]), -float(lane.start[1])),
                    end=(float(lane.end[0]), -float(lane.end[1])))
