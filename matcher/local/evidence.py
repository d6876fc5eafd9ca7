"""Pair evidence: the geometric fit of one query/reference match set, summarised for scoring and drawing.

Everything is in ORIGINAL image pixels. ``transform`` always maps original query px -> reference px, also
for mirrored matches (the query points are flipped x -> W - 1 - x before fitting and the flip is composed
back into the reported transform, whose affine part then has a negative determinant).

Containment rule (``containment``), from the frames projected through the fit and clipped to the other frame:

* ``query_frame_in_reference`` = area(query frame mapped into the reference, clipped to the reference frame)
  / reference frame area: how much of the reference the query shows;
* ``reference_frame_in_query`` = area(reference frame mapped into the query, clipped to the query frame)
  / query frame area: how much of the query is reference content.

With ``FULL = 0.8``: both >= FULL -> "same_extent"; query_frame_in_reference < FULL and
reference_frame_in_query >= FULL -> "query_in_reference" (the query is a crop of the reference);
reference_frame_in_query < FULL and query_frame_in_reference >= FULL -> "reference_in_query" (the reference
is pasted/overlaid into the query, or the query holds a larger view); both < FULL -> "partial" (the images
overlap in part); no accepted fit -> "none". A frame is the whole image, or the region box when a
:class:`~matcher.regions.region.Region` is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from matcher.config import LocalConfig
from matcher.local.alignment import DenseEvidence
from matcher.local.geometry import (
    apply_transform,
    clip_halfplane,
    clip_polygon,
    convex_hull,
    fit_geometry,
    flip_matrix,
    frame_quad,
    polygon_area,
)
from matcher.local.types import LocalFeatures
from matcher.regions.region import Region

__all__ = ["CONTAINMENTS", "FULL", "MatchesLike", "PairEvidence", "evidence_from_matches", "frame_fraction"]

FULL = 0.8  # a projected frame covering at least this fraction of the other frame counts as covering it
CONTAINMENTS = ("query_in_reference", "reference_in_query", "same_extent", "partial", "none")


class MatchesLike(Protocol):
    """Tentative matches: idx_q (K,) int32 into the query features, idx_r (K,) int32, dist (K,) float32."""

    idx_q: np.ndarray
    idx_r: np.ndarray
    dist: np.ndarray


def _list(a: np.ndarray | None, nd: int = 3) -> Any:
    return None if a is None else np.round(np.asarray(a, np.float64), nd).tolist()


@dataclass
class PairEvidence:
    """Geometric evidence for one (query, reference) pair; ``reason`` not None means "not verified, score 0".

    n_matches:  K tentative matches; n_inliers: unique inlier locations (see ``fit_geometry``)
    inlier_ratio: inlier matches / K (duplicates included on both sides)
    transform: (3, 3) nested list, original query px -> reference px; None without a fit
    query_box, reference_box: [x0, y0, x1, y1] bounding boxes of the inliers, px
    query_quad_in_reference, reference_quad_in_query: (4, 2) nested lists, the frames mapped through the fit
    query_coverage, reference_coverage: convex hull area of the inliers / frame area, in [0, 1]
    query_frame_in_reference, reference_frame_in_query: see the module docstring, in [0, 1]
    query_points, reference_points: (I, 2) float32 inlier points (px) for drawing
    detector_iou, detector_score: agreement of the matched query area with a detected picture box (evidence for
    "pasted copy" rather than "holistic picture containing the reference"); None when no detector ran
    frame_seam: seam strength along the reference frame where it lies inside the query
    (:func:`matcher.local.seam.frame_edge_strength`: ~1 = content runs on, >> 1 = a pasted picture's border); nan
    when no side of the frame lies inside the query or too little of the match is "reference inside the query"
    (``matcher.pipeline.verify.SEAM_MIN_INSIDE``); None when not measured (the pipeline measures it)
    dense: the dense alignment check of the pair (:class:`~matcher.local.alignment.DenseEvidence`: do the pictures
    agree over their whole overlap?); None when not run (the pipeline runs it where the reference's thumbnail is
    stored)
    """

    n_matches: int = 0
    n_inliers: int = 0
    inlier_ratio: float = 0.0
    transform: list[list[float]] | None = None
    query_box: list[float] | None = None
    reference_box: list[float] | None = None
    query_quad_in_reference: list[list[float]] | None = None
    reference_quad_in_query: list[list[float]] | None = None
    query_coverage: float = 0.0
    reference_coverage: float = 0.0
    query_frame_in_reference: float = 0.0
    reference_frame_in_query: float = 0.0
    mirrored: bool = False
    inverted: bool = False  # the matches come from the query's inverted descriptors (a negative of the reference)
    containment: str = "none"
    query_region: str = "full"
    reference_region: str = "full"
    reason: str | None = None
    model: str = "homography"
    rmse: float = float("nan")
    detector_iou: float | None = None  # best IoU of the inlier box in the query with a detected (YOLO) box
    detector_score: float | None = None  # that box's detector confidence; None when no detector ran
    frame_seam: float | None = None  # seam strength along the reference frame inside the query (see above)
    dense: DenseEvidence | None = None  # the dense alignment check (matcher.local.alignment); None: not run
    query_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    reference_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    @property
    def verified(self) -> bool:
        """True when a plausible transform was accepted (``reason`` is None)."""
        return self.reason is None

    def to_dict(self, points: bool = True) -> dict[str, Any]:
        """JSON-able dict (floats rounded to 1e-3 px; nan -> None); inlier points included when ``points``."""
        d: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            val = getattr(self, name)
            if name in ("query_points", "reference_points"):
                if points:
                    d[name] = _list(val)
                continue
            if name == "dense":
                d[name] = None if val is None else val.to_dict()
                continue
            if isinstance(val, float):
                val = None if np.isnan(val) else round(val, 6)
            d[name] = val
        return d


def _frame_box(feat: LocalFeatures, region: Region | str | None) -> tuple[int, int, int, int]:
    if isinstance(region, Region):
        return region.box
    w, h = feat.image_size
    return (0, 0, int(w), int(h))


def _tag(region: Region | str | None) -> str:
    if region is None:
        return "full"
    return region.tag if isinstance(region, Region) else str(region)


def _bbox(pts: np.ndarray) -> list[float]:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return [round(float(v), 3) for v in (lo[0], lo[1], hi[0], hi[1])]


def frame_fraction(transform: np.ndarray, src_frame: np.ndarray, dst_frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Map the (4, 2) ``src_frame`` through the (3, 3) ``transform``; return the (4, 2) mapped corners and the
    fraction of the axis-aligned ``dst_frame`` area covered by the mapped frame, in [0, 1].

    Only the part of the source frame in front of the transform's horizon (w > 0, with the sign of w at the
    frame corners' majority) is mapped, so frames crossing the horizon give a finite, clipped area."""
    h = np.asarray(transform, np.float64)
    quad = apply_transform(h, src_frame)
    dst_area = abs(polygon_area(dst_frame))
    w = src_frame @ h[2, :2] + h[2, 2]
    if np.sum(w > 0) < np.sum(w < 0):
        h, w = -h, -w
    if dst_area <= 0 or not np.any(w > 0):
        return quad, 0.0
    front = clip_halfplane(src_frame, h[2, 0], h[2, 1], h[2, 2] - 1e-6 * float(np.abs(w).max()))
    if len(front) < 3:
        return quad, 0.0
    lo, hi = dst_frame.min(axis=0), dst_frame.max(axis=0)
    clipped = clip_polygon(apply_transform(h, front), (lo[0], lo[1], hi[0], hi[1]))
    return quad, float(np.clip(abs(polygon_area(clipped)) / dst_area, 0.0, 1.0))


def _coverage(pts: np.ndarray, frame: np.ndarray) -> float:
    area = abs(polygon_area(frame))
    if len(pts) < 3 or area <= 0:
        return 0.0
    return float(np.clip(abs(polygon_area(convex_hull(pts))) / area, 0.0, 1.0))


def containment_of(query_frame_in_reference: float, reference_frame_in_query: float) -> str:
    """Containment label from the two frame fractions (rule in the module docstring)."""
    q_full, r_full = query_frame_in_reference >= FULL, reference_frame_in_query >= FULL
    if q_full and r_full:
        return "same_extent"
    if r_full:
        return "query_in_reference"
    if q_full:
        return "reference_in_query"
    return "partial"


def evidence_from_matches(
    feat_q: LocalFeatures,
    feat_r: LocalFeatures,
    matches: MatchesLike,
    mirrored: bool,
    config: LocalConfig,
    *,
    query_region: Region | str | None = None,
    reference_region: Region | str | None = None,
    seed: int = 0,
) -> PairEvidence:
    """Fit ``config.model`` to ``matches`` (indices into ``feat_q`` / ``feat_r``) and summarise the evidence.

    ``mirrored``: the matches come from the query's mirrored descriptors; the query keypoints are flipped
    (x -> W - 1 - x, W = query width) before fitting and the reported transform maps ORIGINAL query px to
    reference px. Keypoints must be in original image px; a :class:`Region` narrows the frame (box) used for
    the coverages, containment and the query-frame checks; a str is only recorded as the tag. The inlier
    thresholds are ``config.ransac_threshold`` times the longer side of the reference frame (forward error, in
    reference px) and of the query frame (backward error, in query px). A rejected fit keeps its transform,
    inlier count and reason; its boxes, points, coverages and frame projections are filled only with
    ``config.rejected_details`` (they cost about as much as the fit and never change the score).
    """
    idx_q = np.asarray(matches.idx_q, np.int64).reshape(-1)
    idx_r = np.asarray(matches.idx_r, np.int64).reshape(-1)
    k = len(idx_q)
    ev = PairEvidence(n_matches=k, mirrored=bool(mirrored), model=config.model,
                      query_region=_tag(query_region), reference_region=_tag(reference_region))
    if len(idx_r) != k:
        raise ValueError(f"matches have {k} query indices but {len(idx_r)} reference indices")
    if k and (idx_q.min() < 0 or idx_q.max() >= feat_q.n or idx_r.min() < 0 or idx_r.max() >= feat_r.n):
        raise ValueError(f"match indices out of range for {feat_q.n} query / {feat_r.n} reference keypoints")
    if feat_q.n == 0:
        ev.reason = "no keypoints in query"
        return ev
    if feat_r.n == 0:
        ev.reason = "no keypoints in reference"
        return ev
    if k == 0:
        ev.reason = "no matches"
        return ev

    q_box, r_box = _frame_box(feat_q, query_region), _frame_box(feat_r, reference_region)
    q_frame, r_frame = frame_quad(q_box), frame_quad(r_box)
    pts_q = feat_q.keypoints[idx_q].astype(np.float64)
    pts_r = feat_r.keypoints[idx_r].astype(np.float64)
    flip = flip_matrix(int(feat_q.image_size[0])) if mirrored else np.eye(3)
    fit_q = apply_transform(flip, pts_q) if mirrored else pts_q
    threshold = config.ransac_threshold * max(r_box[2] - r_box[0], r_box[3] - r_box[1])
    q_threshold = config.ransac_threshold * max(q_box[2] - q_box[0], q_box[3] - q_box[1])
    fit = fit_geometry(
        fit_q, pts_r, model=config.model, threshold_px=threshold, query_threshold_px=q_threshold,
        max_iters=config.ransac_iters,
        confidence=config.ransac_confidence, seed=seed, min_inliers=config.min_inliers,
        max_scale_ratio=config.max_scale_ratio, max_perspective=config.max_perspective,
        dedup_px=config.dedup_px, query_frame=apply_transform(flip, q_frame), impl=config.ransac_impl,
    )
    ev.reason, ev.n_inliers, ev.rmse = fit.reason, fit.n_inliers, fit.rmse
    ev.inlier_ratio = float(fit.inliers.sum()) / k
    if fit.transform is None:
        return ev
    h = fit.transform @ flip  # original query px -> reference px
    if h[2, 2] > 1e-12:  # w > 0 on the query frame, so this keeps its sign
        h = h / h[2, 2]
    ev.transform = _list(h, 9)
    if fit.reason is not None and not config.rejected_details:
        return ev  # boxes, points, coverages and frame projections of a rejected fit are only for inspection
    inl = fit.inliers
    if inl.any():
        ev.query_points = pts_q[inl].astype(np.float32)
        ev.reference_points = pts_r[inl].astype(np.float32)
        ev.query_box, ev.reference_box = _bbox(pts_q[inl]), _bbox(pts_r[inl])
        ev.query_coverage = _coverage(pts_q[inl], q_frame)
        ev.reference_coverage = _coverage(pts_r[inl], r_frame)
    quad_q, ev.query_frame_in_reference = frame_fraction(h, q_frame, r_frame)
    if abs(np.linalg.det(h)) > 1e-12:
        # raw inverse (no renormalisation): w stays positive on reference points imaged from the query frame
        quad_r, ev.reference_frame_in_query = frame_fraction(np.linalg.inv(h), r_frame, q_frame)
        ev.reference_quad_in_query = _list(quad_r)
    ev.query_quad_in_reference = _list(quad_q)
    if fit.reason is None:
        ev.containment = containment_of(ev.query_frame_in_reference, ev.reference_frame_in_query)
    return ev
