"""ISC2021 matching-track metrics: micro-AP, recall at precision 0.9, recall at rank 1/10, with breakdowns.

Definitions (field guide section 1):

- micro-AP: all predictions of all queries are pooled and sorted by score, highest first; on equal scores
  negatives come first (worst case). ``precision_i = TP_i / i``, ``recall_i = TP_i / n_gt_pairs`` and
  ``AP = sum_i (recall_i - recall_{i-1}) * precision_i`` (no interpolation). Ground-truth pairs that are
  never predicted lower recall; predictions for queries without a copy are false positives.
- recall@P90: the highest recall at any rank where precision >= 0.9 (0 when never), with the score at
  that rank as threshold (None when never). Predictions with ``score >= threshold`` reach that
  precision and recall.
- recall at rank k: the fraction of ground-truth pairs (q, r) whose r is among q's k best predictions;
  ties are pessimistic (r goes after every other reference of q with the same score).

Predictions for query ids absent from the ground truth are counted as false positives and reported in
``Metrics.unknown_queries`` (distinct ids) and ``Metrics.n_unknown_predictions`` (rows).
When there are no ground-truth pairs (e.g. a breakdown subset of negative queries only), the recall-based
figures are undefined and set to NaN (``None`` in :meth:`Metrics.to_dict`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matcher.isc.submission import (
    GroundTruthMatch,
    PredictedMatch,
    validate_ground_truth,
    validate_predictions,
)

__all__ = [
    "ManifestError",
    "Metrics",
    "at_threshold",
    "evaluate",
    "evaluate_by_family",
    "evaluate_by_kind",
    "evaluate_with_breakdowns",
    "evaluate_with_curve",
    "format_metrics_table",
    "fraction_above",
    "load_manifest",
    "precision_recall_curve",
    "queries_by_family",
    "queries_by_kind",
    "restrict",
    "split_by_family",
]

_TARGET_NUM, _TARGET_DEN = 9, 10  # precision target 9/10, compared in exact integer arithmetic
PRECISION_TARGET = _TARGET_NUM / _TARGET_DEN


@dataclass
class Metrics:
    """Evaluation result. Ratios are in [0, 1]; NaN where undefined (no ground-truth pairs)."""

    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None  # score at the recall@P90 rank; None when precision never reaches 0.9
    recall_at_rank1: float
    recall_at_rank10: float
    n_predictions: int
    n_gt_pairs: int
    n_queries_with_gt: int  # queries with at least one true reference
    n_queries_without_gt: int  # queries listed in the ground truth with no copy
    n_true_positives_predicted: int  # ground-truth pairs present among the predictions
    unknown_queries: int  # distinct predicted query ids that the ground truth does not list at all
    n_unknown_predictions: int = 0  # prediction rows for those ids (all counted as false positives)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (NaN becomes None)."""
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


class ManifestError(ValueError):
    """The benchmark manifest is unreadable or has the wrong shape; the message names the file."""


# ---------------------------------------------------------------------------------------------------------
# Core: predictions and ground truth as arrays indexed by query code.


@dataclass
class _Table:
    """Predictions and ground truth encoded once; each breakdown selects queries by code."""

    pred_q: np.ndarray  # (P,) int64 query code of each prediction
    pred_score: np.ndarray  # (P,) float64
    pred_tp: np.ndarray  # (P,) bool, the pair is a ground-truth pair
    pred_rank: np.ndarray  # (P,) int64 pessimistic 1-based rank of the prediction within its query
    gt_pairs_q: np.ndarray  # (G,) int64 query code of each ground-truth pair
    known: np.ndarray  # (Q,) bool, query listed in the ground truth (with or without a copy)
    has_gt: np.ndarray  # (Q,) bool, query has at least one ground-truth pair
    codes: dict[str, int]  # query id -> code


def _build(predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch]) -> _Table:
    validate_predictions(predictions, None)
    validate_ground_truth(ground_truth)
    codes: dict[str, int] = {}
    gt_pairs = {(m.query_id, m.reference_id) for m in ground_truth if m.reference_id}
    gt_q = np.array([codes.setdefault(m.query_id, len(codes)) for m in ground_truth], dtype=np.int64)
    gt_pairs_q = np.array([codes[q] for q, _ in gt_pairs], dtype=np.int64)
    pred_q = np.array([codes.setdefault(m.query_id, len(codes)) for m in predictions], dtype=np.int64)
    pred_score = np.array([m.score for m in predictions], dtype=np.float64)
    pred_tp = np.array([(m.query_id, m.reference_id) in gt_pairs for m in predictions], dtype=bool)
    n_codes = len(codes)
    known = np.zeros(n_codes, dtype=bool)
    known[gt_q] = True
    has_gt = np.zeros(n_codes, dtype=bool)
    has_gt[gt_pairs_q] = True
    return _Table(pred_q, pred_score, pred_tp, _pessimistic_ranks(pred_q, pred_score), gt_pairs_q, known,
                  has_gt, codes)


def _pessimistic_ranks(q: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(P,) int64 1-based rank of each prediction within its query: the number of the query's predictions
    scoring >= its own score (so a tie puts it after every other reference with the same score)."""
    n = len(q)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-score, q))  # by query, then score descending
    qs, ss = q[order], score[order]
    new_query = np.empty(n, dtype=bool)
    new_query[0] = True
    new_query[1:] = qs[1:] != qs[:-1]
    run_end = np.empty(n, dtype=bool)  # last element of a (query, score) run
    run_end[-1] = True
    run_end[:-1] = new_query[1:] | (ss[1:] != ss[:-1])
    idx = np.arange(n)
    query_start = np.maximum.accumulate(np.where(new_query, idx, 0))
    # index of the last element of each element's run: reverse running minimum over run ends
    last = np.where(run_end, idx, n)
    last = np.minimum.accumulate(last[::-1])[::-1]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = last - query_start + 1
    return ranks


def _ranked(score: np.ndarray, tp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool order: score descending, negatives first on ties. Returns (scores, is_tp) sorted, (P,) each."""
    order = np.lexsort((tp, -score))
    return score[order], tp[order]


def _curve(
    score: np.ndarray, tp: np.ndarray, n_gt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-rank (precision, recall, threshold, tp_cumulative, is_tp) arrays, each (P,), in pool order."""
    s, t = _ranked(score, tp)
    tp_cum = np.cumsum(t, dtype=np.int64)
    ranks = np.arange(1, len(s) + 1, dtype=np.int64)
    precision = tp_cum / ranks
    recall = tp_cum / n_gt if n_gt > 0 else np.full(len(s), np.nan)
    return precision, recall, s, tp_cum, t


def _metrics(table: _Table, sel: np.ndarray | None) -> Metrics:
    """Metrics on the queries whose code is selected by ``sel`` ((Q,) bool; None = all)."""
    if sel is None:
        pmask = np.ones(len(table.pred_q), dtype=bool)
        gmask = np.ones(len(table.gt_pairs_q), dtype=bool)
        known, has_gt = table.known, table.has_gt
    else:
        pmask = sel[table.pred_q]
        gmask = sel[table.gt_pairs_q]
        known, has_gt = table.known & sel, table.has_gt & sel
    score, tp, rank = table.pred_score[pmask], table.pred_tp[pmask], table.pred_rank[pmask]
    n_gt = int(gmask.sum())
    n_pred = len(score)
    unknown_pred = ~table.known[table.pred_q[pmask]]
    n_tp = int(tp.sum())
    if n_gt == 0:
        ap = r90 = r1 = r10 = math.nan
        thr: float | None = None
    else:
        precision, _, thresholds, tp_cum, t_sorted = _curve(score, tp, n_gt)
        ap = float(precision[t_sorted].sum() / n_gt)  # recall steps by 1/n_gt exactly at true positives
        ranks = np.arange(1, n_pred + 1)
        ok = _TARGET_DEN * tp_cum >= _TARGET_NUM * ranks  # precision >= 0.9, exactly
        r90, thr = 0.0, None
        if ok.any():
            best_tp = int(tp_cum[ok].max())
            if best_tp > 0:
                i = int(np.argmax(ok & (tp_cum == best_tp)))  # first rank reaching it: a tie group's end
                r90, thr = best_tp / n_gt, float(thresholds[i])
        r1 = int((tp & (rank <= 1)).sum()) / n_gt
        r10 = int((tp & (rank <= 10)).sum()) / n_gt
    return Metrics(
        micro_ap=ap,
        recall_at_p90=r90,
        threshold_at_p90=thr,
        recall_at_rank1=r1,
        recall_at_rank10=r10,
        n_predictions=n_pred,
        n_gt_pairs=n_gt,
        n_queries_with_gt=int(has_gt.sum()),
        n_queries_without_gt=int((known & ~has_gt).sum()),
        n_true_positives_predicted=n_tp,
        unknown_queries=len(np.unique(table.pred_q[pmask][unknown_pred])),
        n_unknown_predictions=int(unknown_pred.sum()),
    )


def evaluate(predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch]) -> Metrics:
    """ISC2021 matching-track metrics of ``predictions`` against ``ground_truth`` (see the module docstring).

    Raises :class:`matcher.isc.submission.SubmissionFormatError` on invalid input (e.g. a repeated pair).
    """
    return _metrics(_build(predictions, ground_truth), None)


def precision_recall_curve(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-rank ``(precision, recall, thresholds)``, each (P,) float64, in pool order (score descending,
    negatives first on ties): entry i describes the top i+1 predictions; ``thresholds[i]`` is the score at
    that rank. Recall is NaN when the ground truth has no pairs."""
    _, precision, recall, thresholds = evaluate_with_curve(predictions, ground_truth)
    return precision, recall, thresholds


def evaluate_with_curve(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch]
) -> tuple[Metrics, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`evaluate` and :func:`precision_recall_curve` in one pass: ``(metrics, precision, recall,
    thresholds)``."""
    table = _build(predictions, ground_truth)
    precision, recall, thresholds, _, _ = _curve(table.pred_score, table.pred_tp, len(table.gt_pairs_q))
    return _metrics(table, None), precision, recall, thresholds


# ---------------------------------------------------------------------------------------------------------
# Breakdowns by benchmark manifest.


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the benchmark builder's manifest.json: ``{"queries": {query_id: {"kind": str, "families": [str],
    "edits": [...]}}, ...}``. Raises :class:`ManifestError` naming the file on bad JSON or a wrong shape."""
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{name} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict) or not isinstance(data.get("queries"), dict):
        raise ManifestError(f'{name}: expected a JSON object with a "queries" object')
    for qid, entry in data["queries"].items():
        if not isinstance(entry, dict):
            raise ManifestError(f"{name}: query {qid}: expected an object, got {type(entry).__name__}")
        fams = entry.get("families", [])
        if not isinstance(fams, list) or not all(isinstance(x, str) for x in fams):
            raise ManifestError(f'{name}: query {qid}: "families" must be a list of strings')
        if "kind" in entry and not isinstance(entry["kind"], str):
            raise ManifestError(f'{name}: query {qid}: "kind" must be a string')
    return data


def queries_by_family(manifest: Mapping[str, Any]) -> dict[str, set[str]]:
    """Family name -> ids of the manifest's queries (copies and negatives) whose ``families`` contain it."""
    out: dict[str, set[str]] = {}
    for qid, entry in manifest.get("queries", {}).items():
        for fam in entry.get("families", []):
            out.setdefault(fam, set()).add(qid)
    return dict(sorted(out.items()))


def queries_by_kind(manifest: Mapping[str, Any]) -> dict[str, set[str]]:
    """Query kind ("copy", "negative", "hard_negative_holistic", ...) -> ids of the manifest's queries."""
    out: dict[str, set[str]] = {}
    for qid, entry in manifest.get("queries", {}).items():
        kind = entry.get("kind")
        if kind is not None:
            out.setdefault(kind, set()).add(qid)
    return dict(sorted(out.items()))


def restrict(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch], query_ids: Collection[str]
) -> tuple[list[PredictedMatch], list[GroundTruthMatch]]:
    """The predictions and ground-truth rows of the queries in ``query_ids``."""
    ids = query_ids if isinstance(query_ids, (set, frozenset, dict)) else set(query_ids)
    return [m for m in predictions if m.query_id in ids], [m for m in ground_truth if m.query_id in ids]


def split_by_family(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch], manifest: Mapping[str, Any]
) -> dict[str, tuple[list[PredictedMatch], list[GroundTruthMatch]]]:
    """Family -> (predictions, ground truth) restricted to that family's queries (for plotting)."""
    return {fam: restrict(predictions, ground_truth, ids) for fam, ids in queries_by_family(manifest).items()}


def _by_groups(table: _Table, groups: Mapping[str, set[str]]) -> dict[str, Metrics]:
    out = {}
    for name, ids in groups.items():
        sel = np.zeros(len(table.codes), dtype=bool)
        idx = [table.codes[q] for q in ids if q in table.codes]
        sel[np.asarray(idx, dtype=np.int64)] = True
        out[name] = _metrics(table, sel)
    return out


def evaluate_with_breakdowns(
    predictions: Sequence[PredictedMatch],
    ground_truth: Sequence[GroundTruthMatch],
    manifest: Mapping[str, Any] | None = None,
) -> tuple[Metrics, dict[str, Metrics], dict[str, Metrics]]:
    """``(overall, by_family, by_kind)`` in one pass over the input (the breakdowns are empty without a
    manifest); equal to :func:`evaluate`, :func:`evaluate_by_family` and :func:`evaluate_by_kind`."""
    table = _build(predictions, ground_truth)
    overall = _metrics(table, None)
    if manifest is None:
        return overall, {}, {}
    return overall, _by_groups(table, queries_by_family(manifest)), _by_groups(table, queries_by_kind(manifest))


def evaluate_by_family(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch], manifest: Mapping[str, Any]
) -> dict[str, Metrics]:
    """Family -> metrics on the predictions and ground truth of the queries whose ``families`` contain it
    (positive and negative queries of that family alike), families sorted by name."""
    return _by_groups(_build(predictions, ground_truth), queries_by_family(manifest))


def evaluate_by_kind(
    predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch], manifest: Mapping[str, Any]
) -> dict[str, Metrics]:
    """Query kind -> metrics restricted to the manifest's queries of that kind, kinds sorted by name."""
    return _by_groups(_build(predictions, ground_truth), queries_by_kind(manifest))


def at_threshold(predictions: Sequence[PredictedMatch], ground_truth: Sequence[GroundTruthMatch],
                 threshold: float) -> tuple[float, float, int]:
    """(precision, recall, predictions at or above ``threshold``): what a user acting on that threshold gets.
    Precision is nan when nothing reaches the threshold; recall counts every ground-truth pair."""
    truth = {(g.query_id, g.reference_id) for g in ground_truth if g.reference_id}
    above = [(m.query_id, m.reference_id) for m in predictions if m.score >= threshold]
    tp = sum(1 for p in set(above) if p in truth)
    precision = tp / len(above) if above else math.nan
    recall = tp / len(truth) if truth else math.nan
    return precision, recall, len(above)


def fraction_above(
    predictions: Sequence[PredictedMatch], query_ids: Collection[str], threshold: float, *, per: str = "query",
    pairs: Mapping[str, Collection[str]] | None = None,
) -> float:
    """Share scoring at or above ``threshold`` (e.g. the overall ``threshold_at_p90``).

    ``per="query"``: the fraction of ``query_ids`` with at least one prediction ``score >= threshold``
    (queries without predictions count as below): for negative kinds, the share of queries that would be
    flagged as copies. ``per="pair"``: the fraction of ``query_ids`` whose prediction with one of the references
    ``pairs[query]`` (e.g. a holistic picture's crop: the manifest's ``related_references``) scores
    ``>= threshold``; a pair not predicted counts as below. ``per="prediction"``: the fraction of those
    queries' predictions with ``score >= threshold``. NaN when the denominator is 0.
    """
    ids = query_ids if isinstance(query_ids, (set, frozenset, dict)) else set(query_ids)
    if per == "query":
        hit = {m.query_id for m in predictions if m.query_id in ids and m.score >= threshold}
        return len(hit) / len(ids) if ids else math.nan
    if per == "pair":
        if pairs is None:
            raise ValueError('per="pair" needs pairs (query id -> its related reference ids)')
        hit = {m.query_id for m in predictions if m.query_id in ids and m.score >= threshold
               and m.reference_id in pairs.get(m.query_id, ())}
        return len(hit) / len(ids) if ids else math.nan
    if per == "prediction":
        scores = np.array([m.score for m in predictions if m.query_id in ids], dtype=np.float64)
        return float((scores >= threshold).mean()) if len(scores) else math.nan
    raise ValueError(f'per must be "query", "pair" or "prediction", got {per!r}')


# ---------------------------------------------------------------------------------------------------------
# Text output.


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def format_metrics_table(
    metrics: Metrics,
    by_family: Mapping[str, Metrics] | None = None,
    *,
    by_kind: Mapping[str, Metrics] | None = None,
    flagged: Mapping[str, float] | None = None,
) -> str:
    """Aligned plain-text report: overall metrics, then optional per-family and per-kind tables.

    ``flagged`` maps kind -> :func:`fraction_above` at the overall P90 threshold (shown as a column).
    """
    overall = [
        ("micro-AP", _fmt(metrics.micro_ap)),
        ("recall@P90", _fmt(metrics.recall_at_p90)),
        ("threshold@P90", _fmt(metrics.threshold_at_p90, 6)),
        ("recall@rank1", _fmt(metrics.recall_at_rank1)),
        ("recall@rank10", _fmt(metrics.recall_at_rank10)),
        ("predictions", _fmt(metrics.n_predictions)),
        ("ground-truth pairs", _fmt(metrics.n_gt_pairs)),
        ("  found among predictions", _fmt(metrics.n_true_positives_predicted)),
        ("queries with a copy", _fmt(metrics.n_queries_with_gt)),
        ("queries without a copy", _fmt(metrics.n_queries_without_gt)),
    ]
    parts = [_table(("metric", "value"), overall)]
    if metrics.unknown_queries:
        parts.append(
            f"warning: {metrics.n_unknown_predictions} predictions for {metrics.unknown_queries} query ids "
            "that are not in the ground truth were counted as false positives; check the ids"
        )
    cols = ("µAP", "R@P90", "R@1", "R@10", "gt pairs", "q+", "q-", "preds")

    def row(name: str, m: Metrics) -> list[str]:
        return [name, _fmt(m.micro_ap), _fmt(m.recall_at_p90), _fmt(m.recall_at_rank1),
                _fmt(m.recall_at_rank10), _fmt(m.n_gt_pairs), _fmt(m.n_queries_with_gt),
                _fmt(m.n_queries_without_gt), _fmt(m.n_predictions)]

    if by_family:
        parts.append(_table(("family", *cols), [row(k, m) for k, m in by_family.items()]))
    if by_kind:
        kcols = (*cols, "flagged@P90") if flagged is not None else cols
        rows = []
        for k, m in by_kind.items():
            r = row(k, m)
            if flagged is not None:
                r.append(_fmt(flagged.get(k)))
            rows.append(r)
        parts.append(_table(("kind", *kcols), rows))
    if by_family or by_kind:
        notes = ["q+ / q-: queries with / without a copy; preds: prediction rows"]
        if by_kind and flagged is not None:
            notes.append("flagged@P90: share of the kind's queries with a prediction scoring at or above the "
                         "overall P90 threshold")
        parts.append("\n".join(notes))
    return "\n\n".join(parts) + "\n"
