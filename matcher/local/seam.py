"""Is there a seam where the reference's frame lies inside the query?

When the reference shows up *inside* a query, two stories fit the geometry equally well: the reference was pasted
into another picture (a copy: the paste leaves a seam, a step in the image along the reference's border), or the
query is the holistic picture of which the reference is a crop (not a copy: the content runs on across the border
with no seam). :func:`frame_edge_strength` measures that seam. The reference frame mapped into the query (a quad,
query px) is walked side by side; along each side's normal, the grey-level profile is sampled at -``reach`` ..
+``reach`` px and the change across the mapped border (over 1 and over 3 px, within ``slack`` px of it) is
compared with the typical change farther away. A paste gives a ratio well above 1 on every side that lies inside the
query; natural content gives about 1.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from matcher.local.features import prepare_gray

__all__ = ["frame_edge_strength", "seam_profile_ratio", "to_gray"]


def to_gray(image: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """RGB uint8 (H, W, 3) -> (grey float32 (h, w) in [0, 255], scale = h / H), downscaled so max(h, w) <=
    ``max_side`` (never enlarged; the local features' :func:`matcher.local.features.prepare_gray`)."""
    g, _, _ = prepare_gray(image, max_side, 1.0)
    return g.astype(np.float32), min(1.0, max_side / max(image.shape[:2]))


def seam_profile_ratio(profiles: np.ndarray, slack: int = 2, floor: float = 2.0,
                       spans: tuple[int, ...] = (1, 3)) -> np.ndarray:
    """profiles: (S, 2R+1) grey levels sampled across a border at offsets -R..R px (border between offsets -1 and
    0) -> (S,) seam ratio: for each span w in ``spans``, the largest grey-level change over w px that straddles the
    border (give or take ``slack`` px) divided by the mean change over w px farther than ``2*slack`` px from it
    (+ ``floor`` grey levels, so flat areas give ~0, not noise); the largest ratio over the spans. Span 1 sees a
    sharp seam, span 3 one softened by blur or resampling."""
    p = np.asarray(profiles, np.float64)
    r = p.shape[1] // 2
    best = np.zeros(len(p))
    for w in spans:
        d = np.abs(p[:, w:] - p[:, :-w])  # (S, 2R+1-w): change from offset j-R to j-R+w
        j = np.arange(d.shape[1])
        lo, hi = j - r, j - r + w  # the span's offsets
        centre = (lo <= slack - 1) & (hi >= -slack)  # straddles the border (between -1 and 0) within slack
        far = (hi <= -1 - 2 * slack) | (lo >= 2 * slack)
        if not centre.any() or not far.any():
            continue
        best = np.maximum(best, d[:, centre].max(axis=1) / (d[:, far].mean(axis=1) + floor))
    return best


def frame_edge_strength(gray: np.ndarray, quad: np.ndarray, *, reach: int = 10, slack: int = 2,
                        step_px: float = 4.0, margin: float = 4.0, min_inside: float = 0.5) -> float:
    """Seam strength along the mapped reference frame inside the query.

    gray: (H, W) float32 query grey levels; quad: (4, 2) the reference frame's corners in ``gray``'s px (in
    order around the frame). Each side is sampled every ``step_px`` px (its outer 10 % skipped); samples whose
    profile leaves the image (less ``margin`` px) are dropped, and a side counts only when at least
    ``min_inside`` of its samples remain. Returns the mean over counted sides of the median per-sample ratio
    (:func:`seam_profile_ratio`), or ``nan`` when no side lies inside the query (the frame runs along or beyond
    the query's borders: no seam to look for)."""
    h, w = gray.shape[:2]
    q = np.asarray(quad, np.float64).reshape(4, 2)
    if not np.all(np.isfinite(q)):
        return float("nan")
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    side_scores = []
    for i in range(4):
        a, b = q[i], q[(i + 1) % 4]
        length = float(np.hypot(*(b - a)))
        if length < 4 * step_px:
            continue
        n_s = max(2, int(length / step_px))
        t = np.linspace(0.1, 0.9, n_s)
        pts = a[None] + t[:, None] * (b - a)[None]  # (S, 2)
        normal = np.array([-(b - a)[1], (b - a)[0]]) / length
        xy = pts[:, None, :] + offsets[None, :, None] * normal[None, None, :]  # (S, 2R+1, 2)
        ok = ((xy[..., 0] >= margin) & (xy[..., 0] <= w - 1 - margin)
              & (xy[..., 1] >= margin) & (xy[..., 1] <= h - 1 - margin)).all(axis=1)
        if ok.mean() < min_inside or ok.sum() < 3:
            continue
        xy = xy[ok].astype(np.float32)
        prof = cv2.remap(gray, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        side_scores.append(float(np.median(seam_profile_ratio(prof, slack))))
    return float(np.mean(side_scores)) if side_scores else math.nan
