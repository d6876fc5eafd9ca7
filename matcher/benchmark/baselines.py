"""A simple global baseline (not the engine): a 16x16 greyscale thumbnail, zero-mean unit-norm, cosine score.

It exists so the demo and benchmarks can show how far a trivial near-duplicate detector gets; it knows nothing
about crops, rotations, flips or composites.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["thumbnail_descriptor", "thumbnail_scores"]


def thumbnail_descriptor(image: np.ndarray, side: int = 16) -> np.ndarray:
    """(side*side,) float32 zero-mean, unit-norm thumbnail of an RGB uint8 image."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    small -= small.mean()
    n = np.linalg.norm(small)
    return small / n if n > 0 else small


def thumbnail_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Q, R) scores in [0, 1] (cosine mapped from [-1, 1]) for (Q, F) and (R, F) thumbnail descriptors."""
    return (queries @ references.T + 1.0) / 2.0
