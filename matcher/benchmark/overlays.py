"""The same words or the same symbol put on two different pictures: the "shared overlay" hard negatives.

Two different pictures that carry the same caption, the same sign or the same logo share many local features on
the overlay alone; they are not copies of each other. :func:`shared_overlay` draws what the overlay is from a seed
(so a reference and a query drawn with one seed get the same words in the same font and colours, or the same
symbol) and where it goes from a second generator (each picture places it on its own). Symbols are pictures from a
folder (e.g. clip art: signs, flags, logos), or, without one, a drawn sign: a coloured octagon, circle, triangle or
rounded square with a short word, as road and shop signs are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matcher.benchmark.independent import independent_fonts
from matcher.io.images import load_image, resize_image

__all__ = ["shared_overlay"]

_CAPTIONS = ("STOP", "SALE 50%", "OPEN", "NO PARKING", "EXIT", "BREAKING NEWS", "HAPPY BIRTHDAY", "HOTEL",
             "PHARMACY", "FOR RENT", "DANGER", "ONE WAY", "WELCOME", "CAFE", "POLICE", "TAXI", "ENTRANCE")
_SIGN_WORDS = ("STOP", "EXIT", "OPEN", "BUS", "TAXI", "P", "H", "SOS", "WC", "INFO", "BAR", "24h")


def _rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(0, 256, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def _text_patch(rng: np.random.Generator, width: int) -> tuple[Image.Image, dict[str, Any]]:
    """An RGBA patch holding a caption, sized for a ``width``-px picture (set by the overlay's seed)."""
    fonts = independent_fonts()
    font_path = fonts[int(rng.integers(len(fonts)))]
    text = _CAPTIONS[int(rng.integers(len(_CAPTIONS)))]
    frac = float(rng.uniform(0.35, 0.8))  # text width as a share of the picture width
    colour, stroke = _rgb(rng), int(rng.integers(0, 2))
    font = ImageFont.truetype(str(font_path), 100)
    box = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox((0, 0), text, font=font)
    size = max(10, int(100 * frac * width / max(1, box[2] - box[0])))
    font = ImageFont.truetype(str(font_path), size)
    box = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox((0, 0), text, font=font, stroke_width=2 * stroke)
    patch = Image.new("RGBA", (box[2] - box[0] + 4, box[3] - box[1] + 4), (0, 0, 0, 0))
    ImageDraw.Draw(patch).text((2 - box[0], 2 - box[1]), text, font=font, fill=colour + (255,),
                               stroke_width=2 * stroke, stroke_fill=(0, 0, 0, 255) if sum(colour) > 380
                               else (255, 255, 255, 255))
    return patch, {"kind": "text", "text": text, "font": font_path.name, "width_fraction": round(frac, 3)}


def _sign_patch(rng: np.random.Generator, width: int) -> tuple[Image.Image, dict[str, Any]]:
    """An RGBA drawn sign (shape, colour, word set by the overlay's seed)."""
    shape = ("octagon", "circle", "triangle", "square")[int(rng.integers(4))]
    word = _SIGN_WORDS[int(rng.integers(len(_SIGN_WORDS)))]
    frac = float(rng.uniform(0.2, 0.45))
    fill, ink = _rgb(rng), (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
    s = max(24, int(frac * width))
    patch = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    c, r = s / 2, s / 2 - 1
    if shape == "octagon":
        ang = np.pi / 8 + np.arange(8) * np.pi / 4
        d.polygon([(c + r * np.cos(a), c + r * np.sin(a)) for a in ang], fill=fill + (255,), outline=ink + (255,),
                  width=max(1, s // 30))
    elif shape == "circle":
        d.ellipse((1, 1, s - 2, s - 2), fill=fill + (255,), outline=ink + (255,), width=max(1, s // 30))
    elif shape == "triangle":
        d.polygon([(c, 1), (s - 2, s - 2), (1, s - 2)], fill=fill + (255,), outline=ink + (255,),
                  width=max(1, s // 30))
    else:
        d.rounded_rectangle((1, 1, s - 2, s - 2), radius=s // 8, fill=fill + (255,), outline=ink + (255,),
                            width=max(1, s // 30))
    font = ImageFont.truetype(str(independent_fonts()[1]), max(8, int(s * (0.45 if len(word) <= 2 else 0.28))))
    box = d.textbbox((0, 0), word, font=font)
    d.text((c - (box[0] + box[2]) / 2, c * (1.15 if shape == "triangle" else 1.0) - (box[1] + box[3]) / 2), word,
           font=font, fill=ink + (255,))
    return patch, {"kind": "sign", "shape": shape, "text": word, "width_fraction": round(frac, 3)}


def _symbol_patch(rng: np.random.Generator, width: int, path: Path) -> tuple[Image.Image, dict[str, Any]]:
    """A picture from the symbols folder, scaled to 15-40 % of the width (set by the overlay's seed)."""
    frac = float(rng.uniform(0.15, 0.4))
    img = load_image(path)
    w = max(16, int(frac * width))
    h = max(16, round(img.shape[0] * w / img.shape[1]))
    patch = Image.fromarray(resize_image(img, w, h)).convert("RGBA")
    return patch, {"kind": "symbol", "source": path.name, "width_fraction": round(frac, 3)}


def shared_overlay(image: np.ndarray, seed: int, symbols: tuple[Path, ...],
                   place: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """``image`` (RGB uint8) with the overlay chosen by ``seed`` (a caption, a drawn sign, or a picture of
    ``symbols``), at a place drawn by ``place``; returns (new image, JSON-able description)."""
    what = np.random.default_rng([int(seed), 7])
    width = int(image.shape[1])
    r = what.random()
    if symbols and r < 0.4:
        patch, params = _symbol_patch(what, width, symbols[int(what.integers(len(symbols)))])
    elif r < 0.7:
        patch, params = _text_patch(what, width)
    else:
        patch, params = _sign_patch(what, width)
    h, w = image.shape[:2]
    pw, ph = min(patch.size[0], w), min(patch.size[1], h)
    patch = patch.crop((0, 0, pw, ph))
    x0, y0 = int(place.integers(0, w - pw + 1)), int(place.integers(0, h - ph + 1))
    out = Image.fromarray(image).convert("RGBA")
    out.alpha_composite(patch, (x0, y0))
    params["box"] = [x0, y0, x0 + pw, y0 + ph]
    return np.array(out.convert("RGB"), dtype=np.uint8), params
