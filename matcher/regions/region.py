"""Regions: sub-images (crops, rotations, flips) described or matched separately, with exact maps back to the
original picture.

A :class:`Region` is a pixel box of the original image followed by a counter-clockwise rotation (multiple of 90
degrees, as ``np.rot90``) and an optional horizontal flip. Point convention: pixel centres at integer coordinates
(x right, y down). Which regions a picture gets is decided by the proposers of :mod:`matcher.regions.proposers`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_REGION_SIDE", "Region", "grid_regions", "image_size"]

MIN_REGION_SIDE = 16  # px; regions whose box is smaller than this on either side are skipped
_ROTATIONS = (0, 90, 180, 270)


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


def image_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) px of an (H, W) or (H, W, C) image; ValueError for other shapes."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    return int(image.shape[1]), int(image.shape[0])


def grid_regions(image: np.ndarray, n: int) -> list[Region]:
    """n x n tiles exactly covering the image (integer splits), tags "grid{n}:r{row}c{col}"."""
    w, h = image_size(image)
    xs = np.linspace(0, w, n + 1).round().astype(int)
    ys = np.linspace(0, h, n + 1).round().astype(int)
    return [Region(f"grid{n}:r{i}c{j}", (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])))
            for i in range(n) for j in range(n) if xs[j + 1] > xs[j] and ys[i + 1] > ys[i]]
