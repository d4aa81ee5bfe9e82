"""Driving actions <-> discrete bins + a residual inside the bin (BeT / VQ-BeT style).

Bin / vocabulary contract
-------------------------
* Per-dimension schemes ("uniform", "quantile", "mulaw" = companded, see ``mulaw``): dimension d has ``n_bins`` bins given by
  ``n_bins + 1`` strictly increasing edges ``e_0 < e_1 < ... < e_n``, ``e_0 = low[d]``,
  ``e_n = high[d]``. Bin ``b`` is the half-open interval ``[e_b, e_{b+1})``, except the last
  bin which is closed (it holds ``high``). Bin indices are ``0 .. n_bins - 1``, exactly
  ``n_bins`` of them, each with a centre ``c_b = (e_b + e_{b+1}) / 2`` and width
  ``w_b = e_{b+1} - e_b``.
  The off-by-one avoided: OpenVLA builds ``n_bins`` *edges* with ``np.linspace`` and
  ``np.digitize``s into them, which yields indices ``1 .. n_bins`` over only ``n_bins - 1``
  intervals: decode must subtract one and clip to ``n_bins - 2``, and the top index (x == max
  exactly) shares the last centre, so 256 token ids carry 255 bins. Here
  ``n_bins`` means bins (``n_bins + 1`` edges), indices come from
  ``searchsorted(edges, x, "right") - 1`` clipped to ``[0, n_bins - 1]``, and every bin of the
  vocabulary range is reachable.
* Residual: ``r = (x - c_b) / w_b`` in ``[-0.5, 0.5]``: the offset of the value from the bin
  centre in units of that bin's width. ``decode(b) = c_b`` (error <= ``w_b / 2`` for in-range
  ``x``); ``decode(b, r) = c_b + clip(r, -0.5, 0.5) * w_b`` recovers ``x`` to the float32
  precision of the residual (~3e-8 of a bin width); decode returns float64. Values outside
  ``[low, high]`` fall into the edge bins and their residual saturates at +-0.5, so
  ``decode(*encode(x)) == clip(x, low, high)``: clipping at the q01/q99 bounds is the only
  loss with a residual.
* Vocabulary: bin ``b`` of dimension ``accel`` / ``steer`` is global token id
  ``layout.ids("action_accel" / "action_steer", b)`` (``tokenizers_mm.vocab``); the layout's
  ``action_bins`` must equal ``n_bins`` for every dimension.
* "kmeans" scheme: ``n_bins`` centroids over whole action vectors (a small deterministic
  k-means++ / Lloyd in numpy on bound-normalized actions). Tokens are then ONE per vector:
  ``encode`` returns bins of shape ``(..., 1)`` (per-dim schemes: ``(..., D)``) and residual
  ``(..., D) = (clip(x, low, high) - centroid) / (high - low)`` per dimension, in ``[-1, 1]``.
  The shared vocabulary has no range for vector tokens yet, so ``to_token_ids`` rejects kmeans.

Bounds are robust: ``low, high = quantile(x, q_low), quantile(x, q_high)`` per dimension
(default 1% / 99%), fitted from data and saved with the tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sim.interface import ACTION_FIELDS
from tokenizers_mm.vocab import ACTION_DIMS, VocabLayout

SCHEMES = ("uniform", "quantile", "mulaw", "kmeans")
FORMAT = "action_tokenizer"
VERSION = 1
MIN_WIDTH = 1e-3
"""Bounds narrower than this (a constant dimension) are widened symmetrically to it."""


def _check_actions(x: np.ndarray, dim: int, what: str = "actions") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"{what} have shape {x.shape}, expected (..., {dim})")
    if not np.all(np.isfinite(x)):
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{what} contain NaN/inf ({int((~np.isfinite(x)).sum())} values, first at {first})")
    return x


def _spread_edges(edges: np.ndarray, n_bins: int) -> np.ndarray:
    """Strictly increasing ``n_bins + 1`` edges from sorted, possibly tied quantile edges.

    A value ``v`` that several quantiles share (a point mass, e.g. 90% of steering exactly 0)
    becomes a narrow bin ``[v - delta, v + delta]`` (clipped to ``[low, high]``, ``delta`` =
    1% of the gap to the nearest other distinct edge), so the mass decodes to ~``v`` without a
    residual. The bins freed by the dedup are given back by repeatedly halving the widest bin
    (the first one on equal widths). Deterministic; keeps ``e_0 = low`` and ``e_n = high``.
    """
    values, counts = np.unique(edges, return_counts=True)
    lo, hi = values[0], values[-1]
    out = [lo, hi]
    for i, (v, c) in enumerate(zip(values, counts)):
        gaps = [v - values[i - 1]] if i > 0 else []
        gaps += [values[i + 1] - v] if i + 1 < len(values) else []
        delta = 0.01 * min(gaps) if gaps else 0.0
        out += [max(lo, v - delta), min(hi, v + delta)] if c > 1 else [v]
    out = np.unique(np.asarray(out, dtype=np.float64))  # <= n_bins + 1: a tie of c edges gives 2
    while len(out) < n_bins + 1:
        i = int(np.argmax(np.diff(out)))
        out = np.insert(out, i + 1, 0.5 * (out[i] + out[i + 1]))
    return out


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances without an (N, K, D) temporary."""
    return np.maximum(np.sum(a**2, 1)[:, None] - 2.0 * a @ b.T + np.sum(b**2, 1)[None], 0.0)


def _kmeans(z: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Deterministic k-means++ init + Lloyd iterations on (N, D) data; returns (k, D).

    An empty cluster is re-seeded with the point farthest from its current centroid.
    """
    rng = np.random.default_rng(seed)
    n = len(z)
    cent = [z[rng.integers(n)]]
    d2 = np.sum((z - cent[0]) ** 2, axis=1)
    for _ in range(1, k):
        total = d2.sum()
        idx = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        cent.append(z[idx])
        d2 = np.minimum(d2, np.sum((z - z[idx]) ** 2, axis=1))
    c = np.stack(cent)
    for _ in range(iters):
        dist = _sq_dist(z, c)  # (N, k)
        assign = np.argmin(dist, axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, weights=z[:, j], minlength=k) for j in range(z.shape[1])], 1)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        own = dist[np.arange(n), assign].copy()
        for j in np.flatnonzero(counts == 0):  # re-seed empty clusters, farthest point first
            far = int(np.argmax(own))
            new[j], own[far] = z[far], -1.0
        if np.allclose(new, c, atol=1e-10, rtol=0.0):
            break
        c = new
    return c


class ActionTokenizer:
    """Bins + residual codec for (..., D) actions; see the module docstring for the contract."""

    def __init__(self, scheme: str, n_bins: int, low: np.ndarray, high: np.ndarray,
                 edges: np.ndarray | None = None, centroids: np.ndarray | None = None,
                 q_low: float = 0.01, q_high: float = 0.99) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
        if int(n_bins) < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.scheme, self.n_bins = scheme, int(n_bins)
        self.q_low, self.q_high = float(q_low), float(q_high)
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        d = len(self.low)
        if self.high.shape != (d,) or not np.all(self.high > self.low):
            raise ValueError(f"bounds need high > low per dimension, got low={self.low}, high={self.high}")
        if scheme == "kmeans":
            c = np.asarray(centroids, dtype=np.float64) if centroids is not None else None
            if c is None or c.shape != (self.n_bins, d) or not np.all(np.isfinite(c)):
                raise ValueError(f"kmeans needs finite centroids of shape ({self.n_bins}, {d})")
            self.centroids, self.edges = c, None
        else:
            e = np.asarray(edges, dtype=np.float64) if edges is not None else None
            if e is None or e.shape != (d, self.n_bins + 1):
                raise ValueError(f"{scheme} needs edges of shape ({d}, {self.n_bins + 1})")
            if not np.all(np.diff(e, axis=1) > 0):
                raise ValueError("bin edges must be strictly increasing in every dimension")
            if not (np.allclose(e[:, 0], self.low) and np.allclose(e[:, -1], self.high)):
                raise ValueError("first / last bin edges must equal the low / high bounds")
            self.edges, self.centroids = e, None

    # ----------------------------------------------------------------------------- building
    @classmethod
    def fit(cls, actions: np.ndarray, n_bins: int = 256, scheme: str = "uniform",
            q_low: float = 0.01, q_high: float = 0.99, seed: int = 0) -> ActionTokenizer:
        """Fit bounds (and quantile edges / k-means centroids) from (N, D) actions."""
        x = np.asarray(actions)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"fit needs actions of shape (N, D) with N > 0, got {x.shape}")
        x = _check_actions(x, x.shape[1])
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
        if not 0.0 <= q_low < q_high <= 1.0:
            raise ValueError(f"need 0 <= q_low < q_high <= 1, got {q_low}, {q_high}")
        low, high = np.quantile(x, q_low, axis=0), np.quantile(x, q_high, axis=0)
        mid, half = 0.5 * (low + high), np.maximum(0.5 * (high - low), 0.5 * MIN_WIDTH)
        low, high = mid - half, mid + half
        kw = {"q_low": q_low, "q_high": q_high}
        if scheme == "uniform":
            return cls.from_bounds(low, high, n_bins, q_low=q_low, q_high=q_high)
        clipped = np.clip(x, low, high)
        if scheme == "quantile":
            levels = np.linspace(0.0, 1.0, n_bins + 1)
            raw = np.quantile(clipped, levels, axis=0).T  # (D, n+1)
            raw[:, 0], raw[:, -1] = low, high
            edges = np.stack([_spread_edges(r, n_bins) for r in raw])
            return cls("quantile", n_bins, low, high, edges=edges, **kw)
        if len(x) < n_bins:
            raise ValueError(f"kmeans with {n_bins} centroids needs >= {n_bins} actions, got {len(x)}")
        z = (clipped - low) / (high - low)
        centroids = low + _kmeans(z, n_bins, seed) * (high - low)
        return cls("kmeans", n_bins, low, high, centroids=centroids, **kw)

    @classmethod
    def from_bounds(cls, low, high, n_bins: int = 256, q_low: float = 0.0,
                    q_high: float = 1.0) -> ActionTokenizer:
        """Uniform bins over given bounds (e.g. ``sim.interface.ACTION_LOW/HIGH``), no data."""
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        edges = np.linspace(low, high, int(n_bins) + 1, axis=1)
        return cls("uniform", n_bins, low, high, edges=edges, q_low=q_low, q_high=q_high)

    @classmethod
    def mulaw(cls, low, high, n_bins: int = 64, mu: float = 50.0) -> ActionTokenizer:
        """Companded bins over given bounds (low < 0 < high per dimension), no data needed:
        bin edges at ``side * ((1 + mu)^|u| - 1) / mu`` for ``u`` uniform in [-1, 1], ``side``
        = |low| below 0 and high above. Bins are fine around 0, where driving commands live
        (highway steering is a few hundredths of a radian), and coarse toward the limits, which
        stay covered so nothing clips. ``mu = 0`` would be uniform."""
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        if not (np.all(low < 0) and np.all(high > 0)) or mu <= 0:
            raise ValueError(f"mulaw bins need low < 0 < high per dimension and mu > 0, got {low}, {high}, {mu}")
        u = np.linspace(-1.0, 1.0, int(n_bins) + 1)
        shape = np.sign(u) * np.expm1(np.abs(u) * np.log1p(mu)) / mu  # in [-1, 1]
        edges = np.where(shape[None, :] < 0, -low[:, None], high[:, None]) * shape[None, :]
        edges[:, 0], edges[:, -1] = low, high
        return cls("mulaw", n_bins, low, high, edges=edges, q_low=0.0, q_high=1.0)

    # ------------------------------------------------------------------------------ codec
    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def tokens_per_action(self) -> int:
        """Tokens per action vector: 1 for kmeans, D otherwise."""
        return 1 if self.scheme == "kmeans" else self.dim

    @property
    def bin_centres(self) -> np.ndarray:
        """(D, n_bins) centres of the per-dimension bins (kmeans: (n_bins, D) centroids)."""
        if self.edges is None:
            return self.centroids.copy()
        return 0.5 * (self.edges[:, 1:] + self.edges[:, :-1])

    @property
    def bin_widths(self) -> np.ndarray:
        """(D, n_bins) bin widths (kmeans: (D,) = high - low, the residual's unit)."""
        if self.edges is None:
            return self.high - self.low
        return np.diff(self.edges, axis=1)

    def encode(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., D) actions -> (bins int64 (..., D) [kmeans: (..., 1)], residual f32 (..., D))."""
        x = np.clip(_check_actions(actions, self.dim), self.low, self.high)
        if self.scheme == "kmeans":
            z = (x - self.low) / (self.high - self.low)
            zc = (self.centroids - self.low) / (self.high - self.low)
            bins = np.argmin(_sq_dist(z.reshape(-1, self.dim), zc), axis=1).reshape(*x.shape[:-1], 1)
            residual = (x - self.centroids[bins[..., 0]]) / (self.high - self.low)
            return bins.astype(np.int64), residual.astype(np.float32)
        bins = np.empty(x.shape, dtype=np.int64)
        for d in range(self.dim):
            idx = np.searchsorted(self.edges[d], x[..., d], side="right") - 1
            bins[..., d] = np.clip(idx, 0, self.n_bins - 1)
        centres, widths = self._lookup(bins)
        residual = np.clip((x - centres) / widths, -0.5, 0.5)
        return bins, residual.astype(np.float32)

    def decode(self, bins: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """Bins (+ optional residual) -> (..., D) float64 actions; see the module docstring."""
        bins = np.asarray(bins)
        if not np.issubdtype(bins.dtype, np.integer):
            raise ValueError(f"bins must be integers, got dtype {bins.dtype}")
        if bins.ndim < 1 or bins.shape[-1] != self.tokens_per_action:
            raise ValueError(f"bins have shape {bins.shape}, expected (..., {self.tokens_per_action})")
        if bins.size and (bins.min() < 0 or bins.max() >= self.n_bins):
            bad = bins[(bins < 0) | (bins >= self.n_bins)].flat[0]
            raise ValueError(f"bin {int(bad)} outside [0, {self.n_bins})")
        if residual is not None:
            residual = _check_actions(residual, self.dim, "residual")
            if residual.shape[:-1] != bins.shape[:-1]:
                raise ValueError(f"residual shape {residual.shape} does not match bins shape {bins.shape}")
        if self.scheme == "kmeans":
            out = self.centroids[bins[..., 0]]
            if residual is not None:
                out = out + np.clip(residual, -1.0, 1.0) * (self.high - self.low)
            return out
        centres, widths = self._lookup(bins)
        if residual is not None:
            centres = centres + np.clip(residual, -0.5, 0.5) * widths
        return centres

    def _lookup(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres and widths (..., D) of per-dimension bins (..., D)."""
        d = np.arange(self.dim)
        return self.bin_centres[d, bins], self.bin_widths[d, bins]

    # ------------------------------------------------------------------------ vocabulary
    def _check_layout(self, layout: VocabLayout) -> None:
        if self.scheme == "kmeans":
            raise ValueError("kmeans vector tokens have no range in VocabLayout (it has one range "
                             f"per action dimension {ACTION_DIMS}); use a per-dimension scheme")
        if self.dim != len(ACTION_DIMS):
            raise ValueError(f"tokenizer has {self.dim} dimensions, the vocabulary {len(ACTION_DIMS)} {ACTION_DIMS}")
        if any(n != self.n_bins for n in layout.action_bins):
            raise ValueError(f"tokenizer has n_bins={self.n_bins}, vocabulary layout has "
                             f"action_bins={tuple(layout.action_bins)}")

    def to_token_ids(self, bins: np.ndarray, layout: VocabLayout) -> np.ndarray:
        """(..., D) bins -> (..., D) global token ids in the ``action_<dim>`` ranges."""
        self._check_layout(layout)
        bins = np.asarray(bins)
        if bins.ndim < 1 or bins.shape[-1] != self.dim:
            raise ValueError(f"bins have shape {bins.shape}, expected (..., {self.dim})")
        out = np.empty(bins.shape, dtype=np.int64)
        for d, name in enumerate(ACTION_DIMS):
            out[..., d] = layout.ids(f"action_{name}", bins[..., d])
        return out

    def from_token_ids(self, ids: np.ndarray, layout: VocabLayout) -> np.ndarray:
        """(..., D) global token ids -> (..., D) bins; an id outside its dimension's range
        (another modality, another action dimension, outside the vocabulary) is a ValueError."""
        self._check_layout(layout)
        ids = np.asarray(ids)
        if ids.ndim < 1 or ids.shape[-1] != self.dim:
            raise ValueError(f"token ids have shape {ids.shape}, expected (..., {self.dim})")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
        out = np.empty(ids.shape, dtype=np.int64)
        for d, name in enumerate(ACTION_DIMS):
            out[..., d] = layout.local(f"action_{name}", ids[..., d])
        return out

    # ----------------------------------------------------------------------------- chunks
    @staticmethod
    def chunk(actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) actions -> ((T, H, D) chunks, (T, H) bool mask).

        ``chunks[t, h] = actions[min(t + h, T - 1)]``: the last action is repeated past the
        episode end, where ``mask[t, h] = t + h < T`` is False.
        """
        a = np.asarray(actions)
        if a.ndim != 2:
            raise ValueError(f"chunk needs (T, D) actions, got shape {a.shape}")
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        t = np.arange(a.shape[0])[:, None] + np.arange(int(horizon))[None, :]  # (T, H)
        mask = t < a.shape[0]
        if a.shape[0] == 0:
            return np.zeros((0, int(horizon), a.shape[1]), dtype=a.dtype), mask
        return a[np.minimum(t, a.shape[0] - 1)], mask

    # ---------------------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        d = {
            "format": FORMAT, "version": VERSION, "scheme": self.scheme, "n_bins": self.n_bins,
            "fields": list(ACTION_FIELDS) if self.dim == len(ACTION_FIELDS) else [],
            "q_low": self.q_low, "q_high": self.q_high,
            "low": self.low.tolist(), "high": self.high.tolist(),
        }
        if self.edges is not None:
            d["edges"] = self.edges.tolist()
        else:
            d["centroids"] = self.centroids.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionTokenizer:
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ValueError(f"not an {FORMAT} version {VERSION} (format={d.get('format')!r}, "
                             f"version={d.get('version')!r})")
        return cls(d["scheme"], int(d["n_bins"]), np.array(d["low"]), np.array(d["high"]),
                   edges=np.array(d["edges"]) if "edges" in d else None,
                   centroids=np.array(d["centroids"]) if "centroids" in d else None,
                   q_low=float(d["q_low"]), q_high=float(d["q_high"]))

    def save(self, path: str | Path) -> None:
        """JSON, written atomically (temp file beside ``path`` + ``os.replace``)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict()))  # floats as repr: exact round trip
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> ActionTokenizer:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid action tokenizer file ({type(e).__name__}: {e})") from e

    def __repr__(self) -> str:
        return (f"ActionTokenizer(scheme={self.scheme!r}, n_bins={self.n_bins}, "
                f"low={np.round(self.low, 4).tolist()}, high={np.round(self.high, 4).tolist()})")


def bench_action_tokenizer(n: int = 200_000, n_bins: int = 256, seed: int = 0) -> dict:
    """Encode / decode throughput (action tokens per second, numpy, one process) on random
    in-range actions with a uniform tokenizer over ``ACTION_LOW/HIGH``."""
    import time

    from sim.interface import ACTION_HIGH, ACTION_LOW

    tok = ActionTokenizer.from_bounds(ACTION_LOW, ACTION_HIGH, n_bins)
    x = np.random.default_rng(seed).uniform(ACTION_LOW, ACTION_HIGH, size=(n, 2))
    tok.encode(x[:100])
    t0 = time.perf_counter()
    bins, res = tok.encode(x)
    t1 = time.perf_counter()
    tok.decode(bins, res)
    t2 = time.perf_counter()
    tokens = n * tok.tokens_per_action
    return {"actions": n, "n_bins": n_bins, "encode_tokens_per_s": tokens / (t1 - t0),
            "decode_tokens_per_s": tokens / (t2 - t1)}
