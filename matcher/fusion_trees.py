"""Gradient-boosted decision trees as the fusion model: the same evidence features as the logistic model
(:data:`matcher.fusion.FEATURE_NAMES`), scored by a sum of small trees, so feature interactions ("reference
inside the query" *and* no seam *and* a larger ASL norm) are learned instead of hand-made:

    p(copy) = sigmoid(base + sum_t tree_t(x))

Fitting (:func:`fit_trees`) is plain numpy: features are binned at quantiles, each round fits one tree of depth
``depth`` to the logistic loss's gradient and hessian (Newton leaves, L2 ``lam``), scaled by ``learning_rate``.
Optional monotone constraints (feature -> +1 / -1) keep the score non-decreasing / non-increasing in a feature,
whatever the other features are (bounds passed down the tree as in XGBoost). The model is plain JSON: per tree
the node arrays ``feature`` (-1 = leaf), ``split`` (go left when x < split), ``left``, ``right`` and ``value``.

``value`` of an inner node is its Newton value before splitting; the per-feature contributions of
:meth:`TreeFusionModel.explain` are the changes of value along each tree's path, attributed to the feature split
on (Saabas' method), so they add up exactly to the logit.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcher.fusion import FEATURE_NAMES, explanation, feature_columns

__all__ = ["TREES_FORMAT", "TreeFusionModel", "fit_trees"]

TREES_FORMAT = "icd-fusion-trees/1"


@dataclass(frozen=True, eq=False)
class TreeFusionModel:
    """Boosted trees over :data:`FEATURE_NAMES` columns ``features``. Node arrays are (T, M) with M = 2^(depth+1)-1
    slots per tree; ``threshold`` is the documented default decision threshold on the probability."""

    feature: np.ndarray  # (T, M) int64 index into ``features``; -1 = leaf (or unused slot)
    split: np.ndarray  # (T, M) float64; a row goes left when x < split
    left: np.ndarray  # (T, M) int64 child slots
    right: np.ndarray  # (T, M) int64
    value: np.ndarray  # (T, M) float64 logit contribution of a leaf; Newton value of an inner node (explain)
    base: float
    threshold: float = 0.5
    gate_margin: float = 0.0
    features: tuple[str, ...] = FEATURE_NAMES
    source: str = ""
    depth: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        arrays = (self.feature, self.split, self.left, self.right, self.value)
        if len({a.shape for a in arrays}) != 1 or self.feature.ndim != 2:
            raise ValueError("fusion trees: node arrays must share one (trees, nodes) shape")
        if unknown := [f for f in self.features if f not in FEATURE_NAMES]:
            raise ValueError(f"fusion trees: unknown features {unknown}")
        m = self.feature.shape[1]
        if m < 1 or (m + 1) & m:
            raise ValueError(f"fusion trees: {m} node slots per tree; expected 2^(depth+1) - 1")
        inner = self.feature >= 0
        if np.any(self.feature >= len(self.features)):
            raise ValueError("fusion trees: a node splits on a feature the model does not list")
        slots = np.arange(m)
        if np.any(inner & ((self.left != 2 * slots + 1) | (self.right != 2 * slots + 2))):
            raise ValueError("fusion trees: a child slot breaks the heap layout (children of slot i at 2i+1, 2i+2)")
        if not (np.all(np.isfinite(self.value)) and np.all(np.isfinite(self.split[inner])) and math.isfinite(self.base)):
            raise ValueError("fusion trees: values, splits and base must be finite")
        object.__setattr__(self, "depth", int(math.log2(m + 1)) - 1 if m else 0)

    @property
    def _cols(self) -> np.ndarray:
        return feature_columns(self.features)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """x: (N, len(FEATURE_NAMES)) full feature rows -> (N, T) int64 leaf slot reached in each tree."""
        z = np.asarray(x, np.float64)[:, self._cols]
        n, t = len(z), self.feature.shape[0]
        trees = np.arange(t)[None, :]
        rows = np.arange(n)[:, None]
        node = np.zeros((n, t), np.int64)
        for _ in range(self.depth):
            f = self.feature[trees, node]
            go_left = z[rows, np.maximum(f, 0)] < self.split[trees, node]
            nxt = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(f >= 0, nxt, node)
        return node

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N,) float64 logits."""
        node = self.leaves(x)
        return self.base + self.value[np.arange(node.shape[1])[None, :], node].sum(1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N,) probabilities in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(x), -50, 50)))

    def score(self, features: np.ndarray) -> float:
        """Probability for one (F,) feature vector."""
        return float(self.predict(np.asarray(features)[None])[0])

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """x: (N, len(FEATURE_NAMES)) -> ((N, len(features)) per-feature logit contributions, bias): the value
        changes along each tree's path, summed per feature split on; bias = base + every tree's root value, so
        bias + a row's contributions = its logit."""
        z = np.asarray(x, np.float64)[:, self._cols]
        n, t = len(z), self.feature.shape[0]
        trees = np.arange(t)[None, :]
        rows = np.repeat(np.arange(n)[:, None], t, 1)
        node = np.zeros((n, t), np.int64)
        out = np.zeros((n, len(self.features)))
        for _ in range(self.depth):
            f = self.feature[trees, node]
            inner = f >= 0
            go_left = z[rows, np.maximum(f, 0)] < self.split[trees, node]
            child = np.where(go_left, self.left[trees, node], self.right[trees, node])
            delta = self.value[trees, child] - self.value[trees, node]
            np.add.at(out, (rows[inner], f[inner]), delta[inner])
            node = np.where(inner, child, node)
        return out, self.base + float(self.value[:, 0].sum())

    def explain(self, features: np.ndarray) -> dict[str, float]:
        """Per-feature contribution to the logit (:meth:`contributions`), largest magnitude first, plus "bias";
        they add up to the logit."""
        contrib, bias = self.contributions(np.asarray(features, np.float64)[None])
        return explanation(self.features, contrib[0], bias)

    # ------------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, object]:
        inner = self.feature >= 0
        return {"format": TREES_FORMAT, "features": list(self.features), "base": self.base,
                "threshold": self.threshold, "gate_margin": self.gate_margin, "source": self.source,
                "trees": [{"feature": self.feature[t].tolist(),
                           "split": np.where(inner[t], self.split[t], 0.0).tolist(),
                           "left": self.left[t].tolist(), "right": self.right[t].tolist(),
                           "value": self.value[t].tolist()} for t in range(self.feature.shape[0])]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], name: str = "") -> TreeFusionModel:
        """From the JSON object written by :meth:`save`; ``ValueError`` naming ``name`` when malformed."""
        try:
            trees = data["trees"]
            if not isinstance(trees, list) or not trees:
                raise ValueError("no trees")
            arrays = {k: np.array([tr[k] for tr in trees], np.int64 if k in ("feature", "left", "right") else
                                  np.float64) for k in ("feature", "split", "left", "right", "value")}
            return cls(arrays["feature"], arrays["split"], arrays["left"], arrays["right"], arrays["value"],
                       float(data["base"]), float(data.get("threshold", 0.5)),  # type: ignore[arg-type]
                       float(data.get("gate_margin", 0.0)),  # type: ignore[arg-type]
                       tuple(str(f) for f in data["features"]),  # type: ignore[attr-defined]
                       str(data.get("source", name)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{name}: bad fusion trees: {exc}") from exc

    def save(self, path: str | Path, **card: object) -> None:
        """Write as JSON atomically, with extra model-card fields ``card`` (data, recipe, metrics)."""
        from matcher.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps({**self.to_dict(), **card}, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------- fitting
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
