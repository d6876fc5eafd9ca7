"""Mirror-split matching (plain + mirrored similarities from two half-width GEMMs) against the direct path and the
plain-numpy reference; the BLAS thread limit; the split path inside verify_query."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from matcher.config import LocalConfig
from matcher.local import kernels
from matcher.local.features import MIRROR_PERMUTATION, create_extractor
from matcher.local.matching import (
    Matches,
    MatchingInputError,
    _openblas,
    _select_numpy,
    blas_threads,
    match_one_to_many,
    match_one_to_many_split,
    mirror_split,
)
from matcher.local.score import LocalScoreModel
from matcher.local.verify import QueryFeatures, ReferenceBank, verify_query
from matcher.regions.region import Region

P = MIRROR_PERMUTATION
D = P.size


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sift_like(seed: int, n: int, sizes: list[int]):
    """Non-negative unit descriptors (like RootSIFT); some references hold noisy copies of query descriptors,
    others of their mirrors, so both plain and mirrored matches exist."""
    rng = np.random.default_rng(seed)
    q = _unit(rng.random((n, D)) ** 3) if n else np.zeros((0, D), np.float32)
    refs = []
    for i, m in enumerate(sizes):
        r = _unit(rng.random((m, D)) ** 3) if m else np.zeros((0, D), np.float32)
        k = min(m, n // 3)
        if k:
            src = q[rng.choice(n, k, replace=False)]
            src = src[:, P] if i % 2 else src
            r[rng.choice(m, k, replace=False)] = _unit(src + 0.05 * rng.random((k, D)))
        refs.append(r)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return q, np.concatenate(refs), offsets


def _same(a: Matches, b: Matches) -> None:
    np.testing.assert_array_equal(a.idx_q, b.idx_q)
    np.testing.assert_array_equal(a.idx_r, b.idx_r)
    np.testing.assert_allclose(a.dist, b.dist, atol=2e-5)  # sqrt(2 - 2 sim) amplifies ~1e-7 sim rounding


def test_split_is_an_orthogonal_change_of_basis() -> None:
    q, ref, _ = _sift_like(0, 40, [30])
    qs, qa = mirror_split(q, P)
    rs, ra = mirror_split(ref, P)
    assert qs.dtype == qa.dtype == np.float32 and qs.shape == qa.shape == (40, D // 2)  # no fixed bins in SIFT
    np.testing.assert_allclose(qs @ rs.T + qa @ ra.T, q @ ref.T, atol=2e-6)
    np.testing.assert_allclose(qs @ rs.T - qa @ ra.T, q[:, P] @ ref.T, atol=2e-6)
    np.testing.assert_allclose(np.sum(qs**2, 1) + np.sum(qa**2, 1), 1.0, atol=2e-6)
    # a permutation with fixed points: the fixed bins go to the symmetric half
    perm = np.array([1, 0, 2, 4, 3, 5])
    x = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    xs, xa = mirror_split(x, perm)
    assert xs.shape == (5, 4) and xa.shape == (5, 2)
    np.testing.assert_allclose(xs @ xs.T + xa @ xa.T, x @ x.T, atol=1e-6)
    np.testing.assert_allclose(xs @ xs.T - xa @ xa.T, x[:, perm] @ x.T, atol=1e-6)


def test_split_equals_direct_plain_and_mirrored_matching() -> None:
    q, ref, offsets = _sift_like(2, 300, [120, 0, 200, 1, 90, 150])
    direct = match_one_to_many(q, ref, offsets, mirrored=q[:, P])
    split = match_one_to_many_split(*mirror_split(q, P), *mirror_split(ref, P), offsets)
    assert split.mirrored is not None
    for a, b in ((split.plain, direct.plain), (split.mirrored, direct.mirrored)):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        for r in range(len(a)):
            _same(a[r], b[r])
    counts = split.plain.counts()
    assert counts[0] > 20 and split.mirrored.counts()[5] > 20  # planted plain / mirrored copies are found


def _dyadic(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Small multiples of 1/8 with many zeros: every product and partial sum is exact in float32, so any GEMM
    order gives bit-identical similarities and exact ties occur often."""
    x = rng.integers(-2, 3, shape).astype(np.float32) / 8
    x[rng.random(shape) < 0.6] = 0.0
    return x


@pytest.mark.parametrize("ratio,mutual", [(0.85, True), (1.0, False), (0.6, True)])
def test_split_kernel_equals_numpy_reference_exactly(ratio: float, mutual: bool) -> None:
    rng = np.random.default_rng(3)
    sizes = [0, 1, 7, 25, 3, 40]
    n = 23
    qs, qa = _dyadic(rng, (n, 5)), _dyadic(rng, (n, 4))
    rs, ra = _dyadic(rng, (sum(sizes), 5)), _dyadic(rng, (sum(sizes), 4))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    for chunk_bytes in (1, 4 * 2 * n * 30, 1 << 20):  # one reference per chunk, a few, all
        res = match_one_to_many_split(qs, qa, rs, ra, offsets, ratio=ratio, mutual=mutual, chunk_bytes=chunk_bytes)
        for batch, sign in ((res.plain, 1.0), (res.mirrored, -1.0)):
            for r in range(len(sizes)):
                a, b = offsets[r], offsets[r + 1]
                sim = (qs @ rs[a:b].T + np.float32(sign) * (qa @ ra[a:b].T)).astype(np.float32)
                want = _select_numpy(sim, ratio, mutual) if b > a else Matches.empty()
                got = batch[r]
                np.testing.assert_array_equal(got.idx_q, want.idx_q)
                np.testing.assert_array_equal(got.idx_r, want.idx_r)
                np.testing.assert_array_equal(got.dist, want.dist)


def test_parallel_split_kernel_equals_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    q, ref, offsets = _sift_like(4, 60, [30, 0, 45, 20])
    args = (*mirror_split(q, P), *mirror_split(ref, P), offsets)
    serial = match_one_to_many_split(*args)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMS", 0)
    par = match_one_to_many_split(*args)
    for a, b in ((par.plain, serial.plain), (par.mirrored, serial.mirrored)):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.idx_q, b.idx_q)
        np.testing.assert_array_equal(a.idx_r, b.idx_r)
        np.testing.assert_array_equal(a.dist, b.dist)


def test_split_empty_inputs_and_bad_inputs() -> None:
    q, ref, offsets = _sift_like(5, 10, [8, 6])
    qs, qa = mirror_split(q, P)
    rs, ra = mirror_split(ref, P)
    empty = match_one_to_many_split(qs[:0], qa[:0], rs, ra, offsets)
    assert len(empty.plain) == 2 and empty.plain.counts().sum() == 0 and empty.mirrored.counts().sum() == 0
    none = match_one_to_many_split(qs, qa, rs[:0], ra[:0], np.array([0, 0], np.int64))
    assert len(none.mirrored) == 1 and len(none.mirrored[0]) == 0
    one = match_one_to_many_split(qs[:1], qa[:1], rs, ra, offsets)  # a single query descriptor
    assert one.plain.counts().sum() + one.mirrored.counts().sum() <= 2
    with pytest.raises(MatchingInputError, match="involution"):
        mirror_split(q, np.roll(np.arange(D), 1))
    with pytest.raises(MatchingInputError, match="differ in length"):
        match_one_to_many_split(qs, qa[:5], rs, ra, offsets)
    with pytest.raises(MatchingInputError, match="descriptor length"):
        match_one_to_many_split(qs, qa, rs[:, :10], ra, offsets)
    with pytest.raises(MatchingInputError, match="ref_offsets"):
        match_one_to_many_split(qs, qa, rs, ra, np.array([0, 3], np.int64))


def test_blas_threads_is_restored() -> None:
    fns = _openblas()
    if fns is None:  # not numpy's OpenBLAS on this platform: the context manager is a no-op
        with blas_threads(1):
            pass
        return
    get, _ = fns
    before = get()
    with blas_threads(1):
        assert get() == 1
    assert get() == before
    with blas_threads(0):  # 0 leaves the library default
        assert get() == before


def _photo_features():
    """SIFT features of a photo and of its mirrored central crop (a flipped copy)."""
    cfg = LocalConfig(max_keypoints=400)
    ext = create_extractor(cfg)
    img = skimage.data.astronaut()
    ref = ext.extract(img)
    crop = np.ascontiguousarray(img[64:448, 48:464][:, ::-1])
    query = ext.extract(crop)
    other = ext.extract(skimage.data.coffee())
    return cfg, query, ref, other


def test_verify_query_split_path_equals_direct_path() -> None:
    cfg, query, ref, other = _photo_features()
    assert query.mirrored is not None and np.array_equal(query.mirrored, query.descriptors[:, P])
    w, h = query.image_size
    qf = QueryFeatures([Region("full", (0, 0, w, h))], [query])
    bank = ReferenceBank.build(["photo", "other"], [ref, other])
    model = LocalScoreModel()
    split = verify_query(qf, bank, cfg, model)
    direct = verify_query(qf, bank, LocalConfig(max_keypoints=400, mirror_split=False, blas_threads=0), model)
    assert 0 in split and split[0][1].verified and split[0][1].mirrored and split[0][0] > 0.5
    assert split.keys() == direct.keys()
    for r in split:
        (s1, e1), (s2, e2) = split[r], direct[r]
        assert e1.n_matches == e2.n_matches and e1.mirrored == e2.mirrored and e1.n_inliers == e2.n_inliers
        assert s1 == pytest.approx(s2, abs=1e-9)


def test_verify_query_falls_back_when_mirrored_is_not_the_permutation() -> None:
    cfg, query, ref, _ = _photo_features()
    odd = type(query)(query.keypoints, query.scales, query.orientations, query.descriptors, query.image_size,
                      mirrored=query.descriptors[:, ::-1].copy())  # not SIFT's bin permutation
    w, h = odd.image_size
    bank = ReferenceBank.build(["photo"], [ref])
    got = verify_query(QueryFeatures([Region("full", (0, 0, w, h))], [odd]), bank, cfg, LocalScoreModel())
    want = match_one_to_many(odd.descriptors, bank.descriptors, bank.offsets, ratio=cfg.ratio,
                             mirrored=odd.mirrored)
    n_want = max(len(want.plain[0]), len(want.mirrored[0]))
    assert (got[0][1].n_matches if 0 in got else 0) == (n_want if n_want >= cfg.min_inliers else 0)
