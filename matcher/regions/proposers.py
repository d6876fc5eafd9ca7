"""Region proposers: which regions a picture is split into (whole picture, grids, centre, rotations, flips,
detected pasted pictures).

Proposers are registered in :data:`PROPOSERS` by name; a factory takes the :class:`~matcher.config.MatcherConfig`
(only "yolo" uses it, for its detector settings) and returns a callable ``(image) -> list[Region]``.
:func:`propose_regions` runs several in order and dedupes.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from matcher.config import MatcherConfig
from matcher.regions.region import MIN_REGION_SIDE, Region, grid_regions, image_size
from matcher.registry import Registry

__all__ = ["PROPOSERS", "Proposer", "propose_regions"]

Proposer = Callable[[np.ndarray], "list[Region]"]
PROPOSERS: Registry[Proposer] = Registry("region proposer")


def _full(image: np.ndarray) -> list[Region]:
    w, h = image_size(image)
    return [Region("full", (0, 0, w, h))]


def _center(image: np.ndarray) -> list[Region]:
    """Central box with half the image area (sides scaled by sqrt(1/2))."""
    w, h = image_size(image)
    f = math.sqrt(0.5)
    cw, ch = max(1, round(w * f)), max(1, round(h * f))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return [Region("center", (x0, y0, x0 + cw, y0 + ch))]


def _rotations(image: np.ndarray) -> list[Region]:
    w, h = image_size(image)
    return [Region(f"rot{a}", (0, 0, w, h), rotation=a) for a in (90, 180, 270)]


def _flips(image: np.ndarray) -> list[Region]:
    """Horizontal flip, and vertical flip (= 180 degree rotation then horizontal flip)."""
    w, h = image_size(image)
    return [Region("hflip", (0, 0, w, h), flip=True), Region("vflip", (0, 0, w, h), rotation=180, flip=True)]


def _geometric(name: str, fn: Proposer) -> None:
    """Register ``fn`` (which needs no configuration) under ``name``."""

    def factory(config: MatcherConfig | None = None) -> Proposer:
        return fn

    PROPOSERS.register(name)(factory)


_geometric("full", _full)
_geometric("grid2", lambda image: grid_regions(image, 2))
_geometric("grid3", lambda image: grid_regions(image, 3))
_geometric("center", _center)
_geometric("rotations", _rotations)
_geometric("flips", _flips)


@PROPOSERS.register("yolo")
def _yolo(config: MatcherConfig | None = None) -> Proposer:
    """Pasted pictures found by the detector (``config.detector``); the 2x2 grid when it cannot be loaded."""
    from matcher.regions.detected import make_detected_proposer  # torch loads only when "yolo" is used

    return make_detected_proposer(config or MatcherConfig())


def propose_regions(image: np.ndarray, names: Sequence[str | Proposer], min_side: int = MIN_REGION_SIDE, *,
                    config: MatcherConfig | None = None) -> list[Region]:
    """Regions from the proposers ``names`` (registry names or callables), in order, deduplicated.

    Regions with the same (box, rotation, flip) as an earlier one are dropped, as are regions whose box is
    below ``min_side`` px on either side, unless the box is the whole image (tiny images give fewer regions,
    never tiny or empty ones). Tags are unique: a repeated tag gets a "#2", "#3" ... suffix. ``config`` is handed
    to the proposer factories (the detector settings of "yolo"; default settings when None).
    """
    whole = (0, 0) + image_size(image)
    seen: set[tuple] = set()
    tags: set[str] = set()
    out: list[Region] = []
    for name in names:
        proposer = PROPOSERS.create(name, config=config) if isinstance(name, str) else name
        for reg in proposer(image):
            w, h = reg.crop_size
            if (min(w, h) < min_side and tuple(reg.box) != whole) or reg.key() in seen:
                continue
            seen.add(reg.key())
            tag, i = reg.tag, 1
            while tag in tags:
                i += 1
                tag = f"{reg.tag}#{i}"
            if tag != reg.tag:
                reg = Region(tag, reg.box, reg.rotation, reg.flip, reg.score)
            tags.add(tag)
            out.append(reg)
    return out
