"""Drawing of a verified pair: both images side by side, inlier lines and the matched quadrilaterals."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from matcher.local.evidence import PairEvidence

__all__ = ["draw_pair", "save_png"]


def _fit_height(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    s = height / image.shape[0]
    out = cv2.resize(image, (max(1, round(image.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
    return out, s


def draw_pair(query: np.ndarray, reference: np.ndarray, evidence: PairEvidence, *, height: int = 480,
              max_lines: int = 200, caption: str | None = None) -> np.ndarray:
    """RGB uint8 (height + caption band, Wq' + Wr' + gap, 3): query left, reference right.

    Green lines join inlier pairs (at most ``max_lines``, evenly subsampled); the yellow quadrilateral in the
    reference is the query's frame mapped through the fit, the cyan one in the query the reference's frame.
    """
    q, sq = _fit_height(query, height)
    r, sr = _fit_height(reference, height)
    gap = 8
    band = 28 if caption else 0
    # quads are drawn on each panel before composing, so a frame reaching past a panel is clipped to it
    if evidence.reference_quad_in_query is not None:
        quad = np.asarray(evidence.reference_quad_in_query, np.float64) * sq
        cv2.polylines(q, [np.round(quad).astype(np.int32)], True, (0, 200, 255), 2, cv2.LINE_AA)
    if evidence.query_quad_in_reference is not None:
        quad = np.asarray(evidence.query_quad_in_reference, np.float64) * sr
        cv2.polylines(r, [np.round(quad).astype(np.int32)], True, (255, 220, 0), 2, cv2.LINE_AA)
    canvas = np.full((height + band, q.shape[1] + gap + r.shape[1], 3), 255, np.uint8)
    canvas[band:, : q.shape[1]] = q
    x_off = q.shape[1] + gap
    canvas[band:, x_off:] = r
    pq, pr = np.asarray(evidence.query_points), np.asarray(evidence.reference_points)
    if len(pq):
        idx = np.linspace(0, len(pq) - 1, min(max_lines, len(pq))).round().astype(int)
        for (xq, yq), (xr, yr) in zip(pq[idx], pr[idx]):
            a = (round(xq * sq), round(yq * sq) + band)
            b = (round(xr * sr) + x_off, round(yr * sr) + band)
            cv2.line(canvas, a, b, (40, 220, 40), 1, cv2.LINE_AA)
            cv2.circle(canvas, a, 2, (40, 220, 40), -1)
            cv2.circle(canvas, b, 2, (40, 220, 40), -1)
    if caption:
        cv2.putText(canvas, caption, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    from matcher.io.atomic import atomic_write

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise OSError(f"cannot encode PNG for {path}")
    with atomic_write(path, mode="wb") as fh:
        fh.write(buf.tobytes())
