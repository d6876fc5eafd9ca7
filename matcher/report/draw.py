"""Drawing of a verified pair: both images side by side, inlier lines, the matched quadrilaterals, and the dense
alignment check's cells on the reference (green: the pictures agree there, red: they disagree)."""
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
    reference is the query's frame mapped through the fit, the cyan one in the query the reference's frame. When the
    dense alignment check ran, the reference's measured cells are tinted green (agree) or red (disagree).
    """
    q, sq = _fit_height(query, height)
    r, sr = _fit_height(reference, height)
    if evidence.dense is not None and evidence.dense.state is not None:
        _tint_cells(r, evidence.dense.state)
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


def _tint_cells(panel: np.ndarray, state: np.ndarray) -> None:
    """Tint the cells of ``panel`` (RGB uint8, in place) by ``state`` (G, G) int8: 1 green, 0 red, -1 untouched."""
    h, w = panel.shape[:2]
    g = state.shape[0]
    ys = np.linspace(0, h, g + 1).round().astype(int)
    xs = np.linspace(0, w, g + 1).round().astype(int)
    for i in range(g):
        for j in range(state.shape[1]):
            if state[i, j] < 0:
                continue
            colour = np.array((40, 200, 60) if state[i, j] > 0 else (230, 40, 40), np.float32)
            cell = panel[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            cell[:] = (0.72 * cell + 0.28 * colour).astype(np.uint8)
            cv2.rectangle(panel, (int(xs[j]), int(ys[i])), (int(xs[j + 1]) - 1, int(ys[i + 1]) - 1),
                          tuple(int(c) for c in colour), 1)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    from matcher.io.atomic import atomic_write

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise OSError(f"cannot encode PNG for {path}")
    with atomic_write(path, mode="wb") as fh:
        fh.write(buf.tobytes())
