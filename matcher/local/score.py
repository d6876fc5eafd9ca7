"""Calibrated pair score in [0, 1] from local geometric evidence.

    p(copy) = sigmoid(bias + w_inliers * log1p(n_inliers) + w_ratio * inlier_ratio + w_coverage * coverage)

with ``coverage = max(query_coverage, reference_coverage)`` and all weights >= 0, so the score is monotone
non-decreasing in each piece of evidence. Unverified evidence (``reason`` set: no keypoints, too few matches,
degenerate fit) scores exactly 0. The weights are fitted by logistic regression (non-negative weights) on pairs from
a benchmark built from the ``train`` photos (``bench/fit_local_score.py``) and shipped as plain JSON in
``weights/local_score.json``; :data:`DEFAULT_WEIGHTS` is the fallback when that file is absent.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from matcher.local.evidence import PairEvidence

__all__ = ["DEFAULT_WEIGHTS_PATH", "FEATURE_NAMES", "LocalScoreModel", "evidence_features", "fit_logistic"]

FEATURE_NAMES = ("log1p_inliers", "inlier_ratio", "coverage")
DEFAULT_WEIGHTS_PATH = Path(__file__).resolve().parents[2] / "weights" / "local_score.json"
FORMAT = "icd-local-score/1"


def evidence_features(ev: PairEvidence) -> np.ndarray:
    """(3,) float64 features of :data:`FEATURE_NAMES` for one evidence."""
    return np.array([
        math.log1p(ev.n_inliers),
        float(ev.inlier_ratio),
        max(float(ev.query_coverage), float(ev.reference_coverage)),
    ])


@dataclass(frozen=True)
class LocalScoreModel:
    """Logistic model over :data:`FEATURE_NAMES`; weights non-negative (monotone)."""

    weights: tuple[float, float, float] = (2.2, 1.0, 1.0)
    bias: float = -6.5
    source: str = "default (hand-set: p = 0.5 near 12 inliers)"

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURE_NAMES) or any(w < 0 or not math.isfinite(w) for w in self.weights):
            raise ValueError(f"local score weights must be {len(FEATURE_NAMES)} finite non-negative numbers, "
                             f"got {self.weights}")

    def score(self, ev: PairEvidence) -> float:
        """Probability-like score in [0, 1]; 0 for unverified evidence."""
        if not ev.verified or ev.n_inliers <= 0:
            return 0.0
        z = self.bias + float(np.dot(self.weights, evidence_features(ev)))
        return 1.0 / (1.0 + math.exp(-z))

    @classmethod
    def load(cls, path: str | Path | None = None) -> LocalScoreModel:
        """The fitted model from ``path`` (default ``weights/local_score.json``); the default model if absent."""
        p = Path(path) if path is not None else DEFAULT_WEIGHTS_PATH
        if not p.exists():
            if path is not None:
                raise FileNotFoundError(f"local score weights not found: {p}")
            return cls()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read local score weights {p}: {exc}") from exc
        if data.get("format") != FORMAT or list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError(f"{p}: not a {FORMAT} file for features {FEATURE_NAMES}")
        return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]), str(data.get("source", p.name)))

    def save(self, path: str | Path, **card: object) -> None:
        """Write as JSON (atomically), with extra model-card fields ``card``."""
        from matcher.fsutil import atomic_write

        data = {"format": FORMAT, "features": list(FEATURE_NAMES), **asdict(self), **card}
        data["weights"] = list(self.weights)
        with atomic_write(path, mode="w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iters: int = 3000, lr: float = 0.5) -> tuple[np.ndarray, float]:
    """Logistic regression with non-negative weights by projected gradient descent on standardised features.

    x: (n, F) float features, y: (n,) {0, 1}. Returns (weights (F,) >= 0 in the raw feature scale, bias).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    w = np.zeros(x.shape[1])
    b = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = p - y
        w -= lr * (z.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
        w = np.maximum(w, 0.0)  # standardisation divides by sd > 0, so sign is preserved in the raw scale
    w_raw = w / sd
    return w_raw, float(b - np.dot(w_raw, mu))
