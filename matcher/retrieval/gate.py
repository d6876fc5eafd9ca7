"""The ASL direction gate: a picture holding clearly *more* content than a reference is not an edited copy of
it (a holistic picture is not a copy of its own crop, although the crop is a copy of the picture).

The descriptor norm stands for content amount, so a (query, reference) pair is marked when
log ||f(q)|| - log ||f(r)|| > margin. The margin is learned from held-out pairs (:func:`fit_margin`); in
global-only mode marked pairs are down-weighted by a fixed score penalty.
"""
from __future__ import annotations

import numpy as np

__all__ = ["apply_gate", "fit_margin", "gate_marks", "log_norm_ratio"]


def log_norm_ratio(query_norms: np.ndarray, ref_norms: np.ndarray) -> np.ndarray:
    """query_norms (M,), ref_norms (M, k) -> (M, k) float32 log ||f(q)|| - log ||f(r)||."""
    q = np.log(np.maximum(query_norms.astype(np.float64), 1e-12))[:, None]
    r = np.log(np.maximum(ref_norms.astype(np.float64), 1e-12))
    return (q - r).astype(np.float32)


def gate_marks(log_ratio: np.ndarray, margin: float) -> np.ndarray:
    """Boolean array, True where the query holds more content than the reference by more than ``margin``."""
    return log_ratio > margin


def apply_gate(scores: np.ndarray, marks: np.ndarray, penalty: float) -> np.ndarray:
    """Global-only mode: scores of marked pairs minus ``penalty`` (order-preserving among the rest)."""
    return np.where(marks, scores - penalty, scores).astype(np.float32)


def fit_margin(copies: np.ndarray, holistic: np.ndarray, max_false_reject: float = 0.05) -> float:
    """The smallest margin that marks at most ``max_false_reject`` of true-copy pairs, from log-norm ratios of
    true copies ``copies`` (K,) and holistic-vs-crop negatives ``holistic`` (H,) (the latter only reported
    by the caller: the margin is set by the tolerated false rejections)."""
    if copies.size == 0:
        raise ValueError("fit_margin needs at least one true-copy pair")
    del holistic
    return float(np.quantile(copies.astype(np.float64), 1.0 - max_false_reject))
