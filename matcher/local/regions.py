"""Region proposals: sub-images (crops, rotations, flips) matched separately, with exact maps back to the original.

A :class:`Region` is a pixel box of the original image followed by a counter-clockwise rotation (multiple of 90
degrees, as ``np.rot90``) and an optional horizontal flip. Proposers are registered in :data:`PROPOSERS` by a
factory returning a callable ``(image) -> list[Region]``; :func:`propose_regions` runs several and dedupes.
Point convention: pixel centres at integer coordinates (x right, y down).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from matcher.registry import Registry

__all__ = ["MIN_REGION_SIDE", "PROPOSERS", "Proposer", "Region", "grid_regions", "propose_regions"]

MIN_REGION_SIDE = 16  # px; regions whose box is smaller than this on either side are skipped
_ROTATIONS = (0, 90, 180, 270)

Proposer = Callable[[np.ndarray], "list[Region]"]
PROPOSERS: Registry[Proposer] = Registry("region proposer")


@dataclass(frozen=True)
class Region:
    """A region of an image.

    tag:      unique name within one proposal list ("full", "grid2:r0c1", "rot90", ...)
    box:      (x0, y0, x1, y1) int, half-open pixel box in ORIGINAL image px (x1, y1 exclusive)
    rotation: 0 | 90 | 180 | 270, degrees counter-clockwise applied after cropping (``np.rot90``)
    flip:     horizontal flip applied after the rotation
    score:    detector confidence (e.g. YOLO boxes), None for geometric proposals
    """

    tag: str
    box: tuple[int, int, int, int]
    rotation: int = 0
    flip: bool = False
    score: float | None = None

    def __post_init__(self) -> None:
        if self.rotation not in _ROTATIONS:
            raise ValueError(f"region {self.tag!r}: rotation must be one of {_ROTATIONS}, got {self.rotation}")
        x0, y0, x1, y1 = self.box
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region {self.tag!r}: empty box {self.box}")

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of the crop before rotation, px."""
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the region image returned by :meth:`apply`, px."""
        w, h = self.crop_size
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def key(self) -> tuple:
        """Identity used for deduplication (box, rotation, flip)."""
        return (tuple(int(v) for v in self.box), self.rotation, self.flip)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Region image of ``image`` ((H, W) or (H, W, C)): crop, rotate, flip; a contiguous copy."""
        x0, y0, x1, y1 = self.box
        h, w = image.shape[:2]
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"region {self.tag!r}: box {self.box} outside the {w}x{h} image")
        out = image[y0:y1, x0:x1]
        if self.rotation:
            out = np.rot90(out, k=self.rotation // 90, axes=(0, 1))
        if self.flip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def to_original(self, pts: np.ndarray) -> np.ndarray:
        """Map (K, 2) x, y of the region image to (K, 2) float64 x, y of the original image."""
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        x, y = p[:, 0].copy(), p[:, 1].copy()
        cw, ch = self.crop_size
        rw, _ = self.size
        if self.flip:
            x = rw - 1 - x
        if self.rotation == 90:  # out[i, j] = in[j, cw - 1 - i]
            x, y = cw - 1 - y, x
        elif self.rotation == 180:
            x, y = cw - 1 - x, ch - 1 - y
        elif self.rotation == 270:  # out[i, j] = in[ch - 1 - j, i]
            x, y = y, ch - 1 - x
        return np.stack([x + self.box[0], y + self.box[1]], axis=1)

    def from_original(self, pts: np.ndarray) -> np.ndarray:
        """Map (K, 2) x, y of the original image to (K, 2) float64 x, y of the region image (inverse)."""
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        x, y = p[:, 0] - self.box[0], p[:, 1] - self.box[1]
        cw, ch = self.crop_size
        rw, _ = self.size
        if self.rotation == 90:
            x, y = y, cw - 1 - x
        elif self.rotation == 180:
            x, y = cw - 1 - x, ch - 1 - y
        elif self.rotation == 270:
            x, y = ch - 1 - y, x
        if self.flip:
            x = rw - 1 - x
        return np.stack([x, y], axis=1)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"tag": self.tag, "box": [int(v) for v in self.box], "rotation": self.rotation,
                "flip": self.flip, "score": self.score}


def _size(image: np.ndarray) -> tuple[int, int]:
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    return int(image.shape[1]), int(image.shape[0])


def grid_regions(image: np.ndarray, n: int) -> list[Region]:
    """n x n tiles exactly covering the image (integer splits), tags "grid{n}:r{row}c{col}"."""
    w, h = _size(image)
    xs = np.linspace(0, w, n + 1).round().astype(int)
    ys = np.linspace(0, h, n + 1).round().astype(int)
    return [Region(f"grid{n}:r{i}c{j}", (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])))
            for i in range(n) for j in range(n) if xs[j + 1] > xs[j] and ys[i + 1] > ys[i]]


def _full(image: np.ndarray) -> list[Region]:
    w, h = _size(image)
    return [Region("full", (0, 0, w, h))]


def _center(image: np.ndarray) -> list[Region]:
    """Central box with half the image area (sides scaled by sqrt(1/2))."""
    w, h = _size(image)
    f = math.sqrt(0.5)
    cw, ch = max(1, round(w * f)), max(1, round(h * f))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return [Region("center", (x0, y0, x0 + cw, y0 + ch))]


def _rotations(image: np.ndarray) -> list[Region]:
    w, h = _size(image)
    return [Region(f"rot{a}", (0, 0, w, h), rotation=a) for a in (90, 180, 270)]


def _flips(image: np.ndarray) -> list[Region]:
    """Horizontal flip, and vertical flip (= 180 degree rotation then horizontal flip)."""
    w, h = _size(image)
    return [Region("hflip", (0, 0, w, h), flip=True), Region("vflip", (0, 0, w, h), rotation=180, flip=True)]


def _register(name: str, fn: Proposer) -> None:
    PROPOSERS.register(name)(lambda: fn)


_register("full", _full)
_register("grid2", lambda image: grid_regions(image, 2))
_register("grid3", lambda image: grid_regions(image, 3))
_register("center", _center)
_register("rotations", _rotations)
_register("flips", _flips)


def propose_regions(image: np.ndarray, names: Sequence[str | Proposer],
                    min_side: int = MIN_REGION_SIDE) -> list[Region]:
    """Regions from the proposers ``names`` (registry names or callables), in order, deduplicated.

    Regions with the same (box, rotation, flip) as an earlier one are dropped, as are regions whose box is
    below ``min_side`` px on either side, unless the box is the whole image (tiny images give fewer regions,
    never tiny or empty ones). Tags are unique:
    a repeated tag gets a "#2", "#3" ... suffix.
    """
    whole = (0, 0) + _size(image)
    seen: set[tuple] = set()
    tags: set[str] = set()
    out: list[Region] = []
    for name in names:
        proposer = PROPOSERS.create(name) if isinstance(name, str) else name
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
