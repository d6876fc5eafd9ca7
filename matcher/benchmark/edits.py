"""Image edits of a DISC21-like copy-detection benchmark, usable on in-memory images (e.g. to make training
views).

Every edit is a function ``edit(image, rng, ctx) -> EditResult`` registered in :data:`EDITS` under its name,
with a ``family`` attribute. ``image`` is RGB uint8 (H, W, 3) and is never modified; ``rng`` draws every
random choice, so an edit is deterministic given the generator state; ``ctx`` supplies other photos
(backgrounds, mosaic tiles, blend partners), fonts and emoji. ``EditResult.transform`` is the 3x3 homography
mapping input pixel coordinates to output pixel coordinates (continuous convention of
:mod:`matcher.benchmark.geometry`); photometric edits and overlays return the identity; ``None`` is kept for
edits that have no geometric map.

This module holds the types, the registry and the single-image edits (geometric, photometric, quality,
overlays); :mod:`matcher.benchmark.compose` registers the composite edits (overlay onto another photo,
screenshot, meme, mosaic, blend). Importing :mod:`matcher.benchmark` registers all of them.

AugLy (the library that made DISC21's edits) does colour jitter, greyscale, brightness, contrast, saturation,
blur, Gaussian noise, JPEG re-encoding, pixelisation, emoji and stripes; the geometric edits are our own so
that their homography is exact, and text is drawn here with AugLy's bundled fonts (AugLy's ``overlay_text``
unpickles a character table, which this project never does).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matcher.benchmark.augly_compat import augly_image, emoji_paths, font_paths
from matcher.benchmark.geometry import (
    apply_homography,
    corners,
    homography_from_points,
    scaling,
    translation,
    warp_image,
)
from matcher.io.images import resize_image
from matcher.registry import Registry

__all__ = [
    "CHAIN_FAMILIES",
    "COMPOSITE_FAMILIES",
    "EDITS",
    "EditContext",
    "EditFn",
    "EditResult",
    "default_context",
    "edits_in_family",
    "family_of",
    "register_edit",
    "resize_image",
    "synthetic_photo",
]


@dataclass(frozen=True)
class EditResult:
    """``image``: RGB uint8 (H', W', 3); ``params``: JSON-able choices; ``transform``: 3x3 float64 or None;
    ``visible_box``: (x0, y0, x1, y1) px of the output outside which no input content shows although the
    transform maps some there (e.g. a picture cropped by a frame), None when the output frame is the limit."""

    image: np.ndarray
    params: dict[str, Any]
    transform: np.ndarray | None
    visible_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class EditContext:
    """Resources of the edits. ``random_other_photo(rng)`` returns another RGB uint8 (H, W, 3) photo;
    ``fonts`` and ``emojis`` are file lists (empty: AugLy's bundled Latin fonts and twemoji PNGs)."""

    random_other_photo: Callable[[np.random.Generator], np.ndarray]
    fonts: tuple[Path, ...] = field(default=())
    emojis: tuple[Path, ...] = field(default=())

    def font_files(self) -> tuple[Path, ...]:
        return self.fonts or font_paths()

    def emoji_files(self) -> tuple[Path, ...]:
        return self.emojis or emoji_paths()


EditFn = Callable[[np.ndarray, np.random.Generator, EditContext], EditResult]

EDITS: Registry[EditResult] = Registry("edit")

# Families that combine the image with other content; a chain holds at most one of them.
COMPOSITE_FAMILIES: frozenset[str] = frozenset({"overlay", "screenshot", "meme", "mosaic", "blend"})

# Families drawn by random chains, in a fixed order ("mild" edits are only used on request).
CHAIN_FAMILIES: tuple[str, ...] = (
    "crop", "resize", "rotate", "flip", "color", "blur", "noise", "jpeg", "pixelize", "perspective",
    "text", "emoji", "stripes", "overlay", "screenshot", "meme", "mosaic", "blend",
)

_FAMILY: dict[str, str] = {}


def register_edit(name: str, family: str) -> Callable[[EditFn], EditFn]:
    """Decorator: register ``fn`` in :data:`EDITS` as ``name`` and set ``fn.family = family``."""

    def deco(fn: EditFn) -> EditFn:
        fn.family = family  # type: ignore[attr-defined]
        _FAMILY[name] = family
        return EDITS.register(name)(fn)

    return deco


def family_of(name: str) -> str:
    """The family of the edit registered as ``name`` (UnknownNameError if none)."""
    EDITS.get(name)
    return _FAMILY[name]


def edits_in_family(family: str) -> list[str]:
    """Sorted names of the edits in ``family`` (ValueError if the family has none)."""
    names = sorted(n for n, f in _FAMILY.items() if f == family)
    if not names:
        known = ", ".join(sorted(set(_FAMILY.values())))
        raise ValueError(f"unknown edit family {family!r}; known: {known}")
    return names


# ------------------------------------------------------------------------------------------------------------
# helpers


def _u(rng: np.random.Generator, lo: float, hi: float, nd: int = 3) -> float:
    """A uniform draw in [lo, hi] rounded to ``nd`` decimals (the rounded value is used and recorded)."""
    return round(float(rng.uniform(lo, hi)), nd)


def _extreme(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    """A draw from ``low`` or ``high`` (each half of the time)."""
    lo, hi = low if rng.random() < 0.5 else high
    return _u(rng, lo, hi)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _colour(rng: np.random.Generator) -> list[int]:
    return [int(c) for c in rng.integers(0, 256, size=3)]


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


def _identity() -> np.ndarray:
    return np.eye(3)


def _rgb(pil: Image.Image) -> np.ndarray:
    return np.array(pil.convert("RGB"), dtype=np.uint8)  # a writable copy


def synthetic_photo(rng: np.random.Generator, width: int = 512, height: int = 384) -> np.ndarray:
    """A random photo-like RGB uint8 (height, width, 3): a colour gradient with random ellipses and boxes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx / width * rng.uniform(-1, 1) + yy / height * rng.uniform(-1, 1)) % 1.0
    base = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
    pil = Image.fromarray(base)
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * width, y0 + rng.uniform(0.05, 0.5) * height
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return _rgb(pil)


def default_context(others: Sequence[np.ndarray] | None = None) -> EditContext:
    """An :class:`EditContext` drawing other photos uniformly from ``others`` (RGB uint8 arrays), or
    synthesising random photo-like images when ``others`` is empty or None."""
    pool = list(others or [])

    def random_other_photo(rng: np.random.Generator) -> np.ndarray:
        if not pool:
            return synthetic_photo(rng, int(rng.integers(320, 640)), int(rng.integers(240, 480)))
        return pool[int(rng.integers(len(pool)))]

    return EditContext(random_other_photo=random_other_photo)


# ------------------------------------------------------------------------------------------------------------
# geometric edits (own implementations: exact homographies)

_MIN_SIDE = 32  # px; no edit makes a side shorter than this (matcher.io refuses smaller images)


@register_edit("crop", "crop")
def crop(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Keep a random box of 10-90% of the area; its aspect ratio is the image's times 1/2..2."""
    w, h = _size(image)
    area = _u(rng, 0.1, 0.9)
    ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    cw = round(min(w, max(min(_MIN_SIDE, w), w * math.sqrt(area * ratio))))
    ch = round(min(h, max(min(_MIN_SIDE, h), h * math.sqrt(area / ratio))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    out = image[y0:y0 + ch, x0:x0 + cw].copy()
    params = {"box": [x0, y0, x0 + cw, y0 + ch], "area": round(cw * ch / (w * h), 4)}
    return EditResult(out, params, translation(-x0, -y0))


def _resize_to(image: np.ndarray, sx: float, sy: float) -> EditResult:
    w, h = _size(image)
    nw, nh = max(_MIN_SIDE, round(w * sx)), max(_MIN_SIDE, round(h * sy))
    out = resize_image(image, nw, nh)
    return EditResult(out, {"scale": [sx, sy], "size": [nw, nh]}, scaling(nw / w, nh / h))


@register_edit("resize", "resize")
def resize(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Uniform rescale by 0.3x-2x."""
    s = _u(rng, 0.3, 2.0)
    return _resize_to(image, s, s)


@register_edit("resize_aspect", "resize")
def resize_aspect(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Non-uniform rescale: x and y by 0.3x-2x each, their ratio within 1/2.5..2.5."""
    sx = _u(rng, 0.3, 2.0)
    sy = round(min(2.0, max(0.3, sx * math.exp(rng.uniform(-math.log(2.5), math.log(2.5))))), 3)
    return _resize_to(image, sx, sy)


def rotate90_transform(k: int, width: int, height: int) -> np.ndarray:
    """Homography of ``np.rot90(image, k)`` (k quarter turns counter-clockwise) for a W x H input."""
    h = np.eye(3)
    w_cur, h_cur = width, height
    for _ in range(k % 4):
        h = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w_cur], [0.0, 0.0, 1.0]]) @ h  # (x, y) -> (y, W - x)
        w_cur, h_cur = h_cur, w_cur
    return h


@register_edit("rotate90", "rotate")
def rotate90(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Rotate by 90, 180 or 270 degrees counter-clockwise."""
    k = int(rng.integers(1, 4))
    w, h = _size(image)
    out = np.ascontiguousarray(np.rot90(image, k))
    return EditResult(out, {"angle": 90 * k}, rotate90_transform(k, w, h))


def _fill(rng: np.random.Generator) -> list[int]:
    r = rng.random()
    return [0, 0, 0] if r < 0.5 else [255, 255, 255] if r < 0.75 else _colour(rng)


@register_edit("rotate", "rotate")
def rotate(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Rotate by +-3..30 degrees (counter-clockwise for positive angles) about the centre; ``expand`` grows
    the canvas to hold the whole picture, otherwise the corners are cut off. The empty area gets a fill
    colour."""
    angle = _u(rng, 3.0, 30.0, 2) * (1 if rng.random() < 0.5 else -1)
    expand = bool(rng.random() < 0.5)
    fill = _fill(rng)
    w, h = _size(image)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    centred = rot @ translation(-w / 2, -h / 2)
    if expand:
        pts = apply_homography(centred, corners(w, h))
        ow, oh = math.ceil(pts[:, 0].max() - pts[:, 0].min()), math.ceil(pts[:, 1].max() - pts[:, 1].min())
    else:
        ow, oh = w, h
    tr = translation(ow / 2, oh / 2) @ centred
    out = warp_image(image, tr, (ow, oh), tuple(fill))
    return EditResult(out, {"angle": angle, "expand": expand, "fill": fill}, tr)


@register_edit("hflip", "flip")
def hflip(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Mirror left-right."""
    w, _ = _size(image)
    flip = np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]])
    return EditResult(np.ascontiguousarray(image[:, ::-1]), {}, flip)


@register_edit("vflip", "flip")
def vflip(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Mirror top-bottom."""
    _, h = _size(image)
    return EditResult(np.ascontiguousarray(image[::-1]), {}, np.array([[1.0, 0, 0], [0, -1, h], [0, 0, 1]]))


@register_edit("perspective", "perspective")
def perspective(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Move each corner by up to ``strength`` (5-20%) of the width/height and warp by the resulting
    homography; the canvas is the bounding box of the moved corners, the empty area gets a fill colour."""
    w, h = _size(image)
    strength = _u(rng, 0.05, 0.2)
    src = corners(w, h)
    offsets = rng.uniform(-strength, strength, size=(4, 2)) * [w, h]
    dst = src + offsets
    dst -= dst.min(axis=0)
    ow, oh = math.ceil(dst[:, 0].max()), math.ceil(dst[:, 1].max())
    fill = _fill(rng)
    hom = homography_from_points(src, dst)
    out = warp_image(image, hom, (ow, oh), tuple(fill))
    params = {"strength": strength, "corners": [[round(float(x), 2), round(float(y), 2)] for x, y in dst],
              "fill": fill}
    return EditResult(out, params, hom)


# ------------------------------------------------------------------------------------------------------------
# photometric and quality edits (AugLy where it has them; identity transform)


def _augly(image: np.ndarray, fn_name: str, **kwargs: Any) -> np.ndarray:
    fn = getattr(augly_image(), fn_name)
    return _rgb(fn(Image.fromarray(image), **kwargs))


@register_edit("color_jitter", "color")
def color_jitter(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy colour jitter: brightness, contrast and saturation factors in 0.5-1.6."""
    p = {k: _u(rng, 0.5, 1.6) for k in ("brightness_factor", "contrast_factor", "saturation_factor")}
    return EditResult(_augly(image, "color_jitter", **p), p, _identity())


@register_edit("grayscale", "color")
def grayscale(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy greyscale (luminosity), kept as 3 equal channels."""
    return EditResult(_augly(image, "grayscale"), {}, _identity())


@register_edit("invert", "color")
def invert(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Colour inversion 255 - v."""
    return EditResult(255 - image, {}, _identity())


@register_edit("brightness", "color")
def brightness(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy brightness at an extreme factor: 0.2-0.5 or 1.6-2.6."""
    f = _extreme(rng, (0.2, 0.5), (1.6, 2.6))
    return EditResult(_augly(image, "brightness", factor=f), {"factor": f}, _identity())


@register_edit("contrast", "color")
def contrast(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy contrast at an extreme factor: 0.2-0.5 or 1.7-3.0."""
    f = _extreme(rng, (0.2, 0.5), (1.7, 3.0))
    return EditResult(_augly(image, "contrast", factor=f), {"factor": f}, _identity())


@register_edit("saturation", "color")
def saturation(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy saturation: washed out (0-0.3) or boosted (2-4)."""
    f = _extreme(rng, (0.0, 0.3), (2.0, 4.0))
    return EditResult(_augly(image, "saturation", factor=f), {"factor": f}, _identity())


@register_edit("blur", "blur")
def blur(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy Gaussian blur; radius 1-6 px per 512 px of the longer side."""
    radius = round(_u(rng, 1.0, 6.0) * max(_size(image)) / 512, 2)
    return EditResult(_augly(image, "blur", radius=radius), {"radius": radius}, _identity())


@register_edit("gaussian_noise", "noise")
def gaussian_noise(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy random_noise: Gaussian noise of variance 0.003-0.04 (intensities in [0, 1]).

    AugLy reseeds numpy's global generator with the drawn ``seed``; its state is saved and restored around it.
    """
    var, seed = _u(rng, 0.003, 0.04, 4), int(rng.integers(0, 2**31 - 1))
    state = np.random.get_state()
    try:
        out = _augly(image, "random_noise", mean=0.0, var=var, seed=seed)
    finally:
        np.random.set_state(state)
    return EditResult(out, {"var": var, "seed": seed}, _identity())


@register_edit("salt_pepper", "noise")
def salt_pepper(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Set a fraction 1-8% of the pixels to black or white."""
    amount = _u(rng, 0.01, 0.08)
    out = image.copy()
    hit = rng.random(image.shape[:2]) < amount
    white = rng.random(image.shape[:2]) < 0.5
    out[hit & white] = 255
    out[hit & ~white] = 0
    return EditResult(out, {"amount": amount}, _identity())


@register_edit("jpeg_quality", "jpeg")
def jpeg_quality(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy encoding_quality: JPEG re-encoding at quality 5-50 (``params["quality"]``)."""
    q = int(rng.integers(5, 51))
    return EditResult(_augly(image, "encoding_quality", quality=q), {"quality": q}, _identity())


@register_edit("pixelization", "pixelize")
def pixelization(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy pixelization: downscale by ``ratio`` 0.08-0.4 and back up with nearest-neighbour sampling."""
    ratio = _u(rng, 0.08, 0.4)
    return EditResult(_augly(image, "pixelization", ratio=ratio), {"ratio": ratio}, _identity())


# mild variants, for "lightly edited" queries (not drawn by random chains)


@register_edit("mild_color", "mild")
def mild_color(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy colour jitter with factors 0.85-1.15."""
    p = {k: _u(rng, 0.85, 1.15) for k in ("brightness_factor", "contrast_factor", "saturation_factor")}
    return EditResult(_augly(image, "color_jitter", **p), p, _identity())


@register_edit("mild_jpeg", "mild")
def mild_jpeg(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy JPEG re-encoding at quality 60-90."""
    q = int(rng.integers(60, 91))
    return EditResult(_augly(image, "encoding_quality", quality=q), {"quality": q}, _identity())


@register_edit("mild_blur", "mild")
def mild_blur(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy Gaussian blur of radius 0.5-1.2 px."""
    radius = _u(rng, 0.5, 1.2, 2)
    return EditResult(_augly(image, "blur", radius=radius), {"radius": radius}, _identity())


# ------------------------------------------------------------------------------------------------------------
# overlays on the picture itself (identity transform)

_WORDS = (
    "hello", "wow", "best", "day", "ever", "summer", "photo", "look", "this", "love", "new", "free", "sale",
    "news", "omg", "lol", "city", "trip", "fun", "cool", "happy", "weekend", "vibes", "2021", "top", "like",
    "share", "follow", "me", "now", "live", "home", "art", "win", "the", "and", "of", "my", "our", "big",
    "small", "good",
)


def random_text(rng: np.random.Generator, n_words: tuple[int, int] = (1, 4)) -> str:
    """A few random words, or a random alphanumeric string (a quarter of the time)."""
    if rng.random() < 0.25:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(_pick(rng, alphabet) for _ in range(int(rng.integers(3, 12))))
    words = [_pick(rng, _WORDS) for _ in range(int(rng.integers(n_words[0], n_words[1] + 1)))]
    text = " ".join(words)
    return text.upper() if rng.random() < 0.3 else text


@register_edit("overlay_text", "text")
def overlay_text(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """1-3 lines of random text in a random bundled font, size 6-20% of the shorter side, random colour,
    opacity 0.6-1, at a random position (may run off the edge, as in DISC21)."""
    w, h = _size(image)
    font_file = _pick(rng, ctx.font_files())
    size_frac = _u(rng, 0.06, 0.2)
    font_px = max(8, round(min(w, h) * size_frac))
    colour, opacity = _colour(rng), _u(rng, 0.6, 1.0)
    lines = [random_text(rng) for _ in range(int(rng.integers(1, 4)))]
    x, y = _u(rng, 0.0, 0.7), _u(rng, 0.0, 0.8)
    font = ImageFont.truetype(str(font_file), font_px)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(layer).multiline_text(
        (x * w, y * h), "\n".join(lines), font=font, fill=(*colour, round(opacity * 255))
    )
    out = Image.alpha_composite(Image.fromarray(image).convert("RGBA"), layer)
    params = {"text": lines, "font": Path(font_file).name, "size": size_frac, "color": colour,
              "opacity": opacity, "position": [x, y]}
    return EditResult(_rgb(out), params, _identity())


@register_edit("overlay_emoji", "emoji")
def overlay_emoji(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy overlay_emoji: 1-3 random twemoji, each 10-40% of the image height, opacity 0.6-1, anywhere."""
    out = image
    placed = []
    for _ in range(int(rng.integers(1, 4))):
        path = Path(_pick(rng, ctx.emoji_files()))
        p = {"emoji_size": _u(rng, 0.1, 0.4), "opacity": _u(rng, 0.6, 1.0),
             "x_pos": _u(rng, 0.0, 0.85), "y_pos": _u(rng, 0.0, 0.85)}
        out = _augly(out, "overlay_emoji", emoji_path=str(path), **p)
        placed.append({"emoji": f"{path.parent.name}/{path.name}", **p})
    return EditResult(out, {"emojis": placed}, _identity())


@register_edit("overlay_stripes", "stripes")
def overlay_stripes(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """AugLy overlay_stripes: solid/dashed/dotted stripes of random angle, width, density, colour, opacity."""
    p = {
        "line_width": _u(rng, 0.1, 0.5), "line_color": _colour(rng), "line_angle": _u(rng, -90.0, 90.0, 1),
        "line_density": _u(rng, 0.2, 0.8), "line_type": str(_pick(rng, ("solid", "dashed", "dotted"))),
        "line_opacity": _u(rng, 0.3, 0.9),
    }
    out = _augly(image, "overlay_stripes", **{**p, "line_color": tuple(p["line_color"])})
    return EditResult(out, p, _identity())
