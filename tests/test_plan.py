"""Plans, the tracker and DART: sim.plan, sim.rollout.DartNoise, the plan head's labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.interface import EGO, EGO_FIELDS, EVENT
from sim.plan import (
    PLAN_HIGH,
    PLAN_LOW,
    PlanTracker,
    TrackerParams,
    VehicleGeometry,
    blend_plans,
    clean_steps,
    continue_plan,
    plan_frame,
    plan_from_poses,
    plan_labels,
    plan_steps,
    plan_times,
    pose_of,
    waypoints,
)


def _ego_row(x, y, yaw, speed, lane_offset=0.0, heading_error=0.0):
    e = np.zeros(len(EGO_FIELDS))
    e[EGO["x"]], e[EGO["y"]], e[EGO["yaw"]], e[EGO["speed"]] = x, y, yaw, speed
    e[EGO["lane_offset"]], e[EGO["lane_heading_error"]] = lane_offset, heading_error
    return e


def _reference(t):
    """A lane change (3.5 m to the left over ~3 s) while accelerating at 0.5 m/s^2 from 25 m/s,
    on a lane heading 0.3 rad in the world."""
    x = 25.0 * t + 0.25 * t**2
    y = 3.5 / (1.0 + np.exp(-(t - 3.0) * 2.0))
    c, s = np.cos(0.3), np.sin(0.3)
    return np.array([c * x - s * y, s * x + c * y])


def _reference_pose(t):
    p, q = _reference(t), _reference(t + 1e-4)
    return np.array([p[0], p[1], np.arctan2(q[1] - p[1], q[0] - p[0]), np.linalg.norm(q - p) / 1e-4])


def test_plan_frame_is_the_lane_centre_level_with_the_ego():
    # the ego 1 m left of a lane heading 0.5 rad, its own heading 0.1 rad more
    heading = 0.5
    centre = np.array([10.0, 20.0])
    left = np.array([-np.sin(heading), np.cos(heading)])
    x, y = centre + 1.0 * left
    frame = plan_frame(_ego_row(x, y, heading + 0.1, 20.0, lane_offset=1.0, heading_error=0.1))
    np.testing.assert_allclose(frame, [centre[0], centre[1], heading], atol=1e-12)


def test_plan_round_trips_through_waypoints_and_tokens():
    frame, speed = np.array([3.0, -2.0, 0.7]), 22.0
    times = plan_times(4)
    local = np.stack([times * 21.0, [0.1, 0.6, 1.8, 3.2]], axis=-1)
    c, s = np.cos(frame[2]), np.sin(frame[2])
    world = frame[:2] + np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]], -1)
    plan = plan_from_poses(frame, speed, world)
    np.testing.assert_allclose(plan[:, 0], -1.0, atol=1e-9)  # 21 m/s mean speed from 22 m/s
    np.testing.assert_allclose(waypoints(plan, speed), local, atol=1e-9)
    from vla.policy import default_action_tokenizer

    tok = default_action_tokenizer(64, "plan")
    np.testing.assert_allclose(tok.low, PLAN_LOW)
    np.testing.assert_allclose(tok.high, PLAN_HIGH)
    bins, residual = tok.encode(plan)
    np.testing.assert_allclose(tok.decode(bins, residual), plan, atol=1e-5)


@pytest.mark.parametrize("replan_every", [1, 5])
def test_tracker_follows_a_known_plan_on_the_bicycle(replan_every):
    """Plans read off a reference lane change, tracked on the kinematic bicycle (highway-env's
    integration): within 0.25 m of the reference path and 0.1 m/s of its speed throughout,
    whether it re-plans every step or executes each plan for 0.5 s."""
    geometry, tracker = VehicleGeometry(), PlanTracker()
    pose = _reference_pose(0.0)
    worst_lat = worst_speed = 0.0
    held = None
    for i in range(80):
        t = i * 0.1
        if held is None or i % replan_every == 0:
            lane_heading = 0.3
            frame = np.array([*(pose[:2]), lane_heading])  # any frame works; the tracker maps back
            future = np.array([_reference_pose(t + tk) for tk in plan_times(4)])
            held = (plan_from_poses(frame, pose[3], future), frame, pose.copy(), i)
        plan, frame, start, made = held
        action = tracker.control(plan, frame, start, pose, age=(i - made) * 0.1)
        pose = geometry.step(pose, action)
        ref = _reference_pose(t + 0.1)
        normal = np.array([-np.sin(ref[2]), np.cos(ref[2])])
        worst_lat = max(worst_lat, abs(float((pose[:2] - ref[:2]) @ normal)))
        worst_speed = max(worst_speed, abs(pose[3] - ref[3]))
    assert worst_lat < 0.25, worst_lat
    assert worst_speed < 0.1, worst_speed


def test_tracker_rejects_bad_plans():
    tracker = PlanTracker()
    pose = np.array([0.0, 0.0, 0.0, 10.0])
    with pytest.raises(ValueError, match="finite"):
        tracker.control(np.full((4, 2), np.nan), np.zeros(3), pose, pose)
    with pytest.raises(ValueError, match="finite"):
        tracker.control(np.zeros((4, 3)), np.zeros(3), pose, pose)
    tracker.control(np.zeros((4, 2)), np.zeros(3), pose, pose)  # kept as the last plan: same bytes,
    with pytest.raises(ValueError, match="finite"):  # another shape is still refused
        tracker.control(np.zeros((8, 1)), np.zeros(3), pose, pose)


def test_the_tracker_keeps_a_plans_geometry_and_stays_a_function_of_its_arguments():
    """``PlanTracker`` keeps the last plan's geometry between steps; its answers are still those
    of a fresh tracker for every call, whatever it was asked before (plans, frames, starts)."""
    rng = np.random.default_rng(0)
    tracker = PlanTracker(TrackerParams(max_jerk_long=1.5, max_jerk_lat=2.0))
    plans = [np.column_stack([rng.normal(0, 2, 4), rng.normal(0, 1, 4)]) for _ in range(3)]
    frames = [np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.5, 0.1])]
    start = np.array([0.0, 0.0, 0.0, 15.0])
    for i in range(40):
        plan, frame = plans[(i // 4) % 3], frames[(i // 7) % 2]
        pose = np.array([0.5 * i, 0.1 * np.sin(i), 0.02 * np.cos(i), 15.0 + 0.1 * i])
        kwargs = dict(age=0.1 * (i % 5), steer_now=0.01 * (i % 3), accel_now=0.2 * (i % 4) - 0.3)
        np.testing.assert_array_equal(tracker.control(plan, frame, start, pose, **kwargs),
                                      PlanTracker(tracker.params).control(plan, frame, start, pose, **kwargs))


def test_plan_labels_come_from_clean_stretches_or_recorded_futures():
    """Waypoint j of state t is the recorded pose plan_steps[j] later only while every action in
    between was the expert's own; after a perturbed step it is unknown unless a simulated
    continuation was recorded."""
    t_steps, k = 40, 2
    xs = np.arange(t_steps + 1) * 2.5  # 25 m/s straight along x
    ego = np.stack([_ego_row(x, 0.0, 0.0, 25.0) for x in xs])
    expert = np.zeros((t_steps, 2), np.float32)
    actions = expert.copy()
    actions[20] = [1.0, 0.0]  # one perturbed step
    labels = plan_labels(ego, actions, expert, None, k)
    n = plan_steps(k)  # 5, 10
    assert clean_steps(actions, expert).sum() == t_steps - 1
    np.testing.assert_allclose(labels[0], 0.0, atol=1e-9)  # holding speed and lane
    assert np.isfinite(labels[15, 0]).all() and not np.isfinite(labels[15, 1]).any()  # 15 + 10 crosses 20
    assert not np.isfinite(labels[20]).any() and not np.isfinite(labels[16]).any()
    assert np.isfinite(labels[21]).all()
    assert not np.isfinite(labels[t_steps - n[0] + 1]).any()  # past the episode's end
    futures = np.full((t_steps, 10, 4), np.nan, np.float32)
    futures[20] = [[2.5 * (20 + i), 0.0, 0.0, 25.0] for i in range(1, 11)]
    labels = plan_labels(ego, actions, expert, futures, k)
    np.testing.assert_allclose(labels[20], 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="shorter"):
        plan_labels(ego, actions, expert, futures[:, :5], k)


def test_dart_executes_noise_and_keeps_clean_expert_labels():
    from sim.highway import EmbeddedDrivingEnv
    from sim.rollout import BASELINES, DartNoise, run_episode

    env = EmbeddedDrivingEnv("highway", "light")
    noise = DartNoise(burst_prob=0.2, burst_steps=(2, 4), accel_std=1.0, steer_std=0.02)
    ep = run_episode(env, BASELINES["expert"](env, 3), 3, record_frames=False, noise=noise,
                     rng=np.random.default_rng(3))
    perturbed = ~clean_steps(ep.actions, ep.expert_actions)
    assert 0 < perturbed.sum() < ep.num_steps
    # the labels are the expert's clean answer to each visited state: replay the executed
    # actions and query the expert at every state
    env.reset(seed=3)
    for t in range(min(ep.num_steps, 60)):
        np.testing.assert_allclose(env.expert_action(), ep.expert_actions[t], atol=1e-6)
        env.step(ep.actions[t])
    again = run_episode(env, BASELINES["expert"](env, 3), 3, record_frames=False, noise=noise,
                        rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again.actions, ep.actions)
    with pytest.raises(ValueError, match="DartNoise"):
        DartNoise(burst_steps=(5, 2))


def test_dart_speed_bursts_hold_an_acceleration_offset_and_leave_old_recipes_unchanged():
    """Speed bursts (DartNoise.speed_prob): a longitudinal offset only, held for speed_steps steps;
    with speed_prob 0 the generator is drawn exactly as before they existed (recorded datasets
    stay reproducible), and the expert recovers: a speed burst moves the car's speed by more
    than the short bursts do."""
    from sim.highway import EmbeddedDrivingEnv
    from sim.interface import EGO
    from sim.rollout import BASELINES, DartNoise, _Bursts, run_episode

    # off: the same draws as the short bursts alone, written out by hand
    noise = DartNoise(burst_prob=0.3, burst_steps=(2, 3))
    got = _Bursts(noise, np.random.default_rng(5))
    ref, left, offset, seen = np.random.default_rng(5), 0, np.zeros(2), []
    for _ in range(200):
        if left == 0 and ref.random() < noise.burst_prob:
            left = int(ref.integers(2, 4))
            offset = ref.normal(0.0, [noise.accel_std, noise.steer_std])
        want = np.zeros(2)
        if left:
            left, want = left - 1, offset
        np.testing.assert_array_equal(got(), want)
        seen.append(bool(left))
    assert any(seen)
    # on, alone: steering untouched, the acceleration offset constant within a burst of 4-6 steps
    only = _Bursts(DartNoise(burst_prob=0.0, speed_prob=1.0, speed_steps=(4, 6), speed_std=1.0),
                   np.random.default_rng(1))
    out = np.array([only() for _ in range(60)])
    assert np.all(out[:, 1] == 0) and np.all(out[:, 0] != 0)  # speed_prob 1: a new burst as soon as one ends
    runs = np.split(out[:, 0], np.flatnonzero(np.diff(out[:, 0])) + 1)
    assert all(4 <= len(r) <= 6 for r in runs[:-1]) and len(runs) >= 10
    # in the simulator: the executed acceleration departs from the clean label for whole seconds,
    # and the car's speed moves further off than under the short bursts
    env = EmbeddedDrivingEnv("highway", "light")
    spread = {}
    for name, n in {"short": DartNoise(), "speed": DartNoise(speed_prob=0.05, speed_std=2.0)}.items():
        ep = run_episode(env, BASELINES["expert"](env, 4), 4, record_frames=False, noise=n,
                         rng=np.random.default_rng(4))
        v = np.asarray(ep.ego)[:, EGO["speed"]]
        spread[name] = float(np.abs(np.diff(v[::10])).max())
        if name == "speed":
            off = np.abs(ep.actions[:, 0] - ep.expert_actions[:, 0]) > 1e-6
            assert off.sum() >= 15 and np.allclose(ep.actions[:, 1], ep.expert_actions[:, 1], atol=0.2)
    assert spread["speed"] > spread["short"]
    with pytest.raises(ValueError, match="DartNoise"):
        DartNoise(speed_prob=1.5)
    with pytest.raises(ValueError, match="DartNoise"):
        DartNoise(speed_steps=(0, 4))


def test_tracker_drives_the_experts_own_plans_in_the_simulator():
    """The expert's continuation from each state, as a plan, through the tracker, on the
    junction's tightest curve (a right turn): no collision, never off the road, and the path
    stays within 0.8 m of the path (pure pursuit cuts a
    curve by about lookahead^2 / (8 radius); 1.2 m with a 1 s look-ahead) the expert drives itself from the same seed."""
    from sim.highway import EmbeddedDrivingEnv

    env = EmbeddedDrivingEnv("intersection", "light")
    tracker, steps = PlanTracker(), plan_steps(4)
    env.reset(seed=1)
    assert env.goal.label == "turn_right"
    expert_path = [pose_of(env.ego_state())[:2]]
    for _ in range(80):
        env.step(env.expert_action())
        expert_path.append(pose_of(env.ego_state())[:2])
    expert_path = np.array(expert_path)
    env.reset(seed=1)
    worst = 0.0
    for _ in range(70):
        _, future = env.expert_continuation(int(steps[-1]))
        ego = env.ego_state()
        pose = pose_of(ego)
        plan = plan_from_poses(plan_frame(ego), pose[3], future[steps - 1])
        _, _, terminated, _, info = env.step(tracker.control(plan, plan_frame(ego), pose, pose))
        assert info["events"][EVENT["collision_vehicle"]] == 0 and info["events"][EVENT["off_road"]] == 0
        assert not terminated, info.get("outcome")
        worst = max(worst, float(np.min(np.linalg.norm(expert_path - pose_of(env.ego_state())[:2], axis=1))))
    assert worst < 0.8, worst


def test_plan_policy_saves_loads_and_acts_identically(tmp_path):
    from sim.highway import EmbeddedDrivingEnv
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          tracker_jerk_long=1.0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    policy.save(tmp_path / "p")
    loaded = VLAPolicy.load(tmp_path / "p")
    assert loaded.config.action == "plan" and loaded.tracker is not None
    assert loaded.tracker.params.max_jerk_long == 1.0 and loaded.tracker.params.max_jerk_lat == 0.0  # its comfort limits
    assert loaded.tracker.params.lookahead_time == 1.0  # and its look-ahead (the default)
    loaded.set_execution(tracker_lookahead=0.6)
    assert loaded.tracker.params.lookahead_time == 0.6 and loaded.tracker.params.max_jerk_long == 1.0
    loaded.set_execution(tracker_lookahead=1.0)  # back to the saved settings for the comparison below
    with pytest.raises(ValueError, match="unknown plan execution settings"):
        loaded.set_execution(lookahead=0.6)
    with pytest.raises(ValueError, match="tracker_lookahead"):
        PolicyConfig(tracker_lookahead=0.0)
    with pytest.raises(ValueError, match="tracker_jerk"):
        PolicyConfig(tracker_jerk_lat=-1.0)
    np.testing.assert_allclose(loaded.action_tokenizer.high, PLAN_HIGH)
    env = EmbeddedDrivingEnv("highway", "light")
    for p in (policy, loaded):
        p.eval()
    obs, _ = env.reset(seed=5)
    for p in (policy, loaded):
        p.reset()
        p.hear(env.goal.command, env.goal.lang)
    for _ in range(12):
        a, b = policy.select_action(obs), loaded.select_action(obs)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (2,) and np.all(np.isfinite(a))
        obs, *_ = env.step(a)


def test_plan_policy_refused_where_chunks_are_read_as_controls():
    from methods.dpo import DPOMethod
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    with pytest.raises(ValueError, match="raw-control chunks"):
        DPOMethod(policy)
    with pytest.raises(ValueError, match="head 'bins'"):
        PolicyConfig(action="plan", head="diffusion")
    with pytest.raises(ValueError, match="action"):
        PolicyConfig(action="waypoints")


def test_short_dagger_session_with_the_plan_head(tmp_path):
    """Iteration 0 on DART-perturbed expert episodes, then one DAgger iteration whose rollouts are
    labelled with the expert's simulated continuations (every 3rd state)."""
    from methods.dagger import DaggerConfig, DaggerSession
    from sim.storage import read_episodes
    from vla.config import PolicyConfig

    policy = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=2, cameras=False, action="plan")
    config = DaggerConfig(scenario="highway", density="light", iterations=1, expert_episodes=2, rollouts=1,
                          eval_episodes=1, train_steps=6, batch_size=8, workers=1, dart=True, label_every=3,
                          policy=policy)
    lines = DaggerSession(config, tmp_path / "run", log=lambda s: None).run_all()
    assert [line["iteration"] for line in lines] == [0, 1]
    expert = list(read_episodes(tmp_path / "run" / "data" / "iter_000", load_frames=False))
    assert any((~clean_steps(ep.actions, ep.expert_actions)).any() for ep in expert)  # DART bursts
    (rollout,) = read_episodes(tmp_path / "run" / "data" / "iter_001", load_frames=False)
    assert rollout.expert_futures is not None and rollout.expert_futures.shape[1:] == (10, 4)
    labelled = np.isfinite(rollout.expert_futures[:, 0, 0])
    assert labelled[::3][:-1].all() and not labelled[1::3].any()  # (the last state may end the run)
    assert lines[1]["dataset_steps"] > lines[0]["dataset_steps"]


def test_steering_lag_moves_part_way_toward_pure_pursuit():
    plan = np.stack([np.zeros(4), [0.5, 1.5, 2.5, 3.5]], axis=-1)  # drift left over 2 s
    pose = np.array([0.0, 0.0, 0.0, 20.0])
    target = PlanTracker().control(plan, np.zeros(3), pose, pose)[1]
    lagged = PlanTracker(TrackerParams(steer_time=0.3)).control(plan, np.zeros(3), pose, pose, steer_now=0.0)[1]
    assert target > 0 and np.isclose(lagged, target * 0.1 / 0.4, rtol=1e-5)
    with pytest.raises(ValueError):
        TrackerParams(steer_time=-1.0)


def test_comfort_limits_bound_the_change_of_each_command_but_never_delay_a_brake():
    pose = np.array([0.0, 0.0, 0.0, 20.0])
    limited = PlanTracker(TrackerParams(max_jerk_long=2.0, max_jerk_lat=2.0))
    speed_up = np.stack([[0.5, 1.0, 1.5, 2.0], np.zeros(4)], axis=-1)  # +2 m/s^2
    free = PlanTracker().control(speed_up, np.zeros(3), pose, pose)[0]
    assert free > 1.5
    assert np.isclose(limited.control(speed_up, np.zeros(3), pose, pose, accel_now=0.0)[0], 0.2)  # 2 m/s^3 * 0.1 s
    assert np.isclose(limited.control(speed_up, np.zeros(3), pose, pose, accel_now=free)[0], free)  # reached
    stop = np.stack([-3.0 * plan_times(4), np.zeros(4)], axis=-1)  # -6 m/s^2: a brake goes at once
    assert limited.control(stop, np.zeros(3), pose, pose, accel_now=0.0)[0] < -5.0
    mild = np.stack([-0.5 * plan_times(4), np.zeros(4)], axis=-1)  # -1 m/s^2: a brake too, by default
    assert limited.control(mild, np.zeros(3), pose, pose, accel_now=0.0)[0] < -0.9
    hard_only = PlanTracker(TrackerParams(max_jerk_long=2.0, brake_exempt=3.5))  # only hard brakes exempt
    assert np.isclose(hard_only.control(mild, np.zeros(3), pose, pose, accel_now=0.0)[0], -0.2)
    assert hard_only.control(stop, np.zeros(3), pose, pose, accel_now=0.0)[0] < -5.0
    # releasing a brake is limited: from -3 toward 0 by 0.2 per step
    assert np.isclose(limited.control(np.zeros((4, 2)), np.zeros(3), pose, pose, accel_now=-3.0)[0], -2.8)
    # lateral: the wheel's curvature moves by at most 2 m/s^3 * 0.1 s / v^2 from the current wheel's
    drift = np.stack([np.zeros(4), [0.5, 1.5, 2.5, 3.5]], axis=-1)
    geometry = VehicleGeometry()
    steer = limited.control(drift, np.zeros(3), pose, pose, steer_now=0.0)[1]
    assert 0 < steer < PlanTracker().control(drift, np.zeros(3), pose, pose)[1]
    assert np.isclose(geometry.curvature(steer) * 20.0 ** 2, 0.2, rtol=1e-4)
    assert np.isclose(geometry.steer_for(geometry.curvature(0.1)), 0.1)
    # without the current state (None) there is nothing to limit against
    assert np.isclose(limited.control(speed_up, np.zeros(3), pose, pose)[0], free)
    with pytest.raises(ValueError):
        TrackerParams(max_jerk_long=-1.0)


def test_the_tracker_never_brakes_past_standstill():
    """A car stopped hard (accel_now -6) whose plan says stay put: releasing the brake at the
    jerk limit would keep braking at 0 m/s, which drives a point-mass vehicle backwards. The
    command brakes at most to standstill in one step, at any speed."""
    hold = np.zeros((4, 2))
    hold[:, 0] = -1.0  # the plan's speeds: max(0, v0 - 1) = 0 from 0.5 m/s
    for v in (0.0, 0.05, 0.5):
        pose = np.array([0.0, 0.0, 0.0, v])
        accel = PlanTracker(TrackerParams(max_jerk_long=2.0)).control(hold, np.zeros(3), pose, pose, accel_now=-6.0)[0]
        assert -v / 0.1 - 1e-5 <= accel <= 0.0
    # above standstill a limited brake release still applies (from -3 toward 0 by 0.2 per step)
    pose = np.array([0.0, 0.0, 0.0, 20.0])
    assert np.isclose(PlanTracker(TrackerParams(max_jerk_long=2.0)).control(
        np.zeros((4, 2)), np.zeros(3), pose, pose, accel_now=-3.0)[0], -2.8)


def _brake_to(v0: float, target: float, decel: float, k: int = 4) -> np.ndarray:
    """A plan from speed v0 that brakes at ``decel`` until ``target`` m/s, then holds it."""
    times = plan_times(k)
    fine = np.linspace(0.0, times[-1], 2001)
    speed = np.maximum(target, v0 - decel * fine)
    x = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(fine))])
    return np.stack([np.interp(times, fine, x) / times - v0, np.zeros(k)], axis=-1)


@pytest.mark.parametrize("anticipate", [False, True])
def test_an_anticipating_release_ends_a_firm_brake_at_the_plans_speed(anticipate):
    """Under the 1.5 m/s^3 jerk limit, plans that brake at 3 m/s^2 from 25 to 20 m/s and hold it
    (re-planned every 0.5 s): releasing when the plan's next 0.5 s ask it dips 0.8 m/s below 20;
    with the brake bounded by what the release can undo (TrackerParams.anticipate) under half of
    that. Either way the command never changes faster than the limit once braking, the first brake
    is at once, and the car settles at 20."""
    tracker = PlanTracker(TrackerParams(max_jerk_long=1.5, anticipate=anticipate))
    pose, accel, held, low, steps = np.array([0.0, 0.0, 0.0, 25.0]), 0.0, None, 25.0, []
    for i in range(80):
        if i % 5 == 0:
            held = (_brake_to(pose[3], 20.0, 3.0), np.array([pose[0], 0.0, 0.0]), pose.copy(), i)
        plan, frame, start, made = held
        command = float(tracker.control(plan, frame, start, pose, age=(i - made) * 0.1, accel_now=accel)[0])
        steps.append(command - accel)
        pose, accel = VehicleGeometry().step(pose, np.array([command, 0.0])), command
        low = min(low, pose[3])
    assert steps[0] < -2.0 and max(abs(d) for d in steps[1:]) <= 0.15 + 1e-6  # (float32 actions)
    assert abs(pose[3] - 20.0) < 0.05
    if anticipate:
        assert low > 19.55, low
    else:
        assert low < 19.3, low  # the overshoot this setting is for


def test_plan_goal_relabelling_labels_every_command_from_recorded_states(tmp_path):
    """An expert episode recorded with goal futures (every 4th state) round-trips through HDF5
    and gives a plan policy one sample per other possible goal at those states, labelled with
    the plan through the expert's poses under that goal; lane commands then ask for opposite
    lateral offsets from the same state."""
    from sim.highway import EmbeddedDrivingEnv
    from sim.rollout import ExpertPolicy, run_episode
    from sim.scenarios import HIGHWAY_GOAL_LABELS
    from sim.storage import EpisodeWriter, read_episodes
    from vla.config import PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    env = EmbeddedDrivingEnv("highway", "light", goals="any")
    ep = run_episode(env, ExpertPolicy(env), seed=2, record_frames=False, plan_horizon=20,
                     goal_labels=True, goal_futures=True, plan_every=4)
    assert ep.goal_futures.shape == (ep.num_steps, len(HIGHWAY_GOAL_LABELS), 20, 4)
    recorded = np.isfinite(ep.goal_futures[:, :, 0, 0]).any(1)
    assert recorded[::4].all() and not recorded[1::4].any()
    with EpisodeWriter(tmp_path / "d") as w:
        w.append(ep)
    (back,) = read_episodes(tmp_path / "d", load_frames=False)
    np.testing.assert_array_equal(back.goal_futures, ep.goal_futures)

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    plain, relabelled = DemoDataset(policy), DemoDataset(policy, goal_relabel=True)
    plain.add_episode(back), relabelled.add_episode(back)
    others = sum(1 for i in range(len(HIGHWAY_GOAL_LABELS))
                 if i != HIGHWAY_GOAL_LABELS.index(ep.goal.label) and np.isfinite(ep.goal_futures[0, i]).all())
    assert others >= 2
    assert relabelled.counterfactual_samples >= others * (ep.num_steps // 4 - 5)
    assert len(relabelled) == len(plain) + relabelled.counterfactual_samples
    step = 8  # a recorded state
    frame = plan_frame(ep.ego[step])
    for g, label in enumerate(HIGHWAY_GOAL_LABELS):
        rows = np.flatnonzero((relabelled._index[:, 1] == step) & (relabelled._index[:, 2] == g))
        if not len(rows):
            continue
        batch = relabelled.batch(rows)
        want = plan_from_poses(frame, ep.ego[step, EGO["speed"]], ep.goal_futures[step, g, plan_steps(4) - 1])
        got = policy.action_tokenizer.decode(batch.action_bins.numpy()[0], batch.action_residual.numpy()[0])
        np.testing.assert_allclose(got, want, atol=1e-3)
    lanes = [HIGHWAY_GOAL_LABELS.index(n) for n in ("lane_left", "lane_right")]
    if all(np.isfinite(ep.goal_futures[step, g]).all() for g in lanes):
        y = [plan_from_poses(frame, ep.ego[step, EGO["speed"]], ep.goal_futures[step, g, plan_steps(4) - 1])[-1, 1]
             for g in lanes]
        assert y[0] > 1.0 > -1.0 > y[1]
    with pytest.raises(ValueError, match="goal_futures needs"):
        run_episode(env, ExpertPolicy(env), seed=2, record_frames=False, goal_futures=True)


def test_blending_plans_keeps_a_consistent_plan_and_averages_disagreeing_ones():
    """Temporal ensembling of plans: a plan that the newer one agrees with (the ego drove along
    it) changes (almost) nothing; two plans that disagree (keep the lane / change it) are
    averaged by their weights, waypoint by waypoint at the same absolute times, each older plan
    only while its horizon lasts."""
    times = plan_times(4)
    start, later = _reference_pose(0.0), _reference_pose(0.1)
    frame, frame_later = np.array([*start[:2], 0.3]), np.array([*later[:2], 0.3])
    truth = plan_from_poses(frame, start[3], np.array([_reference_pose(t) for t in times]))
    truth_later = plan_from_poses(frame_later, later[3], np.array([_reference_pose(0.1 + t) for t in times]))
    alone = blend_plans([(truth_later, frame_later, later, 0.0)], frame_later, later, 0.5)
    assert np.allclose(alone, truth_later, atol=1e-9)
    both = blend_plans([(truth_later, frame_later, later, 0.0), (truth, frame, start, 0.1)], frame_later, later, 0.5)
    assert np.allclose(both, truth_later, atol=0.05)  # agreeing plans (linear interpolation between waypoints)

    keep = np.zeros((4, 2))
    change = np.stack([np.zeros(4), 3.5 * times / times[-1]], axis=-1)  # 3.5 m left by 2 s
    pose, flat = np.array([0.0, 0.0, 0.0, 20.0]), np.zeros(3)
    mid = blend_plans([(change, flat, pose, 0.0), (keep, flat, pose, 0.0)], flat, pose, 0.5)
    assert np.allclose(mid[:, 1], change[:, 1] / 2) and np.allclose(mid[:, 0], 0.0, atol=1e-9)
    older = blend_plans([(change, flat, pose, 0.0), (keep, flat, pose, 0.2)], flat, pose, 0.5)
    w = np.exp(-0.5 * 2)  # 2 steps old
    assert np.allclose(older[:3, 1], change[:3, 1] / (1 + w))
    assert older[3, 1] == pytest.approx(change[3, 1])  # beyond the old plan's horizon: the new one alone


def test_an_older_plan_continued_from_now_is_the_same_motion():
    """continue_plan: a plan of constant speed and lateral drift, made 0.3 s ago, is from now the
    same motion (past its horizon extended at its last velocity), expressed in the new frame."""
    times = plan_times(4)
    speed, drift = 20.0, 0.5  # m/s along, m/s across
    start, frame = np.array([0.0, 0.0, 0.0, speed]), np.zeros(3)
    old = np.stack([np.zeros(4), drift * times], axis=-1)
    age = 0.3
    new_frame = np.array([speed * age, 0.0, 0.0])
    got = continue_plan(old, frame, start, age, new_frame, speed)
    want = np.stack([np.zeros(4), drift * (age + times)], axis=-1)  # lateral from the lane centre
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_a_committed_policy_keeps_its_plan_unless_the_new_one_is_much_likelier():
    """commit_margin: with an enormous margin every re-plan keeps the plan being executed,
    continued from now; with margin 0 the policy drives exactly as without the option; within
    50 m of a junction it takes every new plan."""
    from dataclasses import replace

    import torch

    from sim.highway import EmbeddedDrivingEnv
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first")
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    env = EmbeddedDrivingEnv("highway", "light")

    def drive(margin: float, steps: int = 11) -> tuple[list, list]:
        policy.config = replace(config, commit_margin=margin)
        obs, _ = env.reset(seed=3)
        policy.reset()
        plans, actions = [], []
        for _ in range(steps):
            actions.append(policy.select_action(obs))
            plans.append(policy._plan)
            obs, *_ = env.step(actions[-1])
        return plans, actions

    free_plans, free = drive(0.0)
    policy.config = config
    _, default = drive(0.0)
    np.testing.assert_array_equal(np.array(free), np.array(default))
    plans, _ = drive(1e9)
    first, second = plans[0], plans[config.replan_period]
    assert second[3] == config.replan_period  # a re-plan happened ...
    want = continue_plan(first[0], first[1], first[2], (second[3] - first[3]) * 0.1, second[1], second[2][3])
    np.testing.assert_allclose(second[0], want, atol=1e-9)  # ... and kept the plan it was executing
    assert not np.allclose(free_plans[config.replan_period][0], want, atol=1e-3)  # which the model alone did not
    obs, _ = env.reset(seed=3)
    one = [policy.commitment.scores(obs, [p])[0] for p in (first[0], second[0])]
    np.testing.assert_allclose(policy.commitment.scores(obs, [first[0], second[0]]), one, rtol=1e-5)  # batched = alone
    policy.reset()
    policy._own_plan(obs)  # keeps this observation's prefix pass: the scores reuse it
    assert policy.commitment.prefix is not None
    kept_prefix = policy.commitment.scores(obs, [first[0], second[0]])
    np.testing.assert_allclose(kept_prefix, one, rtol=1e-5)
    env = EmbeddedDrivingEnv("intersection", "light")  # near a junction nothing is held
    assert env.reset(seed=3)[0]["route"][0] < 50
    np.testing.assert_array_equal(np.array(drive(1e9)[1]), np.array(drive(0.0)[1]))


def test_lateral_commitment_holds_the_lateral_path_and_takes_the_new_speed():
    """commit_lateral 1: with an enormous margin a re-plan keeps the executed plan's lateral
    offsets (continued from now) but drives the new plan's speed gains, including a faster one
    (the whole-plan commitment keeps the old speed unless the new plan slows down); with margin
    0 it changes nothing; a bad value is one error."""
    from dataclasses import replace

    import torch

    from sim.highway import EmbeddedDrivingEnv
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan",
                          execution="first")
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(16, "plan"))
    env = EmbeddedDrivingEnv("highway", "light")
    obs, _ = env.reset(seed=3)
    policy.reset()
    policy.select_action(obs)  # the first plan, now being executed
    made = policy._plan
    for _ in range(config.replan_period):
        obs, *_ = env.step(np.zeros(2, np.float32))
    ego = np.asarray(obs["ego"], dtype=np.float64)
    frame, pose, t = plan_frame(ego), pose_of(ego), config.replan_period
    kept = continue_plan(made[0], made[1], made[2], (t - made[3]) * 0.1, frame, float(pose[3]))
    faster = kept + np.array([3.0, 2.0])  # 3 m/s faster everywhere, 2 m further left

    def commit(lateral: float, margin: float) -> np.ndarray:
        policy.config = replace(config, commit_margin=margin, commit_lateral=lateral)
        policy.commitment.clear()
        return policy.commitment.choose(obs, faster, policy.commitment.kept(obs, made, frame, pose, t))

    np.testing.assert_allclose(commit(0.0, 1e9), kept, atol=1e-9)  # whole plan held: the old speed too
    held = commit(1.0, 1e9)
    np.testing.assert_allclose(held[:, 0], faster[:, 0], atol=1e-9)  # the new speed ...
    np.testing.assert_allclose(held[:, 1], kept[:, 1], atol=1e-9)  # ... on the held lateral path
    np.testing.assert_array_equal(commit(1.0, 0.0), faster)  # no margin: the new plan as it is
    with pytest.raises(ValueError, match="commit_lateral must be 0"):
        replace(config, commit_lateral=0.5)


def test_goal_relabelling_leaves_junction_episodes_as_they_are():
    """The junction records no goal futures: a goal-relabelling plan dataset takes its episodes
    with their own labels only (a highway episode without futures is still refused)."""
    from sim.highway import EmbeddedDrivingEnv
    from sim.rollout import ExpertPolicy, run_episode
    from vla.config import PolicyConfig
    from vla.data import DemoDataset
    from vla.policy import VLAPolicy, default_action_tokenizer

    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    policy = VLAPolicy(cfg, default_action_tokenizer(16, "plan"))
    data = DemoDataset(policy, goal_relabel=True)
    env = EmbeddedDrivingEnv("intersection", "light")
    ep = run_episode(env, ExpertPolicy(env), 1, record_frames=False, plan_horizon=20, goal_labels=True,
                     goal_futures=True)
    assert ep.goal_futures is None
    data.add_episode(ep)
    assert len(data) > 0 and data.counterfactual_samples == 0
    highway = EmbeddedDrivingEnv("highway", "light")
    with pytest.raises(ValueError, match="no goal futures"):
        data.add_episode(run_episode(highway, ExpertPolicy(highway), 1, record_frames=False))


def test_eval_execution_options_drive_a_plan_policy_with_other_settings(tmp_path, capsys):
    from app import cli
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    for action in ("plan", "control"):
        config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action=action)
        VLAPolicy(config, default_action_tokenizer(16, action)).save(tmp_path / action)
    light = ["--scenario", "highway", "--density", "light", "--episodes", "1", "--no-gif"]
    jerk = {}
    for limits in (None, ("0", "2")):
        out = tmp_path / f"eval_{limits}"
        extra = ["--tracker-jerk", *limits] if limits else []
        assert cli.main(["eval", "--policy", str(tmp_path / "plan"), *light, *extra, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        jerk[limits] = metrics["jerk_lat_max"]
    assert jerk[("0", "2")] < jerk[None]  # a lateral limit of 2 m/s^3 binds on an untrained policy
    out = tmp_path / "eval_lookahead"
    assert cli.main(["eval", "--policy", str(tmp_path / "plan"), *light, "--tracker-lookahead", "0.3", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["jerk_lat_max"] != jerk[None]  # it drives with that look-ahead
    out = tmp_path / "eval_commit"
    assert cli.main(["eval", "--policy", str(tmp_path / "plan"), *light, "--commit-margin", "1e9", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["jerk_lat_max"] != jerk[None]  # it keeps its first plan
    junction = ["--scenario", "intersection", "--density", "light", "--episodes", "1", "--no-gif"]
    for flags in (["--yield-zone", "0", "--route-steer-speed", "0"],
                  ["--yield-zone", "50", "--route-steer-speed", "20", "--go-zone", "10", "--yield-turn", "1.57",
                   "--junction-ttc", "1.5", "--route-follow", "40"]):
        out = tmp_path / f"eval_junction_{flags[1]}"
        assert cli.main(["eval", "--policy", str(tmp_path / "plan"), *junction, *flags, "--out", str(out)]) == 0
        assert json.loads((out / "metrics.json").read_text())["episodes"] == 1
    capsys.readouterr()
    bad = [(tmp_path / "plan", ["--tracker-jerk", "-1", "0"]), ("expert", ["--tracker-jerk", "0", "0"]),
           (tmp_path / "control", ["--tracker-jerk", "0", "0"]), (tmp_path / "plan", ["--tracker-lookahead", "0"]),
           (tmp_path / "plan", ["--tracker-lookahead", "nan"]), (tmp_path / "control", ["--tracker-lookahead", "1"]),
           (tmp_path / "plan", ["--commit-margin", "-1"]), (tmp_path / "control", ["--commit-margin", "1"]),
           (tmp_path / "plan", ["--yield-zone", "-5"]), (tmp_path / "plan", ["--yield-zone", "inf"]),
           (tmp_path / "control", ["--yield-zone", "30"]), (tmp_path / "plan", ["--route-steer-speed", "-1"]),
           (tmp_path / "plan", ["--go-zone", "-1"]), (tmp_path / "plan", ["--go-zone", "nan"]),
           (tmp_path / "plan", ["--yield-turn", "-0.1"]), (tmp_path / "plan", ["--yield-turn", "4"]),
           (tmp_path / "plan", ["--junction-ttc", "-1"]), (tmp_path / "plan", ["--junction-ttc", "nan"]),
           (tmp_path / "plan", ["--route-follow", "-1"]), (tmp_path / "plan", ["--route-follow", "inf"]),
           (tmp_path / "plan", ["--chitchat-threshold", "0"]), (tmp_path / "plan", ["--chitchat-threshold", "1.5"]),
           (tmp_path / "plan", ["--command-readback", "-0.1"]), (tmp_path / "plan", ["--command-readback", "nan"])]
    for policy, flags in bad:
        code = cli.main(["eval", "--policy", str(policy), *light, *flags, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert code != 0 and flags[0] in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "bad" / "metrics.json").exists()


def test_every_plan_execution_setting_has_an_eval_flag_that_reaches_the_policy(tmp_path):
    """A flag that parses but never reaches ``args.execution`` drives the checkpoint's settings while
    the user believes otherwise (it happened to --go-zone once): every setting, one flag each."""
    from app import cli
    from vla.config import PolicyConfig
    from vla.policy import EXECUTION_SETTINGS, VLAPolicy, default_action_tokenizer

    config = PolicyConfig(d_model=32, n_layers=1, n_heads=2, n_bins=16, horizon=4, cameras=False, action="plan")
    VLAPolicy(config, default_action_tokenizer(16, "plan")).save(tmp_path / "plan")
    flags = {attr: flag for flag, attr, _, _ in cli._SCALAR_EXECUTION_FLAGS}
    switches = {attr for _, attr, valid, _ in cli._SCALAR_EXECUTION_FLAGS if valid is cli._switch}
    assert set(flags) | {"tracker_jerk_long", "tracker_jerk_lat"} == set(EXECUTION_SETTINGS)
    assert switches == {"yield_paths", "commit_inside", "commit_lateral", "tracker_anticipate", "road_edge"}
    for attr, flag in flags.items():
        value = 1.0 if attr in switches else 0.5  # a switch: 0 or 1
        argv = ["eval", "--policy", str(tmp_path / "plan"), flag, str(value), "--out", str(tmp_path / "out")]
        args = cli.build_parser(argv).parse_args(argv)
        cli._check_execution(args)
        assert args.execution == {attr: value}, flag


@pytest.mark.parametrize("name", ["yield_paths", "commit_inside", "tracker_anticipate", "commit_lateral", "road_edge"])
def test_switch_settings_take_0_or_1_only(name):
    """The 0 / 1 execution switches (``vla.config.SWITCHES``) refuse anything else, naming the field
    and what 0 and 1 mean."""
    from vla.config import SWITCHES, PolicyConfig

    assert name in SWITCHES
    for ok in (0.0, 1.0):
        PolicyConfig(**{name: ok})
    with pytest.raises(ValueError, match=rf"PolicyConfig\.{name} must be 0 \(.*\) or 1 \(.*\), got 0\.5"):
        PolicyConfig(**{name: 0.5})
