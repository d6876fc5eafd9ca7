"""Score normalisation of global similarities against a background set of non-matching pictures
(field guide section 1), and the descriptor-track alternatives.

- :func:`background_mean`: mean of each vector's top-k cosine similarities to the background set.
- :func:`normalise_scores`: score(q, r) - beta * bg(q)  (SSCD's setting), optionally also - beta * bg(r).
- :func:`subtract_negatives`: negative-embedding subtraction: x - beta * mean of its top-k background
  neighbours, renormalised (applied to queries and references alike).
- :func:`load_background`: the background descriptors shipped with a descriptor model
  (``weights/background_<model>.npz``, made from ``train`` photos); :func:`background_term`: the pipeline's
  beta * mean top-k background similarity per query variant.
All inputs are L2-normalised directions, float32, unless said otherwise (:func:`split_norm` makes them).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from matcher.resources import shipped_path

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig

__all__ = [
    "background_mean",
    "background_path",
    "background_term",
    "load_background",
    "normalise_scores",
    "split_norm",
    "subtract_negatives",
    "topk_background",
]

_LOG = logging.getLogger(__name__)


def split_norm(f: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) descriptors -> (directions (N, D) float32 unit rows, norms (N,) float32)."""
    n = np.linalg.norm(f, axis=1).astype(np.float32)
    return (f / np.maximum(n, eps)[:, None]).astype(np.float32), n


def topk_background(z: np.ndarray, background: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """z (N, D), background (B, D) unit rows -> (similarities (N, k') descending, indices (N, k')), k' = min(k, B)."""
    if background.shape[0] == 0 or z.shape[0] == 0:
        return np.zeros((z.shape[0], 0), np.float32), np.zeros((z.shape[0], 0), np.int64)
    k = min(int(k), background.shape[0])
    sim = z.astype(np.float32) @ background.astype(np.float32).T
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(sim, idx, 1)
    order = np.argsort(-part, axis=1)
    return np.take_along_axis(part, order, 1), np.take_along_axis(idx, order, 1)


def background_mean(z: np.ndarray, background: np.ndarray, k: int) -> np.ndarray:
    """(N,) float32 mean of each row's top-k similarities to ``background`` (0 when it is empty)."""
    sims, _ = topk_background(z, background, k)
    return sims.mean(1).astype(np.float32) if sims.shape[1] else np.zeros(z.shape[0], np.float32)


def normalise_scores(scores: np.ndarray, bg_query: np.ndarray, beta: float,
                     bg_ref: np.ndarray | None = None) -> np.ndarray:
    """scores (M, k) similarities of each query to its candidates; bg_query (M,); bg_ref (M, k) or None.
    Returns scores - beta * bg_query[:, None] (- beta * bg_ref when given)."""
    out = scores - beta * bg_query[:, None]
    if bg_ref is not None:
        out = out - beta * bg_ref
    return out.astype(np.float32)


def subtract_negatives(z: np.ndarray, background: np.ndarray, k: int, beta: float) -> np.ndarray:
    """Negative-embedding subtraction: each unit row minus ``beta`` x the mean of its top-k background
    neighbours, renormalised -> (N, D) float32 unit rows."""
    if background.shape[0] == 0 or beta == 0:
        return z.astype(np.float32)
    _, idx = topk_background(z, background, k)
    out = z - beta * background[idx].mean(1)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def background_path(model_name: str, config: MatcherConfig | None = None) -> Path:
    """The shipped background descriptors of a descriptor model (``weights/background_<model>.npz``)."""
    return shipped_path(f"background_{model_name}.npz", config)


def load_background(model_name: str, model_hash: str | None, config: MatcherConfig | None = None) -> np.ndarray:
    """(B, D) float32 background descriptors shipped for the model; (0, 0) when absent or made by other weights."""
    p = background_path(model_name, config)
    if not p.exists():
        return np.zeros((0, 0), np.float32)
    with np.load(p, allow_pickle=False) as z:
        if model_hash and str(z["model_hash"]) != model_hash:
            _LOG.warning("%s was computed with other %s weights; score normalisation is off", p, model_name)
            return np.zeros((0, 0), np.float32)
        return z["descriptors"].astype(np.float32)


def background_term(z: np.ndarray, zb: np.ndarray, k: int, beta: float) -> np.ndarray:
    """(M,) beta * mean of the top-k cosine similarities of unit rows ``z`` (M, D) to unit ``zb`` (B, D)."""
    if len(zb) == 0 or beta <= 0 or len(z) == 0:
        return np.zeros(len(z), np.float32)
    sims = z @ zb.T
    k = min(k, zb.shape[0])
    top = np.partition(sims, -k, axis=1)[:, -k:]
    return (beta * top.mean(1)).astype(np.float32)
