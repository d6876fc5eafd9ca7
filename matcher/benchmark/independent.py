"""A second edit generator, written without AugLy and with none of the training generator's edit code (PIL and
OpenCV only), for evaluation: the engine is fitted on benchmarks made by :mod:`matcher.benchmark.edits` and
:mod:`matcher.benchmark.compose`, and measured here on edits it has not seen, with ranges beyond the training
generator's:

- pixelisation by a factor of 4-12 (block averages, nearest-neighbour upsampling);
- JPEG quality 5-30;
- Gaussian blur with sigma 1.5-5 px;
- Gaussian noise with sigma 10-30 grey levels, per channel or in luminance only;
- brightness x0.2-0.5 or x1.5-1.9, contrast x0.3-0.6, hue rotated by 30-180 degrees, saturation x0-0.3;
- rotation by 8-30 degrees (either way) with a coloured fill, canvas kept or grown;
- text of 6-20 % of the picture's height, in DejaVu fonts shipped with matplotlib;
- heavy downscaling to 12-35 % of the size; crops of 15-60 % of the area; thick coloured frames;
- the picture pasted at 25-65 % of a background photo's width; opaque shapes hiding 5-20 % of it.

Every edit returns the input-to-output homography where there is one, so the benchmark manifest says where the
source content lies (as for the training generator). Registered in :data:`INDEPENDENT_EDITS`; the builder uses
them through the recipe "independent" (:mod:`matcher.benchmark.recipes`).
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matcher.benchmark.edits import EditContext, EditResult
from matcher.benchmark.geometry import apply_homography, corners, scaling, translation, warp_image
from matcher.io.images import resize_image
from matcher.registry import Registry

__all__ = ["INDEPENDENT_CHAIN_FAMILIES", "INDEPENDENT_COMPOSITES", "INDEPENDENT_EDITS", "INDEPENDENT_FAMILY",
           "independent_fonts"]

INDEPENDENT_EDITS: Registry[EditResult] = Registry("independent edit")
INDEPENDENT_FAMILY: dict[str, str] = {}  # edit name -> family
INDEPENDENT_CHAIN_FAMILIES: tuple[str, ...] = (
    "crop", "downscale", "rotate", "flip", "color", "blur", "noise", "jpeg", "pixelize", "text", "frame",
    "occlude", "paste",
)
INDEPENDENT_COMPOSITES: frozenset[str] = frozenset({"paste"})
_MIN_SIDE = 32  # px; no edit makes a side shorter than this


def _edit(name: str, family: str):
    def deco(fn):
        INDEPENDENT_FAMILY[name] = family
        return INDEPENDENT_EDITS.register(name)(fn)

    return deco


def _u(rng: np.random.Generator, lo: float, hi: float, nd: int = 3) -> float:
    return round(float(rng.uniform(lo, hi)), nd)


def _hw(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(0, 256, size=3)
    return int(c[0]), int(c[1]), int(c[2])


@lru_cache(maxsize=1)
def independent_fonts() -> tuple[Path, ...]:
    """The DejaVu TrueType fonts bundled with matplotlib (sans, serif, mono; regular and bold)."""
    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
             "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")
    found = tuple(folder / n for n in names if (folder / n).is_file())
    if not found:
        raise FileNotFoundError(f"no DejaVu fonts in {folder}")
    return found


# ------------------------------------------------------------------------------------------------ geometry
@_edit("crop_tight", "crop")
def crop_tight(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Keep 15-60 % of the area, aspect ratio x 1/1.8..1.8."""
    h, w = _hw(image)
    area, ratio = _u(rng, 0.15, 0.6), math.exp(rng.uniform(-math.log(1.8), math.log(1.8)))
    cw = int(min(w, max(min(_MIN_SIDE, w), round(w * math.sqrt(area * ratio)))))
    ch = int(min(h, max(min(_MIN_SIDE, h), round(h * math.sqrt(area / ratio)))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return EditResult(image[y0:y0 + ch, x0:x0 + cw].copy(), {"box": [x0, y0, x0 + cw, y0 + ch]},
                      translation(-x0, -y0))


@_edit("downscale", "downscale")
def downscale(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Shrink to 12-35 % of the size (area interpolation), as thumbnails are."""
    h, w = _hw(image)
    s = _u(rng, 0.12, 0.35)
    nw, nh = max(_MIN_SIDE, round(w * s)), max(_MIN_SIDE, round(h * s))
    out = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return EditResult(np.ascontiguousarray(out), {"scale": s, "size": [nw, nh]}, scaling(nw / w, nh / h))


@_edit("rotate_fill", "rotate")
def rotate_fill(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Rotate by 8-30 degrees either way about the centre; the canvas grows to hold it (half the time) or keeps
    its size; the uncovered area gets a random colour."""
    h, w = _hw(image)
    angle = _u(rng, 8.0, 30.0, 2) * (1 if rng.random() < 0.5 else -1)
    grow = bool(rng.random() < 0.5)
    fill = _colour(rng)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    about = rot @ translation(-w / 2, -h / 2)
    if grow:
        pts = apply_homography(about, corners(w, h))
        ow, oh = (math.ceil(float(np.ptp(pts[:, 0]))), math.ceil(float(np.ptp(pts[:, 1]))))
    else:
        ow, oh = w, h
    tr = translation(ow / 2, oh / 2) @ about
    return EditResult(warp_image(image, tr, (ow, oh), fill), {"angle": angle, "grow": grow, "fill": list(fill)},
                      tr)


@_edit("mirror", "flip")
def mirror(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Mirror left-right (3 times in 4) or top-bottom."""
    h, w = _hw(image)
    if rng.random() < 0.75:
        return EditResult(np.ascontiguousarray(image[:, ::-1]), {"axis": "x"},
                          np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]]))
    return EditResult(np.ascontiguousarray(image[::-1]), {"axis": "y"}, np.array([[1.0, 0, 0], [0, -1, h], [0, 0, 1]]))


@_edit("frame", "frame")
def frame(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """A solid frame 5-25 % of the size thick on each side (different widths), in a random colour."""
    h, w = _hw(image)
    left, right = (round(w * _u(rng, 0.05, 0.25)) for _ in range(2))
    top, bottom = (round(h * _u(rng, 0.05, 0.25)) for _ in range(2))
    colour = _colour(rng)
    out = np.empty((h + top + bottom, w + left + right, 3), np.uint8)
    out[:] = colour
    out[top:top + h, left:left + w] = image
    return EditResult(out, {"sides": [left, top, right, bottom], "colour": list(colour)}, translation(left, top))


# ------------------------------------------------------------------------------------------------ photometric
def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@_edit("brightness_far", "color")
def brightness_far(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Scale the values by 0.2-0.5 (dark) or 1.5-1.9 (washed out)."""
    f = _u(rng, 0.2, 0.5) if rng.random() < 0.6 else _u(rng, 1.5, 1.9)
    return EditResult(_to_u8(image.astype(np.float32) * f), {"factor": f}, np.eye(3))


@_edit("contrast_low", "color")
def contrast_low(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Pull the values towards their mean by a factor of 0.3-0.6."""
    f = _u(rng, 0.3, 0.6)
    x = image.astype(np.float32)
    m = float(x.mean())
    return EditResult(_to_u8(m + (x - m) * f), {"factor": f}, np.eye(3))


@_edit("hue_rotate", "color")
def hue_rotate(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Rotate the hue by 30-180 degrees either way (OpenCV HSV, 8-bit hue in half degrees)."""
    deg = int(rng.integers(30, 181)) * (1 if rng.random() < 0.5 else -1)
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + deg // 2) % 180).astype(np.uint8)
    return EditResult(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), {"degrees": deg}, np.eye(3))


@_edit("desaturate", "color")
def desaturate(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Keep 0-30 % of the saturation (0 = grey)."""
    f = _u(rng, 0.0, 0.3)
    x = image.astype(np.float32)
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return EditResult(_to_u8(grey + (x - grey) * f), {"factor": f}, np.eye(3))


@_edit("gaussian_blur", "blur")
def gaussian_blur(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Gaussian blur with sigma 1.5-5 px."""
    s = _u(rng, 1.5, 5.0, 2)
    return EditResult(np.ascontiguousarray(cv2.GaussianBlur(image, (0, 0), s)), {"sigma": s}, np.eye(3))


@_edit("noise_strong", "noise")
def noise_strong(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Additive Gaussian noise, sigma 10-30 grey levels, per channel or one value for the three channels."""
    s = _u(rng, 10.0, 30.0, 1)
    per_channel = bool(rng.random() < 0.5)
    h, w = _hw(image)
    n = rng.normal(0.0, s, size=(h, w, 3) if per_channel else (h, w, 1)).astype(np.float32)
    return EditResult(_to_u8(image.astype(np.float32) + n), {"sigma": s, "per_channel": per_channel}, np.eye(3))


@_edit("jpeg_low", "jpeg")
def jpeg_low(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Re-encode as JPEG at quality 5-30 (PIL)."""
    q = int(rng.integers(5, 31))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=q)
    out = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8)
    return EditResult(out, {"quality": q}, np.eye(3))


@_edit("pixelate", "pixelize")
def pixelate(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Average blocks of 4-12 px and show them as flat squares at the original size."""
    f = int(rng.integers(4, 13))
    h, w = _hw(image)
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return EditResult(np.ascontiguousarray(out), {"factor": f}, np.eye(3))


# ------------------------------------------------------------------------------------------------ overlays
_WORDS = ("SALE", "breaking", "news", "FREE", "best day ever", "look at this", "NO WAY", "share", "2026",
          "limited offer", "wow", "follow me", "original?", "LOL", "copyright", "exclusive", "today only")


@_edit("caption", "text")
def caption(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """One or two lines of text whose height is 6-20 % of the picture's, in a random colour with an outline
    (half the time) at a random place."""
    h, w = _hw(image)
    size = max(8, round(h * _u(rng, 0.06, 0.2)))
    fonts = independent_fonts()
    font_path = fonts[int(rng.integers(len(fonts)))]
    font = ImageFont.truetype(str(font_path), size)
    text = _WORDS[int(rng.integers(len(_WORDS)))]
    if rng.random() < 0.35:
        text += "\n" + _WORDS[int(rng.integers(len(_WORDS)))]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font)
    tw, th = x1 - x0, y1 - y0
    x = int(rng.integers(0, max(1, w - tw))) - x0
    y = int(rng.integers(0, max(1, h - th))) - y0
    outline = int(rng.random() < 0.5) * max(1, size // 12)
    colour = _colour(rng)
    draw.multiline_text((x, y), text, font=font, fill=colour, stroke_width=outline,
                        stroke_fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
    params = {"text": text, "font": font_path.name, "size": size, "xy": [x, y], "colour": list(colour),
              "outline": outline}
    return EditResult(np.array(pil, dtype=np.uint8), params, np.eye(3))


@_edit("shapes", "occlude")
def shapes(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """1-3 opaque rectangles or ellipses that hide 5-20 % of the picture in all."""
    h, w = _hw(image)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    n = int(rng.integers(1, 4))
    share = _u(rng, 0.05, 0.2) / n
    drawn = []
    for _ in range(n):
        ratio = math.exp(rng.uniform(-math.log(2.0), math.log(2.0)))
        sw = max(4, round(w * math.sqrt(share * ratio)))
        sh = max(4, round(h * math.sqrt(share / ratio)))
        x0, y0 = int(rng.integers(0, max(1, w - sw))), int(rng.integers(0, max(1, h - sh)))
        kind = "ellipse" if rng.random() < 0.5 else "rectangle"
        colour = _colour(rng)
        getattr(draw, kind)((x0, y0, x0 + sw, y0 + sh), fill=colour)
        drawn.append({"kind": kind, "box": [x0, y0, x0 + sw, y0 + sh], "colour": list(colour)})
    return EditResult(np.array(pil, dtype=np.uint8), {"shapes": drawn}, np.eye(3))


@_edit("paste_on_photo", "paste")
def paste_on_photo(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """The picture scaled to 25-65 % of another photo's width and pasted at a random place on it (the other
    photo is resized so that its longer side is 512-900 px)."""
    bg = ctx.random_other_photo(rng)
    bh, bw = _hw(bg)
    side = int(rng.integers(512, 901))
    s = side / max(bh, bw)
    bw2, bh2 = max(_MIN_SIDE, round(bw * s)), max(_MIN_SIDE, round(bh * s))
    canvas = resize_image(bg, bw2, bh2)
    h, w = _hw(image)
    f = _u(rng, 0.25, 0.65) * bw2 / w
    pw, ph = max(_MIN_SIDE // 2, round(w * f)), max(_MIN_SIDE // 2, round(h * f))
    pw, ph = min(pw, bw2), min(ph, bh2)
    small = resize_image(image, pw, ph)
    x0, y0 = int(rng.integers(0, bw2 - pw + 1)), int(rng.integers(0, bh2 - ph + 1))
    canvas[y0:y0 + ph, x0:x0 + pw] = small
    tr = translation(x0, y0) @ scaling(pw / w, ph / h)
    return EditResult(canvas, {"box": [x0, y0, x0 + pw, y0 + ph], "background_size": [bw2, bh2]}, tr)


@_edit("slight_jpeg", "mild")
def slight_jpeg(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Re-encode as JPEG at quality 70-92 (a light edit, for hard negatives)."""
    q = int(rng.integers(70, 93))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=q)
    return EditResult(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8),
                      {"quality": q}, np.eye(3))


@_edit("slight_gain", "mild")
def slight_gain(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Scale the values by 0.9-1.1 (a light edit, for hard negatives)."""
    f = _u(rng, 0.9, 1.1)
    return EditResult(_to_u8(image.astype(np.float32) * f), {"factor": f}, np.eye(3))
