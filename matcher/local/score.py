"""Calibrated pair score in [0, 1] from local geometric evidence.

    p(copy) = sigmoid(bias + w_inliers * log1p(n_inliers) + w_ratio * inlier_ratio + w_coverage * coverage)

with ``coverage = max(query_coverage, reference_coverage)`` and all weights >= 0, so the score is monotone
non-decreasing in each piece of evidence. Unverified evidence (``reason`` set: no keypoints, too few matches,
degenerate fit) scores exactly 0. The weights are fitted by logistic regression (non-negative weights) on pairs from
a benchmark built from the ``train`` photos (``bench/fit_local_score.py``) and shipped as plain JSON in
``weights/local_score.json``; the hand-set defaults of :class:`LocalScoreModel` are the fallback when that file is
absent. The fitting (:func:`matcher.training.local_score.fit_logistic`) is training code, outside this module.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from matcher.local.evidence import PairEvidence
from matcher.resources import LOCAL_SCORE, shipped_path

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig

__all__ = ["FEATURE_NAMES", "LocalScoreModel", "default_local_score_path", "evidence_features"]

FEATURE_NAMES = ("log1p_inliers", "inlier_ratio", "coverage")
FORMAT = "icd-local-score/1"


def default_local_score_path(config: MatcherConfig | None = None) -> Path:
    """The shipped local score model (``weights/local_score.json``, through :mod:`matcher.resources`)."""
    return shipped_path(LOCAL_SCORE, config)


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
    def load(cls, path: str | Path | None = None, config: MatcherConfig | None = None) -> LocalScoreModel:
        """The fitted model from ``path`` (default: the shipped ``weights/local_score.json``); the hand-set default
        model when no path is given and the shipped file is absent."""
        p = Path(path) if path is not None else default_local_score_path(config)
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
        from matcher.io.atomic import atomic_write

        data = {"format": FORMAT, "features": list(FEATURE_NAMES), **asdict(self), **card}
        data["weights"] = list(self.weights)
        with atomic_write(path, mode="w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
