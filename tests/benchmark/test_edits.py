"""Edits of the benchmark builder: validity, determinism, exact geometry, chains and the AugLy shims."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matcher.benchmark import (
    CHAIN_FAMILIES,
    COMPOSITE_FAMILIES,
    EDITS,
    EditContext,
    apply_chain,
    default_context,
    edits_in_family,
    family_of,
    sample_families,
)
from matcher.benchmark.augly_compat import (
    apply_shims,
    augly_image,
    emoji_paths,
    font_paths,
    screenshot_templates,
)
from matcher.benchmark.edits import rotate90_transform, synthetic_photo
from matcher.benchmark.geometry import apply_homography, homography_from_points, placement
from matcher.registry import UnknownNameError

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def _photo(seed: int = 0, w: int = 160, h: int = 120) -> np.ndarray:
    return synthetic_photo(np.random.default_rng(seed), w, h)


def _solid(colour: tuple[int, int, int], w: int, h: int, seed: int = 0) -> np.ndarray:
    """A solid colour with slight noise (so resizing keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.int16)
    img[:] = colour
    img += rng.integers(-8, 9, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _blue_context() -> EditContext:
    others = [_solid(BLUE, 200, 150, 1), _solid(BLUE, 120, 160, 2)]
    return default_context(others)


def _red_mask(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return (r - g > 90) & (r - b > 90)


# ----------------------------------------------------------------------------------------------------------
# every edit


def test_registry_families_and_errors() -> None:
    for fam in CHAIN_FAMILIES:
        assert edits_in_family(fam), fam
    assert COMPOSITE_FAMILIES <= set(CHAIN_FAMILIES)
    assert family_of("hflip") == "flip" and EDITS.get("hflip").family == "flip"
    assert edits_in_family("overlay") == ["overlay_onto_photo"]
    with pytest.raises(UnknownNameError, match="known"):
        EDITS.get("no_such_edit")
    with pytest.raises(ValueError, match="unknown edit family"):
        edits_in_family("no_such_family")


@pytest.mark.parametrize("name", EDITS.names())
def test_edit_is_valid_and_deterministic(name: str) -> None:
    img = _photo(3)
    before = img.copy()
    ctx = default_context([_photo(4, 200, 150), _photo(5, 120, 180)])
    res = EDITS.get(name)(img, np.random.default_rng(7), ctx)
    assert np.array_equal(img, before), "edit modified its input"
    out = res.image
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    assert min(out.shape[:2]) >= 32 and max(out.shape[:2]) <= 2048
    json.dumps(res.params)
    assert res.transform is not None and res.transform.shape == (3, 3) and np.all(np.isfinite(res.transform))
    again = EDITS.get(name)(img, np.random.default_rng(7), ctx)
    assert np.array_equal(again.image, out) and again.params == res.params
    assert np.allclose(again.transform, res.transform)


def test_photometric_edits_keep_geometry_and_change_pixels() -> None:
    img = _photo(1)
    ctx = default_context()
    for fam in ("color", "blur", "noise", "jpeg", "pixelize", "text", "emoji", "stripes", "blend"):
        for name in edits_in_family(fam):
            res = EDITS.get(name)(img, np.random.default_rng(2), ctx)
            assert res.image.shape == img.shape, name
            assert np.allclose(res.transform, np.eye(3)), name
            assert np.abs(res.image.astype(int) - img).mean() > 0.5, f"{name} changed nothing"


# ----------------------------------------------------------------------------------------------------------
# geometry: a marked pixel lands where the transform says


def _marked(w: int = 160, h: int = 120, at: tuple[int, int] = (97, 41), size: int = 9) -> np.ndarray:
    img = np.full((h, w, 3), 70, np.uint8)
    x, y = at
    img[y - size // 2:y + size // 2 + 1, x - size // 2:x + size // 2 + 1] = RED
    return img


def _marker_error(name: str, seed: int, at: tuple[int, int] = (97, 41)) -> float | None:
    """Distance (px) between the red marker's centroid in the output and the transform's prediction; None when
    the prediction falls outside the output (e.g. cropped away) or the fill colour is reddish."""
    img = _marked(at=at)
    res = EDITS.get(name)(img, np.random.default_rng(seed), default_context())
    fill = res.params.get("fill")
    if fill is not None and fill[0] - max(fill[1], fill[2]) > 60:
        return None
    px, py = apply_homography(res.transform, np.array([[at[0] + 0.5, at[1] + 0.5]]))[0]
    h, w = res.image.shape[:2]
    if not (8 <= px <= w - 8 and 8 <= py <= h - 8):
        return None
    x0, y0 = int(px) - 10, int(py) - 10
    window = _red_mask(res.image[max(0, y0):y0 + 21, max(0, x0):x0 + 21])
    ys, xs = np.nonzero(window)
    assert len(xs) > 0, f"{name} seed {seed}: no marker near the predicted point ({px:.1f}, {py:.1f})"
    cx, cy = xs.mean() + max(0, x0) + 0.5, ys.mean() + max(0, y0) + 0.5
    return float(np.hypot(cx - px, cy - py))


@pytest.mark.parametrize(
    "name", ["crop", "resize", "resize_aspect", "rotate90", "rotate", "hflip", "vflip", "perspective"]
)
def test_geometric_transform_maps_marked_pixel(name: str) -> None:
    checked = 0
    for seed in range(30):
        err = _marker_error(name, seed)
        if err is None:
            continue
        assert err <= 2.0, f"{name} seed {seed}: marker {err:.2f} px from the predicted position"
        checked += 1
        if checked == 4:
            break
    assert checked >= 3, f"{name}: too few usable seeds"


def test_rotate90_transform_matches_numpy() -> None:
    w, h = 7, 4
    for k in (1, 2, 3):
        t = rotate90_transform(k, w, h)
        img = np.arange(w * h).reshape(h, w)
        rot = np.rot90(img, k)
        for y in range(h):
            for x in range(w):
                ox, oy = apply_homography(t, np.array([[x + 0.5, y + 0.5]]))[0]
                assert rot[int(oy), int(ox)] == img[y, x]


def test_homography_from_points_and_placement() -> None:
    src = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    dst = np.array([[1, 2], [12, 1], [11, 13], [0, 9]], float)
    h = homography_from_points(src, dst)
    assert np.allclose(apply_homography(h, src), dst)
    quad, box, vis = placement(np.eye(3), (100, 50), (100, 50))
    assert quad == [[0, 0], [100, 0], [100, 50], [0, 50]] and box == [0, 0, 100, 50] and vis == 1.0
    shift = np.array([[1.0, 0, 50], [0, 1, 0], [0, 0, 1]])  # half the picture leaves the frame
    quad, box, vis = placement(shift, (100, 50), (100, 50))
    assert box == [50, 0, 100, 50] and vis == pytest.approx(0.5, abs=0.02)
    assert placement(None, (10, 10), (10, 10)) == (None, None, None)


# ----------------------------------------------------------------------------------------------------------
# composites: the recorded placement is where the picture went


def _red_bbox(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(_red_mask(img))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


@pytest.mark.parametrize("families", [["overlay"], ["mosaic"], ["mosaic", "flip"], ["crop", "overlay"],
                                      ["overlay", "resize"], ["rotate", "mosaic"]])
def test_chain_placement_box_matches_pasted_content(families: list[str]) -> None:
    ctx = _blue_context()
    for seed in range(4):
        img = _solid(RED, 150, 100, seed)
        res = apply_chain(img, np.random.default_rng(seed), ctx, families=families)
        assert res.families == families
        box = np.array(res.placement_box)
        if "rotate" in families:  # a rotated picture's red area is a rotated box: compare the quad's extent
            quad = np.array(res.placement_quad)
            inside = _red_mask(res.image)
            h, w = res.image.shape[:2]
            qx, qy = np.clip(quad.mean(axis=0).astype(int), 0, [w - 1, h - 1])
            assert inside[qy, qx], "the quad centre is not on the picture"
            continue
        assert np.abs(_red_bbox(res.image) - box).max() <= 3.0, (families, seed, _red_bbox(res.image), box)
        assert 0 < res.visible_fraction <= 1.0


@pytest.mark.parametrize("name", ["screenshot", "meme"])
def test_framing_placement(name: str) -> None:
    for seed in range(6):
        img = _solid(RED, 150, 100, seed)
        res = apply_chain(img, np.random.default_rng(seed), _blue_context(), families=[name])
        x0, y0, x1, y1 = (round(v) for v in res.placement_box)
        h, w = res.image.shape[:2]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert _red_mask(res.image[y0 + 2:y1 - 2, x0 + 2:x1 - 2]).mean() > 0.97, (seed, res.edits)
        if name == "meme":  # caption bars outside the picture
            assert res.image.shape[0] > img.shape[0] and x0 == 0 and x1 == w
            assert _red_mask(res.image).mean() < 0.95


# ----------------------------------------------------------------------------------------------------------
# chains


def test_sample_families_rules() -> None:
    rng = np.random.default_rng(0)
    lengths = []
    for i in range(300):
        primary = CHAIN_FAMILIES[i % len(CHAIN_FAMILIES)]
        fams = sample_families(rng, primary=primary)
        lengths.append(len(fams))
        assert primary in fams and len(set(fams)) == len(fams)
        assert sum(f in COMPOSITE_FAMILIES for f in fams) <= 1
    assert set(lengths) == {1, 2, 3}
    assert len(sample_families(rng, n_edits=3)) == 3


def test_apply_chain_limits_determinism_and_errors() -> None:
    ctx = default_context([_photo(9, 300, 200)])
    big = _photo(1, 900, 700)
    for seed in range(12):
        res = apply_chain(big, np.random.default_rng(seed), ctx)
        h, w = res.image.shape[:2]
        assert 64 <= max(w, h) <= 1024 and min(w, h) >= 32
        assert 1 <= len(res.edits) <= 3 and sum(f in COMPOSITE_FAMILIES for f in res.families) <= 1
        json.dumps(res.edits)
        assert res.placement_quad is not None and 0.0 <= res.visible_fraction <= 1.0
        again = apply_chain(big, np.random.default_rng(seed), ctx)
        assert np.array_equal(again.image, res.image) and again.edits == res.edits
    res = apply_chain(big, np.random.default_rng(0), ctx, families=["resize"])  # 0.3-2x of 900 px
    if res.fit is not None:
        assert max(res.image.shape[:2]) == 1024
    res = apply_chain(big, np.random.default_rng(0), ctx, families=["jpeg"])
    assert res.save_quality == res.edits[0]["params"]["quality"]
    with pytest.raises(ValueError, match="composite"):
        apply_chain(big, np.random.default_rng(0), ctx, families=["overlay", "meme"])


# ----------------------------------------------------------------------------------------------------------
# AugLy


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # AugLy's own np.matrix use
def test_augly_shims_and_assets() -> None:
    from PIL import Image, ImageFont

    apply_shims()
    apply_shims()  # idempotent
    assert np.float is float  # type: ignore[attr-defined]
    imaugs = augly_image()
    font = ImageFont.truetype(str(font_paths()[0]), 20)
    w1, h1 = font.getsize_multiline("hello")
    w2, h2 = font.getsize_multiline("hello\nhello world")
    assert 20 < w1 < w2 and 10 < h1 < h2
    pil = Image.fromarray(_photo(2))
    meme = imaugs.meme_format(pil, text="LOL", caption_height=40)  # needs getsize_multiline
    assert meme.size == (160, 160)
    warped = imaugs.perspective_transform(pil, sigma=10.0, seed=1)  # needs np.float
    assert warped.size[0] > 0
    assert len(emoji_paths()) > 50 and len(screenshot_templates()) == 2
    for path, (x0, y0, x1, y1) in screenshot_templates():
        with Image.open(path) as t:
            assert 0 <= x0 < x1 <= t.width and 0 <= y0 < y1 <= t.height
