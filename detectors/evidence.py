"""Detector agreement: does a detected pasted-picture box coincide with the part of the query that matched?

A pair (query, reference) whose matched query area coincides with a detected box is evidence for "the
reference was pasted into the query" (a copy), rather than "the query is a holistic picture that contains the
reference". The matched area is the reference frame mapped into the query through the fitted transform
(``PairEvidence.reference_quad_in_query``), clipped to the query; without it, the inlier bounding box
(``PairEvidence.query_box``). Agreement = the best IoU between that area's bounding box and a detected box.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DetectorAgreement", "box_iou", "detector_agreement", "pair_detector_agreement"]


@dataclass(frozen=True)
class DetectorAgreement:
    """iou: best IoU in [0, 1] (0 without detections); index: that detection's position (-1 if none);
    box: its (x0, y0, x1, y1) px or None; score: its confidence (0 if none)."""

    iou: float = 0.0
    index: int = -1
    box: tuple[float, float, float, float] | None = None
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"detector_iou": round(self.iou, 4), "detector_index": self.index,
                "detector_box": None if self.box is None else [round(v, 2) for v in self.box],
                "detector_score": round(self.score, 4)}


def box_iou(a: Sequence[float], b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (x0, y0, x1, y1) with each of the (N, 4) boxes ``b``: (N,) float64 in [0, 1]."""
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in a)
    iw = np.clip(np.minimum(x1, b[:, 2]) - np.maximum(x0, b[:, 0]), 0, None)
    ih = np.clip(np.minimum(y1, b[:, 3]) - np.maximum(y0, b[:, 1]), 0, None)
    inter = iw * ih
    union = max(x1 - x0, 0) * max(y1 - y0, 0) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area_box(area: Sequence[float] | np.ndarray, size: tuple[int, int] | None) -> tuple[float, ...] | None:
    a = np.asarray(area, np.float64)
    if a.size == 4 and a.ndim == 1:
        box = a
    elif a.ndim == 2 and a.shape[1] == 2 and len(a) >= 3 and np.all(np.isfinite(a)):
        box = np.array([a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()])
    else:
        raise ValueError(f"expected a box (4,) or a polygon (K>=3, 2), got shape {a.shape}")
    if size is not None:
        w, h = size
        box = np.array([np.clip(box[0], 0, w), np.clip(box[1], 0, h), np.clip(box[2], 0, w), np.clip(box[3], 0, h)])
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return tuple(float(v) for v in box)


def detector_agreement(query_area: Sequence[float] | np.ndarray, detections: Sequence[Any],
                       image_size: tuple[int, int] | None = None) -> DetectorAgreement:
    """Best IoU between the matched query area and the detected boxes.

    ``query_area``: a box (x0, y0, x1, y1) px or a polygon (K, 2) px (e.g. the reference frame mapped into the
    query), reduced to its bounding box and clipped to ``image_size`` (width, height) when given;
    ``detections``: :class:`detectors.detect.Detection` objects (or anything with ``.box``/``.score``), or
    (x0, y0, x1, y1) boxes.
    """
    area = _area_box(query_area, image_size)
    if area is None or not len(detections):
        return DetectorAgreement()
    boxes = np.array([getattr(d, "box", d) for d in detections], np.float64).reshape(-1, 4)
    ious = box_iou(area, boxes)
    i = int(np.argmax(ious))
    score = float(getattr(detections[i], "score", 1.0))
    return DetectorAgreement(float(ious[i]), i, tuple(float(v) for v in boxes[i]), score)


def pair_detector_agreement(evidence: Any, detections: Sequence[Any],
                            image_size: tuple[int, int] | None = None) -> DetectorAgreement:
    """:func:`detector_agreement` for a :class:`matcher.local.evidence.PairEvidence`: uses its
    ``reference_quad_in_query`` (clipped to ``image_size``), else its ``query_box``; no fit -> no agreement."""
    quad = getattr(evidence, "reference_quad_in_query", None)
    if quad is not None:
        try:
            return detector_agreement(quad, detections, image_size)
        except ValueError:
            pass
    box = getattr(evidence, "query_box", None)
    if box is None:
        return DetectorAgreement()
    return detector_agreement(box, detections, image_size)
