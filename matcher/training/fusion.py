"""Fitting the fusion models (training code: never imported by scoring or matching).

- :func:`fit_fusion`: logistic regression by Newton's method (:class:`~matcher.fusion.logistic.FusionModel`);
- :func:`fit_trees`: gradient-boosted trees on the logistic loss (:class:`~matcher.fusion.trees.TreeFusionModel`),
  plain numpy: features binned at quantiles, each round fits one tree of depth ``depth`` to the loss's gradient
  and hessian (Newton leaves, L2 ``lam``), scaled by ``learning_rate``; optional monotone constraints (feature ->
  +1 / -1) keep the score non-decreasing / non-increasing in a feature whatever the other features are (bounds
  passed down the tree as in XGBoost).

Both take full :data:`~matcher.fusion.features.FEATURE_NAMES` rows and are deterministic. ``bench/fit_fusion.py``
fits the shipped models on benchmarks built from the ``train`` photos.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from matcher.fusion.features import FEATURE_NAMES, feature_columns
from matcher.fusion.logistic import FusionModel
from matcher.fusion.trees import TreeFusionModel

__all__ = ["fit_fusion", "fit_trees"]


def fit_fusion(x: np.ndarray, y: np.ndarray, *, features: tuple[str, ...] = FEATURE_NAMES, l2: float = 1e-4,
               iters: int = 50, gate_margin: float = 0.0, sample_weight: np.ndarray | None = None,
               source: str = "") -> FusionModel:
    """Fit logistic regression by Newton's method, L2 penalty ``l2 * sum(sample weights)`` on standardised weights.

    x: (N, len(FEATURE_NAMES)) feature rows (all features; ``features`` selects the columns used), y: (N,) {0, 1}.
    """
    xs = np.asarray(x, np.float64)[:, feature_columns(features)]
    y = np.asarray(y, np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("fit_fusion needs both positive and negative pairs")
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mu = xs.mean(0)
    sd = xs.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = np.hstack([(xs - mu) / sd, np.ones((len(y), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * sw.sum())
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        g = z.T @ (sw * (p - y)) + reg * w
        h = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return FusionModel(tuple(float(v) for v in w[:-1]), float(w[-1]), tuple(float(v) for v in mu),
                       tuple(float(v) for v in sd), gate_margin=gate_margin, features=tuple(features), source=source)


def _bin_edges(x: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Per column, at most ``n_bins - 1`` cut points: midpoints between neighbouring distinct values at the
    column's quantiles (so a split never falls on a value that occurs in the data)."""
    edges = []
    for j in range(x.shape[1]):
        u = np.unique(x[:, j])
        if len(u) <= n_bins:
            cuts = (u[1:] + u[:-1]) / 2
        else:
            q = np.unique(np.quantile(u, np.linspace(0, 1, n_bins + 1)[1:-1], method="lower"))
            pos = np.searchsorted(u, q)
            pos = pos[pos + 1 < len(u)]
            cuts = np.unique((u[pos] + u[pos + 1]) / 2)
        edges.append(cuts)
    return edges


@dataclass
class _Grower:
    """State of one tree being grown (node arrays filled slot by slot, children at 2i+1 / 2i+2)."""

    xb: np.ndarray  # (N, F) int16 bins
    g: np.ndarray
    h: np.ndarray
    edges: list[np.ndarray]
    depth: int
    lam: float
    min_child_hessian: float
    monotone: np.ndarray  # (F,) int8 in {-1, 0, 1}
    n_bins: int
    feature: np.ndarray = field(init=False)
    split: np.ndarray = field(init=False)
    value: np.ndarray = field(init=False)
    leaf_of: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        m = 2 ** (self.depth + 1) - 1
        self.feature = np.full(m, -1, np.int64)
        self.split = np.zeros(m)
        self.value = np.zeros(m)
        self.leaf_of = np.zeros(len(self.g), np.int64)

    def grow(self, slot: int, idx: np.ndarray, level: int, lo: float, hi: float) -> None:
        gs, hs = self.g[idx], self.h[idx]
        G, H = float(gs.sum()), float(hs.sum())
        self.value[slot] = min(hi, max(lo, -G / (H + self.lam)))
        self.leaf_of[idx] = slot
        if level == self.depth or H < 2 * self.min_child_hessian:
            return
        parent_gain = G * G / (H + self.lam)
        best_gain, best = 1e-12, None
        for j in range(self.xb.shape[1]):
            if len(self.edges[j]) == 0:
                continue
            col = self.xb[idx, j]
            gl = np.cumsum(np.bincount(col, gs, minlength=self.n_bins))[:-1]
            hl = np.cumsum(np.bincount(col, hs, minlength=self.n_bins))[:-1]
            gr, hr = G - gl, H - hl
            ok = (hl >= self.min_child_hessian) & (hr >= self.min_child_hessian)
            ok[len(self.edges[j]):] = False
            if self.monotone[j]:
                wl, wr = -gl / (hl + self.lam), -gr / (hr + self.lam)
                ok &= self.monotone[j] * (wr - wl) >= 0
            gain = np.where(ok, gl * gl / (hl + self.lam) + gr * gr / (hr + self.lam) - parent_gain, 0.0)
            k = int(np.argmax(gain))
            if gain[k] > best_gain:
                best_gain, best = float(gain[k]), (j, k)
        if best is None:
            return
        j, k = best
        self.feature[slot] = j
        self.split[slot] = self.edges[j][k]
        go_left = self.xb[idx, j] <= k
        li, ri = idx[go_left], idx[~go_left]
        llo, lhi, rlo, rhi = lo, hi, lo, hi
        if self.monotone[j]:  # children's values stay on their side of the midpoint, whatever splits follow
            wl = min(hi, max(lo, -float(self.g[li].sum()) / (float(self.h[li].sum()) + self.lam)))
            wr = min(hi, max(lo, -float(self.g[ri].sum()) / (float(self.h[ri].sum()) + self.lam)))
            mid = (wl + wr) / 2
            if self.monotone[j] > 0:
                lhi, rlo = mid, mid
            else:
                llo, rhi = mid, mid
        self.grow(2 * slot + 1, li, level + 1, llo, lhi)
        self.grow(2 * slot + 2, ri, level + 1, rlo, rhi)


def fit_trees(x: np.ndarray, y: np.ndarray, *, features: tuple[str, ...] = FEATURE_NAMES, rounds: int = 200,
              depth: int = 3, learning_rate: float = 0.1, lam: float = 1.0, min_child_hessian: float = 5.0,
              n_bins: int = 64, monotone: Mapping[str, int] | None = None, sample_weight: np.ndarray | None = None,
              gate_margin: float = 0.0, source: str = "") -> TreeFusionModel:
    """Fit boosted trees on the logistic loss. x: (N, len(FEATURE_NAMES)) full feature rows (``features`` selects
    the columns), y: (N,) {0, 1}; ``monotone`` maps feature names to +1 (non-decreasing) or -1. Deterministic."""
    xs = np.asarray(x, np.float64)[:, feature_columns(features)]
    y = np.asarray(y, np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("fit_trees needs both positive and negative pairs")
    if not np.all(np.isfinite(xs)):
        raise ValueError("fit_trees: features must be finite")
    if depth < 1 or rounds < 1 or not 0 < learning_rate <= 1 or n_bins < 2:
        raise ValueError("fit_trees: need depth >= 1, rounds >= 1, 0 < learning_rate <= 1, n_bins >= 2")
    mono = np.zeros(len(features), np.int8)
    for name, sign in (monotone or {}).items():
        if name not in features or sign not in (-1, 1):
            raise ValueError(f"fit_trees: bad monotone constraint {name!r}: {sign!r}")
        mono[features.index(name)] = sign
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    edges = _bin_edges(xs, n_bins)
    xb = np.stack([np.searchsorted(e, xs[:, j], side="right") for j, e in enumerate(edges)], 1).astype(np.int16)
    p0 = float((sw * y).sum() / sw.sum())
    base = math.log(p0 / (1 - p0))
    f = np.full(len(y), base)
    m = 2 ** (depth + 1) - 1
    slots = np.arange(m)
    out = {k: [] for k in ("feature", "split", "value")}
    for _ in range(rounds):
        p = 1.0 / (1.0 + np.exp(-f))
        g, h = sw * (p - y), sw * p * (1 - p)
        tree = _Grower(xb, g, h, edges, depth, lam, min_child_hessian, mono, n_bins)
        tree.grow(0, np.arange(len(y)), 0, -math.inf, math.inf)
        tree.value *= learning_rate
        f += tree.value[tree.leaf_of]
        out["feature"].append(tree.feature)
        out["split"].append(tree.split)
        out["value"].append(tree.value)
    left = np.where(slots < m // 2, 2 * slots + 1, slots)
    right = np.where(slots < m // 2, 2 * slots + 2, slots)
    t = len(out["feature"])
    return TreeFusionModel(np.stack(out["feature"]), np.stack(out["split"]), np.tile(left, (t, 1)),
                           np.tile(right, (t, 1)), np.stack(out["value"]), base, gate_margin=gate_margin,
                           features=tuple(features), source=source)
