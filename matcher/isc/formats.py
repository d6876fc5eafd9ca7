"""Match rows and the files they are written to: the ISC submission CSV, JSON lines and Parquet.

One row per (query, reference) pair: a dict with the keys of :data:`COLUMNS`, built by :func:`pair_row` (the
pipeline's :class:`~matcher.pipeline.pipeline.PairMatch`) or :func:`local_row` (the local engine alone).
:func:`write_rows` writes them atomically in one of :data:`FORMATS`:

- ``csv``: the ISC submission, ``query_id,reference_id,score`` (:func:`~matcher.isc.submission.write_predictions`);
- ``jsonl``: one JSON object per line with every column (non-finite numbers as ``null``);
- ``parquet``: the same columns (boxes as lists, ``global`` as a struct, ``contributions`` as a list of structs);
  needs pyarrow (``pip install 'icd-matcher[parquet]'``).

Columns: ``query_id``, ``reference_id``, ``score`` (fused probability, or the local score with ``--exhaustive``),
``is_copy`` (score >= ``threshold``), ``threshold``, ``n_inliers``, ``n_matches``, ``containment``, ``mirrored``,
``inverted``, ``query_region`` (the query region that matched best: by global descriptor in the pipeline, the
verified local region with ``--exhaustive``), ``query_box`` / ``reference_box`` (the inliers' boxes, px ``[x0, y0,
x1, y1]``; null when not verified), ``reference_region`` (the reference region verified), ``query_coverage`` /
``reference_coverage``, ``global_full`` and ``log_norm_ratio`` (the whole images' normalised similarity and ASL norm
ratio), ``global`` (all the global-descriptor evidence), ``contributions`` (the fused score's
:data:`TOP_CONTRIBUTIONS` largest logit terms, ``[{"feature", "value"}]``) and ``reason`` (why the pair was not
verified, or null). Columns a mode cannot measure are null (``--exhaustive`` has no global evidence and no fusion).

The skipped-files list of a job writing ``OUT`` is ``OUT.skipped.csv`` (:func:`skipped_path`), so that two jobs
writing into one folder keep their own lists.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.io.atomic import atomic_write
from matcher.isc.submission import MAX_ROWS, PredictedMatch, write_predictions

if TYPE_CHECKING:  # pragma: no cover
    from matcher.local.engine import ScoredPair
    from matcher.local.evidence import PairEvidence
    from matcher.pipeline.pipeline import PairMatch
    from matcher.retrieval.candidates import GlobalEvidence

__all__ = ["COLUMNS", "FORMATS", "SKIPPED_SUFFIX", "TOP_CONTRIBUTIONS", "OutputFormatError", "local_row", "pair_row",
           "resolve_format", "select_rows", "skipped_path", "write_rows"]

FORMATS = ("csv", "jsonl", "parquet")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
TOP_CONTRIBUTIONS = 5  # largest logit terms of the fused score kept per row
SKIPPED_SUFFIX = ".skipped.csv"
SUBMISSION_COLUMNS = ("query_id", "reference_id", "score")
COLUMNS = ("query_id", "reference_id", "score", "is_copy", "threshold", "n_inliers", "n_matches", "containment",
           "mirrored", "inverted", "query_region", "query_box", "reference_region", "reference_box",
           "query_coverage", "reference_coverage", "global_full", "log_norm_ratio", "global", "contributions",
           "reason")
PARQUET_EXTRA = "pip install 'icd-matcher[parquet]'"


class OutputFormatError(ValueError):
    """An output format that is unknown, contradicts the output's suffix, or cannot be written here."""


def resolve_format(output: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format to write ``output`` in: ``fmt`` when given, else the one its suffix names (``.jsonl``,
    ``.ndjson``, ``.parquet``, ``.csv``), else csv. Raises :class:`OutputFormatError` for an unknown ``fmt``, a
    ``fmt`` that contradicts the suffix (``--format csv`` with ``out.jsonl``), or parquet without pyarrow."""
    suffix_fmt = SUFFIXES.get(Path(output).suffix.lower())
    if fmt is not None:
        if fmt not in FORMATS:
            raise OutputFormatError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
        if suffix_fmt is not None and suffix_fmt != fmt:
            raise OutputFormatError(f"{os.fspath(output)}: the suffix says {suffix_fmt} but the format asked for is "
                                    f"{fmt}; rename the output or drop the format to write {suffix_fmt}")
    chosen = fmt or suffix_fmt or "csv"
    if chosen == "parquet":
        _require_pyarrow(output)
    return chosen


def _require_pyarrow(output: str | os.PathLike[str]) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise OutputFormatError(f"{os.fspath(output)}: writing parquet needs pyarrow, which is not installed "
                                f"({PARQUET_EXTRA})") from None


def skipped_path(output: str | os.PathLike[str]) -> Path:
    """Where a job writing ``output`` lists its skipped input files: ``OUT.skipped.csv`` beside it."""
    p = Path(output)
    return p.with_name(p.name + SKIPPED_SUFFIX)


def _num(v: Any) -> float | None:
    """A float, or None when missing or not finite (JSON and Parquet rows read back the same)."""
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _box(box: Sequence[float] | None) -> list[float] | None:
    return None if box is None else [float(x) for x in box]


def _evidence_columns(ev: PairEvidence | None) -> dict[str, Any]:
    """The local-verification columns of a row (zeros and nulls without evidence)."""
    if ev is None:
        return {"n_inliers": 0, "n_matches": 0, "containment": "none", "mirrored": False, "inverted": False,
                "query_box": None, "reference_region": None, "reference_box": None, "query_coverage": None,
                "reference_coverage": None, "reason": "not verified (no local evidence)"}
    return {"n_inliers": int(ev.n_inliers), "n_matches": int(ev.n_matches), "containment": ev.containment,
            "mirrored": bool(ev.mirrored), "inverted": bool(ev.inverted), "query_box": _box(ev.query_box),
            "reference_region": ev.reference_region, "reference_box": _box(ev.reference_box),
            "query_coverage": _num(ev.query_coverage), "reference_coverage": _num(ev.reference_coverage),
            "reason": ev.reason}


def _global_struct(g: GlobalEvidence) -> dict[str, Any]:
    """The global-descriptor evidence of a pair (unrounded; see :class:`~matcher.retrieval.candidates.GlobalEvidence`)."""
    return {"full": _num(g.full), "cosine": _num(g.cosine), "regions": _num(g.regions), "region": g.region,
            "to_local": _num(g.to_local), "reference_crop": g.reference_crop,
            "log_norm_ratio": _num(g.log_norm_ratio), "sources": [str(s) for s in g.sources]}


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {c: row[c] for c in COLUMNS}


def pair_row(m: PairMatch, *, evidence: bool = True) -> dict[str, Any]:
    """The row of one pipeline pair; only the submission columns when ``evidence`` is False (all a csv needs)."""
    if not evidence:
        return {"query_id": m.query_id, "reference_id": m.reference_id, "score": _num(m.score)}
    g = m.global_evidence
    top = [(k, v) for k, v in m.contributions.items() if k != "bias"]
    top.sort(key=lambda kv: -abs(kv[1]))
    return _ordered({"query_id": m.query_id, "reference_id": m.reference_id, "score": _num(m.score),
                     "is_copy": bool(m.is_copy), "threshold": float(m.threshold), **_evidence_columns(m.evidence),
                     "query_region": g.region, "global_full": _num(g.full), "log_norm_ratio": _num(g.log_norm_ratio),
                     "global": _global_struct(g),
                     "contributions": [{"feature": k, "value": float(v)} for k, v in top[:TOP_CONTRIBUTIONS]]})


def local_row(query_id: str, pair: ScoredPair, threshold: float, *, evidence: bool = True) -> dict[str, Any]:
    """The row of one pair scored by the local engine alone (``--exhaustive``): no global evidence, no fusion."""
    if not evidence:
        return {"query_id": query_id, "reference_id": pair.reference_id, "score": _num(pair.score)}
    ev = pair.evidence
    return _ordered({"query_id": query_id, "reference_id": pair.reference_id, "score": _num(pair.score),
                     "is_copy": bool(pair.score >= threshold), "threshold": float(threshold), **_evidence_columns(ev),
                     "query_region": ev.query_region if ev is not None else None, "global_full": None,
                     "log_norm_ratio": None, "global": None, "contributions": []})


def select_rows(rows: Iterable[dict[str, Any]], *, min_score: float | None = None,
                max_rows: int | None = None) -> list[dict[str, Any]]:
    """Rows scoring at least ``min_score`` (rows without a score are dropped then), best first (ties keep their
    order), at most ``max_rows``."""
    kept = [r for r in rows if min_score is None or (r["score"] is not None and r["score"] >= min_score)]
    kept.sort(key=lambda r: -r["score"] if r["score"] is not None else math.inf)
    return kept if max_rows is None else kept[:max_rows]


def _parquet_schema() -> Any:
    import pyarrow as pa

    f64, text = pa.float64(), pa.string()
    glob = pa.struct([("full", f64), ("cosine", f64), ("regions", f64), ("region", text), ("to_local", f64),
                      ("reference_crop", text), ("log_norm_ratio", f64), ("sources", pa.list_(text))])
    contrib = pa.list_(pa.struct([("feature", text), ("value", f64)]))
    types = {"query_id": text, "reference_id": text, "score": f64, "is_copy": pa.bool_(), "threshold": f64,
             "n_inliers": pa.int64(), "n_matches": pa.int64(), "containment": text, "mirrored": pa.bool_(),
             "inverted": pa.bool_(), "query_region": text, "query_box": pa.list_(f64), "reference_region": text,
             "reference_box": pa.list_(f64), "query_coverage": f64, "reference_coverage": f64, "global_full": f64,
             "log_norm_ratio": f64, "global": glob, "contributions": contrib, "reason": text}
    return pa.schema([(c, types[c]) for c in COLUMNS])


def _full(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], fmt: str) -> None:
    if rows and "is_copy" not in rows[0]:
        raise ValueError(f"{os.fspath(path)}: {fmt} carries the evidence, but these rows hold only "
                         f"{', '.join(SUBMISSION_COLUMNS)} (build them with evidence=True)")


def write_rows(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], fmt: str = "csv", *,
               max_rows: int | None = MAX_ROWS) -> None:
    """Write ``rows`` to ``path`` in ``fmt`` (see :data:`FORMATS`), atomically, in the given order (csv: best
    first). csv rows are validated as a submission (:class:`~matcher.isc.submission.SubmissionFormatError` naming
    the file and line; ``max_rows`` is its cap, None for none)."""
    if fmt == "csv":
        preds = [PredictedMatch(r["query_id"], r["reference_id"], r["score"]) for r in rows]
        write_predictions(path, preds, max_rows=max_rows)
    elif fmt == "jsonl":
        _full(rows, path, fmt)
        with atomic_write(path, "w", newline="") as fh:
            for r in rows:
                fh.write(json.dumps({c: r[c] for c in COLUMNS}, ensure_ascii=False, allow_nan=False) + "\n")
    elif fmt == "parquet":
        _full(rows, path, fmt)
        _require_pyarrow(path)
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=_parquet_schema())
        with atomic_write(path, "wb") as fh:
            pq.write_table(table, fh)
    else:
        raise OutputFormatError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
