"""Composite edits: the picture combined with other content (another photo, a screenshot template, a meme
caption, a mosaic of other photos, a blend). Each returns the exact homography of the picture into the result,
so the benchmark can record where the copied content lies. Registered in
:data:`matcher.benchmark.edits.EDITS`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matcher.benchmark.augly_compat import augly_image, meme_font_path, screenshot_templates
from matcher.benchmark.edits import (
    EditContext,
    EditResult,
    _colour,
    _pick,
    _rgb,
    _size,
    _u,
    random_text,
    register_edit,
    resize_image,
)
from matcher.benchmark.geometry import scaling, translation

__all__ = ["blend", "cover_resize", "meme", "mosaic", "overlay_onto_photo", "screenshot"]


def cover_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale RGB uint8 (H, W, 3) to cover (width, height) and centre-crop to exactly (height, width, 3)."""
    w, h = _size(image)
    s = max(width / w, height / h)
    sw, sh = max(width, round(w * s)), max(height, round(h * s))
    big = resize_image(image, sw, sh)
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(big[y0:y0 + height, x0:x0 + width])


@register_edit("overlay_onto_photo", "overlay")
def overlay_onto_photo(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Paste the picture, scaled to 20-70% of the background's width (aspect kept, at most 95% of its height),
    at a random place on another photo (rescaled so its longer side is 448-896 px)."""
    bg = ctx.random_other_photo(rng)
    bw0, bh0 = _size(bg)
    longer = int(rng.integers(448, 897))
    f = longer / max(bw0, bh0)
    bw, bh = max(64, round(bw0 * f)), max(64, round(bh0 * f))
    canvas = resize_image(bg, bw, bh)
    w, h = _size(image)
    frac = _u(rng, 0.2, 0.7)
    sw = max(16, round(frac * bw))
    sh = max(16, round(sw * h / w))
    if sh > 0.95 * bh:
        sh = int(0.95 * bh)
        sw = max(16, min(bw, round(sh * w / h)))
    x0, y0 = int(rng.integers(0, bw - sw + 1)), int(rng.integers(0, bh - sh + 1))
    canvas[y0:y0 + sh, x0:x0 + sw] = resize_image(image, sw, sh)
    params = {"scale": frac, "box": [x0, y0, x0 + sw, y0 + sh], "background_size": [bw, bh]}
    return EditResult(canvas, params, translation(x0, y0) @ scaling(sw / w, sh / h))


@lru_cache(maxsize=4)
def _template(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        arr = _rgb(im)
    arr.setflags(write=False)
    return arr


@register_edit("screenshot", "screenshot")
def screenshot(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Put the picture into the post area of one of AugLy's screenshot templates (web or mobile), either
    fitted with black letterbox bars ("fit") or scaled to fill the area and centre-cropped ("fill"); the whole
    screenshot is then scaled so its longer side is 600-1024 px. The placement is computed from AugLy's
    template boxes."""
    path, (bx0, by0, bx1, by1) = _pick(rng, screenshot_templates())
    mode = "fit" if rng.random() < 0.5 else "fill"
    canvas = _template(path).copy()
    bw, bh = bx1 - bx0, by1 - by0
    w, h = _size(image)
    s = min(bw / w, bh / h) if mode == "fit" else max(bw / w, bh / h)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    if mode == "fit":
        sw, sh = min(sw, bw), min(sh, bh)
    else:
        sw, sh = max(sw, bw), max(sh, bh)
    small = resize_image(image, sw, sh)
    if mode == "fit":
        ox, oy = bx0 + (bw - sw) // 2, by0 + (bh - sh) // 2
        canvas[by0:by1, bx0:bx1] = 0
        canvas[oy:oy + sh, ox:ox + sw] = small
    else:
        cx, cy = (sw - bw) // 2, (sh - bh) // 2
        canvas[by0:by1, bx0:bx1] = small[cy:cy + bh, cx:cx + bw]
        ox, oy = bx0 - cx, by0 - cy
    tr = translation(ox, oy) @ scaling(sw / w, sh / h)
    tw, th = _size(canvas)
    longer = int(rng.integers(600, 1025))
    f = longer / max(tw, th)
    ow, oh = round(tw * f), round(th * f)
    out = resize_image(canvas, ow, oh)
    sx, sy = ow / tw, oh / th
    visible = (bx0 * sx, by0 * sy, bx1 * sx, by1 * sy)  # "fill" crops the picture to the post area
    params = {"template": path.name, "mode": mode, "size": [ow, oh]}
    return EditResult(out, params, scaling(sx, sy) @ tr, visible)


def _fit_font(
    text: str, font_file: Path, width: int, height: int
) -> tuple[ImageFont.FreeTypeFont, tuple[int, ...]]:
    """The largest font size (px) at which ``text`` fits in width x height less 5 px margins, and its bbox."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    size = max(6, height - 10)
    while True:
        font = ImageFont.truetype(str(font_file), size)
        bbox = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        if (bbox[2] <= width - 10 and bbox[3] <= height - 10) or size <= 6:
            return font, bbox
        size = max(6, int(size * 0.9))


def _caption_bar(
    width: int, height: int, text: str, text_color: list[int], bg_color: list[int]
) -> np.ndarray:
    """A (height, width, 3) uint8 caption bar with ``text`` centred in the meme font."""
    bar = Image.new("RGB", (width, height), tuple(bg_color))
    font, bbox = _fit_font(text, meme_font_path(), width, height)
    x, y = (width - bbox[2]) / 2, (height - bbox[3]) / 2
    ImageDraw.Draw(bar).multiline_text((x, y), text, font=font, fill=tuple(text_color), align="center")
    return _rgb(bar)


@register_edit("meme", "meme")
def meme(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Meme framing: a caption bar (12-30% of the height) above (AugLy meme_format), below, or both."""
    position = str(_pick(rng, ("above", "above", "below", "both")))
    w, h = _size(image)
    cap = max(24, round(h * _u(rng, 0.12, 0.3)))
    dark_on_light = rng.random() < 0.7
    text_color = [0, 0, 0] if dark_on_light else _colour(rng)
    bg_color = [255, 255, 255] if dark_on_light else _colour(rng)
    texts = [random_text(rng, (1, 3)) for _ in range(2 if position == "both" else 1)]
    out, top = image, 0
    if position in ("above", "both"):
        try:
            out = _rgb(augly_image().meme_format(
                Image.fromarray(out), text=texts[0], font_file=str(meme_font_path()), caption_height=cap,
                text_color=tuple(text_color), meme_bg_color=tuple(bg_color),
            ))
        except (ValueError, OSError):  # AugLy's font-size search can go below 1 px on narrow images
            out = np.concatenate([_caption_bar(w, cap, texts[0], text_color, bg_color), out], axis=0)
        top = cap
    if position in ("below", "both"):
        out = np.concatenate([out, _caption_bar(w, cap, texts[-1], text_color, bg_color)], axis=0)
    params = {"position": position, "caption_height": cap, "text": texts, "text_color": text_color,
              "bg_color": bg_color}
    return EditResult(np.ascontiguousarray(out), params, translation(0, top))


@register_edit("mosaic", "mosaic")
def mosaic(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """The picture as one tile of a 1x2 (2x1 for wide pictures), 2x2 or 3x3 grid whose other tiles are other
    photos (scaled and centre-cropped to the tile); tiles have the picture's aspect ratio, the mosaic's longer
    side is 512-1024 px, with an optional 2-8 px gap."""
    w, h = _size(image)
    layout = str(_pick(rng, ("1x2", "2x2", "3x3")))
    rows, cols = {"1x2": (1, 2), "2x2": (2, 2), "3x3": (3, 3)}[layout]
    if layout == "1x2" and w > 1.2 * h:
        rows, cols = 2, 1
    gap = 0 if rng.random() < 0.5 else int(rng.integers(2, 9))
    gap_color = [255, 255, 255] if rng.random() < 0.5 else [0, 0, 0]
    longer = int(rng.integers(512, 1025))
    s = min((longer - gap * (cols - 1)) / (cols * w), (longer - gap * (rows - 1)) / (rows * h))
    tw, th = max(32, round(w * s)), max(32, round(h * s))
    cw, ch = cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap
    canvas = np.empty((ch, cw, 3), dtype=np.uint8)
    canvas[:] = gap_color
    r0, c0 = int(rng.integers(rows)), int(rng.integers(cols))
    for r in range(rows):
        for c in range(cols):
            x, y = c * (tw + gap), r * (th + gap)
            if (r, c) == (r0, c0):
                tile = resize_image(image, tw, th)
            else:
                tile = cover_resize(ctx.random_other_photo(rng), tw, th)
            canvas[y:y + th, x:x + tw] = tile
    x0, y0 = c0 * (tw + gap), r0 * (th + gap)
    params = {
        "grid": [rows, cols], "cell": [r0, c0], "tile_size": [tw, th], "gap": gap, "gap_color": gap_color
    }
    return EditResult(canvas, params, translation(x0, y0) @ scaling(tw / w, th / h))


@register_edit("blend", "blend")
def blend(image: np.ndarray, rng: np.random.Generator, ctx: EditContext) -> EditResult:
    """Blend with another photo (scaled and centre-cropped to the picture); the other's opacity 0.1-0.35."""
    w, h = _size(image)
    other = cover_resize(ctx.random_other_photo(rng), w, h)
    alpha = _u(rng, 0.1, 0.35)
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * other.astype(np.float32)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return EditResult(out, {"alpha": alpha}, np.eye(3))
