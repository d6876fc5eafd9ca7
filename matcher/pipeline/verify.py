"""The last stages of the pipeline: local verification of a query against its candidates, detector agreement and
the seam check of the matched area, and the fused score (:class:`PairMatch`).

The candidates' local features are read from the reference store (never re-extracted) and verified in one
one-to-many pass (:func:`matcher.local.verify.verify_query`); each pair's evidence becomes the fusion features
(:func:`matcher.fusion.features.pair_features`) and the fusion model's probability, with the per-feature
contributions that decided it.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.fusion.features import pair_features, reference_inside_query
from matcher.fusion.load import Fusion
from matcher.local.alignment import agreement_map, dense_evidence
from matcher.local.evidence import PairEvidence
from matcher.local.seam import frame_edge_strength
from matcher.local.verify import ReferenceBank, verify_query
from matcher.pipeline.describe import QueryDescription
from matcher.retrieval.candidates import Candidate, GlobalEvidence

if TYPE_CHECKING:  # pragma: no cover
    from matcher.local.score import LocalScoreModel
    from matcher.references.store import ReferenceStore

__all__ = ["SEAM_MIN_INSIDE", "PairMatch", "verify_candidates"]

Timer = Callable[[str], AbstractContextManager[object]]
SEAM_MIN_INSIDE = 0.05  # the seam is looked for only when at least this much of the match is "reference inside the
# query" (fusion.features.reference_inside_query); below, frame_seam is nan


@dataclass
class PairMatch:
    """One scored (query, reference) pair with the evidence that decided it.

    score: fused probability-like score in [0, 1] (nan when no fusion model is loaded); is_copy: score >=
    threshold; evidence: local geometric evidence (None when the pair was not verifiable, e.g. no keypoints);
    global_evidence: descriptor scores; features: (F,) fusion features; contributions: per-feature logit terms."""

    query_id: str
    reference_id: str
    score: float
    is_copy: bool
    threshold: float
    evidence: PairEvidence | None
    global_evidence: GlobalEvidence
    features: np.ndarray
    contributions: dict[str, float] = field(default_factory=dict)
    reference_row: int = -1

    def to_dict(self, points: bool = False) -> dict[str, Any]:
        """JSON-able summary (inlier points only when ``points``)."""
        return {
            "query_id": self.query_id, "reference_id": self.reference_id,
            "score": None if math.isnan(self.score) else round(self.score, 6), "is_copy": self.is_copy,
            "threshold": self.threshold,
            "local": None if self.evidence is None else self.evidence.to_dict(points=points),
            "global": self.global_evidence.to_dict(), "contributions": self.contributions,
        }


def _attach_detector(ev: PairEvidence, q: QueryDescription, config: MatcherConfig) -> None:
    """Detector agreement of a verified pair's matched area (0 when the detector ran and found nothing there)."""
    if q.detected and ev.query_box is not None:
        from detectors.evidence import detector_agreement

        a = detector_agreement(ev.query_box, q.detected)
        ev.detector_iou, ev.detector_score = a.iou, a.score
    elif "yolo" in config.pipeline.query_regions:
        ev.detector_iou, ev.detector_score = 0.0, 0.0


def _attach_seam(ev: PairEvidence, q: QueryDescription) -> None:
    """The seam strength along the reference frame inside the query (:mod:`matcher.local.seam`), when it lies
    inside enough to look."""
    if ev.reference_quad_in_query is None or q.gray is None:
        return
    quad = np.asarray(ev.reference_quad_in_query, np.float64) * q.gray_scale
    ev.frame_seam = (frame_edge_strength(q.gray, quad) if reference_inside_query(ev) >= SEAM_MIN_INSIDE
                     else math.nan)


def _attach_dense(ev: PairEvidence, q: QueryDescription, thumb: np.ndarray | None,
                  reference_size: tuple[int, int]) -> None:
    """The dense alignment check of a verified pair (:mod:`matcher.local.alignment`), where the reference's
    thumbnail is stored."""
    if thumb is None or q.pyramid is None or ev.transform is None:
        return
    amap = agreement_map(thumb, reference_size, q.pyramid, ev.transform, q.size)
    ev.dense = dense_evidence(amap, ev.reference_points, reference_size)


def verify_candidates(q: QueryDescription, cands: Sequence[Candidate], store: ReferenceStore,
                      config: MatcherConfig, score_model: LocalScoreModel, fusion: Fusion | None, threshold: float,
                      gate_margin: float, *, timer: Timer | None = None) -> list[PairMatch]:
    """Local verification + detector agreement + seam + fusion for each candidate; best fused score first (ties by
    reference id). Without a fusion model the scores are nan (feature collection for fitting one)."""
    timer = timer or (lambda name: contextlib.nullcontext())
    if not cands:
        return []
    rows = [c.row for c in cands]
    local: dict[int, tuple[float, PairEvidence]] = {}
    if q.local is not None and config.local is not None:
        with timer("load_features"):
            feats = store.local_features(rows)
        with timer("verify"):
            bank = ReferenceBank.build([str(r) for r in rows], feats)
            local = verify_query(q.local, bank, config.local, score_model)
        with timer("dense"):
            verified = [i for i, (_, ev) in local.items() if ev.verified]
            thumbs = dict(zip(verified, store.thumbnails([rows[i] for i in verified]), strict=True))
            for i in verified:
                _attach_dense(local[i][1], q, thumbs[i], feats[i].image_size)
    out: list[PairMatch] = []
    with timer("fuse"):
        ids = store.ids
        evs: list[PairEvidence | None] = []
        feats_all = []
        for i, c in enumerate(cands):
            ev = local.get(i, (0.0, None))[1]
            if ev is not None and ev.verified:
                _attach_detector(ev, q, config)
                _attach_seam(ev, q)
            evs.append(ev)
            feats_all.append(pair_features(ev, c.evidence, gate_margin))
        x = np.stack(feats_all)
        scores = fusion.predict(x) if fusion is not None else np.full(len(x), np.nan)
        for c, ev, f, s in zip(cands, evs, x, scores):
            contrib = fusion.explain(f) if fusion is not None else {}
            out.append(PairMatch(q.query_id, ids[c.row], float(s), bool(s >= threshold), threshold, ev, c.evidence,
                                 f, contrib, c.row))
    out.sort(key=lambda m: (-(m.score if not math.isnan(m.score) else -1.0), m.reference_id))
    return out
