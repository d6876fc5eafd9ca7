"""Synthetic YOLO data for the pasted-picture detector: photos pasted into other pictures, with exact boxes.

Every example is one of these layouts (probabilities in :data:`LAYOUTS`):

* ``paste``: 1-3 photos (or crops of them) pasted into a background photo (or, 20% of the time, a plain or
  gradient card), each 10-80% of the background's width, aspect ratio jittered by up to x1.3, rotated by up to
  8 degrees 30% of the time, with an optional border, drop shadow and opacity 0.7-0.95; pastes overlap each
  other by less than 10% of either box;
* ``screenshot``: the photo in the post area of one of AugLy's bundled web/mobile screenshot templates
  (letterboxed "fit" or cropped "fill");
* ``meme``: the photo with a caption bar above, below or both (meme font);
* ``mosaic``: a 1x2, 2x1, 1x3, 2x2, 2x3 or 3x3 grid of photos with an optional gap, every tile labelled;
* ``none``: an ordinary photo (or a crop), nothing pasted, no label: the detector must stay quiet on it.

Pasted pictures get edits of their own (colour, greyscale, blur, JPEG) before pasting. On top of any layout,
distractors that are NOT pictures (text, emoji, stripes) are drawn with some probability; they get no label
unless ``overlay_class`` is set (then text and emoji boxes are class 1 "overlay").

Labels: class 0 "picture" = the axis-aligned box (px) of each pasted picture's visible content (without its
border; the box of the rotated rectangle when rotated). Output folder::

    images/{train,val}/S<split><index>.jpg   labels/{train,val}/*.txt   data.yaml   manifest.json

Split by source photo: the photo list (sorted) is shuffled with ``seed`` and ``val_fraction`` of it forms the
val pool; every photo of a val example (background, pastes, tiles) comes from that pool and every photo of a
train example from the rest. Determinism: example ``i`` of split ``s`` draws all its choices from
``np.random.default_rng([seed, s, i])``, so the output is byte-identical for a seed, whatever ``workers``.
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from matcher.io.atomic import atomic_write_bytes, atomic_write_text
from matcher.io.folders import list_images

__all__ = [
    "CLASS_NAMES",
    "LAYOUTS",
    "SynthConfig",
    "SynthSummary",
    "make_detector_data",
    "make_example",
    "split_sources",
]

CLASS_NAMES = ("picture", "overlay")  # class ids 0, 1 (1 only with overlay_class)
LAYOUTS: dict[str, float] = {"paste": 0.40, "screenshot": 0.10, "meme": 0.12, "mosaic": 0.18, "none": 0.20}
_SPLITS = {"train": 0, "val": 1}
_MIN_BOX = 6  # px in the saved image; smaller boxes are not labelled


class SynthError(ValueError):
    """Bad input to the synthetic-data generator (folder with too few photos, bad sizes)."""


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and probabilities of the generator (defaults: the shipped detector's recipe)."""

    min_side: int = 320  # px: the saved image's longer side is drawn from [min_side, max_side]
    max_side: int = 416
    canvas_side: tuple[int, int] = (512, 768)  # px: longer side of the canvas the layout is composed on
    paste_scale: tuple[float, float] = (0.10, 0.80)  # pasted width / canvas width
    max_pastes: int = 3
    card_prob: float = 0.2  # paste layout: plain/gradient background instead of a photo
    rotate_prob: float = 0.3  # pasted picture rotated by U(-max_rotation, max_rotation) degrees
    max_rotation: float = 8.0
    border_prob: float = 0.3  # solid border around a pasted picture (not part of its box)
    shadow_prob: float = 0.25  # drop shadow under a pasted picture
    opacity_prob: float = 0.2  # pasted picture drawn with opacity U(0.7, 0.95)
    edit_pictures: bool = True  # colour / greyscale / blur / JPEG edits inside pasted pictures
    distractor_prob: float = 0.4  # chance of 1-3 text/emoji/stripes overlays on an example
    overlay_class: bool = False  # label text/emoji distractors as class 1 "overlay"
    jpeg_quality: tuple[int, int] = (60, 95)


@dataclass
class Example:
    """One generated example: RGB uint8 (H, W, 3) image, boxes (N, 4) float x0, y0, x1, y1 px, classes (N,)."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    layout: str
    sources: list[str]
    distractors: list[dict[str, Any]] = field(default_factory=list)
    quality: int = 90


@dataclass
class SynthSummary:
    """What :func:`make_detector_data` wrote."""

    out_dir: str
    counts: dict[str, int]
    layouts: dict[str, int]
    boxes: int
    sources: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        return (f"wrote {self.counts} images ({self.boxes} boxes; layouts {self.layouts}; source photos "
                f"{self.sources}) to {self.out_dir} in {self.seconds:.1f}s")


# ------------------------------------------------------------------------------------------------------------
# photos and small image helpers


@lru_cache(maxsize=96)
def _photo(path: str) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr.setflags(write=False)
    return arr


def split_sources(photos: list[Path], seed: int, val_fraction: float) -> dict[str, list[Path]]:
    """Disjoint train/val pools of source photos: the sorted list shuffled with ``seed``; val takes the first
    ``round(val_fraction * n)`` (at least 1 when val_fraction > 0)."""
    ordered = sorted(photos)
    perm = np.random.default_rng([seed, 99]).permutation(len(ordered))
    n_val = max(1, round(val_fraction * len(ordered))) if val_fraction > 0 else 0
    return {"val": sorted(ordered[i] for i in perm[:n_val]), "train": sorted(ordered[i] for i in perm[n_val:])}


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img.copy()
    return np.asarray(Image.fromarray(img).resize((max(1, w), max(1, h)), Image.Resampling.BICUBIC))


def _cover(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Scale to cover (w, h) and centre-crop to exactly (h, w, 3)."""
    s = max(w / img.shape[1], h / img.shape[0])
    sw, sh = max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))
    big = _resize(img, sw, sh)
    x0, y0 = (sw - w) // 2, (sh - h) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def _random_crop(img: np.ndarray, rng: np.random.Generator, area: tuple[float, float]) -> np.ndarray:
    """A crop of ``area`` (fraction range) of the image, aspect ratio x exp(U(-0.4, 0.4))."""
    h, w = img.shape[:2]
    a = rng.uniform(*area)
    r = math.exp(rng.uniform(-0.4, 0.4))
    cw = int(np.clip(round(w * math.sqrt(a * r)), 32, w))
    ch = int(np.clip(round(h * math.sqrt(a / r)), 32, h))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _edit_inside(img: np.ndarray, rng: np.random.Generator, on: bool = True) -> np.ndarray:
    """Edits of a pasted picture: colour (brightness/contrast/saturation), greyscale, blur, JPEG."""
    if not on:
        return img
    pil = Image.fromarray(img)
    if rng.random() < 0.5:
        pil = ImageEnhance.Brightness(pil).enhance(rng.uniform(0.6, 1.4))
        pil = ImageEnhance.Contrast(pil).enhance(rng.uniform(0.6, 1.4))
        pil = ImageEnhance.Color(pil).enhance(rng.uniform(0.3, 1.7))
    if rng.random() < 0.1:
        pil = pil.convert("L").convert("RGB")
    if rng.random() < 0.2:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    out = np.asarray(pil.convert("RGB"))
    if rng.random() < 0.3:
        out = _jpeg(out, int(rng.integers(20, 80)))
    return out


def _scaled_alpha(img: Image.Image, factor: float) -> Image.Image:
    """The alpha channel of RGBA ``img`` multiplied by ``factor`` (L image)."""
    return img.getchannel("A").point([int(v * factor) for v in range(256)])


def _card(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A plain or two-colour gradient background (h, w, 3) uint8."""
    c0, c1 = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if rng.random() < 0.5:
        c1 = c0
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).round().astype(np.uint8).copy()


# ------------------------------------------------------------------------------------------------------------
# layouts; each returns canvas (H, W, 3) uint8, boxes list[(x0, y0, x1, y1)], sources list[str]


class _Pool:
    def __init__(self, photos: list[Path], rng: np.random.Generator) -> None:
        self.photos, self.rng, self.used = photos, rng, []

    def draw(self) -> np.ndarray:
        p = self.photos[int(self.rng.integers(len(self.photos)))]
        self.used.append(p.name)
        return _photo(str(p))

    def picture(self) -> np.ndarray:
        """A photo, or (40%) a crop of 30-90% of it."""
        img = self.draw()
        return _random_crop(img, self.rng, (0.3, 0.9)) if self.rng.random() < 0.4 else img


def _canvas_size(rng: np.random.Generator, cfg: SynthConfig, aspect: float | None = None) -> tuple[int, int]:
    longer = int(rng.integers(cfg.canvas_side[0], cfg.canvas_side[1] + 1))
    a = aspect if aspect is not None else math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
    return (longer, max(64, round(longer / a))) if a >= 1 else (max(64, round(longer * a)), longer)


def _overlap_ok(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    a = (x1 - x0) * (y1 - y0)
    for b in boxes:
        iw, ih = min(x1, b[2]) - max(x0, b[0]), min(y1, b[3]) - max(y0, b[1])
        if iw > 0 and ih > 0 and iw * ih > 0.1 * min(a, (b[2] - b[0]) * (b[3] - b[1])):
            return False
    return True


def _paste_patch(pic: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> tuple[Image.Image, Image.Image]:
    """RGBA patch (picture + optional border, optionally rotated) and an L mask of the picture content."""
    h, w = pic.shape[:2]
    bw = int(rng.integers(2, max(3, round(0.04 * max(w, h))) + 1)) if rng.random() < cfg.border_prob else 0
    patch = Image.new("RGBA", (w + 2 * bw, h + 2 * bw), (*_colour(rng), 255) if rng.random() < 0.6 else
                      (255, 255, 255, 255))
    patch.paste(Image.fromarray(pic).convert("RGBA"), (bw, bw))
    mask = Image.new("L", patch.size, 0)
    mask.paste(255, (bw, bw, bw + w, bw + h))
    if rng.random() < cfg.rotate_prob:
        angle = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        patch = patch.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return patch, mask


def _layout_paste(pool: _Pool, rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list, list]:
    cw, ch = _canvas_size(rng, cfg)
    canvas = _cover(pool.draw(), cw, ch) if rng.random() < 1.0 - cfg.card_prob else _card(rng, cw, ch)
    base = Image.fromarray(canvas).convert("RGBA")
    boxes: list[tuple[int, int, int, int]] = []
    n = min(cfg.max_pastes, int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17])))
    for _ in range(n):
        pic = pool.picture()
        frac = float(rng.uniform(*cfg.paste_scale))
        aspect = pic.shape[1] / pic.shape[0] * math.exp(rng.uniform(-0.25, 0.25))
        pw = max(24, round(frac * cw))
        ph = max(24, round(pw / aspect))
        if ph > 0.9 * ch:
            ph = int(0.9 * ch)
            pw = max(24, round(ph * aspect))
        pw = min(pw, int(0.95 * cw))
        patch, mask = _paste_patch(_edit_inside(_resize(pic, pw, ph), rng, cfg.edit_pictures), rng, cfg)
        sw, sh = patch.size
        mb = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
        if sw >= cw or sh >= ch or mb is None:
            continue
        for _try in range(10):
            x0, y0 = int(rng.integers(0, cw - sw + 1)), int(rng.integers(0, ch - sh + 1))
            box = (x0 + mb[0], y0 + mb[1], x0 + mb[2], y0 + mb[3])
            if _overlap_ok(box, boxes):
                break
        else:
            continue
        if rng.random() < cfg.shadow_prob:  # drop shadow
            off = int(rng.integers(2, 9))
            shadow = Image.new("RGBA", patch.size, (0, 0, 0, 0))
            shadow.putalpha(patch.getchannel("A").point(lambda v: int(v * 0.5)))
            shadow = shadow.filter(ImageFilter.GaussianBlur(off / 1.5))
            base.alpha_composite(shadow, (min(cw - sw, x0 + off), min(ch - sh, y0 + off)))
        if rng.random() < cfg.opacity_prob:
            patch.putalpha(_scaled_alpha(patch, float(rng.uniform(0.7, 0.95))))
        base.alpha_composite(patch, (x0, y0))
        boxes.append(box)
    return np.asarray(base.convert("RGB")), boxes, []


def _layout_screenshot(pool: _Pool, rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list, list]:
    from matcher.benchmark.augly_compat import screenshot_templates

    path, (bx0, by0, bx1, by1) = screenshot_templates()[int(rng.integers(len(screenshot_templates())))]
    canvas = np.array(_template(str(path)))
    pic = _edit_inside(pool.picture(), rng, cfg.edit_pictures)
    bw, bh = bx1 - bx0, by1 - by0
    h, w = pic.shape[:2]
    if rng.random() < 0.5:  # fit, letterboxed
        s = min(bw / w, bh / h)
        sw, sh = min(bw, max(1, round(w * s))), min(bh, max(1, round(h * s)))
        ox, oy = bx0 + (bw - sw) // 2, by0 + (bh - sh) // 2
        canvas[by0:by1, bx0:bx1] = 0 if rng.random() < 0.7 else 255
        canvas[oy:oy + sh, ox:ox + sw] = _resize(pic, sw, sh)
        box = (ox, oy, ox + sw, oy + sh)
    else:  # fill the post area
        canvas[by0:by1, bx0:bx1] = _cover(pic, bw, bh)
        box = (bx0, by0, bx1, by1)
    return canvas, [box], []


@lru_cache(maxsize=8)
def _template(path: str) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    arr.setflags(write=False)
    return arr


def _layout_meme(pool: _Pool, rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list, list]:
    from matcher.benchmark.augly_compat import meme_font_path

    pic = _edit_inside(pool.picture(), rng, cfg.edit_pictures)
    longer = int(rng.integers(cfg.canvas_side[0], cfg.canvas_side[1] + 1))
    s = longer / max(pic.shape[:2])
    w, h = max(64, round(pic.shape[1] * s)), max(64, round(pic.shape[0] * s))
    pic = _resize(pic, w, h)
    where = ("above", "above", "below", "both")[int(rng.integers(4))]
    cap = max(24, round(h * rng.uniform(0.12, 0.3)))
    dark_on_light = rng.random() < 0.7
    fg = (0, 0, 0) if dark_on_light else _colour(rng)
    bg = (255, 255, 255) if dark_on_light else _colour(rng)
    parts, top = [], 0
    if where in ("above", "both"):
        parts.append(_caption(rng, w, cap, fg, bg, meme_font_path()))
        top = cap
    parts.append(pic)
    if where in ("below", "both"):
        parts.append(_caption(rng, w, cap, fg, bg, meme_font_path()))
    return np.concatenate(parts, axis=0), [(0, top, w, top + h)], []


def _caption(rng: np.random.Generator, w: int, h: int, fg: tuple, bg: tuple, font_file: Path) -> np.ndarray:
    bar = Image.new("RGB", (w, h), bg)
    text = _words(rng, 1, 4)
    draw = ImageDraw.Draw(bar)
    size = max(8, h - 10)
    while True:
        font = ImageFont.truetype(str(font_file), size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        if (x1 - x0 <= w - 10 and y1 - y0 <= h - 10) or size <= 8:
            break
        size = max(8, int(size * 0.85))
    draw.text(((w - (x1 - x0)) / 2 - x0, (h - (y1 - y0)) / 2 - y0), text, font=font, fill=fg)
    return np.asarray(bar)


_GRIDS = ((1, 2), (2, 1), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3))


def _layout_mosaic(pool: _Pool, rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list, list]:
    rows, cols = _GRIDS[int(rng.integers(len(_GRIDS)))]
    gap = 0 if rng.random() < 0.5 else int(rng.integers(2, 9))
    gap_colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0) if rng.random() < 0.7 else _colour(rng)
    longer = int(rng.integers(cfg.canvas_side[0], cfg.canvas_side[1] + 1))
    tile_aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.5)))
    s = min((longer - gap * (cols - 1)) / (cols * tile_aspect), (longer - gap * (rows - 1)) / rows)
    th = max(32, round(s))
    tw = max(32, round(s * tile_aspect))
    canvas = np.empty((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), np.uint8)
    canvas[:] = gap_colour
    boxes = []
    for r in range(rows):
        for c in range(cols):
            x, y = c * (tw + gap), r * (th + gap)
            canvas[y:y + th, x:x + tw] = _cover(_edit_inside(pool.picture(), rng, cfg.edit_pictures), tw, th)
            boxes.append((x, y, x + tw, y + th))
    return canvas, boxes, []


def _layout_none(pool: _Pool, rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list, list]:
    img = pool.draw()
    if rng.random() < 0.3:
        img = _random_crop(img, rng, (0.4, 0.9))
    if rng.random() < 0.3:
        img = _edit_inside(img, rng, cfg.edit_pictures)
    return np.array(img), [], []


_LAYOUT_FNS = {"paste": _layout_paste, "screenshot": _layout_screenshot, "meme": _layout_meme,
               "mosaic": _layout_mosaic, "none": _layout_none}


# ------------------------------------------------------------------------------------------------------------
# distractors (not pictures)

_WORDS = ("wow", "best", "day", "ever", "summer", "look", "this", "love", "new", "free", "sale", "omg", "lol",
          "city", "trip", "fun", "cool", "happy", "weekend", "vibes", "2021", "top", "like", "share", "follow",
          "me", "now", "live", "home", "art", "win", "the", "and", "my", "big", "good", "news")


def _words(rng: np.random.Generator, lo: int, hi: int) -> str:
    text = " ".join(_WORDS[int(rng.integers(len(_WORDS)))] for _ in range(int(rng.integers(lo, hi + 1))))
    return text.upper() if rng.random() < 0.4 else text


def _draw_text(img: Image.Image, rng: np.random.Generator) -> dict[str, Any]:
    from matcher.benchmark.augly_compat import font_paths

    fonts = font_paths()
    w, h = img.size
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), max(8, round(min(w, h) *
                                                                                    rng.uniform(0.05, 0.18))))
    lines = "\n".join(_words(rng, 1, 3) for _ in range(int(rng.integers(1, 3))))
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pos = (float(rng.uniform(0, 0.7) * w), float(rng.uniform(0, 0.85) * h))
    draw.multiline_text(pos, lines, font=font, fill=(*_colour(rng), int(rng.integers(150, 256))))
    img.alpha_composite(layer)
    bb = layer.getchannel("A").getbbox()
    return {"kind": "text", "box": list(bb) if bb else None}


def _draw_emoji(img: Image.Image, rng: np.random.Generator) -> dict[str, Any]:
    from matcher.benchmark.augly_compat import emoji_paths

    paths = emoji_paths()
    path = paths[int(rng.integers(len(paths)))]
    w, h = img.size
    side = max(12, round(h * rng.uniform(0.08, 0.3)))
    with Image.open(path) as im:
        emo = im.convert("RGBA").resize((side, side), Image.Resampling.BICUBIC)
    if rng.random() < 0.3:
        emo.putalpha(_scaled_alpha(emo, float(rng.uniform(0.6, 1.0))))
    x0, y0 = int(rng.integers(0, max(1, w - side))), int(rng.integers(0, max(1, h - side)))
    img.alpha_composite(emo, (x0, y0))
    bb = emo.getchannel("A").getbbox()
    box = [x0 + bb[0], y0 + bb[1], x0 + bb[2], y0 + bb[3]] if bb else None
    return {"kind": "emoji", "box": box}


def _draw_stripes(img: Image.Image, rng: np.random.Generator) -> dict[str, Any]:
    w, h = img.size
    layer = Image.new("RGBA", (2 * max(w, h),) * 2, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    period = max(6, round(max(w, h) * rng.uniform(0.03, 0.15)))
    width = max(1, round(period * rng.uniform(0.1, 0.5)))
    fill = (*_colour(rng), int(rng.integers(60, 200)))
    for y in range(0, layer.size[1], period):
        draw.rectangle((0, y, layer.size[0], y + width), fill=fill)
    layer = layer.rotate(float(rng.uniform(-90, 90)), resample=Image.Resampling.BILINEAR)
    ox, oy = (layer.size[0] - w) // 2, (layer.size[1] - h) // 2
    img.alpha_composite(layer.crop((ox, oy, ox + w, oy + h)))
    return {"kind": "stripes", "box": None}


_DISTRACTORS = (_draw_text, _draw_text, _draw_emoji, _draw_emoji, _draw_stripes)


# ------------------------------------------------------------------------------------------------------------
# examples


def _pick_layout(rng: np.random.Generator) -> str:
    names = list(LAYOUTS)
    p = np.array([LAYOUTS[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def make_example(photos: list[Path], rng: np.random.Generator, cfg: SynthConfig = SynthConfig(),
                 layout: str | None = None) -> Example:
    """One example from the photo pool ``photos`` (every choice drawn from ``rng``). Boxes are in px of the
    returned image (longer side in [cfg.min_side, cfg.max_side])."""
    if not photos:
        raise SynthError("no source photos to draw from")
    layout = layout or _pick_layout(rng)
    if layout not in _LAYOUT_FNS:
        raise SynthError(f"unknown layout {layout!r}; known: {', '.join(_LAYOUT_FNS)}")
    pool = _Pool(photos, rng)
    canvas, boxes, _ = _LAYOUT_FNS[layout](pool, rng, cfg)
    pil = Image.fromarray(np.ascontiguousarray(canvas)).convert("RGBA")
    distractors = []
    if rng.random() < cfg.distractor_prob:
        for _ in range(int(rng.integers(1, 4))):
            distractors.append(_DISTRACTORS[int(rng.integers(len(_DISTRACTORS)))](pil, rng))
    w, h = pil.size
    longer = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    s = longer / max(w, h)
    ow, oh = max(32, round(w * s)), max(32, round(h * s))
    out = np.asarray(pil.convert("RGB").resize((ow, oh), Image.Resampling.BICUBIC if s > 1 else
                                                Image.Resampling.LANCZOS))
    sx, sy = ow / w, oh / h
    rows, cls = [], []
    for b in boxes:
        rows.append([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
        cls.append(0)
    for d in distractors:
        if d["box"] is not None:
            d["box"] = [round(d["box"][0] * sx, 2), round(d["box"][1] * sy, 2), round(d["box"][2] * sx, 2),
                        round(d["box"][3] * sy, 2)]
            if cfg.overlay_class and d["kind"] in ("text", "emoji"):
                rows.append(d["box"])
                cls.append(1)
    arr = np.array(rows, np.float64).reshape(-1, 4)
    arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, ow)
    arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, oh)
    keep = ((arr[:, 2] - arr[:, 0]) >= _MIN_BOX) & ((arr[:, 3] - arr[:, 1]) >= _MIN_BOX)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return Example(np.ascontiguousarray(out), arr[keep], np.array(cls, np.int64)[keep], layout, pool.used,
                   distractors, quality)


def yolo_label_text(boxes: np.ndarray, classes: np.ndarray, width: int, height: int) -> str:
    """YOLO label lines "cls cx cy w h" (normalised to [0, 1], 6 decimals) for (N, 4) x0, y0, x1, y1 px."""
    lines = []
    for (x0, y0, x1, y1), c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), classes):
        lines.append(f"{int(c)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_WORKER: dict[str, Any] = {}


def _job(args: tuple[str, int]) -> dict[str, Any]:
    split, i = args
    out_dir: Path = _WORKER["out_dir"]
    cfg: SynthConfig = _WORKER["cfg"]
    rng = np.random.default_rng([_WORKER["seed"], _SPLITS[split], i])
    ex = make_example(_WORKER["pools"][split], rng, cfg)
    name = f"S{_SPLITS[split]}{i:06d}"
    h, w = ex.image.shape[:2]
    atomic_write_bytes(out_dir / "images" / split / f"{name}.jpg", _encode_jpeg(ex.image, ex.quality))
    atomic_write_text(out_dir / "labels" / split / f"{name}.txt", yolo_label_text(ex.boxes, ex.classes, w, h))
    return {"name": name, "split": split, "layout": ex.layout, "size": [w, h], "sources": ex.sources,
            "boxes": np.round(ex.boxes, 2).tolist(), "classes": ex.classes.tolist(), "distractors": ex.distractors,
            "jpeg_quality": ex.quality}


def _init(state: dict[str, Any]) -> None:
    _WORKER.update(state)


def make_detector_data(photos_dir: str | Path, out_dir: str | Path, *, n_train: int = 1500, n_val: int = 300,
                       seed: int = 0, val_fraction: float = 0.2, workers: int = 1,
                       config: SynthConfig = SynthConfig(), progress: bool = False) -> SynthSummary:
    """Write a YOLO dataset (module docstring) generated from the photos under ``photos_dir``.

    Raises :class:`SynthError` when the folder has fewer than 10 photos. Existing files of the same names are
    replaced; ``manifest.json`` (every example: layout, sources, boxes, distractors) and ``data.yaml`` last.
    """
    t0 = time.perf_counter()
    photos = list_images(photos_dir)
    if len(photos) < 10:
        raise SynthError(f"{photos_dir}: need at least 10 photos to make detector data, found {len(photos)}")
    if n_train < 0 or n_val < 0 or not 0 < val_fraction < 1:
        raise SynthError("n_train/n_val must be >= 0 and 0 < val_fraction < 1")
    out = Path(out_dir)
    for split in _SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    pools = split_sources(photos, seed, val_fraction)
    state = {"out_dir": out, "cfg": config, "seed": seed, "pools": pools}
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(state,)) as pool:
            records = list(pool.imap(_job, jobs, chunksize=8))
    else:
        _init(state)
        records = []
        for k, job in enumerate(jobs):
            records.append(_job(job))
            if progress and (k + 1) % 100 == 0:
                print(f"  {k + 1}/{len(jobs)} examples", file=sys.stderr)
    names = list(CLASS_NAMES if config.overlay_class else CLASS_NAMES[:1])
    manifest = {"seed": seed, "photos_dir": str(photos_dir), "val_fraction": val_fraction,
                "config": {k: getattr(config, k) for k in config.__dataclass_fields__}, "names": names,
                "sources": {s: [p.name for p in ps] for s, ps in pools.items()}, "examples": records}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    yaml = [f"path: {out.resolve()}", "train: images/train", "val: images/val", f"nc: {len(names)}", "names:"]
    yaml += [f"  {i}: {n}" for i, n in enumerate(names)]
    atomic_write_text(out / "data.yaml", "\n".join(yaml) + "\n")
    counts = Counter(r["split"] for r in records)
    return SynthSummary(str(out), {s: counts.get(s, 0) for s in _SPLITS}, dict(Counter(r["layout"] for r in records)),
                        sum(len(r["boxes"]) for r in records), {s: len(ps) for s, ps in pools.items()},
                        time.perf_counter() - t0)
