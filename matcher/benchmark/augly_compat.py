"""AugLy 1.0.0 on numpy 2 and Pillow >= 10: two idempotent shims, and paths to AugLy's bundled assets.

AugLy made DISC21's automatic edits. Plain ``augly`` 1.0.0 (not ``augly[image]``, which pins Pillow<9) imports
fine here but two functions break at call time:

* ``perspective_transform`` uses numpy's removed alias ``np.float`` -> we set ``np.float = float``.
* ``meme_format`` uses Pillow's removed ``FreeTypeFont.getsize_multiline`` -> we add a method that measures
  the text with ``ImageDraw.multiline_textbbox`` from the origin, returning ``(right, bottom)`` like the old
  call.

Call :func:`augly_image` (never ``import augly.image`` directly) to get the module with both shims in place.
All assets (fonts, twemoji PNGs, screenshot templates) ship inside the augly wheel; nothing is downloaded.

Note: AugLy's own ``overlay_text`` unpickles a per-font ``.pkl`` character table; the project never unpickles,
so :mod:`matcher.benchmark.edits` draws text itself with AugLy's bundled ``.ttf`` fonts instead.
"""
from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "apply_shims",
    "augly_assets_dir",
    "augly_image",
    "emoji_paths",
    "font_paths",
    "meme_font_path",
    "screenshot_templates",
]

_LOCK = threading.Lock()
_APPLIED = False

# Latin-script text fonts among AugLy's bundled fonts (many others are symbol or non-Latin fonts, which would
# draw empty boxes for ASCII text).
_TEXT_FONT_PREFIXES = (
    "AlexBrush", "Allura", "Chunkfive", "DancingScript", "GreatVibes", "IBMPlexMono-", "IBMPlexSans-",
    "IBMPlexSerif-", "Impact", "KaushanScript", "LeagueSpartan", "Lobster", "Montserrat-", "NotoSans-Regular",
    "NotoSerif-Regular", "OpenSans-", "Pacifico", "PlayfairDisplay-", "Prata", "Quicksand-", "Raleway-",
    "SourceSansPro-", "Titillium-", "Ubuntu-",
)


def _getsize_multiline(self: Any, text: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
    """Stand-in for Pillow<10 ``FreeTypeFont.getsize_multiline``: (w, h) px of ``text`` drawn at (0, 0)."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    spacing = kwargs.pop("spacing", 4)
    _left, _top, right, bottom = draw.multiline_textbbox((0, 0), text, font=self, spacing=spacing)
    return int(right), int(bottom)


def apply_shims() -> None:
    """Install both shims (idempotent, thread-safe). Safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    with _LOCK:
        if _APPLIED:
            return
        if "float" not in np.__dict__:
            # numpy>=1.24 removed the alias; AugLy's perspective_transform still uses it
            np.float = float  # type: ignore[attr-defined]
        from PIL import ImageFont

        if not hasattr(ImageFont.FreeTypeFont, "getsize_multiline"):
            ImageFont.FreeTypeFont.getsize_multiline = _getsize_multiline  # type: ignore[attr-defined]
        _APPLIED = True


def augly_image() -> ModuleType:
    """``augly.image`` with the shims applied."""
    apply_shims()
    import augly.image as imaugs

    return imaugs


@lru_cache(maxsize=1)
def augly_assets_dir() -> Path:
    """The ``assets`` folder inside the installed augly package."""
    import augly

    return Path(augly.__file__).resolve().parent / "assets"


@lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """Bundled Latin-script ``.ttf`` fonts, sorted by name (a stable order keeps edits deterministic)."""
    folder = augly_assets_dir() / "fonts"
    fonts = sorted(p for p in folder.glob("*.ttf") if p.name.startswith(_TEXT_FONT_PREFIXES))
    if not fonts:
        raise FileNotFoundError(f"no Latin text fonts found in AugLy's asset folder {folder}")
    return tuple(fonts)


def meme_font_path() -> Path:
    """The font AugLy's ``meme_format`` uses by default (Raleway ExtraBold)."""
    return augly_assets_dir() / "fonts" / "Raleway-ExtraBold.ttf"


@lru_cache(maxsize=1)
def emoji_paths() -> tuple[Path, ...]:
    """All bundled twemoji PNGs (RGBA), sorted by relative path."""
    folder = augly_assets_dir() / "twemojis"
    paths = sorted(folder.rglob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no emoji PNGs found in AugLy's asset folder {folder}")
    return tuple(paths)


@lru_cache(maxsize=1)
def screenshot_templates() -> tuple[tuple[Path, tuple[int, int, int, int]], ...]:
    """The bundled screenshot templates with the box [x0, y0, x1, y1] (px) where the picture goes, by name."""
    folder = augly_assets_dir() / "screenshot_templates"
    with open(folder / "bboxes.json", encoding="utf-8") as fh:
        boxes = json.load(fh)
    out = []
    for name in sorted(boxes):
        x0, y0, x1, y1 = (int(v) for v in boxes[name])
        out.append((folder / name, (x0, y0, x1, y1)))
    return tuple(out)
