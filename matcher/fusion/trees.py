"""Gradient-boosted decision trees as the fusion model: the same evidence features as the logistic model
(:data:`matcher.fusion.features.FEATURE_NAMES`), scored by a sum of small trees, so feature interactions ("reference
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

from matcher.fusion.features import FEATURE_NAMES, explanation, feature_columns

__all__ = ["TREES_FORMAT", "TreeFusionModel"]

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
        from matcher.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps({**self.to_dict(), **card}, indent=1, sort_keys=True) + "\n")
