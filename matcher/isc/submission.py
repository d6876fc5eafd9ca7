"""ISC2021 matching-track files: predictions ``query_id,reference_id,score`` and ground truth ``query_id,reference_id``.

Both files are UTF-8 CSV with an optional header; fields are whitespace-trimmed and blank lines are skipped.
Every format problem raises :class:`SubmissionFormatError` naming the file and the 1-based line.

Ground truth: an empty ``reference_id`` means "this query has no copy". Such a query is returned as
``GroundTruthMatch(query_id, "")`` so that metrics know the query exists (its predictions are all false
positives). A query may not be listed both with no copy and with a reference.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from matcher.io.atomic import atomic_write

__all__ = [
    "MAX_ROWS",
    "GroundTruthMatch",
    "PredictedMatch",
    "SubmissionFormatError",
    "cap_total",
    "read_ground_truth",
    "read_predictions",
    "top_k_per_query",
    "validate_ground_truth",
    "validate_predictions",
    "write_ground_truth",
    "write_predictions",
]

MAX_ROWS = 500_000  # ISC2021 matching track: rows in a submission, all queries together
PREDICTION_HEADER = ("query_id", "reference_id", "score")
GROUND_TRUTH_HEADER = ("query_id", "reference_id")


@dataclass(frozen=True)
class PredictedMatch:
    """One scored (query, reference) pair; a higher ``score`` means more likely a copy."""

    query_id: str
    reference_id: str
    score: float


@dataclass(frozen=True)
class GroundTruthMatch:
    """One true (query, reference) copy pair; ``reference_id == ""`` marks a query that has no copy."""

    query_id: str
    reference_id: str


class SubmissionFormatError(ValueError):
    """A predictions or ground-truth file (or in-memory list) is malformed.

    ``path`` is the file (or a label such as ``"<predictions>"``), ``line`` the 1-based line number or None,
    ``problem`` the bare description. ``str(err)`` reads e.g. ``"sub.csv line 7: repeated pair (q1, r3), ..."``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, line: int | None, problem: str) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = self.path if self.path is not None else "<input>"
        if line is not None:
            where = f"{where} line {line}"
        super().__init__(f"{where}: {problem}")


def _rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, trimmed_fields)`` for each non-blank CSV record of ``path``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                for fields in reader:
                    fields = [x.strip() for x in fields]
                    if not any(fields):
                        continue
                    yield reader.line_num, fields
            except csv.Error as e:
                raise SubmissionFormatError(path, reader.line_num + 1, f"unreadable CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise SubmissionFormatError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _too_many(path: str | os.PathLike[str] | None, line: int, max_rows: int) -> SubmissionFormatError:
    return SubmissionFormatError(
        path,
        line,
        f"more than {max_rows} predictions (the cap, max_rows={max_rows}); keep the best-scoring rows "
        "(matcher.isc.submission.cap_total) or raise the cap with max_rows=... / --max-rows",
    )


def _check_id(value: object, what: str) -> str | None:
    """Return a problem description if ``value`` is not a usable id, else None."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not value.strip():
        return f"empty {what}"
    if value != value.strip() or "\n" in value or "\r" in value:
        return f"{what} {value!r} has surrounding whitespace or a line break (it would not survive a CSV round trip)"
    return None


def read_predictions(path: str | os.PathLike[str], *, max_rows: int | None = MAX_ROWS) -> list[PredictedMatch]:
    """Read a matching-track submission. ``max_rows=None`` disables the row cap.

    The first row is a header when its score column is not a number and equals "score".
    Raises :class:`SubmissionFormatError` (with file and line) on: fewer or more than 3 fields, an empty id,
    an unparsable or non-finite score, a repeated (query, reference) pair, more rows than ``max_rows``.
    """
    out: list[PredictedMatch] = []
    seen: dict[tuple[str, str], int] = {}
    first = True
    for line, fields in _rows(path):
        if first:
            first = False
            if len(fields) >= 3 and fields[2].lower() == "score":
                continue
        if len(fields) < 3:
            raise SubmissionFormatError(
                path, line, f"missing column: expected query_id,reference_id,score, got {len(fields)} field(s)"
            )
        if len(fields) > 3:
            raise SubmissionFormatError(
                path, line, f"extra columns: expected query_id,reference_id,score, got {len(fields)} fields"
            )
        q, r, s = fields
        if not q:
            raise SubmissionFormatError(path, line, "empty query_id")
        if not r:
            raise SubmissionFormatError(path, line, "empty reference_id")
        try:
            score = float(s)
        except ValueError:
            raise SubmissionFormatError(path, line, f"score {s!r} is not a number") from None
        if not math.isfinite(score):
            raise SubmissionFormatError(path, line, f"score {s!r} is not finite")
        prev = seen.setdefault((q, r), line)
        if prev != line:
            raise SubmissionFormatError(path, line, f"repeated pair ({q}, {r}), first seen on line {prev}")
        if max_rows is not None and len(out) >= max_rows:
            raise _too_many(path, line, max_rows)
        out.append(PredictedMatch(q, r, score))
    return out


def validate_predictions(
    rows: Sequence[PredictedMatch],
    max_rows: int | None = MAX_ROWS,
    *,
    header: bool = False,
    source: str = "<predictions>",
) -> None:
    """Check in-memory predictions with the rules of :func:`read_predictions`.

    Errors report ``line = index + 1`` (``+ 1`` more when ``header`` is True, as in a file with a header)
    and name ``source``. ``max_rows=None`` disables the row cap.
    """
    offset = 2 if header else 1
    if max_rows is not None and len(rows) > max_rows:
        raise _too_many(source, max_rows + offset, max_rows)
    if _predictions_look_valid(rows):
        return
    # Something is wrong: walk the rows to report the first problem with its line.
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        line = i + offset
        if not isinstance(row, PredictedMatch):
            raise SubmissionFormatError(source, line, f"expected a PredictedMatch, got {type(row).__name__}")
        for value, what in ((row.query_id, "query_id"), (row.reference_id, "reference_id")):
            problem = _check_id(value, what)
            if problem:
                raise SubmissionFormatError(source, line, problem)
        score = row.score
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            try:
                score = float(score)  # numpy scalars
            except (TypeError, ValueError):
                raise SubmissionFormatError(source, line, f"score {row.score!r} is not a number") from None
        if not math.isfinite(score):
            raise SubmissionFormatError(source, line, f"score {row.score!r} is not finite")
        key = (row.query_id, row.reference_id)
        prev = seen.setdefault(key, line)
        if prev != line:
            raise SubmissionFormatError(
                source, line, f"repeated pair ({key[0]}, {key[1]}), first seen on line {prev}"
            )


def _predictions_look_valid(rows: Sequence[PredictedMatch]) -> bool:
    """Fast whole-list check (ids checked once per distinct id); False sends the caller to the row walk."""
    if not all(isinstance(r, PredictedMatch) for r in rows):
        return False
    try:
        scores = np.fromiter((r.score for r in rows), dtype=np.float64, count=len(rows))
    except (TypeError, ValueError):
        return False
    if not np.isfinite(scores).all():
        return False
    pairs = {(r.query_id, r.reference_id) for r in rows}
    if len(pairs) != len(rows):
        return False
    ids = {r.query_id for r in rows}
    ids.update(r.reference_id for r in rows)
    return all(_check_id(x, "id") is None for x in ids)


def _sorted_by_score(rows: Iterable[PredictedMatch]) -> list[PredictedMatch]:
    """Rows sorted by score, highest first; equal scores keep their input order."""
    return sorted(rows, key=lambda m: -float(m.score))


def write_predictions(
    path: str | os.PathLike[str], rows: Sequence[PredictedMatch], *, max_rows: int | None = MAX_ROWS
) -> None:
    """Validate ``rows`` and write them atomically with a header, highest score first (stable).

    Scores are written with ``repr(float)`` so that they read back bit-identical.
    """
    validate_predictions(rows, max_rows, header=True, source=os.fspath(path))
    with atomic_write(path, mode="w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PREDICTION_HEADER)
        for m in _sorted_by_score(rows):
            w.writerow((m.query_id, m.reference_id, repr(float(m.score))))


def read_ground_truth(path: str | os.PathLike[str]) -> list[GroundTruthMatch]:
    """Read ``query_id,reference_id`` ground truth; the header (``query_id,reference_id``) is optional.

    An empty reference_id gives ``GroundTruthMatch(query_id, "")`` (a query without a copy).
    Raises :class:`SubmissionFormatError` on: a missing or extra column, an empty query_id, a repeated pair,
    a query listed both with no copy and with a reference.
    """
    out: list[GroundTruthMatch] = []
    seen: dict[tuple[str, str], int] = {}
    first_ref: dict[str, int] = {}
    first = True
    for line, fields in _rows(path):
        if first:
            first = False
            if len(fields) == 2 and (fields[0].lower(), fields[1].lower()) == GROUND_TRUTH_HEADER:
                continue
        if len(fields) != 2:
            what = "missing column" if len(fields) < 2 else "extra columns"
            raise SubmissionFormatError(
                path, line, f"{what}: expected query_id,reference_id, got {len(fields)} field(s)"
            )
        q, r = fields
        if not q:
            raise SubmissionFormatError(path, line, "empty query_id")
        _check_gt_pair(seen, first_ref, q, r, line, path)
        out.append(GroundTruthMatch(q, r))
    return out


def _check_gt_pair(
    seen: dict[tuple[str, str], int],
    first_ref: dict[str, int],
    q: str,
    r: str,
    line: int,
    path: str | os.PathLike[str],
) -> None:
    """Record (q, r) in ``seen`` (and q's first line with a reference in ``first_ref``).

    Raises on a repeated pair, or when ``q`` is listed both without a copy and with a reference.
    """
    prev = seen.setdefault((q, r), line)
    if prev != line:
        shown = r if r else "<no copy>"
        raise SubmissionFormatError(path, line, f"repeated pair ({q}, {shown}), first seen on line {prev}")
    if r:
        no_copy = seen.get((q, ""))
        if no_copy is not None:
            raise SubmissionFormatError(
                path, line, f"query {q} has reference {r} but is listed without a copy on line {no_copy}"
            )
        first_ref.setdefault(q, line)
    elif q in first_ref:
        raise SubmissionFormatError(
            path, line, f"query {q} is listed without a copy but has a reference on line {first_ref[q]}"
        )


def validate_ground_truth(rows: Sequence[GroundTruthMatch], *, source: str = "<ground truth>") -> None:
    """Check in-memory ground truth with the rules of :func:`read_ground_truth` (line = index + 1)."""
    seen: dict[tuple[str, str], int] = {}
    first_ref: dict[str, int] = {}
    for i, row in enumerate(rows):
        line = i + 1
        if not isinstance(row, GroundTruthMatch):
            raise SubmissionFormatError(source, line, f"expected a GroundTruthMatch, got {type(row).__name__}")
        problem = _check_id(row.query_id, "query_id")
        if problem:
            raise SubmissionFormatError(source, line, problem)
        if row.reference_id != "":
            problem = _check_id(row.reference_id, "reference_id")
            if problem:
                raise SubmissionFormatError(source, line, problem)
        _check_gt_pair(seen, first_ref, row.query_id, row.reference_id, line, source)


def write_ground_truth(path: str | os.PathLike[str], rows: Sequence[GroundTruthMatch]) -> None:
    """Validate ``rows`` and write them atomically with a header, in the given order."""
    validate_ground_truth(rows, source=os.fspath(path))
    with atomic_write(path, mode="w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(GROUND_TRUTH_HEADER)
        for m in rows:
            w.writerow((m.query_id, m.reference_id))


def top_k_per_query(rows: Iterable[PredictedMatch], k: int) -> list[PredictedMatch]:
    """The ``k`` highest-scoring rows of each query, all queries together sorted by score descending.

    Equal scores keep their input order (also when deciding which rows make the cut).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    counts: dict[str, int] = {}
    out: list[PredictedMatch] = []
    for m in _sorted_by_score(rows):
        n = counts.get(m.query_id, 0)
        if n < k:
            counts[m.query_id] = n + 1
            out.append(m)
    return out


def cap_total(rows: Iterable[PredictedMatch], max_rows: int = MAX_ROWS) -> list[PredictedMatch]:
    """The ``max_rows`` highest-scoring rows, sorted by score descending (ties keep input order)."""
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    return _sorted_by_score(rows)[:max_rows]
