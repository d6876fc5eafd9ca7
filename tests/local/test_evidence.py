"""Tests for matcher.local.evidence on hand-made geometry and on real SIFT of a mirrored photo."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matcher.config import LocalConfig
from matcher.local.evidence import containment_of, evidence_from_matches
from matcher.local.geometry import apply_transform, flip_matrix
from matcher.local.matching import Matches as _Matches
from matcher.local.matching import match_mnn_ratio
from matcher.local.types import LocalFeatures
from matcher.regions.region import Region


def _features(points: np.ndarray, size: tuple[int, int], seed: int = 0) -> LocalFeatures:
    rng = np.random.default_rng(seed)
    n = len(points)
    desc = rng.normal(size=(n, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return LocalFeatures(
        keypoints=np.asarray(points, np.float32).reshape(-1, 2),
        scales=np.full(n, 4.0, np.float32),
        orientations=np.zeros(n, np.float32),
        descriptors=desc,
        image_size=size,
    )


def _pair(transform_r_to_q: np.ndarray, ref_size, query_size, n=300, outliers=60, seed=0):
    """Reference keypoints, their images in the query (kept where inside the query), plus random outlier
    matches. Returns query features, reference features, matches."""
    rng = np.random.default_rng(seed)
    rw, rh = ref_size
    qw, qh = query_size
    pr = rng.uniform([0, 0], [rw - 1, rh - 1], (n, 2))
    pq = apply_transform(transform_r_to_q, pr)
    keep = (pq[:, 0] >= 0) & (pq[:, 0] <= qw - 1) & (pq[:, 1] >= 0) & (pq[:, 1] <= qh - 1)
    pr, pq = pr[keep], pq[keep]
    oq = rng.uniform([0, 0], [qw - 1, qh - 1], (outliers, 2))
    orr = rng.uniform([0, 0], [rw - 1, rh - 1], (outliers, 2))
    fq = _features(np.concatenate([pq, oq]), query_size, seed)
    fr = _features(np.concatenate([pr, orr]), ref_size, seed + 1)
    k = len(pq) + outliers
    idx = np.arange(k, dtype=np.int32)
    perm = np.concatenate([np.arange(len(pq)), len(pq) + rng.permutation(outliers)]).astype(np.int32)
    return fq, fr, _Matches(idx, perm, np.zeros(k, np.float32))


def _scale_shift(s: float, tx: float, ty: float) -> np.ndarray:
    return np.array([[s, 0.0, tx], [0.0, s, ty], [0.0, 0.0, 1.0]])


CFG = LocalConfig()


def test_query_is_central_crop_of_reference():
    # reference 400x300; query = its central 40% (160x120 box at 120, 90) upscaled 2x -> 320x240
    r_to_q = _scale_shift(2.0, -240.0, -180.0)
    fq, fr, m = _pair(r_to_q, (400, 300), (320, 240), n=800)
    ev = evidence_from_matches(fq, fr, m, False, CFG)
    assert ev.verified, ev.reason
    assert ev.containment == "query_in_reference"
    assert ev.query_frame_in_reference == pytest.approx(0.16, abs=0.02)
    assert ev.reference_frame_in_query == pytest.approx(1.0, abs=0.02)
    assert 0.1 < ev.reference_coverage <= 0.17
    assert ev.query_coverage > 0.8
    h = np.array(ev.transform)
    assert np.allclose(apply_transform(h, [[0.0, 0.0], [319.0, 239.0]]), [[120.0, 90.0], [279.5, 209.5]], atol=0.5)
    x0, y0, x1, y1 = ev.reference_box
    assert 118 <= x0 and x1 <= 282 and 88 <= y0 and y1 <= 212
    assert ev.n_matches == len(m.idx_q)
    assert ev.query_points.shape == ev.reference_points.shape == (round(ev.inlier_ratio * ev.n_matches), 2)


def test_reference_pasted_into_bigger_query():
    # reference 400x300 scaled by 0.75 (300x225 = 30% of the query width) pasted at (500, 400) of a 1000x750 query
    r_to_q = _scale_shift(0.75, 500.0, 400.0)
    fq, fr, m = _pair(r_to_q, (400, 300), (1000, 750))
    ev = evidence_from_matches(fq, fr, m, False, CFG)
    assert ev.verified, ev.reason
    assert ev.containment == "reference_in_query"
    assert ev.reference_frame_in_query == pytest.approx(0.09, abs=0.01)
    assert ev.query_frame_in_reference == pytest.approx(1.0, abs=0.01)
    assert ev.reference_coverage > 0.8
    assert ev.query_coverage < 0.1
    quad = np.array(ev.reference_quad_in_query)
    assert np.allclose(quad.min(axis=0), [499.625, 399.625], atol=1.0)


def test_identical_images_same_extent():
    fq, fr, m = _pair(np.eye(3), (400, 300), (400, 300))
    ev = evidence_from_matches(fq, fr, m, False, CFG)
    assert ev.containment == "same_extent"
    assert ev.query_frame_in_reference > 0.99 and ev.reference_frame_in_query > 0.99
    assert np.allclose(np.array(ev.transform), np.eye(3), atol=1e-3)


def test_shifted_overlap_is_partial():
    fq, fr, m = _pair(_scale_shift(1.0, -200.0, -100.0), (400, 300), (400, 300))
    ev = evidence_from_matches(fq, fr, m, False, CFG)
    assert ev.verified, ev.reason
    assert ev.containment == "partial"
    assert ev.query_frame_in_reference == pytest.approx(200 * 200 / (400 * 300), abs=0.02)


def test_zero_matches_and_empty_features():
    fq, fr, _ = _pair(np.eye(3), (400, 300), (400, 300))
    none = _Matches(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
    ev = evidence_from_matches(fq, fr, none, False, CFG)
    assert ev.n_inliers == 0 and ev.n_matches == 0
    assert ev.reason == "no matches" and not ev.verified and ev.containment == "none"
    ev = evidence_from_matches(LocalFeatures.empty(400, 300), fr, none, False, CFG)
    assert ev.reason == "no keypoints in query"
    ev = evidence_from_matches(fq, LocalFeatures.empty(400, 300), none, False, CFG)
    assert ev.reason == "no keypoints in reference"
    three = _Matches(np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int32), np.zeros(3, np.float32))
    ev = evidence_from_matches(fq, fr, three, False, CFG)
    assert ev.reason.startswith("too few matches") and ev.n_inliers == 0


def test_out_of_range_indices_raise():
    fq, fr, _ = _pair(np.eye(3), (400, 300), (400, 300))
    bad = _Matches(np.array([0, fq.n], np.int32), np.array([0, 1], np.int32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="out of range"):
        evidence_from_matches(fq, fr, bad, False, CFG)


def test_collinear_matches_rejected():
    t = np.linspace(10, 380, 40)
    pts = np.stack([t, 0.5 * t + 20], axis=1)
    fq, fr = _features(pts, (400, 300)), _features(pts + [3.0, 2.0], (400, 300))
    idx = np.arange(40, dtype=np.int32)
    ev = evidence_from_matches(fq, fr, _Matches(idx, idx, np.zeros(40, np.float32)), False, CFG)
    assert ev.reason == "degenerate: collinear inliers"
    assert ev.containment == "none" and not ev.verified


def test_duplicate_keypoints_do_not_inflate_inliers():
    fq, fr, m = _pair(np.eye(3), (400, 300), (400, 300), n=100, outliers=10)
    base = evidence_from_matches(fq, fr, m, False, CFG)
    # every keypoint twice (SIFT's second orientation), every match twice
    fq2 = fq.subset(np.repeat(np.arange(fq.n), 2))
    fr2 = fr.subset(np.repeat(np.arange(fr.n), 2))
    m2 = _Matches(np.concatenate([2 * m.idx_q, 2 * m.idx_q + 1]), np.concatenate([2 * m.idx_r, 2 * m.idx_r + 1]),
                  np.concatenate([m.dist, m.dist]))
    dup = evidence_from_matches(fq2, fr2, m2, False, CFG)
    assert dup.n_matches == 2 * base.n_matches
    assert dup.n_inliers == base.n_inliers


def test_mirrored_hand_made():
    # query = horizontal mirror of the reference's left-top 300x200 part, scaled 1.5x
    w_q = 450
    ref_to_crop = _scale_shift(1.5, 0.0, 0.0)
    r_to_q = flip_matrix(w_q) @ ref_to_crop
    fq, fr, m = _pair(r_to_q, (400, 300), (w_q, 300), n=400)
    ev = evidence_from_matches(fq, fr, m, True, CFG)
    assert ev.verified, ev.reason and ev.mirrored
    h = np.array(ev.transform)
    assert np.linalg.det(h[:2, :2]) < 0
    pr = np.array([[10.0, 10.0], [250.0, 150.0], [100.0, 190.0]])
    assert np.allclose(apply_transform(h, apply_transform(r_to_q, pr)), pr, atol=0.5)
    assert ev.containment == "query_in_reference"
    # the same matches taken as plain (unmirrored) matches cannot be verified
    assert not evidence_from_matches(fq, fr, m, False, CFG).verified


def test_region_frame_and_tags():
    # query = central crop of the reference; described by a query Region covering the reference crop area
    r_to_q = _scale_shift(1.0, -100.0, -75.0)
    fq, fr, m = _pair(r_to_q, (400, 300), (200, 150))
    region = Region("grid2:r0c0", (100, 75, 300, 225))
    ev = evidence_from_matches(fq, fr, m, False, CFG, query_region="center", reference_region=region)
    assert ev.query_region == "center" and ev.reference_region == "grid2:r0c0"
    assert ev.containment == "same_extent"
    assert ev.reference_coverage > 0.8


def test_to_dict_is_json():
    fq, fr, m = _pair(np.eye(3), (400, 300), (400, 300), n=50, outliers=5)
    ev = evidence_from_matches(fq, fr, m, False, CFG)
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["containment"] == "same_extent" and len(d["query_points"]) == len(ev.query_points)
    assert "query_points" not in ev.to_dict(points=False)
    none = _Matches(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
    d = json.loads(json.dumps(evidence_from_matches(fq, fr, none, False, CFG).to_dict()))
    assert d["rmse"] is None and d["transform"] is None


def test_containment_rule():
    assert containment_of(0.9, 0.95) == "same_extent"
    assert containment_of(0.2, 0.95) == "query_in_reference"
    assert containment_of(0.95, 0.1) == "reference_in_query"
    assert containment_of(0.3, 0.3) == "partial"


def test_mirrored_real_sift():
    skimage_data = pytest.importorskip("skimage.data")
    from matcher.local.features import EXTRACTORS, with_mirrored

    extractor = EXTRACTORS.create("sift", max_keypoints=600)
    ref = skimage_data.astronaut()  # 512x512
    query = np.ascontiguousarray(ref[:, ::-1][60:420, 40:480])  # mirror, then crop 440x360 at (40, 60)
    fr = extractor.extract(ref)
    fq = with_mirrored(extractor.extract(query))
    ev = evidence_from_matches(fq, fr, match_mnn_ratio(fq.mirrored, fr.descriptors), True, CFG)
    assert ev.verified, ev.reason
    assert ev.n_inliers >= 50
    h = np.array(ev.transform)
    assert np.linalg.det(h[:2, :2]) < 0
    # query pixel (x, y) is mirrored pixel (x + 40, y + 60), i.e. reference pixel (511 - 40 - x, y + 60)
    pq = np.array([[0.0, 0.0], [439.0, 0.0], [200.0, 300.0]])
    expect = np.stack([471.0 - pq[:, 0], pq[:, 1] + 60.0], axis=1)
    assert np.abs(apply_transform(h, pq) - expect).max() < 2.0
    assert ev.containment == "query_in_reference"
    plain = evidence_from_matches(fq, fr, match_mnn_ratio(fq.descriptors, fr.descriptors), False, CFG)
    assert plain.n_inliers < ev.n_inliers / 4


def test_rejected_fit_details_only_on_request():
    rng = np.random.default_rng(21)
    fq = _features(rng.uniform(0, 399, (80, 2)), (400, 300), seed=1)
    fr = _features(rng.uniform(0, 399, (80, 2)), (400, 300), seed=2)
    idx = np.arange(80, dtype=np.int32)
    m = _Matches(idx, rng.permutation(80).astype(np.int32), np.zeros(80, np.float32))  # chance matches
    lean = evidence_from_matches(fq, fr, m, False, CFG)
    full = evidence_from_matches(fq, fr, m, False, LocalConfig(rejected_details=True))
    assert not lean.verified and lean.reason == full.reason and lean.reason.startswith("too few inliers")
    assert lean.transform is not None and lean.transform == full.transform
    assert (lean.n_inliers, lean.inlier_ratio) == (full.n_inliers, full.inlier_ratio)
    assert lean.query_quad_in_reference is None and lean.query_box is None and len(lean.query_points) == 0
    assert full.query_quad_in_reference is not None and full.query_box is not None and len(full.query_points) > 0
