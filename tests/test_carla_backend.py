"""sim.carla_backend against a test double of the server (tests/carla_double.py: a kinematic
world behind the client API the backend calls; maps, transforms and controls are the real
``carla`` wheel's). What only a real server can check is in the README's CARLA section and the
live test at the end (runs only with CARLA_HOST set)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

carla = pytest.importorskip("carla")
sys.path.insert(0, str(Path(__file__).parent))

import carla_double  # noqa: E402

from benchmarks.metrics import episode_metrics  # noqa: E402
from sim import carla_backend  # noqa: E402
from sim.backends import make_env  # noqa: E402
from sim.interface import ACTOR_FIELDS, EGO, EGO_FIELDS, EVENT_FIELDS, MAX_ACTORS, REWARD_FIELDS, DrivingEnv  # noqa: E402
from sim.rollout import ExpertPolicy, run_episode  # noqa: E402


@pytest.fixture()
def server(monkeypatch):
    """Point the backend at a double of the server; returns a function that sets its map."""
    made = {}

    def use(map_name: str = "straight", **kw) -> carla_double.Client:
        made["client"] = carla_double.Client(map_name, **kw)
        return made["client"]

    monkeypatch.setattr(carla_backend, "connect", lambda options: made["client"])
    monkeypatch.setattr(carla_backend, "CONNECT_BACKOFF_S", 0.0)
    return use


@pytest.mark.parametrize("map_name, scenario, density", [("straight", "highway", "light"),
                                                         ("straight", "highway", "medium"),
                                                         ("junction", "intersection", "medium")])
def test_the_expert_completes_every_route_without_infractions(server, map_name, scenario, density):
    client = server(map_name)
    env = carla_backend.CarlaDrivingEnv(scenario, density)
    labels = set()
    for seed in range(8):
        ep = run_episode(env, ExpertPolicy(env), seed=seed, record_frames=False)
        m = episode_metrics(ep)
        assert ep.outcome == "route_complete", (seed, ep.goal.label, ep.outcome, ep.error)
        assert m["collided"] == 0 and m["off_road"] == 0 and m["infraction_penalty"] == 1.0
        assert m["route_completed"] == 1.0
        assert np.all(np.diff(ep.ego[:, EGO["progress"]]) >= 0)
        assert ep.route is not None and np.all(np.isfinite(ep.route))  # sim.route, as the embedded backend
        if ep.goal.label.startswith("turn_"):
            assert m["goal_success"] == 1.0, (seed, ep.goal.label)  # it ends on the exit asked for
            assert (ep.route[:, 0] == 0.0).any()  # the junction distance reached 0 as it drove through
        if ep.goal.label.startswith("lane_") and m["goal_success"] == 0:
            assert density != "light", (seed, ep.goal.label)  # only traffic keeps it from moving over
        labels.add(ep.goal.label)
    env.close()
    assert len(labels) >= 3  # the seeds draw different commands
    assert not client.world.actors  # close destroyed everything it spawned


def test_the_expert_yields_at_junctions_and_changes_lane_only_when_safe():
    from sim.carla_expert import Vehicle, choose_route, conflict_point, expert_action
    from sim.carla_route import plan_route

    junction = carla_double.load_map("junction")
    route = plan_route(junction, (-40.0, -1.75), "turn_straight", 70.0)
    pose = np.array([-25.0, -1.75, 0.0, 10.0])
    crossing_now = Vehicle(-1.75, 30.0, -np.pi / 2, 10.0)  # from the north, at the junction with us
    crossing_later = Vehicle(-1.75, 100.0, -np.pi / 2, 10.0)  # 7 s later than us
    assert conflict_point(route, 15.0, 10.0, [crossing_now], 11.1) == pytest.approx(35.0, abs=2.0)  # in the junction
    assert conflict_point(route, 15.0, 10.0, [crossing_later], 11.1) is None
    assert expert_action(route, pose, [crossing_now], 11.1)[0] < -3.0  # stop for it
    assert expert_action(route, pose, [crossing_later], 11.1)[0] > -0.5  # go
    inside = np.array([0.0, -1.75, 0.0, 10.0])
    assert expert_action(route, inside, [crossing_now], 11.1)[0] > -0.5  # inside the junction: clear it

    straight = carla_double.load_map("straight")
    goal = plan_route(straight, (10.0, -5.25), "lane_left", 150.0)
    lane = plan_route(straight, (10.0, -5.25), "keep_lane", 150.0)
    pose = np.array([10.0, -5.25, 0.0, 20.0])
    assert choose_route(goal, lane, pose, [], 27.8) is goal
    assert choose_route(goal, lane, pose, [Vehicle(60.0, -1.75, 0.0, 25.0)], 27.8) is goal  # far ahead, faster
    for blocker in (Vehicle(5.0, -1.75, 0.0, 25.0), Vehicle(-30.0, -1.75, 0.0, 25.0), Vehicle(14.0, -1.75, 0.0, 10.0)):
        assert choose_route(goal, lane, pose, [blocker], 27.8) is lane  # beside us, closing fast, just ahead
    halfway = np.array([10.0, -3.0, 0.0, 20.0])  # past the commit offset: the change is finished
    assert choose_route(goal, lane, halfway, [Vehicle(5.0, -1.75, 0.0, 25.0)], 27.8) is goal


def test_protocol_observations_and_lane_indices(server):
    client = server("straight")
    env = make_env("carla", "highway", "light")
    assert isinstance(env, DrivingEnv)
    obs, info = env.reset(seed=2)
    assert client.world.settings.synchronous_mode and client.world.settings.fixed_delta_seconds == pytest.approx(0.1)
    assert client.tm.synchronous and client.tm.seed == 2
    assert obs["ego"].shape == (len(EGO_FIELDS),) and obs["actors"].shape == (MAX_ACTORS, len(ACTOR_FIELDS))
    assert info["events"].shape == (len(EVENT_FIELDS),) and info["reward_terms"].shape == (len(REWARD_FIELDS),)
    ahead = max(5.0, 2.0 * float(obs["ego"][EGO["speed"]]))  # sim.route: where a 2 s plan at this speed ends
    assert np.allclose(obs["route"], [50.0, ahead, 0.0], atol=0.05)  # no junction; the straight lane ahead
    ego = env.ego_state()
    # lanes counted from the left among the lanes of the ego's direction, as in the embedded highway
    expected = {-1.75: 0, -5.25: 1, 1.75: 0}[round(float(ego[EGO["y"]]), 2)]
    assert ego[EGO["lane_id"]] == expected and abs(ego[EGO["lane_offset"]]) < 1e-3
    assert obs["lanes"].tolist() == {0: [0.0, 1.0], 1: [1.0, 0.0]}[expected] if ego[EGO["y"]] < 0 else [0.0, 0.0]
    assert ego[EGO["speed_limit"]] == pytest.approx(100 / 3.6)
    plan = env.expert_plan(20)
    actions, poses = env.expert_continuation(20)
    assert plan.shape == (20, 2) and poses.shape == (20, 4) and np.allclose(plan, actions)
    assert env.goal_labels() is None and env.goal_futures(20) is None
    with pytest.raises(NotImplementedError, match="cannot save and restore"):
        env.snapshot()
    obs, _, terminated, truncated, info = env.step(env.expert_action())
    assert not (terminated or truncated) and obs["ego"][EGO["speed"]] > 0
    with pytest.raises(ValueError, match="2 finite numbers"):
        env.step(np.array([np.nan, 0.0]))
    env.close()
    assert not client.world.settings.synchronous_mode  # the world's own settings are back
    assert not client.world.actors


def test_cameras_arrive_per_tick_in_rgb_at_their_poses(server):
    from sim.cameras import default_rig
    from sim.carla_frames import camera_to_carla

    client = server("straight")
    rig = default_rig(32, 24)
    env = carla_backend.CarlaDrivingEnv("highway", "light", cameras=rig)
    obs, _ = env.reset(seed=0)
    assert obs["cameras"].shape == (len(rig), 24, 32, 3) and obs["cameras"].dtype == np.uint8
    obs, *_ = env.step(env.expert_action())
    frame = client.world.frame
    assert tuple(obs["cameras"][0, 0, 0]) == (160, 80, frame % 200)  # BGRA from the server -> RGB, this tick's
    cams = [a for a in client.world.actors.values() if a.type_id == "sensor.camera.rgb"]
    for cam in cams:
        spec = next(s for s in rig if cam.attributes["image_size_x"] == "32" and
                    tuple(camera_to_carla(s)[0]) == pytest.approx((cam.relative.location.x, cam.relative.location.y,
                                                                   cam.relative.location.z), abs=1e-5))
        pitch, yaw, roll = camera_to_carla(spec)[1]
        r = cam.relative.rotation
        assert (r.pitch, r.yaw, r.roll) == pytest.approx((pitch, yaw, roll), abs=1e-3)
    assert len(cams) == len(rig)
    env.close()


def test_a_tick_that_times_out_fails_one_episode_and_the_next_reconnects(server):
    client = server("straight", fail_ticks={8})
    env = carla_backend.CarlaDrivingEnv("highway", "light")
    failed = run_episode(env, ExpertPolicy(env), seed=0, record_frames=False)
    assert failed.outcome == "sim_error" and "time-out" in failed.error and failed.num_steps == 6
    again = run_episode(env, ExpertPolicy(env), seed=1, record_frames=False)
    assert again.outcome == "route_complete"
    env.close()
    assert client.world.ticks > 8


def test_an_unreachable_server_is_one_error_naming_it(server):
    server("straight", unreachable=True)
    env = carla_backend.CarlaDrivingEnv("highway", "light", options=carla_backend.CarlaOptions(port=2345))
    with pytest.raises(RuntimeError, match="localhost:2345 unreachable after 3 tries"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="port must be a TCP port"):
        carla_backend.CarlaOptions(port=0)


def test_a_policy_trained_on_the_embedded_simulator_drives_through_vla_eval(server, tmp_path, capsys):
    """A checkpoint made for the embedded simulator runs unchanged on CARLA (in-process), and
    the expert through ``vla eval --backend carla`` writes the usual files."""
    from app import cli

    server("straight")
    # a plan policy cloned (briefly) on expert episodes of the embedded simulator
    assert cli.main(["collect", "--scenario", "highway", "--density", "light", "--episodes", "1", "--cameras", "none",
                     "--out", str(tmp_path / "embedded")]) == 0
    assert cli.main(["train", "bc", "--data", str(tmp_path / "embedded"), "--steps", "10", "--batch-size", "8",
                     "--size", "tiny", "--no-cameras", "--action", "plan", "--observation", "lane_frame",
                     "--out", str(tmp_path / "bc")]) == 0
    code = cli.main(["eval", "--backend", "carla", "--policy", str(tmp_path / "bc" / "policy"), "--scenario", "highway",
                     "--density", "light", "--episodes", "2", "--no-gif", "--out", str(tmp_path / "learned")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "learned" / "metrics.json").read_text())["episodes"] == 2
    code = cli.main(["eval", "--backend", "carla", "--carla-port", "2001", "--policy", "expert", "--density", "light",
                     "--episodes", "3", "--no-gif", "--out", str(tmp_path / "expert")])
    assert code == 0
    metrics = json.loads((tmp_path / "expert" / "metrics.json").read_text())
    assert metrics["collision_rate"] == 0 and metrics["route_completion_rate"] == 1.0
    assert os.environ["CARLA_PORT"] == "2001"
    code = cli.main(["collect", "--backend", "carla", "--scenario", "highway", "--density", "light",
                     "--episodes", "2", "--cameras", "none", "--out", str(tmp_path / "data")])
    assert code == 0
    from sim.storage import read_episodes

    recorded = list(read_episodes(tmp_path / "data", load_frames=False))
    assert len(recorded) == 2 and all(ep.outcome == "route_complete" for ep in recorded)
    assert all(np.isfinite(ep.expert_actions).all() and ep.route_length > 100 for ep in recorded)
    code = cli.main(["eval", "--backend", "carla", "--carla-port", "99999", "--episodes", "1", "--out",
                     str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "--backend carla: CARLA port must be a TCP port" in err and not (tmp_path / "bad").exists()


def test_a_dagger_session_runs_on_carla(server, tmp_path, capsys):
    from app import cli

    server("straight")
    argv = ["dagger", "--backend", "carla", "--workers", "1", "--density", "light", "--iterations", "1",
            "--expert-episodes", "2", "--rollouts", "1", "--train-steps", "5", "--eval-episodes", "1",
            "--size", "tiny", "--no-cameras", "--no-goal-relabel", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [0, 1] and lines[1]["dataset_episodes"] == 3
    assert json.loads((tmp_path / "run" / "session.json").read_text())["backend"] == "carla"
    assert cli.main([*argv[:4], "2", *argv[5:]]) == 2
    assert "--backend carla drives one server from one process" in capsys.readouterr().err
    relabel = [a for a in argv if a != "--no-goal-relabel"][:-1] + [str(tmp_path / "relabel")]
    assert cli.main(relabel) == 2
    assert "the carla backend does not record yet; pass --no-goal-relabel" in capsys.readouterr().err


def test_a_launched_server_gets_free_ports_and_is_stopped_on_close(server, tmp_path, monkeypatch):
    """--carla-launch: CARLA_ROOT's server script is started off-screen on a free port pair and
    stopped by close (here a stand-in script; the client is the double)."""
    root = tmp_path / "carla"
    root.mkdir()
    script = root / "CarlaUE4.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args.txt'}\nexec sleep 600\n")
    script.chmod(0o755)
    monkeypatch.setenv("CARLA_ROOT", str(root))
    server("straight")
    env = carla_backend.CarlaDrivingEnv("highway", "light", options=carla_backend.CarlaOptions(launch=True))
    env.reset(seed=0)
    proc = env._server
    assert proc is not None and proc.poll() is None
    for _ in range(200):
        if (tmp_path / "args.txt").exists():
            break
        import time
        time.sleep(0.01)
    args = (tmp_path / "args.txt").read_text().split()
    assert args[:2] == ["-RenderOffScreen", "-nosound"] and args[2] == f"-carla-rpc-port={env.options.port}"
    env.close()
    assert proc.poll() is not None  # stopped
    monkeypatch.setenv("CARLA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="holds no server script"):
        carla_backend.launch_server(2000)


@pytest.mark.carla
@pytest.mark.skipif(not os.environ.get("CARLA_HOST"), reason="live test: set CARLA_HOST (and CARLA_PORT, CARLA_TOWN)")
def test_live_server_expert_episode():
    """Against a real server: one expert episode on the server's map; prints what only a server
    can tell (the deceleration full brake gives, the steering angle per unit steer)."""
    env = carla_backend.CarlaDrivingEnv("highway", "light")
    try:
        ep = run_episode(env, ExpertPolicy(env), seed=0, record_frames=False)
        print("live CARLA episode:", ep.goal.label, ep.outcome, ep.num_steps, "steps", ep.error)
        assert ep.outcome in ("route_complete", "timeout"), ep.error
    finally:
        env.close()
