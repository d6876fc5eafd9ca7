"""The evidence about one candidate pair as the fixed feature vector every fusion model reads.

:func:`pair_features` turns a pair's local geometric evidence (:class:`~matcher.local.evidence.PairEvidence`,
including the seam check of :mod:`matcher.local.seam` and the detector agreement) and its global evidence
(:class:`~matcher.retrieval.candidates.GlobalEvidence`: descriptor similarities of the query's regions and the
reference's crops, the ASL norm ratio) into :data:`FEATURE_NAMES`. The features are asymmetric: a query that is the
holistic picture around a reference (the reference is a crop of the query) shows "reference inside query" *without*
a seam along the reference's frame, without a detected pasted box and with a larger descriptor norm (ASL: more
content), while a crop of the reference ("query inside reference") or a detected paste does not.
"""
from __future__ import annotations

import math

import numpy as np

from matcher.local.evidence import PairEvidence
from matcher.retrieval.candidates import GlobalEvidence

__all__ = [
    "FEATURE_NAMES",
    "SEAM_CLEAR",
    "SEAM_NONE",
    "explanation",
    "feature_columns",
    "pair_features",
    "reference_inside_query",
]

FEATURE_NAMES = (
    "verified",  # 1 when a geometric fit was accepted
    "log1p_inliers",  # log(1 + unique inlier locations)
    "inlier_ratio",  # inliers / tentative matches
    "coverage",  # max(query, reference) inlier hull coverage
    "query_in_reference",  # fraction of the reference shown by the query's mapped frame
    "reference_in_query",  # fraction of the query that is reference content
    "reference_inside_query",  # query_in_reference * (1 - reference_in_query): the reference is a part of the query
    "inside_with_detector",  # reference_inside_query * detector IoU (a detected paste explains it)
    "detector_iou",  # IoU of the inlier box in the query with a detected pasted-picture box (0 if none)
    "global_full",  # normalised similarity of whole query vs whole reference
    "global_regions",  # best normalised similarity of a query region (incl. full) vs the whole reference
    "global_to_local",  # best normalised similarity of the whole query vs a reference crop
    "log_norm_ratio",  # log||f(q)|| - log||f(r)|| (ASL: > 0 = the query holds more content)
    "gate_excess",  # max(0, log_norm_ratio - gate margin)
    "inside_norm",  # reference_inside_query * max(0, log_norm_ratio)
    "frame_seam",  # log seam strength along the reference frame inside the query, in [-2, 4]; 0 when none inside
    "inside_without_seam",  # reference_inside_query * seamless(seam): 1 at seam <= SEAM_NONE, 0 at >= SEAM_CLEAR
    "dense_measured",  # 1 when the dense alignment check measured the pair (matcher.local.alignment)
    "dense_agree",  # share of the overlap's textured cells where the aligned pictures agree (0 if not measured)
    "dense_agree_outside",  # the same outside the inliers' hull (= dense_agree when the hull covers the overlap)
    "dense_disagree_blob",  # largest connected disagreeing area, share of the measured cells (0 if not measured)
)
SEAM_NONE = 2.0  # seam ratio (matcher.local.seam) at or below which the frame counts as showing no seam
SEAM_CLEAR = 3.0  # seam ratio at or above which "reference inside the query" is fully explained by a paste
# (log-linear in between). Chosen by 5-fold cross-validation on the train benchmark's candidate pairs; there the
# holistic negatives' seams have median 1.5 and 90th percentile 2.0, pasted copies' 10th percentile is 3.4


def _finite(v: float | None, default: float = 0.0) -> float:
    return float(v) if v is not None and math.isfinite(v) else default


def feature_columns(features: tuple[str, ...]) -> np.ndarray:
    """(len(features),) int64 positions of ``features`` in a full :data:`FEATURE_NAMES` row."""
    return np.array([FEATURE_NAMES.index(f) for f in features], np.int64)


def explanation(features: tuple[str, ...], contrib: np.ndarray, bias: float) -> dict[str, float]:
    """{feature: logit contribution} for (len(features),) ``contrib``, largest magnitude first (ties in feature
    order), then "bias"; rounded to 4 decimals."""
    order = np.argsort(-np.abs(contrib), kind="stable")
    out = {features[i]: round(float(contrib[i]), 4) for i in order}
    out["bias"] = round(float(bias), 4)
    return out


def reference_inside_query(ev: PairEvidence) -> float:
    """How much of the match is "the reference is a part of the query": query_in_reference * (1 -
    reference_in_query), in [0, 1] (1 = the query shows all of the reference, which fills little of the query)."""
    return float(ev.query_frame_in_reference) * (1.0 - float(ev.reference_frame_in_query))


def pair_features(ev: PairEvidence | None, g: GlobalEvidence, gate_margin: float = 0.0) -> np.ndarray:
    """(F,) float64 features of :data:`FEATURE_NAMES` for one candidate pair; ``ev`` None = not verified."""
    ok = ev is not None and ev.verified and ev.n_inliers > 0
    if ok:
        assert ev is not None
        inl = math.log1p(ev.n_inliers)
        ratio = float(ev.inlier_ratio)
        cov = max(float(ev.query_coverage), float(ev.reference_coverage))
        q_in_r = float(ev.query_frame_in_reference)
        r_in_q = float(ev.reference_frame_in_query)
        det = _finite(ev.detector_iou)
        inside = reference_inside_query(ev)
    else:
        inl = ratio = cov = q_in_r = r_in_q = det = inside = 0.0
    seam = ev.frame_seam if ok and ev is not None and ev.frame_seam is not None else math.nan
    if math.isfinite(seam):
        log_seam = min(4.0, max(-2.0, math.log(max(seam, 1e-6))))
        w = math.log(SEAM_CLEAR / max(seam, 1e-6)) / math.log(SEAM_CLEAR / SEAM_NONE)
        seamless = inside * min(1.0, max(0.0, w))
    else:  # no side of the frame inside the query (or not measured): nothing to check
        log_seam = seamless = 0.0
    dense = ev.dense if ok and ev is not None else None
    if dense is not None and dense.measured:
        d_ok, d_agree = 1.0, float(dense.agree)
        d_out = float(dense.agree_outside) if math.isfinite(dense.agree_outside) else d_agree
        d_blob = float(dense.disagree_blob)
    else:
        d_ok = d_agree = d_out = d_blob = 0.0
    # missing global scores (pair found only by another generator) count as "no similarity"
    full = _finite(g.full, -0.2)
    regions = max(_finite(g.regions, -0.2), full)
    to_local = _finite(g.to_local, -0.2)
    lnr = _finite(g.log_norm_ratio)
    return np.array([
        float(ok), inl, ratio, cov, q_in_r, r_in_q, inside, inside * det, det,
        full, regions, to_local, lnr, max(0.0, lnr - gate_margin), inside * max(0.0, lnr), log_seam, seamless,
        d_ok, d_agree, d_out, d_blob,
    ], np.float64)
