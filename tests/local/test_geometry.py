"""Tests for matcher.local.geometry: robust fitting, determinism, degenerate cases, polygon helpers."""
from __future__ import annotations

import numpy as np
import pytest

from matcher.local.geometry import (
    apply_transform,
    clip_polygon,
    convex_hull,
    fit_geometry,
    flip_matrix,
    frame_quad,
    polygon_area,
    unique_count,
)

H_TRUE = np.array([[0.8, 0.1, 30.0], [-0.05, 0.9, 20.0], [1e-4, -2e-4, 1.0]])


def _noisy(transform: np.ndarray, k: int, outlier_frac: float, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 500, (k, 2))
    r = apply_transform(transform, q) + rng.normal(0, noise, (k, 2))
    out = rng.random(k) < outlier_frac
    r[out] = rng.uniform(0, 500, (int(out.sum()), 2))
    return q, r, ~out


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def test_homography_recovered_with_60_percent_outliers():
    q, r, true_inl = _noisy(H_TRUE, 300, 0.6, seed=1)
    fit = fit_geometry(q, r, model="homography", threshold_px=5.0, seed=0)
    assert fit.ok, fit.reason
    err = np.linalg.norm(apply_transform(fit.transform, q[true_inl]) - apply_transform(H_TRUE, q[true_inl]), axis=1)
    assert err.max() < 1.5
    assert np.mean(fit.inliers == true_inl) > 0.97
    assert abs(fit.n_inliers - true_inl.sum()) <= 0.05 * true_inl.sum()
    assert fit.transform[2, 2] == pytest.approx(1.0)
    assert fit.rmse < 1.5


@pytest.mark.parametrize("model", ["affine", "similarity"])
def test_simpler_models_recover_a_similarity(model):
    t = _similarity(0.7, 25.0, 40.0, -10.0)
    q, r, true_inl = _noisy(t, 200, 0.6, seed=2)
    fit = fit_geometry(q, r, model=model, threshold_px=4.0, seed=0)
    assert fit.ok, fit.reason
    assert fit.model == model
    err = np.linalg.norm(apply_transform(fit.transform, q[true_inl]) - apply_transform(t, q[true_inl]), axis=1)
    assert err.max() < 1.5
    assert np.mean(fit.inliers == true_inl) > 0.97


def test_deterministic_for_a_seed():
    q, r, _ = _noisy(H_TRUE, 150, 0.7, seed=3)
    a = fit_geometry(q, r, threshold_px=5.0, seed=7)
    b = fit_geometry(q, r, threshold_px=5.0, seed=7)
    assert np.array_equal(a.transform, b.transform)
    assert np.array_equal(a.inliers, b.inliers)
    assert a.n_inliers == b.n_inliers


@pytest.mark.parametrize("model,k", [("homography", 3), ("affine", 2), ("similarity", 1), ("homography", 0)])
def test_too_few_matches(model, k):
    q = np.arange(2 * k, dtype=float).reshape(k, 2) * 10
    fit = fit_geometry(q, q + 1, model=model, threshold_px=3.0)
    assert not fit.ok and fit.transform is None
    assert fit.reason.startswith("too few matches")
    assert fit.inliers.shape == (k,) and fit.n_inliers == 0


@pytest.mark.parametrize("model", ["homography", "affine"])
def test_collinear_points_rejected(model):
    rng = np.random.default_rng(4)
    t = rng.uniform(0, 400, 40)
    q = np.stack([t, 0.5 * t + 10], axis=1)
    r = q * 1.1 + 5
    fit = fit_geometry(q, r, model=model, threshold_px=3.0)
    assert fit.reason == "degenerate: collinear inliers"


@pytest.mark.parametrize("model", ["homography", "affine"])
def test_collinear_inliers_among_outliers_rejected(model):
    """A line of correct matches plus random outliers: a model through the line and s - 2 outliers fits
    exactly, but the support is degenerate."""
    rng = np.random.default_rng(5)
    t = rng.uniform(0, 400, 30)
    q_line = np.stack([t, 0.3 * t + 50], axis=1)
    q_out = rng.uniform(0, 400, (6, 2))
    q = np.concatenate([q_line, q_out])
    r = np.concatenate([q_line + [10.0, 5.0], rng.uniform(0, 400, (6, 2))])
    fit = fit_geometry(q, r, model=model, threshold_px=2.0)
    assert fit.reason == "degenerate: collinear inliers"


def test_points_almost_identical_rejected():
    rng = np.random.default_rng(6)
    q = 200 + rng.uniform(0, 0.4, (20, 2))
    r = 100 + rng.uniform(0, 0.4, (20, 2))
    fit = fit_geometry(q, r, threshold_px=3.0)
    assert fit.reason == "degenerate: points almost identical"


@pytest.mark.parametrize("scale", [20.0, 1.0 / 20.0])
def test_extreme_scale_rejected(scale):
    rng = np.random.default_rng(7)
    q = rng.uniform(0, 300, (60, 2))
    r = q * scale + 3.0
    fit = fit_geometry(q, r, model="similarity", threshold_px=0.5 * max(scale, 1.0), max_scale_ratio=12.0)
    assert fit.reason == "degenerate: extreme scale"
    ok = fit_geometry(q, r, model="similarity", threshold_px=0.5 * max(scale, 1.0), max_scale_ratio=30.0)
    assert ok.ok, ok.reason


def test_extreme_perspective_rejected():
    h = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [4e-3, 0.0, 1.0]])  # w from 1 to 3 across the frame
    rng = np.random.default_rng(8)
    q = rng.uniform(0, 500, (80, 2))
    r = apply_transform(h, q)
    frame = frame_quad((0, 0, 500, 500))
    fit = fit_geometry(q, r, threshold_px=0.5, query_frame=frame, max_perspective=2.0)
    assert fit.reason == "degenerate: extreme perspective"
    fit = fit_geometry(q, r, threshold_px=0.5, query_frame=frame, max_perspective=4.0)
    assert fit.ok, fit.reason


def test_reflection_rejected_unless_allowed():
    rng = np.random.default_rng(9)
    q = rng.uniform(0, 300, (50, 2))
    flip = flip_matrix(300)
    r = apply_transform(flip, q) + [20.0, 10.0]
    fit = fit_geometry(q, r, model="affine", threshold_px=2.0)
    assert not fit.ok
    fit = fit_geometry(q, r, model="affine", threshold_px=2.0, allow_reflection=True)
    assert fit.ok, fit.reason
    assert np.linalg.det(fit.transform[:2, :2]) < 0
    assert np.allclose(apply_transform(fit.transform, q), r, atol=1e-6)


def test_duplicate_locations_counted_once():
    rng = np.random.default_rng(10)
    base_q = rng.uniform(0, 400, (5, 2))
    t = _similarity(1.0, 10.0, 5.0, 5.0)
    base_r = apply_transform(t, base_q)
    q = np.repeat(base_q, 4, axis=0)  # 4 orientations per location, all matched
    r = np.repeat(base_r, 4, axis=0)
    fit = fit_geometry(q, r, model="similarity", threshold_px=2.0, min_inliers=5)
    assert fit.ok, fit.reason
    assert fit.inliers.sum() == 20
    assert fit.n_inliers == 5
    fit = fit_geometry(q, r, model="similarity", threshold_px=2.0, min_inliers=6)
    assert fit.reason == "too few matches: 5 unique locations < 6"
    # 5 true locations (4 duplicates each) + 3 outliers: at most 5 unique inliers, so rejected
    q2 = np.concatenate([q, rng.uniform(0, 400, (3, 2))])
    r2 = np.concatenate([r, rng.uniform(0, 400, (3, 2))])
    fit = fit_geometry(q2, r2, model="similarity", threshold_px=2.0, min_inliers=6)
    assert fit.reason == "too few inliers: 5 < 6" and fit.inliers.sum() == 20


def test_random_matches_not_verified():
    rng = np.random.default_rng(11)
    q, r = rng.uniform(0, 500, (100, 2)), rng.uniform(0, 500, (100, 2))
    assert not fit_geometry(q, r, threshold_px=10.0, seed=0).ok


def test_bad_arguments():
    q = np.zeros((5, 2))
    with pytest.raises(ValueError, match="unknown geometric model"):
        fit_geometry(q, q, model="cubic", threshold_px=1.0)
    with pytest.raises(ValueError, match="differ in length"):
        fit_geometry(q, q[:4], threshold_px=1.0)
    with pytest.raises(ValueError, match="thresholds must be"):
        fit_geometry(q, q, threshold_px=0.0)


def test_polygon_helpers():
    square = frame_quad((0, 0, 10, 10))  # spans [-0.5, 9.5]
    assert polygon_area(square) == pytest.approx(100.0)
    clipped = clip_polygon(square, (4.5, -10.0, 100.0, 100.0))
    assert abs(polygon_area(clipped)) == pytest.approx(50.0)
    assert len(clip_polygon(square, (20.0, 20.0, 30.0, 30.0))) == 0
    rng = np.random.default_rng(12)
    pts = np.concatenate([square, rng.uniform(0, 9, (50, 2))])
    assert abs(polygon_area(convex_hull(pts))) == pytest.approx(100.0)
    assert len(convex_hull(np.array([[1.0, 1.0], [2.0, 2.0]]))) == 2
    assert unique_count(np.array([[1.1, 1.2], [1.3, 1.4], [5.0, 5.0]]), 1.0) == 2
    f = flip_matrix(100)
    assert np.allclose(apply_transform(f, [[0.0, 3.0], [99.0, 4.0]]), [[99.0, 3.0], [0.0, 4.0]])
    assert np.allclose(f @ f, np.eye(3))
