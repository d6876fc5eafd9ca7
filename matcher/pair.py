"""Pair scoring API: ``score_pair(query, reference) -> PairResult``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matcher.config import MatcherConfig
from matcher.local.evidence import PairEvidence

__all__ = ["PairResult", "score_pair"]


@dataclass
class PairResult:
    """The decision on one (query, reference) pair.

    score: calibrated, in [0, 1]; is_copy: score >= threshold; evidence: what decided it (``evidence.reason`` says
    why a score is 0).
    """

    score: float
    is_copy: bool
    threshold: float
    evidence: PairEvidence

    def to_dict(self, points: bool = False) -> dict[str, Any]:
        return {"score": round(float(self.score), 6), "is_copy": bool(self.is_copy), "threshold": self.threshold,
                "evidence": self.evidence.to_dict(points=points)}


_ENGINES: dict[str, Any] = {}


def _engine(config: MatcherConfig):
    from matcher.local.engine import LocalEngine

    key = config.to_json()
    if key not in _ENGINES:
        _ENGINES.clear()  # keep one engine (its extractor and score model) per process
        _ENGINES[key] = LocalEngine(config)
    return _ENGINES[key]


def score_pair(query: Any, reference: Any, config: MatcherConfig | None = None) -> PairResult:
    """Score whether ``query`` is an edited copy of ``reference``.

    query, reference: a path, PIL image, numpy array (H, W[, C]) or bytes; loaded with :func:`matcher.io.load_image`
    (raises :class:`matcher.io.ImageLoadError` for unreadable input). Images without keypoints (flat colour, tiny)
    give score 0 with the reason in ``evidence.reason``.
    """
    config = config or MatcherConfig()
    return _engine(config).score_pair(query, reference)
