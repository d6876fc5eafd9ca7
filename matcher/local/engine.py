"""The local-verification engine: a thin stateful wrapper (extractor, score model, config) over the pure functions
of ``matcher.local``, and the pair-scoring API ``score_pair(query, reference) -> PairResult``. Features are
extracted once per image; matching one query against many references uses the packed
:class:`~matcher.local.verify.ReferenceBank`."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.io.images import ImageLoadError, load_image
from matcher.local.alignment import QueryPyramid, agreement_map, dense_evidence, reference_thumbnail
from matcher.local.evidence import PairEvidence
from matcher.local.features import create_extractor
from matcher.local.score import LocalScoreModel
from matcher.local.seam import to_gray
from matcher.local.types import LocalFeatures
from matcher.local.verify import (
    QueryFeatures,
    ReferenceBank,
    extract_query_features,
    reference_region_features,
    region_features,
    verify_query,
)
from matcher.regions.region import Region

__all__ = ["LocalEngine", "PairResult", "ScoredPair", "dense_check", "score_pair"]

# Load refusals that mean "nothing to match" (score 0 with the reason) rather than "broken input" (raised).
_SCORE_ZERO_REASONS = frozenset({"too_small", "too_many_pixels"})


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


@dataclass
class ScoredPair:
    """One query/reference result of :meth:`LocalEngine.match_query`."""

    reference_id: str
    score: float
    evidence: PairEvidence


class LocalEngine:
    """Extractor + score model + config. ``score_pair`` for one pair, ``match_query`` for one query vs a bank."""

    def __init__(self, config: MatcherConfig | None = None, score_model: LocalScoreModel | None = None) -> None:
        self.config = config or MatcherConfig()
        self.extractor = create_extractor(self.config.local, device=self.config.resolved_device())
        self.score_model = score_model or LocalScoreModel.load(config=self.config)

    # ------------------------------------------------------------------------------------------------ features
    def load(self, source: Any) -> np.ndarray:
        """RGB uint8 image from any supported source, with the config's load limits."""
        return load_image(source, config=self.config.load)

    def reference_features(self, image: np.ndarray) -> LocalFeatures:
        """Full-image features of a reference (reference regions are a later stage)."""
        h, w = image.shape[:2]
        return region_features(image, Region("full", (0, 0, w, h)), self.extractor)

    def reference_region_features(self, image: np.ndarray) -> list[tuple[str, LocalFeatures]]:
        """(tag, features) per region of ``config.local.reference_regions`` (default: the full image only)."""
        return reference_region_features(image, self.extractor, self.config.local, proposer_config=self.config)

    def query_features(self, image: np.ndarray) -> QueryFeatures:
        """Features of each query region of ``config.local.query_regions``."""
        return extract_query_features(image, self.extractor, self.config.local, proposer_config=self.config)

    # ------------------------------------------------------------------------------------------------ scoring
    def score_pair(self, query: Any, reference: Any):
        """:class:`PairResult` for one pair (features computed once each)."""
        from matcher.local.engine import PairResult

        images = []
        for side, source in (("query", query), ("reference", reference)):
            try:
                images.append(self.load(source))
            except ImageLoadError as exc:
                if exc.reason not in _SCORE_ZERO_REASONS:
                    raise
                ev = PairEvidence(reason=f"{side} image refused: {exc}", model=self.config.local.model)
                return PairResult(0.0, False, self.config.threshold, ev)
        q_img, r_img = images
        score, ev = self.verify_features(self.query_features(q_img), self.reference_features(r_img))
        dense_check(ev, q_img, r_img)
        return PairResult(score, score >= self.config.threshold, self.config.threshold, ev)

    def verify_features(self, qf: QueryFeatures, rf: LocalFeatures) -> tuple[float, PairEvidence]:
        """(calibrated score, evidence) of one pair from features computed once per image; unverified pairs
        score 0 with the reason in the evidence."""
        best = verify_query(qf, ReferenceBank.build(["reference"], [rf]), self.config.local, self.score_model)
        return best[0] if 0 in best else (0.0, self._unverified(qf, rf))

    def match_query(self, query: QueryFeatures, bank: ReferenceBank, top_k: int | None = None) -> list[ScoredPair]:
        """The references of ``bank`` with a verified match, best first (at most ``top_k``, default config)."""
        k = self.config.top_k if top_k is None else top_k
        best = verify_query(query, bank, self.config.local, self.score_model)
        by_id: dict[str, ScoredPair] = {}  # a reference with several regions keeps its best one
        for r, (s, ev) in best.items():
            rid = bank.ids[r]
            if s > 0 and (rid not in by_id or s > by_id[rid].score):
                by_id[rid] = ScoredPair(rid, s, ev)
        pairs = sorted(by_id.values(), key=lambda p: (-p.score, p.reference_id))
        return pairs[:k]

    def match_many(self, queries: Iterable[tuple[str, np.ndarray]], bank: ReferenceBank) -> Iterator[tuple[str, list[ScoredPair]]]:
        """(query id, top pairs) for each (id, image) of ``queries``."""
        for qid, image in queries:
            yield qid, self.match_query(self.query_features(image), bank)

    def _unverified(self, qf: QueryFeatures, rf: LocalFeatures) -> PairEvidence:
        """Evidence with the reason a pair never reached a fit."""
        n_q = max((f.n for f in qf.features), default=0)
        if n_q == 0:
            reason = "no keypoints in query (flat, tiny or featureless image)"
        elif rf.n == 0:
            reason = "no keypoints in reference (flat, tiny or featureless image)"
        else:
            reason = f"too few tentative matches (< {self.config.local.min_inliers})"
        return PairEvidence(reason=reason, model=self.config.local.model)


def dense_check(ev: PairEvidence, query: np.ndarray, reference: np.ndarray) -> PairEvidence:
    """Run the dense alignment check (:mod:`matcher.local.alignment`) of a verified pair from its RGB uint8
    pictures and set ``ev.dense``; unverified evidence is left as it is. Returns ``ev``."""
    if ev.verified and ev.transform is not None:
        g, gs = to_gray(query)
        size = (reference.shape[1], reference.shape[0])
        amap = agreement_map(reference_thumbnail(reference), size, QueryPyramid(g, gs), ev.transform,
                             (query.shape[1], query.shape[0]))
        ev.dense = dense_evidence(amap, ev.reference_points, size)
    return ev


_ENGINES: dict[str, LocalEngine] = {}


def _engine(config: MatcherConfig) -> LocalEngine:
    """One engine (its extractor and score model) per process, for the last config used."""
    key = config.to_json()
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = LocalEngine(config)
    return _ENGINES[key]


def score_pair(query: Any, reference: Any, config: MatcherConfig | None = None) -> PairResult:
    """Score whether ``query`` is an edited copy of ``reference`` by local verification alone.

    query, reference: a path, PIL image, numpy array (H, W[, C]) or bytes; loaded with
    :func:`matcher.io.images.load_image` (raises :class:`~matcher.io.images.ImageLoadError` for unreadable input).
    Images without keypoints (flat colour, tiny) give score 0 with the reason in ``evidence.reason``.
    """
    return _engine(config or MatcherConfig()).score_pair(query, reference)
