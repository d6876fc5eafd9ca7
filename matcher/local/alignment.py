"""The dense alignment check: once a pair's transform is fitted, do the two pictures agree pixel by pixel wherever
they overlap?

An edited copy comes from the same photo: aligned through the fitted transform, its content agrees with the
reference over the whole overlap, except where an edit covers it (text, a sticker, a paste), which is a compact
area. A different photo of the same subject (a re-shoot, a burst, the same sign elsewhere) agrees only where the
matched keypoints are; its background disagrees everywhere. Keypoint matches cannot tell the two apart; this can.

How: each reference keeps a small grey thumbnail (:func:`reference_thumbnail`, longer side :data:`THUMB_SIDE` px,
stored with the reference). The query is sampled at every thumbnail pixel through the fitted transform (from a
pyramid level close to the thumbnail's scale, so nothing aliases), both are turned into gradient fields (Sobel),
and on a grid of :data:`GRID` x :data:`GRID` cells the zero-mean normalised cross-correlation of the two gradient
fields is measured (:func:`agreement_map`). Gradients ignore brightness offsets, the normalisation ignores contrast
and colour gain, and correlation survives blur and JPEG; the absolute value also accepts inverted copies. A cell is
informative when the reference shows texture there, and in the overlap when the query covers it.

The evidence (:class:`DenseEvidence`, :func:`dense_evidence`): the share of informative overlap cells that agree,
that share among the cells outside the inliers' hull (a copy agrees there too; a match on a shared sign or text
does not), and the largest connected area that disagrees (an overlay is compact; a re-shoot's background is not).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AGREE", "GRID", "THUMB_SIDE", "AgreementMap", "DenseEvidence", "QueryPyramid", "agreement_map",
           "dense_evidence", "reference_thumbnail"]

THUMB_SIDE = 128  # px, longer side of a reference thumbnail
GRID = 8  # cells per side of the agreement grid
AGREE = 0.3  # |ZNCC| of the gradient fields at or above which a cell agrees (random content: ~0 +- 0.05)
MIN_TEXTURE = 6.0  # grey levels per px: RMS gradient a reference cell needs to be informative
MIN_CELLS = 4  # fewer informative overlap cells than this: nothing measured (nan)


def reference_thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """RGB uint8 (H, W, 3) or grey (H, W) -> grey uint8 (h, w) with max(h, w) = ``side`` (area interpolation;
    never enlarged beyond the picture)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape[:2]
    s = min(1.0, side / max(h, w))
    size = (max(8, round(w * s)), max(8, round(h * s)))
    return np.ascontiguousarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA) if s < 1.0 else grey)


class QueryPyramid:
    """A query's grey image and its halvings, built once per query; :meth:`level` picks the one whose pixels are
    closest to (not smaller than) a wanted size."""

    def __init__(self, gray: np.ndarray, scale: float = 1.0) -> None:
        """``gray``: (h, w) grey levels of the query; ``scale``: h / the original query height (``gray`` px per
        original px)."""
        self.levels: list[np.ndarray] = [np.ascontiguousarray(gray, np.float32)]
        self.scale = float(scale)

    def level(self, px_per_sample: float) -> tuple[np.ndarray, float]:
        """(image, its px per original query px) for sampling every ``px_per_sample`` original px."""
        k = 0
        while px_per_sample * self.scale / (1 << (k + 1)) >= 1.0 and min(self.levels[k].shape[:2]) >= 16:
            k += 1
            if k == len(self.levels):
                self.levels.append(cv2.pyrDown(self.levels[-1]))
        return self.levels[k], self.scale / (1 << k)


@dataclass
class AgreementMap:
    """Per cell of the reference thumbnail's grid: ``zncc`` (GRID, GRID) float32 |ZNCC| of the gradient fields
    (nan where not informative or outside the overlap), ``informative`` and ``overlap`` bool masks."""

    zncc: np.ndarray
    informative: np.ndarray
    overlap: np.ndarray

    @property
    def agree(self) -> np.ndarray:
        """(GRID, GRID) bool: informative overlap cells that agree."""
        return self.informative & self.overlap & (np.nan_to_num(self.zncc, nan=0.0) >= AGREE)

    @property
    def measured(self) -> np.ndarray:
        """(GRID, GRID) bool: informative overlap cells."""
        return self.informative & self.overlap


def _cells(x: np.ndarray, grid: int) -> np.ndarray:
    """(h, w, ...) -> (grid, grid, n, ...) pixels of each cell (the picture cropped to a multiple of the grid)."""
    h, w = x.shape[:2]
    ch, cw = h // grid, w // grid
    x = x[: ch * grid, : cw * grid]
    x = x.reshape(grid, ch, grid, cw, *x.shape[2:]).swapaxes(1, 2)
    return x.reshape(grid, grid, ch * cw, *x.shape[4:])


def agreement_map(thumb: np.ndarray, reference_size: tuple[int, int], query: QueryPyramid,
                  transform: Sequence[Sequence[float]] | np.ndarray, query_size: tuple[int, int],
                  grid: int = GRID) -> AgreementMap:
    """The agreement of the query, aligned through ``transform`` (3x3, original query px -> original reference px,
    as :class:`~matcher.local.evidence.PairEvidence` gives it), with the reference thumbnail ``thumb`` (grey uint8
    of a ``reference_size`` = (W, H) picture); ``query_size`` = (W, H) of the original query."""
    th, tw = thumb.shape[:2]
    rw, rh = reference_size
    sx, sy = rw / tw, rh / th  # reference px per thumbnail px
    inv = np.linalg.inv(np.asarray(transform, np.float64))  # reference px -> query px
    # thumbnail pixel centres -> reference px -> query px
    u, v = np.meshgrid(np.arange(tw, dtype=np.float64), np.arange(th, dtype=np.float64))
    pts = np.stack([(u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5, np.ones_like(u)], axis=-1) @ inv.T
    w = pts[..., 2]
    ok_w = w > 1e-9
    qx = np.where(ok_w, pts[..., 0] / np.where(ok_w, w, 1.0), -1e9)
    qy = np.where(ok_w, pts[..., 1] / np.where(ok_w, w, 1.0), -1e9)
    qw, qh = query_size
    inside = ok_w & (qx >= 0) & (qx <= qw - 1) & (qy >= 0) & (qy <= qh - 1)
    # query px covered by one thumbnail px, at the thumbnail's centre: pick the pyramid level
    c = np.array([[tw / 2 * sx, th / 2 * sy, 1.0], [(tw / 2 + 1) * sx, th / 2 * sy, 1.0],
                  [tw / 2 * sx, (th / 2 + 1) * sy, 1.0]]) @ inv.T
    c = c[:, :2] / c[:, 2:3]
    (ax, ay), (bx, by) = c[1] - c[0], c[2] - c[0]
    step = math.sqrt(abs(float(ax * by - ay * bx))) if np.all(np.isfinite(c)) else 1.0
    img, s = query.level(max(step, 1e-6))
    mx = ((qx + 0.5) * s - 0.5).astype(np.float32)
    my = ((qy + 0.5) * s - 0.5).astype(np.float32)
    aligned = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ref = thumb.astype(np.float32)
    gr = np.stack([cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3)], -1) / 8
    gq = np.stack([cv2.Sobel(aligned, cv2.CV_32F, 1, 0, ksize=3),
                   cv2.Sobel(aligned, cv2.CV_32F, 0, 1, ksize=3)], -1) / 8
    a = _cells(gr, grid).reshape(grid, grid, -1)
    b = _cells(gq, grid).reshape(grid, grid, -1)
    cover = _cells(inside, grid).mean(axis=2)
    a = a - a.mean(axis=2, keepdims=True)
    b = b - b.mean(axis=2, keepdims=True)
    na, nb = np.sqrt((a * a).sum(2)), np.sqrt((b * b).sum(2))
    n = a.shape[2] / 2  # pixels per cell
    informative = na / math.sqrt(n) >= MIN_TEXTURE
    overlap = cover >= 0.9
    zncc = np.abs((a * b).sum(2)) / np.maximum(na * nb, 1e-6)
    zncc = np.where(informative & overlap, zncc, np.nan).astype(np.float32)
    return AgreementMap(zncc, informative, overlap)


@dataclass(frozen=True, eq=False)
class DenseEvidence:
    """What the agreement map says of a pair (nan = not measured: too few informative overlap cells).

    agree: share of informative overlap cells that agree; agree_outside: the same outside the inliers' hull
    (nan when fewer than 3 such cells); disagree_blob: the largest 4-connected area of informative overlap cells
    that disagree, as a share of the informative overlap cells; cells: how many cells were measured; state:
    (GRID, GRID) int8 per cell of the reference (rows top to bottom): 1 agrees, 0 disagrees, -1 not measured
    (flat, or outside the overlap), for drawing."""

    agree: float = float("nan")
    agree_outside: float = float("nan")
    disagree_blob: float = float("nan")
    cells: int = 0
    state: np.ndarray | None = None

    @property
    def measured(self) -> bool:
        return not math.isnan(self.agree)

    def to_dict(self) -> dict[str, object]:
        def f(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 4)

        return {"agree": f(self.agree), "agree_outside": f(self.agree_outside),
                "disagree_blob": f(self.disagree_blob), "cells": self.cells,
                "state": None if self.state is None else self.state.tolist()}


def _hull_cells(points: np.ndarray, reference_size: tuple[int, int], grid: int) -> np.ndarray:
    """(grid, grid) bool: cells whose centre lies in the convex hull of ``points`` (reference px), grown by half
    a cell."""
    rw, rh = reference_size
    out = np.zeros((grid, grid), bool)
    if len(points) < 3:
        return out
    hull = cv2.convexHull(np.asarray(points, np.float32).reshape(-1, 1, 2))
    cx = (np.arange(grid) + 0.5) * rw / grid
    cy = (np.arange(grid) + 0.5) * rh / grid
    margin = 0.5 * max(rw, rh) / grid
    for i, y in enumerate(cy):
        for j, x in enumerate(cx):
            out[i, j] = cv2.pointPolygonTest(hull, (float(x), float(y)), True) >= -margin
    return out


def _largest_component(mask: np.ndarray) -> int:
    """Cells in the largest 4-connected component of ``mask``."""
    if not mask.any():
        return 0
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return int(np.bincount(labels[labels > 0]).max()) if n > 1 else 0


def dense_evidence(amap: AgreementMap, reference_points: np.ndarray,
                   reference_size: tuple[int, int]) -> DenseEvidence:
    """:class:`DenseEvidence` of an agreement map, the inliers given as (I, 2) reference px."""
    measured = amap.measured
    m = int(measured.sum())
    agree = amap.agree
    state = np.where(measured, agree.astype(np.int8), np.int8(-1)).astype(np.int8)
    if m < MIN_CELLS:
        return DenseEvidence(cells=m, state=state)
    grid = measured.shape[0]
    outside = measured & ~_hull_cells(reference_points, reference_size, grid)
    n_out = int(outside.sum())
    return DenseEvidence(
        agree=float(agree.sum() / m),
        agree_outside=float((agree & outside).sum() / n_out) if n_out >= 3 else float("nan"),
        disagree_blob=_largest_component(measured & ~agree) / m,
        cells=m, state=state)
