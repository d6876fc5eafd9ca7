"""The logistic fusion model: p(copy) = sigmoid(bias + sum_i w_i * (x_i - mean_i) / std_i) over
:data:`~matcher.fusion.features.FEATURE_NAMES`, shipped as ``weights/fusion_logistic.json`` (plain JSON) beside the
default boosted trees (:mod:`matcher.fusion.trees`). Read with :func:`matcher.fusion.load.load_fusion`; fitted by
:func:`matcher.training.fusion.fit_fusion`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matcher.fusion.features import FEATURE_NAMES, explanation, feature_columns

__all__ = ["FORMAT", "FusionModel"]

FORMAT = "icd-fusion/1"


@dataclass(frozen=True)
class FusionModel:
    """Logistic model over standardised :data:`FEATURE_NAMES`; ``threshold`` is the documented default decision
    threshold on its probability; ``gate_margin`` the ASL margin the features were computed with."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5
    gate_margin: float = 0.0
    features: tuple[str, ...] = FEATURE_NAMES
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.weights) == len(self.mean) == len(self.std) == n):
            raise ValueError(f"fusion model: {n} features but {len(self.weights)} weights, {len(self.mean)} means, "
                             f"{len(self.std)} stds")
        if unknown := [f for f in self.features if f not in FEATURE_NAMES]:
            raise ValueError(f"fusion model: unknown features {unknown}")
        vals = (*self.weights, *self.mean, *self.std, self.bias)
        if not all(math.isfinite(v) for v in vals) or min(self.std) <= 0:
            raise ValueError("fusion model: weights, means and stds must be finite and stds > 0")

    @property
    def _cols(self) -> np.ndarray:
        return feature_columns(self.features)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x: (N, len(FEATURE_NAMES)) full feature rows -> (N,) float64 logits."""
        z = (np.asarray(x, np.float64)[:, self._cols] - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N,) probabilities in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(x), -50, 50)))

    def score(self, features: np.ndarray) -> float:
        """Probability for one (F,) feature vector."""
        return float(self.predict(np.asarray(features)[None])[0])

    def explain(self, features: np.ndarray) -> dict[str, float]:
        """Per-feature contribution to the logit (w_i * standardised x_i), largest magnitude first, plus "bias"."""
        x = np.asarray(features, np.float64)[self._cols]
        contrib = np.asarray(self.weights) * (x - np.asarray(self.mean)) / np.asarray(self.std)
        return explanation(self.features, contrib, self.bias)

    # ------------------------------------------------------------------------------------------------ files
    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "") -> FusionModel:
        """From the JSON object written by :meth:`save`; ``ValueError`` naming ``name`` when malformed."""
        try:
            return cls(tuple(float(v) for v in data["weights"]), float(data["bias"]),
                       tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                       float(data.get("threshold", 0.5)), float(data.get("gate_margin", 0.0)),
                       tuple(str(f) for f in data["features"]), str(data.get("source", name)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{name}: bad fusion weights: {exc}") from exc

    def save(self, path: str | Path, **card: object) -> None:
        """Write as JSON atomically, with extra model-card fields ``card`` (data, recipe, metrics)."""
        from matcher.io.atomic import atomic_write_text

        data = {"format": FORMAT, "features": list(self.features), "weights": list(self.weights),
                "bias": self.bias, "mean": list(self.mean), "std": list(self.std), "threshold": self.threshold,
                "gate_margin": self.gate_margin, "source": self.source, **card}
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
