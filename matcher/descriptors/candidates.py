"""Global-only candidate scoring: index search, score normalisation against a background set, and the ASL
gate, in one plain function."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matcher.config import DescriptorConfig
from matcher.descriptors.gate import apply_gate, gate_marks, log_norm_ratio
from matcher.descriptors.infer import split_norm
from matcher.descriptors.normalise import background_mean, normalise_scores
from matcher.index import ReferenceIndex

__all__ = ["Candidates", "global_candidates"]


@dataclass(frozen=True)
class Candidates:
    """Per query (M rows), its k best references: ``rows`` int64 (M, k) (-1 = none), ``cosine`` float32 raw
    similarities, ``scores`` float32 after normalisation and the gate, ``marked`` bool (ASL gate: the query
    holds more content than the reference), ``log_norm_ratio`` float32 log||f(q)|| - log||f(r)||."""

    rows: np.ndarray
    cosine: np.ndarray
    scores: np.ndarray
    marked: np.ndarray
    log_norm_ratio: np.ndarray


def global_candidates(
    index: ReferenceIndex, queries: np.ndarray, k: int, cfg: DescriptorConfig, *,
    background: np.ndarray | None = None, gate_margin: float | None = None, model: str | None = None,
    model_hash: str | None = None,
) -> Candidates:
    """queries (M, D) unnormalised descriptors; background (B, D) descriptors of non-matching pictures or
    None. Score normalisation is applied when a background set is given and ``cfg.score_norm_beta`` > 0;
    the gate when a margin is known (marked pairs lose ``cfg.gate_penalty``)."""
    res = index.search(queries, k, model=model, model_hash=model_hash)
    scores = res.scores
    if background is not None and len(background) and cfg.score_norm_beta > 0:
        zq, _ = split_norm(queries)
        zb, _ = split_norm(background)
        scores = normalise_scores(scores, background_mean(zq, zb, cfg.score_norm_k), cfg.score_norm_beta)
    _, nq = split_norm(queries) if len(queries) else (None, np.zeros(0, np.float32))
    lr = log_norm_ratio(nq, res.ref_norms) if len(queries) else np.zeros((0, k), np.float32)
    margin = gate_margin if gate_margin is not None else cfg.gate_margin
    marked = gate_marks(lr, margin) & (res.rows >= 0) if margin is not None else np.zeros_like(lr, dtype=bool)
    if margin is not None:
        scores = apply_gate(scores, marked, cfg.gate_penalty)
    return Candidates(res.rows, res.scores, scores.astype(np.float32), marked, lr)
