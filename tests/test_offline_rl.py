"""Offline RL (offline_rl/): loss pieces, updates of IQL / CQL / BC with both actors, D4RL
datasets (round trip, one-line errors), resume through the shared loop, the CLI end to end."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_storage import make_episode

from offline_rl.actors import EpisodeInputs, TransformerActor
from offline_rl.bc import BC, MLPBCConfig
from offline_rl.cql import CQL, CQLConfig, logsumexp_penalty, tabular_cql_penalty
from offline_rl.datasets import (
    D4RLData,
    episodes_to_d4rl,
    load_d4rl,
    save_d4rl,
    validate,
)
from offline_rl.iql import IQL, IQLConfig, awr_weights, expectile_loss
from offline_rl.networks import (EnsembleMLP, LeanAdam, StateActionCritic, TanhGaussianActor, padded_head,
                                 resolve_compile, resolve_precision)
from offline_rl.pendulum import make_pendulum_dataset
from offline_rl.policy import (
    MLPPolicy,
    is_mlp_checkpoint,
    load_mlp_policy,
    save_mlp_policy,
)
from offline_rl.recipes import REPLAY_MIX, MediumPolicy, recipe_policy
from offline_rl.replay import Normalizer, TransitionData
from sim.storage import EpisodeWriter
from app import cli
from vla.train_loop import TrainConfig, train

TINY_IQL = IQLConfig(hidden=16, n_hidden=2)
TINY_CQL = CQLConfig(hidden=16, n_hidden=2, n_actions=3)


def random_data(n: int = 64, s: int = 5, a: int = 2, seed: int = 0) -> D4RLData:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, s)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[n // 2] = True
    terminals = np.zeros(n, bool)
    terminals[-1] = True
    return validate({"observations": obs[:-1], "next_observations": obs[1:],
                     "actions": rng.uniform(-1, 1, (n, a)).astype(np.float32),
                     "rewards": rng.normal(size=n).astype(np.float32),
                     "terminals": terminals, "timeouts": timeouts})


def source(data: D4RLData, **kw) -> TransitionData:
    return TransitionData(data, Normalizer.fit(data, action_bounds=(-1.0, 1.0)), **kw)


# ----------------------------------------------------------------------------- loss pieces
def test_expectile_loss_at_half_is_half_the_mse_and_asymmetric_above():
    diff = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(expectile_loss(diff, 0.5), 0.5 * diff.pow(2).mean())
    pos, neg = torch.tensor([2.0]), torch.tensor([-2.0])
    assert math.isclose(expectile_loss(pos, 0.7).item(), 0.7 * 4, rel_tol=1e-6)
    assert math.isclose(expectile_loss(neg, 0.7).item(), 0.3 * 4, rel_tol=1e-6)
    assert awr_weights(torch.tensor([0.0, 100.0]), 3.0, 100.0).tolist() == pytest.approx([1.0, 100.0])


def test_tabular_cql_penalty_is_zero_when_the_policy_puts_all_mass_on_data_actions():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(6, 4, generator=g) * 3
    data_actions = torch.tensor([0, 3, 1, 2, 2, 0])
    on_data = torch.full((6, 4), -math.inf)
    on_data[torch.arange(6), data_actions] = 0.0  # log rho = log one-hot(data action)
    assert torch.allclose(tabular_cql_penalty(q, data_actions, on_data), torch.zeros(6), atol=1e-6)
    # CQL(H): logsumexp over all actions >= Q(s, a_data), equality only in the limit
    h = tabular_cql_penalty(q, data_actions)
    assert (h > 0).all()
    assert torch.allclose(h, torch.logsumexp(q, 1) - q[torch.arange(6), data_actions])
    # a uniform policy prior: log mean_a exp Q - Q_data, i.e. CQL(H) - log |A|
    uniform = torch.full((6, 4), -math.log(4))
    assert torch.allclose(tabular_cql_penalty(q, data_actions, uniform), h - math.log(4), atol=1e-5)
    # the continuous form with importance weights is the same function
    assert torch.allclose(logsumexp_penalty(q, -torch.zeros(4), q[:, 0]), torch.logsumexp(q, 1) - q[:, 0])


def test_lean_adam_is_torch_fused_adam_step_for_step():
    """The short step path gives bit-identical parameters to torch's fused Adam, also for a
    parameter whose first gradient comes late, per-group lr / weight decay, a schedule, and
    across a state_dict round trip (the lists are rebuilt on load)."""
    torch.manual_seed(0)
    def make():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), \
            torch.nn.Parameter(torch.zeros(3))
    (net_a, extra_a), (net_b, extra_b) = make(), make()
    groups = lambda net, extra: [{"params": list(net.parameters()), "lr": 1e-2},
                                 {"params": [extra], "lr": 3e-3, "weight_decay": 0.1}]
    ref = torch.optim.Adam(groups(net_a, extra_a), fused=True)
    lean = LeanAdam(groups(net_b, extra_b))
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)) for o in (ref, lean)]
    x = torch.randn(16, 4)
    for i in range(12):
        if i == 8:  # loading new state tensors must drop the cached lists
            lean.load_state_dict(copy.deepcopy(lean.state_dict()))
        for net, extra, opt in ((net_a, extra_a, ref), (net_b, extra_b, lean)):
            opt.zero_grad(set_to_none=True)
            loss = net(x).pow(2).mean() + (((extra - 1.0) ** 2).sum() if i >= 4 else 0.0)
            loss.backward()
            opt.step()
        if i < 8:
            for s in sched:
                s.step()
    assert extra_b.abs().sum() > 0
    for a, b in zip([*net_a.parameters(), extra_a], [*net_b.parameters(), extra_b]):
        assert torch.equal(a, b)
    for st_a, st_b in zip(ref.state_dict()["state"].values(), lean.state_dict()["state"].values()):
        assert all(torch.equal(st_a[k], st_b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_padded_skinny_head_equals_the_plain_head_values_and_gradients():
    """The zero-padded head (CQL's many-row Q heads) gives the plain head's outputs and
    gradients: the padding columns are sliced away and receive nothing."""
    torch.manual_seed(0)
    mlp = EnsembleMLP(5, 1, hidden=16, n_hidden=2, ensemble_size=2)
    h = torch.randn(2, 40, 16, requires_grad=True)
    outs, grads = [], []
    for fn in (lambda x: mlp.out(x), lambda x: padded_head(mlp.out, x, False, torch.float32)):
        mlp.zero_grad()
        h.grad = None
        y = fn(h)
        (y.sin().sum()).backward()
        outs.append(y.detach())
        grads.append([h.grad.clone(), mlp.out.weight.grad.clone(), mlp.out.bias.grad.clone()])
    assert outs[0].shape == outs[1].shape == (2, 40, 1)
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_critic_ensemble_shared_state_matches_repeated_inputs():
    critic = StateActionCritic(5, 2, hidden=8, n_hidden=2, ensemble_size=2)
    s, a = torch.randn(3, 5), torch.rand(3, 4, 2) * 2 - 1
    fused = critic(s, a)  # (E, N, K)
    flat = critic(s.repeat_interleave(4, 0), a.reshape(12, 2)).view(2, 3, 4)
    assert fused.shape == (2, 3, 4) and torch.allclose(fused, flat, atol=1e-6)
    actor = TanhGaussianActor(5, 2, hidden=8, n_hidden=2)
    acts, logp = actor.sample(s, 5)
    assert acts.shape == (3, 5, 2) and logp.shape == (3, 5) and (acts.abs() < 1).all()
    assert torch.allclose(actor.log_prob(s.repeat_interleave(5, 0), acts.reshape(15, 2)).view(3, 5), logp, atol=1e-3)


# ----------------------------------------------------------------------------- updates
def _changed_and_finite(method, batch) -> dict:
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in method.modules().items()}
    logs = method.update(batch)
    assert all(math.isfinite(float(v)) for v in logs.values()), logs
    for key, module in method.modules().items():
        if key == "target_critic":
            continue
        assert any(not torch.equal(p0, p1) for p0, p1 in zip(before[key], module.parameters())), key
    return logs


@pytest.mark.parametrize("make", [lambda s, a: IQL(s, a, TINY_IQL), lambda s, a: CQL(s, a, TINY_CQL),
                                  lambda s, a: CQL(s, a, CQLConfig(hidden=16, n_hidden=2, n_actions=3, lagrange=True)),
                                  lambda s, a: IQL(s, a, IQLConfig(hidden=16, precision="bfloat16")),
                                  lambda s, a: BC(s, a, MLPBCConfig(hidden=16))],
                         ids=["iql", "cql", "cql-lagrange", "iql-bf16", "bc"])
def test_mlp_update_changes_parameters_and_keeps_losses_finite(make):
    torch.manual_seed(0)
    data = source(random_data())
    method = make(5, 2)
    for _ in range(3):
        logs = _changed_and_finite(method, data.batch(np.arange(16)))
    assert set(logs) >= {"actor_loss"}


@pytest.mark.parametrize("name", ["iql", "cql"])
def test_compiled_losses_equal_eager(name):
    """torch.compile changes the kernels, not the math: same losses and gradients (float32)."""
    data = source(random_data())
    batch = data.batch(np.arange(16))
    made = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        if name == "iql":
            made.append(IQL(5, 2, IQLConfig(hidden=16, n_hidden=2, compile=compile_)))
        else:  # no random proposals in the compared terms: the sampled noise differs when compiled
            made.append(CQL(5, 2, CQLConfig(hidden=16, n_hidden=2, n_actions=3, cql_alpha=0.0, compile=compile_)))
    eager, fast = made
    if name == "cql":
        for m in made:
            m.actor.net.sample = lambda obs, k, dtype=torch.float32, net=m.actor.net: (
                torch.tanh(net.dist(obs, dtype)[0])[:, None].expand(-1, k, -1),
                torch.zeros(obs.shape[0], k))
    losses = []
    for m in made:
        total, logs = m._losses(batch, False) if name == "cql" else m._losses(batch)
        total.backward()
        losses.append((total.detach(), [p.grad.clone() for p in m.critic.parameters()]))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-5, atol=1e-5)
    for g0, g1 in zip(losses[0][1], losses[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-5)
    _changed_and_finite(fast, batch)


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    """A tiny episode directory, its D4RL export and a tiny blind transformer policy."""
    from vla.config import PolicyConfig
    from vla.policy import VLAPolicy, default_action_tokenizer

    root = tmp_path_factory.mktemp("drive")
    with EpisodeWriter(root / "eps") as writer:
        for i, outcome in enumerate(("timeout", "collision", "route_complete")):
            ep = make_episode(t=6 + i, seed=i, outcome=outcome, frames=False)
            writer.append(type(ep)(**{**ep.__dict__, "actions": np.clip(ep.actions, -0.7, 0.7)}))
    data = episodes_to_d4rl(root / "eps", root / "d.h5")
    config = PolicyConfig(d_model=16, n_layers=1, n_heads=2, n_bins=8, horizon=2, cameras=False, command="none")
    torch.manual_seed(0)
    policy = VLAPolicy(config, default_action_tokenizer(config.n_bins))
    return root, data, policy


@pytest.mark.parametrize("method_name", ["iql", "cql"])
def test_transformer_actor_update(driving, method_name):
    root, data, policy = driving
    norm = Normalizer.fit(data, action_bounds=(np.array([-6.0, -math.pi / 4]), np.array([4.0, math.pi / 4])))
    inputs = EpisodeInputs(root / "eps", data, policy)
    batches = TransitionData(data, norm, inputs, next_inputs=method_name == "cql")
    actor = TransformerActor(policy, norm)
    s, a = data.obs_dim, data.action_dim
    method = IQL(s, a, TINY_IQL, actor) if method_name == "iql" else CQL(s, a, TINY_CQL, actor)
    batch = batches.batch(np.arange(len(batches))[::4])
    assert batch.inputs.action_bins.shape == (len(batch.rewards), 2, 2)
    if method_name == "cql":
        assert batch.next_inputs is not None
        acts, logp = actor.sample(batch.inputs, 3)
        assert acts.shape == (batch.batch_size, 3, 2) and torch.isfinite(logp).all()
    _changed_and_finite(method, batch)


# ----------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_dataset_round_trip(tmp_path, suffix):
    data = random_data()
    data = D4RLData(**{**data.__dict__, "extras": {"infos/step": np.arange(len(data), dtype=np.int32)},
                       "attrs": {"env": "toy"}})
    path = save_d4rl(tmp_path / f"d{suffix}", data)
    back = load_d4rl(path)
    for key, arr in data.arrays().items():
        assert np.array_equal(back.arrays()[key], arr), key
    assert back.attrs["env"] == "toy" and back.terminals.dtype == bool
    assert not list(tmp_path.glob(".*"))
    assert len(back.episode_returns()) == 2


def test_episode_directory_converts_with_the_documented_reward(driving, tmp_path):
    root, data, _ = driving
    assert len(data) == 6 + 7 + 8 and data.obs_dim == 87 and "reward_weights" in data.attrs
    assert data.terminals.sum() == 1 and data.timeouts.sum() == 2
    npz = episodes_to_d4rl(root / "eps", tmp_path / "d.npz")
    assert np.array_equal(npz.rewards, data.rewards) and "infos/episode_index" in npz.extras


def _write_h5(path: Path, arrays: dict) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("rewards"), "missing key 'rewards'"),
    (lambda d: d.update(actions=d["actions"][:-1]), "key 'actions' has 63 rows but 'rewards' has 64"),
    (lambda d: d["rewards"].__setitem__(5, np.nan), "key 'rewards' has 1 NaN/inf values (first in row 5)"),
    (lambda d: d["observations"].__setitem__((2, 1), np.inf), "key 'observations' has 1 NaN/inf"),
    (lambda d: d.update(observations=d["observations"][:, 0]), "key 'observations' has shape (64,)"),
    (lambda d: d.update(terminals=np.full(64, 0.5)), "key 'terminals' has dtype float64, expected bool"),
    (lambda d: d.update(rewards=np.array(["x"] * 64, dtype="S1")), "key 'rewards' has dtype |S1"),
])
def test_clear_one_line_errors(tmp_path, change, message):
    arrays = {k: np.array(v) for k, v in random_data().arrays().items()}
    change(arrays)
    path = _write_h5(tmp_path / "bad.h5", arrays)
    with pytest.raises(ValueError) as err:
        load_d4rl(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_d4rl(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("make", [lambda: IQL(5, 2, TINY_IQL), lambda: CQL(5, 2, TINY_CQL)], ids=["iql", "cql"])
def test_resume_through_the_shared_loop(tmp_path, make):
    data = source(random_data())
    config = TrainConfig(steps=10, batch_size=16, checkpoint_every=3, progress=False, seed=1, threads=1)
    torch.manual_seed(0)
    whole = make()
    assert train(whole, data, config, tmp_path / "whole").steps_done == 10
    torch.manual_seed(0)
    train(make(), data, TrainConfig(**{**config.__dict__, "steps": 6}), tmp_path / "cut")
    torch.manual_seed(123)  # a resumed run takes everything from the checkpoint
    resumed = make()
    result = train(resumed, data, config, tmp_path / "cut")
    assert result.resumed_from == 6 and result.steps_done == 10
    for (name, m1), m2 in zip(whole.modules().items(), resumed.modules().values()):
        for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
            assert torch.equal(p1, p2), name


# ----------------------------------------------------------------------------- policies, recipes, CLI
def test_mlp_checkpoint_loads_as_a_driving_policy(tmp_path):
    from vla.policies_registry import check_policy, load_checkpoint

    data = random_data(s=87)
    norm = Normalizer.fit(data, action_bounds=(np.array([-6.0, -0.78]), np.array([4.0, 0.78])))
    net = TanhGaussianActor(87, 2, hidden=8, n_hidden=1)
    save_mlp_policy(tmp_path / "p", net, norm, "cql", hidden=8, n_hidden=1)
    assert is_mlp_checkpoint(tmp_path / "p")
    check_policy(str(tmp_path / "p"))
    policy = load_checkpoint(str(tmp_path / "p"))
    assert isinstance(policy, MLPPolicy) and policy.rig == ()
    policy.reset()
    action = policy.select_action({"state": data.observations[0]})
    assert action.shape == (2,) and -6.0 <= action[0] <= 4.0
    assert np.allclose(action, load_mlp_policy(tmp_path / "p").act(data.observations[:1])[0])


def test_mlp_checkpoint_loads_in_rollout_workers(tmp_path):
    """The kind's loader reaches spawned workers, which never imported offline_rl themselves."""
    from vla.parallel import RolloutPool, RolloutSpec

    norm = Normalizer.fit(random_data(s=87), action_bounds=(np.array([-6.0, -0.78]), np.array([4.0, 0.78])))
    save_mlp_policy(tmp_path / "p", TanhGaussianActor(87, 2, hidden=8, n_hidden=1), norm, "cql", hidden=8,
                    n_hidden=1)
    spec = RolloutSpec("highway", "medium", str(tmp_path / "p"), "canonical", cameras=False,
                       query_expert=False, record_frames=False)
    with RolloutPool(2) as pool:
        episodes = pool.run(spec, [0, 1])
    assert [ep.seed for ep in episodes] == [0, 1] and all(ep.num_steps > 0 for ep in episodes)


def test_unregistered_checkpoint_kind_is_named(tmp_path):
    from vla.errors import VLAError
    from vla.policies_registry import load_checkpoint

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.json").write_text('{"kind": "someone_elses_policy"}')
    (tmp_path / "p" / "model.safetensors").write_bytes(b"")
    with pytest.raises(VLAError, match="someone_elses_policy"):
        load_checkpoint(str(tmp_path / "p"))


def test_recipes_mix_and_medium_delay():
    assert [recipe_policy("medium-replay", None, i, i).name.split("/")[1] for i in range(10)] == list(REPLAY_MIX)

    class Clock:
        t = 0.0

        def expert_action(self):
            self.t += 1.0
            return np.array([self.t, 0.0], np.float32)

    medium = MediumPolicy(Clock(), seed=0, delay=2, noise=np.zeros(2, np.float32))
    medium.reset()
    assert [float(medium.select_action({})[0]) for _ in range(5)] == [1.0, 1.0, 1.0, 2.0, 3.0]


def test_cli_train_iql_end_to_end_and_resume(tmp_path, capsys):
    data = make_pendulum_dataset(400, seed=0)
    path = save_d4rl(tmp_path / "pendulum.h5", data)
    argv = ["train", "iql", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "4",
            "--batch-size", "32", "--hidden", "16", "--env", "Pendulum-v1", "--eval-episodes", "1",
            "--no-progress", "--compile", "off"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert f"matmul inputs {resolve_precision('auto')} (--precision auto), eager (--compile off)" in out
    assert summary["steps"] == 4 and "normalized_score" in summary["eval"]
    assert is_mlp_checkpoint(tmp_path / "run" / "policy")
    assert (tmp_path / "run" / "train" / "log.csv").exists()
    assert cli.main([*argv[:7], "6", *argv[8:], "--bc"]) == 2  # a different method: refused
    assert "config differs" in capsys.readouterr().err
    assert cli.main(argv) == 0 and "nothing to do" in capsys.readouterr().out
    assert cli.main(argv[:-2]) == 0  # --compile auto resumes as the run was made (eager), not refused
    assert "eager (--compile auto)" in capsys.readouterr().out
    assert cli.main([*argv[:-2], "--compile", "on"]) == 2  # an explicit change is refused by name
    assert "iql.compile" in capsys.readouterr().err
    assert cli.main(["train", "cql", "--data", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_collect_recipe_writes_a_d4rl_file(tmp_path, capsys):
    out, d4rl = tmp_path / "ds", tmp_path / "ds.npz"
    argv = ["collect", "--recipe", "random", "--episodes", "2", "--cameras", "none", "--density", "light",
            "--out", str(out), "--d4rl", str(d4rl)]
    assert cli.main(argv) == 0
    data = load_d4rl(d4rl)
    assert len(data) >= 2 and data.obs_dim == 87 and "wrote" in capsys.readouterr().out
    assert cli.main([*argv[:-1], str(tmp_path / "ds.csv")]) == 2
    assert "--d4rl" in capsys.readouterr().err


def test_bench_offline_rl_prints_json_last(capsys):
    argv = ["bench", "offline-rl", "--iql-steps", "2", "--cql-steps", "1", "--warmup", "1", "--repeats", "1",
            "--transitions", "300", "--batch-size", "32", "--no-variants", "--precision", "bfloat16",
            "--compile", "off"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["iql_steps_per_s"] > 0 and result["cql_steps_per_s"] > 0 and result["threads"] == 1
    assert result["iql_settings"] == result["cql_settings"] == "bfloat16_eager"
    assert result["cql_steps_per_s"] == result["cql_bfloat16_eager_steps_per_s"]


def test_auto_speed_settings_resolve_per_machine_and_refuse_unknown_values(monkeypatch, tmp_path):
    from offline_rl import networks

    assert resolve_precision("float32") == "float32" and resolve_compile("off") is False
    for bf16 in (True, False):
        monkeypatch.setattr(networks, "native_bf16_matmul", lambda: bf16)
        assert resolve_precision("auto") == ("bfloat16" if bf16 else "float32")
    for found in (True, False):
        monkeypatch.setattr(networks, "cpp_compiler_available", lambda: found)
        assert resolve_compile("auto") is found and resolve_compile("on") is True
    from argparse import Namespace

    from app.commands.offline_rl import _speed_settings

    import torch._dynamo

    monkeypatch.setattr(networks, "cpp_compiler_available", lambda: True)
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # auto sets it: undone after
    def speed(**kw):
        return _speed_settings(Namespace(out=str(tmp_path / "none"), penalty_precision="auto", **kw), "cql")

    assert speed(precision="float32", compile="auto", actor="mlp") == ("float32", "float32", True)
    assert speed(precision="float32", compile="auto", actor="transformer")[2] is False
    assert speed(precision="float32", compile="on", actor="transformer")[2] is True
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="compile must be"):
        resolve_compile("yes")


def test_driving_comparison_summary_and_bad_options(tmp_path, capsys):
    from benchmarks import offline_rl_driving as study

    rows = [{k: v for k in study.METRICS} for v in (0.2, 0.4)]
    summary = study.summarize({"iql": rows})
    assert summary["iql"]["seeds"] == 2
    assert summary["iql"]["driving_score"]["mean"] == pytest.approx(0.3)
    assert summary["iql"]["driving_score"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    args = study.build_parser().parse_args(["--out", str(tmp_path), "--seeds", "0", "1"])
    assert "| iql (x2) | 0.300 ± 0.141 |" in study.format_summary(summary, args)
    assert study.main(["--out", str(tmp_path / "run"), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_offline_rl_bench_skips_emulated_bf16_unless_asked():
    """On a CPU without bf16 instructions the bench leaves out its bf16 variants (emulated, they
    made it run for over 20 minutes), and says so; --emulated-bf16 or an explicit bfloat16
    headline keeps them."""
    import argparse

    from benchmarks.offline_rl_bench import bench_settings, configure

    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args([])
    runs, skipped = bench_settings(args, "float32", False, native_bf16=False)
    assert skipped and not any("bfloat16" in k or "bf16" in k for k in runs)
    assert "iql_float32_eager_steps_per_s" in runs and "cql_float32_compiled_steps_per_s" in runs
    runs, skipped = bench_settings(args, "bfloat16", True, native_bf16=True)
    assert not skipped and "cql_bf16_penalty_steps_per_s" in runs and "iql_bfloat16_compiled_steps_per_s" in runs
    runs, skipped = bench_settings(p.parse_args(["--emulated-bf16"]), "float32", False, native_bf16=False)
    assert not skipped and "iql_bfloat16_eager_steps_per_s" in runs
    runs, skipped = bench_settings(p.parse_args(["--no-variants"]), "float32", False, native_bf16=False)
    assert list(runs) == ["iql_float32_eager_steps_per_s", "cql_float32_eager_steps_per_s"]
