"""Seam strength along a mapped reference frame: pastes show a seam, holistic pictures do not."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from matcher.local.seam import frame_edge_strength, seam_profile_ratio, to_gray


def _quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _jpeg(img: np.ndarray, q: int = 80) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


@pytest.mark.parametrize("background", ["coffee", "chelsea", "rocket"])
def test_paste_has_a_seam_holistic_has_none(background: str) -> None:
    ref = data.astronaut()[60:380, 80:440]  # (320, 360)
    canvas = getattr(data, background)()[:, :, :3].copy()
    small = cv2.resize(ref, (180, 160), interpolation=cv2.INTER_AREA)
    canvas[100:260, 150:330] = small
    paste = frame_edge_strength(to_gray(_jpeg(canvas))[0], _quad(150, 100, 330, 260))
    # holistic: the whole astronaut photo, the reference is its crop -> the frame lies on continuous content
    holistic = frame_edge_strength(to_gray(_jpeg(data.astronaut()))[0], _quad(80, 60, 440, 380))
    assert paste > 3.0, paste
    assert holistic < 2.0, holistic
    assert paste > 2 * holistic


def test_frame_along_the_borders_has_no_seam_to_measure() -> None:
    g = to_gray(data.astronaut())[0]
    assert math.isnan(frame_edge_strength(g, _quad(0, 0, 511, 511)))
    assert math.isnan(frame_edge_strength(g, _quad(-50, -50, 600, 600)))
    assert math.isnan(frame_edge_strength(g, np.full((4, 2), np.nan)))


def test_blurred_paste_keeps_a_seam() -> None:
    ref = data.astronaut()[60:380, 80:440]
    canvas = data.coffee().copy()
    canvas[100:260, 150:330] = cv2.resize(ref, (180, 160), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(canvas, (0, 0), 2.5)
    assert frame_edge_strength(to_gray(blurred)[0], _quad(150, 100, 330, 260)) > 2.5


def test_one_side_inside_is_enough() -> None:
    # meme-like: a caption bar above the picture; only the top side of the frame is inside the query
    img = data.astronaut()
    bar = np.full((120, 512, 3), 250, np.uint8)
    q = np.concatenate([bar, img])
    s = frame_edge_strength(to_gray(q)[0], _quad(0, 120, 511, 631))
    assert s > 3.0


def test_profile_ratio_reference() -> None:
    r = 6
    step = np.r_[np.zeros(r), np.full(r + 1, 100.0)][None]  # a clean step at the border
    ramp = np.arange(2 * r + 1, dtype=np.float64)[None] * 10  # a smooth ramp: no seam
    assert seam_profile_ratio(step, slack=1, spans=(1,))[0] == pytest.approx(100.0 / 2.0)
    assert seam_profile_ratio(ramp, slack=1, spans=(1,))[0] == pytest.approx(10.0 / 12.0)
    assert seam_profile_ratio(ramp, slack=1, spans=(1, 3))[0] == pytest.approx(30.0 / 32.0)
    # a step blurred over ~4 px: single-px changes are small, the 3-px span still sees most of the step
    r = 8
    soft = np.r_[np.zeros(r - 2), [12.5, 37.5, 62.5, 87.5], np.full(r - 1, 100.0)][None]
    assert seam_profile_ratio(soft, slack=2, spans=(1,))[0] == pytest.approx(25.0 / 2.0)
    assert seam_profile_ratio(soft, slack=2, spans=(1, 3))[0] == pytest.approx(75.0 / 2.0)


def test_to_gray_downscales() -> None:
    g, s = to_gray(np.zeros((2000, 1000, 3), np.uint8), max_side=500)
    assert g.shape == (500, 250) and s == 0.25 and g.dtype == np.float32
