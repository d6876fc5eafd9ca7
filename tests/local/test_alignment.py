"""The dense alignment check: copies agree over their whole overlap (whatever the photometric edit), a different
picture sharing only the matched object does not, and an overlay disagrees over a compact area only."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from matcher.local.alignment import (
    GRID,
    QueryPyramid,
    agreement_map,
    dense_evidence,
    reference_thumbnail,
)
from matcher.local.seam import to_gray


def _check(query: np.ndarray, reference: np.ndarray, transform: np.ndarray, inliers: np.ndarray | None = None):
    """(agreement map, dense evidence) for RGB ``query`` and ``reference``, ``transform`` query px -> reference px."""
    g, gs = to_gray(query)
    size = (reference.shape[1], reference.shape[0])
    amap = agreement_map(reference_thumbnail(reference), size, QueryPyramid(g, gs), transform,
                         (query.shape[1], query.shape[0]))
    pts = inliers if inliers is not None else np.zeros((0, 2), np.float32)
    return amap, dense_evidence(amap, pts, size)


def _warp(image: np.ndarray, h: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpPerspective(image, h, size, flags=cv2.INTER_LINEAR, borderValue=(90, 90, 90))


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return data.astronaut()  # 512 x 512


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty],
                     [0, 0, 1.0]])


class TestCopies:
    def test_a_transformed_copy_agrees_everywhere(self, ref):
        h = _similarity(12, 0.7, 120, 40)  # reference px -> query px
        q = _warp(ref, h, (600, 520))
        _, ev = _check(q, ref, np.linalg.inv(h))
        assert ev.cells >= 0.6 * GRID * GRID and ev.agree >= 0.95 and ev.disagree_blob <= 0.05

    @pytest.mark.parametrize("edit", ["dark", "low_contrast", "blur", "jpeg", "inverted", "hue"])
    def test_photometric_edits_still_agree(self, ref, edit):
        q = ref.copy()
        if edit == "dark":
            q = (q * 0.3).astype(np.uint8)
        elif edit == "low_contrast":
            q = (q.mean() + (q - q.mean()) * 0.35).astype(np.uint8)
        elif edit == "blur":
            q = cv2.GaussianBlur(q, (0, 0), 2.5)
        elif edit == "jpeg":
            q = cv2.imdecode(cv2.imencode(".jpg", q, [cv2.IMWRITE_JPEG_QUALITY, 15])[1], cv2.IMREAD_COLOR)
        elif edit == "inverted":
            q = 255 - q
        else:
            hsv = cv2.cvtColor(q, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(int) + 60) % 180
            q = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        _, ev = _check(q, ref, np.eye(3))
        assert ev.agree >= 0.9, f"{edit}: agree {ev.agree:.2f}"

    def test_an_overlay_disagrees_over_a_compact_area(self, ref):
        q = ref.copy()
        q[40:200, 300:480] = (255, 0, 255)  # a sticker over about 1/9 of the picture
        amap, ev = _check(q, ref, np.eye(3))
        assert 0.75 <= ev.agree < 0.98 and ev.disagree_blob <= 0.2
        disagree = amap.measured & ~amap.agree
        ys, xs = np.nonzero(disagree)
        assert ys.max() <= 3 and xs.min() >= 4  # the disagreement is where the sticker is (top right)
        assert ev.state is not None and ev.state.shape == (GRID, GRID) and set(np.unique(ev.state)) <= {-1, 0, 1}

    def test_a_small_paste_in_a_large_query_uses_a_coarser_level(self, ref):
        h = _similarity(0, 2.5, 100, 60)  # the reference shown 2.5x larger in a big query
        q = _warp(ref, h, (1500, 1400))
        pyr = QueryPyramid(*to_gray(q))
        amap = agreement_map(reference_thumbnail(ref), (512, 512), pyr, np.linalg.inv(h), (1500, 1400))
        assert len(pyr.levels) > 1
        assert np.nanmean(amap.zncc) >= 0.8


class TestNotCopies:
    def test_the_same_object_on_another_picture_disagrees_outside_it(self, ref):
        obj = data.coffee()[100:300, 150:350]  # the shared object (a sign, a re-shot subject)
        other = data.chelsea()
        a, b = cv2.resize(ref, (400, 300)), cv2.resize(other, (400, 300))
        a[50:250, 100:300] = obj
        b[50:250, 100:300] = obj
        ys, xs = np.mgrid[60:240:20, 110:290:20]
        inliers = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        _, ev = _check(b, a, np.eye(3), inliers)
        assert ev.agree <= 0.6 and ev.agree_outside <= 0.25 and ev.disagree_blob >= 0.3

    def test_unrelated_content_gives_near_zero_correlation(self, ref):
        amap, ev = _check(data.coffee()[:512, :512], ref, np.eye(3))
        assert ev.agree <= 0.2 and np.nanmean(amap.zncc) < 0.2


class TestNotMeasured:
    def test_no_overlap(self, ref):
        _, ev = _check(ref, ref, _similarity(0, 1.0, 5000, 0))
        assert math.isnan(ev.agree) and ev.cells == 0 and not ev.measured

    def test_flat_reference(self):
        flat = np.full((200, 300, 3), 128, np.uint8)
        _, ev = _check(flat, flat, np.eye(3))
        assert math.isnan(ev.agree) and ev.to_dict()["agree"] is None


def test_thumbnail_size():
    t = reference_thumbnail(np.zeros((300, 800, 3), np.uint8))
    assert t.shape == (48, 128) and t.dtype == np.uint8
    assert reference_thumbnail(np.zeros((40, 60), np.uint8)).shape == (40, 60)  # never enlarged
