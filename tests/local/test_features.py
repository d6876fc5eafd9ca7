"""Local feature extraction: types, OpenCV SIFT / kornia SIFT extractors, mirrored descriptors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage import data

from matcher.config import LocalConfig
from matcher.local.features import (
    EXTRACTORS,
    INVERT_PERMUTATION,
    MIRROR_PERMUTATION,
    LocalFeatureExtractor,
    create_extractor,
    create_sift,
    invert_sift_descriptors,
    mirror_sift_descriptors,
    prepare_gray,
    rootsift,
    to_gray,
    with_mirrored,
)
from matcher.local.types import LocalFeatures
from matcher.registry import UnknownNameError


@pytest.fixture(scope="module")
def sift():
    return EXTRACTORS.create("sift")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _check_valid(f: LocalFeatures, width: int, height: int) -> None:
    n = f.n
    assert f.image_size == (width, height)
    assert f.keypoints.shape == (n, 2) and f.keypoints.dtype == np.float32
    assert f.scales.shape == (n,) and f.scales.dtype == np.float32
    assert f.orientations.shape == (n,) and f.orientations.dtype == np.float32
    assert f.descriptors.shape == (n, 128) and f.descriptors.dtype == np.float32
    if n:
        assert np.all(f.keypoints >= 0) and np.all(f.keypoints[:, 0] <= width - 1)
        assert np.all(f.keypoints[:, 1] <= height - 1)
        assert np.all(f.scales > 0)
        assert np.all((f.orientations >= 0) & (f.orientations < 360))
        np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
        assert np.all(f.descriptors >= 0)
    if f.mirrored is not None:
        assert f.mirrored.shape == f.descriptors.shape and f.mirrored.dtype == np.float32


def _mnn_ratio(a: np.ndarray, b: np.ndarray, ratio: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours passing the ratio test on L2 distances (unit descriptors)."""
    d = np.sqrt(np.maximum(2.0 - 2.0 * a @ b.T, 0.0))
    nn = d.argmin(1)
    part = np.partition(d, 1, axis=1)
    ok = part[:, 0] < ratio * part[:, 1]
    ok &= d.argmin(0)[nn] == np.arange(len(a))
    idx = np.nonzero(ok)[0]
    return idx, nn[idx]


# ------------------------------------------------------------------------------------------- types
def test_empty_and_subset():
    e = LocalFeatures.empty(10, 20)
    _check_valid(e, 10, 20)
    assert e.n == 0 and len(e) == 0 and e.mirrored is None
    assert e.subset([]).n == 0 and e.subset(np.zeros(0, bool)).descriptors.shape == (0, 128)
    rng = np.random.default_rng(0)
    f = LocalFeatures(
        rng.random((5, 2), dtype=np.float32),
        np.ones(5, np.float32),
        np.zeros(5, np.float32),
        rootsift(rng.random((5, 128))),
        (4, 4),
    )
    with_mirrored(f)
    s = f.subset(np.array([True, False, True, False, False]))
    assert s.n == 2 and s.mirrored is not None
    np.testing.assert_array_equal(s.descriptors, f.descriptors[[0, 2]])
    np.testing.assert_array_equal(f.subset([4, 1]).mirrored, f.mirrored[[4, 1]])


# ------------------------------------------------------------------------------------------- preparation
def test_to_gray_inputs_and_errors():
    rgb = data.astronaut()
    g = to_gray(rgb)
    assert g.shape == rgb.shape[:2] and g.dtype == np.uint8
    np.testing.assert_array_equal(to_gray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), g)
    np.testing.assert_array_equal(to_gray(g), g)
    np.testing.assert_array_equal(to_gray(g[:, :, None]), g)
    with pytest.raises(ValueError, match="uint8"):
        to_gray(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 4, 2), np.uint8))


def test_prepare_gray_scales():
    im = np.zeros((300, 600, 3), np.uint8)
    g, sx, sy = prepare_gray(im, 512, 2.0)
    assert g.shape == (256, 512) and sx == pytest.approx(600 / 512) and sy == pytest.approx(300 / 256)
    g, sx, sy = prepare_gray(np.zeros((10, 20, 3), np.uint8), 512, 2.0)  # upscaling capped at 2x
    assert g.shape == (20, 40) and sx == 0.5 == sy
    g, sx, sy = prepare_gray(np.zeros((100, 512, 3), np.uint8), 512, 2.0)
    assert g.shape == (100, 512) and sx == 1.0 == sy


def test_rootsift_rows():
    rng = np.random.default_rng(1)
    d = rng.random((6, 128)).astype(np.float32) * 100
    d[3] = 0
    r = rootsift(d)
    norms = np.linalg.norm(r, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, atol=1e-6)
    assert norms[3] == 0
    # RootSIFT squared is the L1-normalised SIFT
    np.testing.assert_allclose(r[0] ** 2, d[0] / d[0].sum(), rtol=1e-4)


# ------------------------------------------------------------------------------------------- OpenCV SIFT
def test_sift_extracts_valid_features(sift, astronaut):
    f = sift.extract(astronaut)
    _check_valid(f, 512, 512)
    assert f.n == sift.max_keypoints  # a textured photo fills the budget
    assert isinstance(sift, LocalFeatureExtractor)
    g = sift.extract(astronaut)
    np.testing.assert_array_equal(f.keypoints, g.keypoints)
    np.testing.assert_array_equal(f.descriptors, g.descriptors)


def test_sift_budget_keeps_strongest(astronaut):
    small = EXTRACTORS.create("sift", max_keypoints=60).extract(astronaut)
    large = EXTRACTORS.create("sift", max_keypoints=300).extract(astronaut)
    assert small.n == 60 and large.n == 300
    key = {tuple(np.round(np.r_[k, o], 3)) for k, o in zip(large.keypoints, large.orientations, strict=True)}
    inside = sum(
        tuple(np.round(np.r_[k, o], 3)) in key
        for k, o in zip(small.keypoints, small.orientations, strict=True)
    )
    assert inside >= 57  # the strongest 60 are among the strongest 300 (ties at the cut aside)


def test_sift_keypoints_in_original_coordinates(sift, astronaut):
    """A 2x larger copy, shrunk to the working size, gives the same keypoints at twice the coordinates."""
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    a, b = sift.extract(astronaut), sift.extract(big)
    assert b.image_size == (1024, 1024)
    expected = (a.keypoints + 0.5) * 2 - 0.5
    d = np.linalg.norm(expected[:, None] - b.keypoints[None], axis=2)
    near = d.min(1) < 2.0
    assert near.mean() > 0.6
    assert np.median(d.min(1)[near]) < 0.6
    j = d.argmin(1)[near]
    np.testing.assert_allclose(np.median(b.scales[j] / a.scales[near]), 2.0, rtol=0.05)


_DEGENERATE = {
    "flat": (np.zeros((100, 100, 3), np.uint8), True),
    "flat-grey": (np.full((64, 80, 3), 200, np.uint8), True),
    "tiny-flat": (np.zeros((8, 8, 3), np.uint8), True),
    "tiny-noise": ((np.random.default_rng(3).random((8, 8, 3)) * 255).astype(np.uint8), False),
    "1x1": (np.zeros((1, 1, 3), np.uint8), True),
    "0x5": (np.zeros((0, 5, 3), np.uint8), True),
    "sliver": ((np.random.default_rng(4).random((3, 300, 3)) * 255).astype(np.uint8), False),
}


@pytest.mark.parametrize("case", sorted(_DEGENERATE))
@pytest.mark.parametrize("name", ["sift", "sift-kornia"])
def test_degenerate_images_give_valid_features(name, case):
    image, must_be_empty = _DEGENERATE[case]
    ex = EXTRACTORS.create(name, device="cpu", compute_mirrored=True)
    f = ex.extract(image)
    _check_valid(f, image.shape[1], image.shape[0])
    assert f.mirrored is not None
    if must_be_empty:
        assert f.n == 0 and f.descriptors.shape == (0, 128) and f.keypoints.shape == (0, 2)


def test_huge_image_is_bounded_by_working_size(sift):
    base = data.coffee()  # 400 x 600
    huge = cv2.resize(base, (6000, 4000), interpolation=cv2.INTER_LINEAR)
    f = sift.extract(huge)
    _check_valid(f, 6000, 4000)
    assert f.n > 100
    assert f.keypoints[:, 0].max() > 3000  # coordinates are in original pixels, not working pixels


def test_extract_many_and_signature(sift, astronaut):
    feats = sift.extract_many([astronaut, np.zeros((50, 50, 3), np.uint8)])
    assert [f.n for f in feats] == [sift.max_keypoints, 0]
    sig = sift.signature()
    assert sig["name"] == "sift" and sig["working_size"] == 512 and sig["max_keypoints"] == sift.max_keypoints
    assert json.loads(json.dumps(sig)) == sig


def test_registry_and_config():
    cfg = LocalConfig()
    ex = create_extractor(cfg)
    assert ex.name == cfg.extractor
    assert ex.signature()["working_size"] == cfg.working_size
    assert ex.signature()["max_keypoints"] == cfg.max_keypoints
    f = ex.extract(data.chelsea())
    assert (f.mirrored is not None) == cfg.mirror
    with pytest.raises(UnknownNameError, match="sift-kornia"):
        EXTRACTORS.create("surf")
    assert {"sift", "sift-kornia"} <= set(EXTRACTORS.names())


# ------------------------------------------------------------------------------------------- mirroring
def test_mirror_permutation_is_an_involution():
    assert sorted(MIRROR_PERMUTATION.tolist()) == list(range(128))
    np.testing.assert_array_equal(MIRROR_PERMUTATION[MIRROR_PERMUTATION], np.arange(128))
    d = rootsift(np.random.default_rng(0).random((4, 128)))
    np.testing.assert_array_equal(mirror_sift_descriptors(mirror_sift_descriptors(d)), d)
    np.testing.assert_allclose(np.linalg.norm(mirror_sift_descriptors(d), axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="128"):
        mirror_sift_descriptors(np.zeros((3, 64), np.float32))
    assert mirror_sift_descriptors(np.zeros((0, 128), np.float32)).shape == (0, 128)


def test_mirrored_descriptors_equal_extraction_from_flipped_image(sift, astronaut):
    """Keypoints found in the image and in its mirror: permuted descriptors equal the mirror's."""
    width = astronaut.shape[1]
    a = sift.extract(astronaut)
    b = sift.extract(np.ascontiguousarray(astronaut[:, ::-1]))
    bx = b.keypoints.copy()
    bx[:, 0] = width - 1 - bx[:, 0]
    dist = np.linalg.norm(a.keypoints[:, None] - bx[None], axis=2)
    ang = np.abs((a.orientations[:, None] - (180.0 - b.orientations[None]) + 180.0) % 360.0 - 180.0)
    cost = dist + ang / 10.0
    j = cost.argmin(1)
    rows = np.arange(a.n)
    same = (dist[rows, j] < 0.5) & (ang[rows, j] < 3.0) & (np.abs(np.log(a.scales / b.scales[j])) < 0.05)
    assert same.sum() > 100
    mirrored = mirror_sift_descriptors(a.descriptors[same])
    cos_mirrored = np.sum(mirrored * b.descriptors[j[same]], axis=1)
    cos_plain = np.sum(a.descriptors[same] * b.descriptors[j[same]], axis=1)
    assert np.median(cos_mirrored) > 0.99
    assert np.median(cos_plain) < 0.9


def test_mirrored_image_matches_with_permuted_descriptors(sift):
    image = data.chelsea()
    a = sift.extract(image)
    b = sift.extract(np.ascontiguousarray(image[:, ::-1]))
    n_plain = len(_mnn_ratio(a.descriptors, b.descriptors)[0])
    qi, ri = _mnn_ratio(mirror_sift_descriptors(a.descriptors), b.descriptors)
    assert len(qi) > 3 * max(n_plain, 10)
    # and those matches are the mirrored positions
    xq = image.shape[1] - 1 - a.keypoints[qi, 0]
    assert np.median(np.abs(xq - b.keypoints[ri, 0])) < 1.0


# ------------------------------------------------------------------------------------------- inversion
def test_invert_permutation_is_an_involution():
    assert sorted(INVERT_PERMUTATION.tolist()) == list(range(128))
    np.testing.assert_array_equal(INVERT_PERMUTATION[INVERT_PERMUTATION], np.arange(128))
    assert not np.array_equal(INVERT_PERMUTATION, MIRROR_PERMUTATION)
    d = rootsift(np.random.default_rng(1).random((4, 128)))
    np.testing.assert_array_equal(invert_sift_descriptors(invert_sift_descriptors(d)), d)
    with pytest.raises(ValueError, match="128"):
        invert_sift_descriptors(np.zeros((3, 64), np.float32))


def _inverted_pairs(ex, image):
    """Descriptors of the keypoints found at the same place and scale in ``image`` and in its negative."""
    a, b = ex.extract(image), ex.extract(np.ascontiguousarray(255 - image))
    dist = np.linalg.norm(a.keypoints[:, None] - b.keypoints[None], axis=2)
    j = dist.argmin(1)
    rows = np.arange(a.n)
    same = (dist[rows, j] < 0.5) & (np.abs(np.log(a.scales / b.scales[j])) < 0.05)
    return a.descriptors[same], b.descriptors[j[same]]


def test_inverted_descriptors_equal_extraction_from_negative_image(sift, astronaut):
    """The keypoints of the negative picture are the same; permuted descriptors equal the negative's."""
    da, db = _inverted_pairs(sift, astronaut)
    assert len(da) > 100
    assert np.median(np.sum(invert_sift_descriptors(da) * db, axis=1)) > 0.99
    assert np.median(np.sum(da * db, axis=1)) < 0.9


def test_negative_image_verifies_only_through_inversion(sift):
    from matcher.config import LocalConfig
    from matcher.local.score import LocalScoreModel
    from matcher.local.verify import QueryFeatures, ReferenceBank, verify_query
    from matcher.regions.region import Region

    image = data.chelsea()
    ref = sift.extract(image)
    q = sift.extract(np.ascontiguousarray(255 - image))
    query = QueryFeatures([Region("full", (0, 0, image.shape[1], image.shape[0]))], [q])
    bank = ReferenceBank.build(["r"], [ref])
    model = LocalScoreModel()
    found = verify_query(query, bank, LocalConfig(), model)
    assert found[0][1].verified and found[0][1].inverted and found[0][1].n_inliers > 50
    off = verify_query(query, bank, LocalConfig(invert=False), model)
    assert 0 not in off or not off[0][1].verified
    # an inverted reading needs invert_min_inliers: below it, not verified
    strict = verify_query(query, bank, LocalConfig(invert_min_inliers=found[0][1].n_inliers + 1), model)
    assert 0 not in strict or not strict[0][1].verified
    # a negative that is also flipped: the inverted and mirrored reading
    qm = sift.extract(np.ascontiguousarray(255 - image[:, ::-1]))
    both = verify_query(QueryFeatures(query.regions, [qm]), bank, LocalConfig(), model)
    assert both[0][1].verified and both[0][1].inverted and both[0][1].mirrored
    # a plain copy is not reported as inverted
    plain = verify_query(QueryFeatures(query.regions, [ref]), bank, LocalConfig(), model)
    assert plain[0][1].verified and not plain[0][1].inverted


# ------------------------------------------------------------------------------------------- kornia
@pytest.fixture(scope="module")
def kornia_sift():
    return EXTRACTORS.create("sift-kornia", device="cpu", max_keypoints=512)


def test_kornia_inverted_descriptors_equal_extraction_from_negative_image(kornia_sift, astronaut):
    da, db = _inverted_pairs(kornia_sift, astronaut)
    assert len(da) > 50
    assert np.median(np.sum(invert_sift_descriptors(da) * db, axis=1)) > 0.95


def test_kornia_sift_runs_and_is_close_to_opencv(kornia_sift, astronaut):
    k = kornia_sift.extract(astronaut)
    _check_valid(k, 512, 512)
    assert k.n == 512
    assert kornia_sift.signature()["name"] == "sift-kornia"
    o = EXTRACTORS.create("sift", max_keypoints=1024).extract(astronaut)
    d = np.linalg.norm(k.keypoints[:, None] - o.keypoints[None], axis=2)
    ratio = k.scales[:, None] / o.scales[None]
    close = (d < 2.0) & (ratio > 0.5) & (ratio < 2.0)
    has = close.any(1)
    assert has.mean() > 0.4
    # for co-located keypoints, the best descriptor agreement is high (same layout, same RootSIFT)
    cos = np.where(close, k.descriptors @ o.descriptors.T, -1.0).max(1)[has]
    assert np.median(cos) > 0.8


class TestFallbackDetection:
    """A starved picture (dark, flat) is detected again with low-contrast, lenient-edge thresholds."""

    def test_dark_picture_gets_keypoints(self, astronaut):
        dark = (astronaut.astype(np.float32) * 0.08).astype(np.uint8)  # a dark copy
        plain = create_sift(fallback_below=0).extract(dark)
        filled = create_sift(fallback_below=100).extract(dark)
        assert plain.n < 100 <= filled.n <= 1024
        assert filled.keypoints[:, 0].max() < dark.shape[1] and filled.keypoints[:, 1].max() < dark.shape[0]

    def test_textured_picture_is_unchanged(self, astronaut):
        a = create_sift(fallback_below=0).extract(astronaut)
        b = create_sift(fallback_below=100).extract(astronaut)
        assert a.n >= 100
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)

    def test_signature_and_config(self):
        assert "fallback_below" not in create_sift(fallback_below=0).signature()
        sig = create_extractor(LocalConfig()).signature()
        assert sig["fallback_below"] == LocalConfig().sift_fallback_below > 0
        assert sig["fallback_contrast_threshold"] == 0.005 and sig["fallback_edge_threshold"] == 40.0
        with pytest.raises(ValueError, match="fallback"):
            create_extractor(LocalConfig(extractor="sift-kornia"), device="cpu")
