"""Homographies between image frames, warping with a known homography, and where content lands after edits.

Coordinates are continuous pixel coordinates (x right, y down): pixel (column i, row j) covers [i, i+1) x [j,
j+1) and its centre is (i + 0.5, j + 0.5); an image of width W and height H spans [0, W] x [0, H]. In this
convention a resize from W to W' is exactly x' = x * W' / W and a horizontal flip is x' = W - x. All
transforms are 3x3 float64 homographies mapping input (x, y, 1) to output coordinates.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "ContentTracker",
    "apply_homography",
    "clip_polygon",
    "corners",
    "homography_from_points",
    "placement",
    "scaling",
    "translation",
    "warp_image",
]


def translation(tx: float, ty: float) -> np.ndarray:
    """3x3 float64: (x, y) -> (x + tx, y + ty)."""
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float) -> np.ndarray:
    """3x3 float64: (x, y) -> (sx * x, sy * y)."""
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def corners(width: float, height: float) -> np.ndarray:
    """(4, 2) float64 corners of a W x H frame: top-left, top-right, bottom-right, bottom-left."""
    return np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through the 3x3 homography ``h``; returns (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hom = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(h, dtype=np.float64).T
    w = hom[:, 2:3]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    return hom[:, :2] / w


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography (h33 = 1) mapping 4 ``src`` points (4, 2) exactly onto 4 ``dst`` points (4, 2)."""
    src = np.asarray(src, dtype=np.float64).reshape(4, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(4, 2)
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    h = np.linalg.solve(a, b)
    return np.append(h, 1.0).reshape(3, 3)


def warp_image(
    image: np.ndarray, h: np.ndarray, size: tuple[int, int], fill: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """Warp RGB uint8 (H, W, 3) by the homography ``h`` (continuous coordinates) into an output of ``size`` =
    (w, h).

    Bilinear sampling; pixels mapped from outside the input get ``fill``. Returns RGB uint8 (h, w, 3).
    """
    # OpenCV puts pixel centres at integer coordinates: continuous = index + 0.5.
    to_cont = translation(0.5, 0.5)
    m = np.linalg.inv(to_cont) @ np.asarray(h, dtype=np.float64) @ to_cont
    out = cv2.warpPerspective(
        np.ascontiguousarray(image), m, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(int(c) for c in fill),
    )
    return np.ascontiguousarray(out)


def clip_polygon(poly: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Clip a convex polygon (K, 2) to ``box`` = (x0, y0, x1, y1) (Sutherland-Hodgman) -> (M, 2), M >= 0."""
    out = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x0, y0, x1, y1 = box
    for axis, limit, keep_below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if len(out) == 0:
            break
        pts = []
        for i in range(len(out)):
            cur, nxt = out[i], out[(i + 1) % len(out)]
            cur_in = cur[axis] <= limit if keep_below else cur[axis] >= limit
            nxt_in = nxt[axis] <= limit if keep_below else nxt[axis] >= limit
            if cur_in:
                pts.append(cur)
            if cur_in != nxt_in:
                t = (limit - cur[axis]) / (nxt[axis] - cur[axis])
                pts.append(cur + t * (nxt - cur))
        out = np.array(pts).reshape(-1, 2)
    return out


class ContentTracker:
    """Follows an input frame of ``size`` = (w, h) through a sequence of edits, each a homography into an
    output frame that may cut part of the content away (crops, rotations without expansion, ...).

    Tracks the mapped corners (the unclipped quad), the visible region (the input rectangle clipped by every
    intermediate frame, a convex polygon) and a ``grid`` x ``grid`` lattice of input points that survive every
    frame (for the visible fraction of the input's area). A step without a homography (None) ends tracking.
    """

    def __init__(self, size: tuple[int, int], grid: int = 64) -> None:
        w, h = size
        t = (np.arange(grid) + 0.5) / grid
        gx, gy = np.meshgrid(t * w, t * h)
        self._total: np.ndarray | None = np.eye(3)
        self._corners = corners(w, h)
        self._points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self._alive = np.ones(len(self._points), dtype=bool)
        self._region = corners(w, h)

    def step(
        self,
        transform: np.ndarray | None,
        out_size: tuple[int, int],
        visible_box: tuple[float, float, float, float] | None = None,
    ) -> None:
        """Apply one edit: ``transform`` (3x3, input -> output px, or None) into an output of ``out_size`` =
        (w, h); ``visible_box`` (x0, y0, x1, y1) limits where input content shows (default: the output)."""
        if self._total is None or transform is None:
            self._total = None
            return
        x0, y0, x1, y1 = visible_box if visible_box is not None else (0, 0, out_size[0], out_size[1])
        self._total = np.asarray(transform, dtype=np.float64) @ self._total
        self._points = apply_homography(transform, self._points)
        x, y = self._points[:, 0], self._points[:, 1]
        self._alive &= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        if len(self._region):
            self._region = clip_polygon(apply_homography(transform, self._region), (x0, y0, x1, y1))

    @property
    def transform(self) -> np.ndarray | None:
        """The composed 3x3 homography so far (None once a step had none)."""
        return None if self._total is None else self._total.copy()

    def result(self) -> tuple[list[list[float]] | None, list[float] | None, float | None]:
        """(quad, box, visible_fraction): ``quad`` the input's 4 corners mapped by the composed homography
        [[x, y] x 4] (TL, TR, BR, BL; unclipped, may lie outside the output); ``box`` [x0, y0, x1, y1] the
        bounding box of the visible region (None when nothing is visible); ``visible_fraction`` the fraction
        of the input's area still in the output. All None when a step had no homography. Occlusion by overlaid
        text or emoji is not counted: this is geometry only."""
        if self._total is None:
            return None, None, None
        quad = apply_homography(self._total, self._corners)
        visible = round(float(self._alive.mean()), 4)
        if not np.all(np.isfinite(quad)):
            return None, None, visible
        box = None
        if len(self._region):
            (x0, y0), (x1, y1) = self._region.min(axis=0), self._region.max(axis=0)
            if x1 > x0 and y1 > y0:
                box = [round(float(v), 2) for v in (x0, y0, x1, y1)]
        return [[round(float(x), 2), round(float(y), 2)] for x, y in quad], box, visible


def placement(
    transform: np.ndarray | None, in_size: tuple[int, int], out_size: tuple[int, int], grid: int = 64
) -> tuple[list[list[float]] | None, list[float] | None, float | None]:
    """:meth:`ContentTracker.result` for a single homography from a frame of ``in_size`` into ``out_size``."""
    tracker = ContentTracker(in_size, grid)
    tracker.step(transform, out_size)
    return tracker.result()
