"""ActionTokenizer: bin/residual error bounds, tied quantiles, kmeans, vocabulary ids, chunks, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmarks.quantization import (
    format_quantization_table,
    load_expert_actions,
    quantization_table,
)
from sim.cameras import default_rig
from sim.episode import Episode
from sim.interface import (
    ACTION_HIGH,
    ACTION_LOW,
    ACTOR_FIELDS,
    EGO_FIELDS,
    EVENT_FIELDS,
    MAX_ACTORS,
    REWARD_FIELDS,
    Goal,
)
from sim.storage import EpisodeWriter
from tokenizers_mm.action import ActionTokenizer, bench_action_tokenizer
from tokenizers_mm.vocab import VocabLayout


def driving_like(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Accel roughly normal, steer 90% exactly zero (lane keeping) + small turns."""
    rng = np.random.default_rng(seed)
    accel = np.clip(rng.normal(0.0, 1.5, n), -6, 4)
    steer = np.where(rng.random(n) < 0.9, 0.0, rng.normal(0.0, 0.1, n))
    return np.stack([accel, steer], axis=1)


DATA = driving_like()
TOKENIZERS = {s: ActionTokenizer.fit(DATA, 64, s) for s in ("uniform", "quantile", "kmeans")}

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
bounds = st.tuples(finite, st.floats(1e-2, 1e3)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=60, deadline=None, database=None)
@given(
    data=hnp.arrays(np.float64, st.tuples(st.integers(20, 200), st.just(2)), elements=finite),
    n_bins=st.sampled_from([2, 7, 32, 256]),
    scheme=st.sampled_from(["uniform", "quantile"]),
    u=hnp.arrays(np.float64, (50, 2), elements=st.floats(0.0, 1.0)),
)
def test_error_bounds_without_and_with_residual(data, n_bins, scheme, u):
    tok = ActionTokenizer.fit(data, n_bins, scheme)
    x = tok.low + u * (tok.high - tok.low)  # in-range values
    bins, res = tok.encode(x)
    assert bins.shape == x.shape and bins.dtype == np.int64 and res.dtype == np.float32
    assert bins.min() >= 0 and bins.max() < n_bins
    assert np.all(np.abs(res) <= 0.5)
    centre = tok.decode(bins)
    assert centre.dtype == np.float64
    width = tok.bin_widths[np.arange(2), bins]
    assert np.all(np.abs(x - centre) <= width / 2 + 1e-9)
    exact = tok.decode(bins, res)
    assert np.all(np.abs(x - exact) <= 1e-5 * (tok.high - tok.low))


@settings(max_examples=40, deadline=None, database=None)
@given(lo_hi=bounds, n_bins=st.integers(2, 300), v=st.floats(-2e3, 2e3))
def test_out_of_range_clips_into_edge_bins(lo_hi, n_bins, v):
    lo, hi = lo_hi
    tok = ActionTokenizer.from_bounds([lo], [hi], n_bins)
    bins, res = tok.encode(np.array([v]))
    if v < lo:
        assert bins[0] == 0 and res[0] == -0.5
    if v > hi:
        assert bins[0] == n_bins - 1 and res[0] == 0.5
    assert np.isclose(tok.decode(bins, res)[0], np.clip(v, lo, hi), rtol=1e-6, atol=1e-5 * (hi - lo))


def test_every_bin_reachable_no_off_by_one():
    tok = ActionTokenizer.from_bounds(ACTION_LOW, ACTION_HIGH, 16)
    centres = tok.bin_centres.T  # (16, 2): the centre of bin b in each dimension
    bins, res = tok.encode(centres)
    assert bins[:, 0].tolist() == list(range(16)) and np.allclose(res, 0.0, atol=1e-6)
    edge_bins, _ = tok.encode(np.stack([ACTION_LOW, ACTION_HIGH]))
    assert edge_bins.tolist() == [[0, 0], [15, 15]]


@pytest.mark.parametrize("zeros", [0.5, 0.9, 0.99, 1.0])
def test_quantile_edges_strictly_increasing_with_ties(zeros):
    rng = np.random.default_rng(1)
    n = 2000
    x = np.where(rng.random((n, 2)) < zeros, 0.0, rng.normal(0, 1, (n, 2)))
    x[:10, 1] = 3.0  # a second tie at the top
    tok = ActionTokenizer.fit(x, 256, "quantile")
    assert tok.edges.shape == (2, 257)
    assert np.all(np.diff(tok.edges, axis=1) > 0)
    assert np.allclose(tok.edges[:, 0], tok.low) and np.allclose(tok.edges[:, -1], tok.high)
    # the point mass decodes to ~0 without a residual (it has a narrow bin of its own)
    bins, _ = tok.encode(np.zeros((1, 2)))
    assert np.all(np.abs(tok.decode(bins)) < 1e-2 * (tok.high - tok.low))
    assert tok.edges.tolist() == ActionTokenizer.fit(x, 256, "quantile").edges.tolist()


def test_quantile_bins_balance_counts_better_than_uniform():
    counts = {s: np.bincount(TOKENIZERS[s].encode(DATA)[0][:, 0], minlength=64) for s in ("uniform", "quantile")}
    assert counts["quantile"].max() < counts["uniform"].max()


def test_kmeans_deterministic_shapes_and_round_trip():
    tok = TOKENIZERS["kmeans"]
    again = ActionTokenizer.fit(DATA, 64, "kmeans", seed=0)
    assert np.array_equal(tok.centroids, again.centroids)
    other = ActionTokenizer.fit(DATA, 64, "kmeans", seed=1)
    assert not np.array_equal(tok.centroids, other.centroids)
    x = DATA[:100].reshape(10, 10, 2)
    bins, res = tok.encode(x)
    assert bins.shape == (10, 10, 1) and res.shape == (10, 10, 2) and tok.tokens_per_action == 1
    assert np.allclose(tok.decode(bins, res), np.clip(x, tok.low, tok.high), atol=1e-5)
    assert tok.decode(bins).shape == (10, 10, 2)
    with pytest.raises(ValueError, match="kmeans"):
        tok.to_token_ids(bins, VocabLayout(action_bins=(64, 64)))
    with pytest.raises(ValueError, match="needs >= 64 actions"):
        ActionTokenizer.fit(DATA[:10], 64, "kmeans")


@pytest.mark.parametrize("n", [2, 64, 256])
def test_token_id_round_trip(n):
    layout = VocabLayout(action_bins=(n, n))
    tok = ActionTokenizer.fit(DATA, n, "quantile")
    bins, _ = tok.encode(DATA[:500])
    ids = tok.to_token_ids(bins, layout)
    acc, steer = layout.ranges["action_accel"], layout.ranges["action_steer"]
    assert np.all((ids[:, 0] >= acc[0]) & (ids[:, 0] < acc[1]))
    assert np.all((ids[:, 1] >= steer[0]) & (ids[:, 1] < steer[1]))
    assert np.array_equal(tok.from_token_ids(ids, layout), bins)


def test_token_id_errors():
    tok = TOKENIZERS["uniform"]
    layout = VocabLayout(action_bins=(64, 64))
    with pytest.raises(ValueError, match=r"n_bins=64.*action_bins=\(256, 256\)"):
        tok.to_token_ids(np.zeros((1, 2), dtype=np.int64), VocabLayout())
    steer_id = layout.ranges["action_steer"][0]
    for bad in (3, steer_id, layout.size, -1):  # a special, the other dim's range, past the end
        with pytest.raises(ValueError, match=str(bad)):
            tok.from_token_ids(np.array([[bad, steer_id]]), layout)
    with pytest.raises(ValueError, match="bin 64 outside"):
        tok.decode(np.array([[64, 0]]))


def test_chunk_shape_and_mask():
    a = np.arange(10, dtype=np.float32).reshape(5, 2)
    chunks, mask = ActionTokenizer.chunk(a, 3)
    assert chunks.shape == (5, 3, 2) and mask.shape == (5, 3) and mask.dtype == bool
    assert np.array_equal(chunks[0], a[:3]) and np.array_equal(chunks[4], np.repeat(a[4:], 3, 0))
    assert mask.sum(axis=1).tolist() == [3, 3, 3, 2, 1]
    assert np.array_equal(chunks[3, 2], a[4])  # repeated last action, masked out
    empty, empty_mask = ActionTokenizer.chunk(a[:0], 4)
    assert empty.shape == (0, 4, 2) and empty_mask.shape == (0, 4)
    with pytest.raises(ValueError, match="horizon"):
        ActionTokenizer.chunk(a, 0)


@pytest.mark.parametrize("scheme", ["uniform", "quantile", "kmeans"])
def test_save_load_round_trip(tmp_path, scheme):
    tok = TOKENIZERS[scheme]
    path = tmp_path / "action_tokenizer.json"
    tok.save(path)
    assert not list(tmp_path.glob(".*.tmp"))
    back = ActionTokenizer.load(path)
    assert back.scheme == scheme and back.n_bins == 64
    assert np.array_equal(back.low, tok.low) and np.array_equal(back.high, tok.high)
    b1, r1 = tok.encode(DATA[:300])
    b2, r2 = back.encode(DATA[:300])
    assert np.array_equal(b1, b2) and np.array_equal(r1, r2)


def test_load_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        ActionTokenizer.load(bad)
    d = TOKENIZERS["uniform"].to_dict()
    d["edges"][0][3] = d["edges"][0][2]  # no longer strictly increasing
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json.*strictly increasing"):
        ActionTokenizer.load(bad)
    bad.write_text(json.dumps({**d, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        ActionTokenizer.load(bad)
    with pytest.raises(ValueError, match="missing.json"):
        ActionTokenizer.load(tmp_path / "missing.json")


def test_input_validation():
    tok = TOKENIZERS["uniform"]
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        ActionTokenizer.fit(np.array([[0.0, 1.0], [np.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(\.\.\., 2\)"):
        tok.encode(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="residual"):
        tok.decode(np.zeros((4, 2), dtype=np.int64), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="scheme"):
        ActionTokenizer.fit(DATA, 8, "lloyd")


def test_constant_dimension_is_widened():
    x = np.stack([np.linspace(-1, 1, 100), np.zeros(100)], axis=1)
    tok = ActionTokenizer.fit(x, 32, "quantile")
    assert tok.high[1] > tok.low[1]
    bins, res = tok.encode(x)
    assert np.allclose(tok.decode(bins, res), np.clip(x, tok.low, tok.high), atol=1e-6)
    assert np.all(tok.decode(bins)[:, 1] == 0.0)  # the constant sits at a bin centre


def test_bench_runs():
    out = bench_action_tokenizer(n=2000)
    assert out["encode_tokens_per_s"] > 0 and out["decode_tokens_per_s"] > 0


# ----------------------------------------------------------------- quantization report
def _episode(policy: str, actions: np.ndarray) -> Episode:
    t = len(actions)
    return Episode(
        scenario="highway", density="medium", seed=0, outcome="timeout", route_length=100.0,
        goal=Goal(kind="lane_speed", label="keep_lane", command="keep", target_lane=-1, target_speed=20.0),
        policy=policy, cameras=default_rig()[:1], ego=np.zeros((t + 1, len(EGO_FIELDS))),
        actors=np.zeros((t + 1, MAX_ACTORS, len(ACTOR_FIELDS))), actions=actions.astype(np.float32),
        expert_actions=actions.astype(np.float32), events=np.zeros((t, len(EVENT_FIELDS)), np.float32),
        reward_terms=np.zeros((t, len(REWARD_FIELDS)), np.float32),
    )


def test_load_expert_actions_and_quantization_table(tmp_path):
    eps = [driving_like(120, seed=s) for s in range(3)]
    with EpisodeWriter(tmp_path / "data") as w:
        for a in eps:
            w.append(_episode("expert", a))
        w.append(_episode("random", driving_like(50, seed=9)))
    loaded = load_expert_actions(tmp_path / "data")
    assert len(loaded) == 3 and np.allclose(loaded[0], eps[0].astype(np.float32))
    rows = quantization_table(loaded, dt=0.1, bounds=((0.01, 0.99), (0.0, 1.0)))
    assert len(rows) == 2 * 3 * 2 * 2
    exact = [r for r in rows if r["bounds"] == "(0, 1)" and r["decode"] == "bins+residual"]
    assert all(r["mae_accel"] < 1e-6 and abs(r["jerk_p95_added"]) < 1e-5 for r in exact)
    coarse = {(r["scheme"], r["n_bins"]): r["mae_accel"] for r in rows
              if r["bounds"] == "(0, 1)" and r["decode"] == "bins"}
    assert coarse[("uniform", 32)] > coarse[("uniform", 256)] > 0
    text = format_quantization_table(rows)
    assert "jerk_p95_added" in text and len(text.splitlines()) == 2 + 1 + len(rows)
    with pytest.raises(ValueError, match="no expert episodes"):
        w2 = EpisodeWriter(tmp_path / "rand")
        w2.append(_episode("random", eps[0]))
        w2.close()
        load_expert_actions(tmp_path / "rand")


def test_mulaw_bins_are_fine_near_zero_cover_the_limits_and_round_trip(tmp_path):
    from sim.interface import ACTION_HIGH, ACTION_LOW

    tok = ActionTokenizer.mulaw(ACTION_LOW, ACTION_HIGH, 64)
    widths = np.diff(tok.edges, axis=1)
    assert np.all(widths > 0)
    np.testing.assert_allclose(tok.edges[:, 0], ACTION_LOW)
    np.testing.assert_allclose(tok.edges[:, -1], ACTION_HIGH)
    uniform = (ACTION_HIGH - ACTION_LOW) / 64
    assert np.all(widths[:, 32] < uniform / 5)  # the bins next to 0 are much finer than uniform
    x = np.random.default_rng(0).uniform(ACTION_LOW, ACTION_HIGH, (500, 2))
    bins, res = tok.encode(x)
    np.testing.assert_allclose(tok.decode(bins, res), x, atol=1e-6)
    tok.save(tmp_path / "t.json")
    back = ActionTokenizer.load(tmp_path / "t.json")
    assert back.scheme == "mulaw" and np.array_equal(back.edges, tok.edges)
    with pytest.raises(ValueError, match="mulaw"):
        ActionTokenizer.mulaw(np.array([0.0, -1.0]), np.array([1.0, 1.0]))
