"""Tests for matcher.regions.region and .proposers: exact coordinate maps, tags, grid coverage, tiny images."""
from __future__ import annotations

import numpy as np
import pytest

from matcher.regions.proposers import PROPOSERS, propose_regions
from matcher.regions.region import Region, grid_regions
from matcher.registry import UnknownNameError

ALL = ["full", "grid2", "grid3", "center", "rotations", "flips"]


def _index_image(w: int, h: int, channels: int | None = None) -> np.ndarray:
    """(H, W) int64 image whose value is the flat pixel index y * W + x (or (H, W, C) with copies)."""
    img = np.arange(w * h, dtype=np.int64).reshape(h, w)
    return img if channels is None else np.repeat(img[:, :, None], channels, axis=2)


def _check_maps(region: Region, img: np.ndarray) -> None:
    """Every pixel of the region image maps back (to_original) to the original pixel holding its value."""
    w = img.shape[1]
    sub = region.apply(img)
    rh, rw = sub.shape[:2]
    assert (rw, rh) == region.size
    ys, xs = np.mgrid[0:rh, 0:rw]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    orig = region.to_original(pts)
    assert np.allclose(orig, np.round(orig))
    ox, oy = orig[:, 0].astype(int), orig[:, 1].astype(int)
    vals = sub[..., 0] if sub.ndim == 3 else sub
    assert np.array_equal(vals.ravel(), oy * w + ox)
    assert np.allclose(region.from_original(orig), pts)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [(97, 61), (52, 75)])
def test_every_proposer_maps_back_exactly(name, size):
    img = _index_image(*size)
    regions = propose_regions(img, [name])
    assert regions
    for reg in regions:
        _check_maps(reg, img)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("flip", [False, True])
def test_rotations_and_flips_of_a_sub_box(rotation, flip):
    img = _index_image(53, 37, channels=3)
    _check_maps(Region("t", (5, 7, 45, 30), rotation=rotation, flip=flip), img)


def test_apply_matches_numpy_ops():
    img = _index_image(30, 20)
    assert np.array_equal(Region("r", (0, 0, 30, 20), rotation=90).apply(img), np.rot90(img))
    assert np.array_equal(Region("h", (0, 0, 30, 20), flip=True).apply(img), img[:, ::-1])
    assert np.array_equal(Region("v", (0, 0, 30, 20), rotation=180, flip=True).apply(img), img[::-1])


def test_tags_unique_and_duplicates_dropped():
    img = np.zeros((120, 160, 3), np.uint8)
    regions = propose_regions(img, ALL + ["full", "grid2"])
    tags = [r.tag for r in regions]
    assert len(tags) == len(set(tags))
    assert len({r.key() for r in regions}) == len(regions)
    assert tags.count("full") == 1
    assert len(regions) == 1 + 4 + 9 + 1 + 3 + 2
    clash = propose_regions(img, [lambda im: [Region("a", (0, 0, 50, 50)), Region("a", (10, 10, 60, 60))]])
    assert [r.tag for r in clash] == ["a", "a#2"]


@pytest.mark.parametrize("n", [2, 3])
def test_grid_boxes_tile_the_image(n):
    img = np.zeros((101, 77), np.uint8)
    cover = np.zeros(img.shape, int)
    for reg in grid_regions(img, n):
        x0, y0, x1, y1 = reg.box
        cover[y0:y1, x0:x1] += 1
    assert np.all(cover == 1)


def test_center_is_half_the_area():
    (reg,) = propose_regions(np.zeros((200, 300)), ["center"])
    w, h = reg.crop_size
    assert w * h / (300 * 200) == pytest.approx(0.5, abs=0.01)
    assert reg.box[0] + reg.box[2] == pytest.approx(300, abs=1)


def test_tiny_images_give_no_small_or_empty_regions():
    for w, h in [(20, 12), (31, 31), (8, 5), (40, 17)]:
        img = np.zeros((h, w, 3), np.uint8)
        regions = propose_regions(img, ALL)
        assert regions and regions[0].tag == "full"
        for reg in regions:
            sub = reg.apply(img)
            assert sub.size > 0
            cw, ch = reg.crop_size
            assert min(cw, ch) >= 16 or reg.box == (0, 0, w, h)


def test_bad_inputs():
    with pytest.raises(UnknownNameError, match="grid2"):
        propose_regions(np.zeros((50, 50)), ["nope"])
    with pytest.raises(ValueError, match="rotation"):
        Region("x", (0, 0, 10, 10), rotation=45)
    with pytest.raises(ValueError, match="empty box"):
        Region("x", (5, 0, 5, 10))
    with pytest.raises(ValueError, match="outside"):
        Region("x", (0, 0, 60, 10)).apply(np.zeros((50, 50)))
    with pytest.raises(ValueError, match="image"):
        propose_regions(np.zeros(10), ["full"])


def test_registry_and_dict():
    assert set(ALL) <= set(PROPOSERS.names())
    reg = Region("yolo:0", (1, 2, 30, 40), score=0.7)
    assert reg.to_dict() == {"tag": "yolo:0", "box": [1, 2, 30, 40], "rotation": 0, "flip": False, "score": 0.7}
