"""Numba RANSAC kernels (matcher.local.kernels) against the numpy reference in matcher.local.geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from matcher.local import geometry as G
from matcher.local import kernels

MODELS = ("homography", "affine", "similarity")
H_TRUE = np.array([[0.8, 0.1, 30.0], [-0.05, 0.9, 20.0], [1e-4, -2e-4, 1.0]])


def _model_transform(model: str) -> np.ndarray:
    if model == "homography":
        return H_TRUE
    if model == "affine":
        return np.array([[0.9, 0.2, 15.0], [-0.1, 1.1, -5.0], [0.0, 0.0, 1.0]])
    a = np.deg2rad(20.0)
    return np.array([[0.7 * np.cos(a), -0.7 * np.sin(a), 40.0], [0.7 * np.sin(a), 0.7 * np.cos(a), -10.0],
                     [0.0, 0.0, 1.0]])


def _noisy(t: np.ndarray, k: int, outlier_frac: float, seed: int, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 500, (k, 2))
    r = G.apply_transform(t, q) + rng.normal(0, noise, (k, 2))
    out = rng.random(k) < outlier_frac
    r[out] = rng.uniform(0, 500, (int(out.sum()), 2))
    return q, r, ~out


def test_sampler_is_deterministic_and_draws_distinct_indices() -> None:
    s1 = np.array([kernels.rng_seed(7)], np.uint64)
    s2 = np.array([kernels.rng_seed(7)], np.uint64)
    assert kernels.rng_seed(0) != 0 and kernels.rng_seed(7) != kernels.rng_seed(8)
    counts = np.zeros(10, np.int64)
    for _ in range(2000):
        a, b = np.empty(4, np.int64), np.empty(4, np.int64)
        kernels.draw_sample(s1, 10, a)
        kernels.draw_sample(s2, 10, b)
        assert np.array_equal(a, b) and len(set(a.tolist())) == 4 and a.min() >= 0 and a.max() < 10
        counts[a] += 1
    assert counts.min() > 0.8 * counts.mean()  # roughly uniform
    full = np.empty(3, np.int64)
    kernels.draw_sample(s1, 3, full)  # n == s: a permutation
    assert sorted(full.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("model", MODELS)
def test_minimal_solver_and_sample_check_match_numpy(model: str) -> None:
    rng = np.random.default_rng(1)
    s, mid = G.MIN_SAMPLE[model], G.MODEL_IDS[model]
    qn = rng.normal(size=(40, 2))
    rn = rng.normal(size=(40, 2))
    rn[:3] = qn[:3] * [-1.0, 1.0]  # mirrored triple: inconsistent orientation unless reflections are allowed
    rn[5:8] = qn[5:8]  # identical points
    qn[10:14] = [[0, 0], [1, 1], [2, 2], [3, 3.0000001]]  # collinear (area ~ 0)
    h = np.empty((3, 3))
    work = np.empty((4, 3, 3))
    idx_all = np.array([rng.choice(40, s, replace=False) for _ in range(300)]
                       + [np.arange(s), np.arange(5, 5 + s), np.arange(10, 10 + s)])
    for reflect in (False, True):
        ok_np = G._sample_ok(model, qn[idx_all], rn[idx_all], reflect)
        for i, idx in enumerate(idx_all):
            assert kernels.sample_ok(mid, qn, rn, np.ascontiguousarray(idx), reflect) == ok_np[i]
    for idx in idx_all[:100]:
        want = G._minimal(model, qn[idx][None], rn[idx][None])[0]
        kernels.minimal_solve(mid, qn, rn, np.ascontiguousarray(idx), h, work)
        if not np.all(np.isfinite(want)) or abs(want[2, 2]) < 1e-9:
            continue
        np.testing.assert_allclose(h / h[2, 2], want / want[2, 2], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(G.apply_transform(h, qn[idx]), rn[idx], atol=1e-6)  # exact on its sample


@pytest.mark.parametrize("model", MODELS)
def test_msac_loss_and_least_squares_match_numpy(model: str) -> None:
    t = _model_transform(model)
    q, r, inl = _noisy(t, 60, 0.3, seed=2)
    thr, back = 4.0, 0.8
    err = np.empty(len(q))
    inv = np.empty((3, 3))
    e_np = G._errors(t[None], q, r, back)[0]
    loss = kernels.msac_loss(np.ascontiguousarray(t), q, r, thr, back, np.inf, err, inv)
    assert loss == pytest.approx(float(np.sum(np.minimum(e_np, thr) ** 2)), rel=1e-12)
    np.testing.assert_array_equal(err < thr, e_np < thr)
    np.testing.assert_allclose(err[e_np < thr], e_np[e_np < thr], rtol=1e-12)
    # an early stop returns a value >= the bound once the partial sum reaches it
    assert kernels.msac_loss(np.ascontiguousarray(t), q, r, thr, back, 1.0, err, inv) >= 1.0
    # least squares on the inliers (normalised coordinates, as the LO does)
    tq, tr = G._normaliser(q[inl]), G._normaliser(r[inl])
    qs, rs = G._transform_pts(tq, q[inl]), G._transform_pts(tr, r[inl])
    h = np.empty((3, 3))
    assert kernels.least_squares(G.MODEL_IDS[model], qs, rs, h)
    want = G._least_squares(model, qs, rs)
    np.testing.assert_allclose(h / h[2, 2], want / want[2, 2], rtol=1e-6, atol=1e-9)
    # degenerate: every point the same -> no fit
    same = np.zeros((6, 2))
    assert not kernels.least_squares(G.MODEL_IDS[model], same, same, h)


@pytest.mark.parametrize("model", MODELS)
def test_numba_fit_agrees_with_numpy_reference(model: str) -> None:
    t = _model_transform(model)
    for seed in range(3):
        q, r, true_inl = _noisy(t, 150, 0.6, seed=10 + seed)
        got = G.fit_geometry(q, r, model=model, threshold_px=4.0, seed=seed)
        ref = G.fit_geometry(q, r, model=model, threshold_px=4.0, seed=seed, impl="numpy")
        assert got.ok and ref.ok, (got.reason, ref.reason)
        assert np.mean(got.inliers == ref.inliers) > 0.98
        assert abs(got.n_inliers - ref.n_inliers) <= 2
        mapped = G.apply_transform(got.transform, q[true_inl])
        err = np.linalg.norm(mapped - G.apply_transform(t, q[true_inl]), axis=1)
        assert err.max() < 1.5 and got.rmse < 1.5


def test_numba_fit_is_deterministic_per_seed() -> None:
    q, r, _ = _noisy(H_TRUE, 120, 0.75, seed=20)
    a = G.fit_geometry(q, r, threshold_px=5.0, seed=3)
    b = G.fit_geometry(q, r, threshold_px=5.0, seed=3)
    assert np.array_equal(a.transform, b.transform) and np.array_equal(a.inliers, b.inliers)


def test_kernel_edge_cases() -> None:
    out = np.empty((3, 3))
    # exactly a minimal sample of an exact similarity: found after the few possible draws, all inliers
    q = np.array([[10.0, 20.0], [200.0, 50.0]])
    r = q * 0.5 + 3.0
    found, draws, count = kernels.ransac(2, q, r, 1.0, 1.0, 64, 0.999, 0, False, out)
    assert found and count == 2 and draws >= 1
    np.testing.assert_allclose(G.apply_transform(out, q), r, atol=1e-9)
    # a perfect homography stops after one draw (every sample is all-inlier)
    q4 = np.random.default_rng(5).uniform(0, 300, (30, 2))
    found, draws, count = kernels.ransac(0, q4, G.apply_transform(H_TRUE, q4), 1.0, 1.0, 2000, 0.999, 0, False, out)
    assert found and count == 30 and draws == 1
    # all samples degenerate (identical points): nothing found
    same = np.zeros((8, 2))
    found, draws, count = kernels.ransac(0, same, same, 1.0, 1.0, 100, 0.999, 0, False, out)
    assert not found and draws == 100 and count == 0


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("k", [0, 1])
def test_empty_and_single_point(impl: str, k: int) -> None:
    q = np.zeros((k, 2)) + 5.0
    fit = G.fit_geometry(q, q, threshold_px=2.0, model="similarity", impl=impl)
    assert not fit.ok and fit.transform is None and fit.inliers.shape == (k,)
    assert fit.reason == f"too few matches: {k} < 2 for similarity"


def test_random_matches_rejected_and_unknown_impl() -> None:
    rng = np.random.default_rng(11)
    q, r = rng.uniform(0, 500, (60, 2)), rng.uniform(0, 500, (60, 2))
    fit = G.fit_geometry(q, r, threshold_px=10.0)
    assert not fit.ok and fit.reason.startswith(("too few inliers", "degenerate"))
    with pytest.raises(ValueError, match="unknown RANSAC implementation"):
        G.fit_geometry(q, r, threshold_px=10.0, impl="cuda")
    assert math.isfinite(G.fit_geometry(q[:10], q[:10] + 1.0, threshold_px=2.0).rmse)
