"""Review page of a matching submission: one self-contained HTML file (``icd report``).

For each shown query, its ``top`` best rows are drawn side by side (query left, reference right) with the
inlier lines and matched frames of a :class:`~matcher.local.engine.LocalEngine` verification of that pair,
with the submitted score, the verdict at ``threshold`` and, with ground truth, whether the row is right.
Ground-truth references missing from the shown rows get a "missed" row. The page has no external resources:
pictures are base64 JPEG data URIs, styles are inline, the precision-recall curve is inline SVG, and a few
lines of optional JavaScript filter the queries.

Query choice: queries are ordered by their best submitted score, highest first; at most ``max_queries`` are
shown. With ground truth, queries with a problem (a false positive at or above the threshold among the shown
rows, or a ground-truth pair without a row at or above the threshold) are taken first, then the others fill
the cap.
"""
from __future__ import annotations

import base64
import html
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcher.config import MatcherConfig
from matcher.io.atomic import atomic_write_text
from matcher.io.folders import SkippedFile, image_ids, scan_folder
from matcher.io.images import ImageLoadError
from matcher.isc.submission import (
    GroundTruthMatch,
    PredictedMatch,
    read_ground_truth,
    read_predictions,
    validate_ground_truth,
    validate_predictions,
)

__all__ = ["MARKS", "QueryPlan", "ReportSummary", "ShownPair", "build_report", "plan_queries"]

DRAW_HEIGHT = 200  # px, height of each side-by-side drawing
JPEG_QUALITY = 80
MAX_LINES = 80  # inlier lines drawn per pair
CACHE_SIZE = 64  # reference images (and their features) kept in memory while drawing

# mark -> (label, correct?)
MARKS: dict[str, tuple[str, bool]] = {
    "tp": ("true positive", True),
    "tn": ("correctly rejected", True),
    "fp": ("false positive", False),
    "fn": ("true pair below threshold", False),
    "missed": ("missed ground-truth pair", False),
}


@dataclass
class ShownPair:
    """One row of a query: the submitted pair (``rank`` 1-based among the query's rows) or a missed true pair.

    ``score``/``rank`` are None for a ground-truth pair the submission never lists; ``mark`` is a
    :data:`MARKS` key, or None without ground truth.
    """

    reference_id: str
    score: float | None
    rank: int | None
    is_copy: bool
    mark: str | None = None


@dataclass
class QueryPlan:
    """A shown query: its rows in display order; ``best`` is its best submitted score (None: no rows)."""

    query_id: str
    best: float | None
    pairs: list[ShownPair]
    flagged: bool = False  # with ground truth: a false positive or a missed true pair


@dataclass
class ReportSummary:
    """What :func:`build_report` wrote. ``problems``: image files that could not be shown (one per file)."""

    n_queries: int
    n_pairs: int
    problems: list[SkippedFile] = field(default_factory=list)
    output: str = ""

    def __str__(self) -> str:
        return (f"report of {self.n_queries} queries, {self.n_pairs} pairs -> {self.output}; "
                f"{len(self.problems)} image problem(s)")


# ----------------------------------------------------------------------------------------------------------
# Which queries and rows


def plan_queries(
    rows: Sequence[PredictedMatch],
    ground_truth: Sequence[GroundTruthMatch] | None = None,
    *,
    top: int = 3,
    max_queries: int = 200,
    threshold: float = 0.5,
) -> list[QueryPlan]:
    """The queries to show (see the module docstring), best score first, each with its ``top`` best rows
    (equal scores keep the input order) and, with ground truth, a row per true reference not among them
    ("missed", or "tp" when it scores at or above the threshold further down).
    """
    if top < 1 or max_queries < 1:
        raise ValueError(f"top and max_queries must be >= 1, got {top} and {max_queries}")
    by_query: dict[str, list[PredictedMatch]] = {}
    for m in sorted(rows, key=lambda m: -float(m.score)):
        by_query.setdefault(m.query_id, []).append(m)
    truth: dict[str, list[str]] = {}
    for g in ground_truth or ():
        if g.reference_id:
            truth.setdefault(g.query_id, []).append(g.reference_id)
    plans = []
    for qid in [*by_query, *(q for q in truth if q not in by_query)]:
        plans.append(_plan_one(qid, by_query.get(qid, []), truth.get(qid, []) if ground_truth is not None
                               else None, top, threshold))

    def order(p: QueryPlan) -> tuple[float, str]:
        return (-p.best if p.best is not None else math.inf, p.query_id)

    plans.sort(key=order)
    if len(plans) > max_queries:
        flagged = [p for p in plans if p.flagged][:max_queries]
        chosen = {p.query_id for p in flagged}
        rest = [p for p in plans if p.query_id not in chosen][: max_queries - len(flagged)]
        plans = sorted(flagged + rest, key=order)
    return plans


def _plan_one(qid: str, ranked: list[PredictedMatch], truth: list[str] | None, top: int,
              threshold: float) -> QueryPlan:
    true_refs = set(truth or ())
    pairs = []
    for rank, m in enumerate(ranked[:top], start=1):
        copy = float(m.score) >= threshold
        mark = None
        if truth is not None:
            mark = ("tp" if copy else "fn") if m.reference_id in true_refs else ("fp" if copy else "tn")
        pairs.append(ShownPair(m.reference_id, float(m.score), rank, copy, mark))
    flagged = any(p.mark in ("fp", "fn") for p in pairs)
    if truth is not None:
        shown = {p.reference_id for p in pairs}
        rank_of = {m.reference_id: (i, float(m.score)) for i, m in enumerate(ranked, start=1)}
        for ref in truth:
            found = any(m.reference_id == ref and float(m.score) >= threshold for m in ranked)
            flagged = flagged or not found
            if ref not in shown:
                rank, score = rank_of.get(ref, (None, None))
                copy = score is not None and score >= threshold  # a true pair found beyond the top rows
                pairs.append(ShownPair(ref, score, rank, copy, "tp" if copy else "missed"))
    best = float(ranked[0].score) if ranked else None
    return QueryPlan(qid, best, pairs, flagged)


# ----------------------------------------------------------------------------------------------------------
# Images, verification and drawing


class _Pictures:
    """Loads images by id with their local features (the last ``CACHE_SIZE`` images kept, LRU); records each
    unusable file once in ``problems``."""

    def __init__(self, queries: dict[str, Path], references: dict[str, Path], folders: tuple[str, str],
                 config: MatcherConfig) -> None:
        self.paths = {"query": queries, "reference": references}
        self.folders = {"query": folders[0], "reference": folders[1]}
        self.config = config
        self.problems: list[SkippedFile] = []
        self._failed: dict[tuple[str, str], str] = {}
        self._cache: OrderedDict[tuple[str, str], tuple[np.ndarray, object]] = OrderedDict()
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            from matcher.local.engine import LocalEngine

            self._engine = LocalEngine(self.config)
        return self._engine

    def get(self, side: str, image_id: str) -> tuple[np.ndarray, object] | str:
        """(RGB uint8 (H, W, 3), features) of an image, or the problem text (file and cause) when unusable."""
        key = (side, image_id)
        if key in self._failed:
            return self._failed[key]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self.paths[side].get(image_id)
        try:
            if path is None:
                raise ImageLoadError(os.path.join(self.folders[side], f"{image_id}.*"), "missing",
                                     f"no image file for {side} id '{image_id}' in '{self.folders[side]}'")
            image = self.engine.load(path)
        except ImageLoadError as exc:
            text = f"{side} {image_id}: {exc.path}: {exc.detail}"
            self._failed[key] = text
            self.problems.append(SkippedFile(exc.path, exc.reason, text))
            return text
        engine = self.engine
        feats = engine.query_features(image) if side == "query" else engine.reference_features(image)
        self._cache[key] = (image, feats)
        while len(self._cache) > CACHE_SIZE:  # the current query is touched by every pair: never the oldest
            self._cache.popitem(last=False)
        return image, feats


def _jpeg_uri(rgb: np.ndarray) -> str:
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise ValueError("cannot encode JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _thumb(rgb: np.ndarray) -> np.ndarray:
    import cv2

    s = DRAW_HEIGHT / rgb.shape[0]
    return cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), DRAW_HEIGHT), interpolation=cv2.INTER_AREA)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _placeholder(text: str) -> str:
    return f'<div class="placeholder" role="img" aria-label="missing image">&#9888; {_esc(text)}</div>'


def _evidence_text(local_score: float, ev) -> str:
    if ev.reason:
        return f"verification: not verified ({ev.reason})"
    parts = [f"verification score {local_score:.3f}", f"inliers {ev.n_inliers} / {ev.n_matches} matches",
             f"containment {ev.containment}",
             f"coverage q {ev.query_coverage:.2f} r {ev.reference_coverage:.2f}"]
    if ev.mirrored:
        parts.append("mirrored")
    if ev.inverted:
        parts.append("inverted (a negative)")
    if ev.dense is not None and ev.dense.measured:
        parts.append(f"dense agreement {ev.dense.agree:.2f} (largest disagreeing area {ev.dense.disagree_blob:.2f})")
    return " · ".join(parts)


def _pair_visual(pictures: _Pictures, qid: str, rid: str) -> tuple[str, str]:
    """(HTML of the drawing or placeholders, evidence summary HTML) of one pair."""
    from matcher.local.engine import dense_check
    from matcher.report.draw import draw_pair

    q, r = pictures.get("query", qid), pictures.get("reference", rid)
    if isinstance(q, tuple) and isinstance(r, tuple):
        score, ev = pictures.engine.verify_features(q[1], r[1])
        dense_check(ev, q[0], r[0])
        # a rejected fit may still carry points and frames: draw none, they would look like a match
        shown = ev if ev.reason is None else type(ev)(reason=ev.reason)
        canvas = draw_pair(q[0], r[0], shown, height=DRAW_HEIGHT, max_lines=MAX_LINES)
        alt = f"query {qid} and reference {rid}"
        return (f'<img class="pair" src="{_jpeg_uri(canvas)}" alt="{_esc(alt)}">',
                f'<div class="ev">{_esc(_evidence_text(score, ev))}</div>')
    cells = []
    for side, item in (("query", q), ("reference", r)):
        if isinstance(item, tuple):
            cells.append(f'<img class="half" src="{_jpeg_uri(_thumb(item[0]))}" alt="{side}">')
        else:
            cells.append(_placeholder(item))
    return f'<div class="halves">{"".join(cells)}</div>', '<div class="ev">verification: not run</div>'


# ----------------------------------------------------------------------------------------------------------
# Page


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:16px 24px;color:#1d1f23;
background:#f6f7f9}
h1{margin:0 0 8px;font-size:22px} h2{font-size:16px;margin:0 0 8px}
.top{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin-bottom:14px}
table.kv td{padding:1px 10px 1px 0;vertical-align:top} table.kv td:first-child{color:#5a6270}
code{font-size:12px;word-break:break-all}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:4px}
.index a{display:inline-block;margin:2px 6px 2px 0;text-decoration:none;padding:0 4px;border-radius:3px;
border:1px solid #ccd}
.index a.flagged{background:#fde2e1;border-color:#e9a5a1}
.query{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 14px;margin-bottom:12px}
.query.flagged{border-left:5px solid #d9534f}
.match{display:flex;gap:14px;align-items:flex-start;border-top:1px solid #eef0f2;padding:8px 0}
.match img{display:block;max-width:100%;height:auto} .visual{flex:0 1 auto;max-width:72%}
.halves{display:flex;gap:8px} .halves img{height:200px}
.placeholder{width:220px;height:200px;border:2px dashed #d9534f;background:#fff5f5;color:#a12622;padding:8px;
box-sizing:border-box;font-size:12px;overflow:auto;word-break:break-all}
.info{flex:1 1 220px;min-width:200px} .ref{font-weight:600;font-size:15px}
.score{font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:1px 6px;border-radius:3px;font-size:12px;font-weight:600}
.verdict.copy{background:#dbeafe;color:#1e40af} .verdict.nocopy{background:#eceff3;color:#4b5563}
.mark{display:inline-block;padding:1px 6px;border-radius:3px;font-size:12px;font-weight:600;margin-left:4px}
.mark.ok{background:#dcfce7;color:#166534} .mark.bad{background:#fee2e2;color:#991b1b}
.ev{font-size:11px;color:#5a6270;margin-top:4px}
.muted{color:#6b7280} .problems li{color:#a12622}
#filters label{margin-right:12px}
"""

_JS = """
function icdFilter(){var v=document.querySelector('input[name=show]:checked').value;
document.querySelectorAll('section.query').forEach(function(s){
var on=v==='all'||(v==='flagged'&&s.dataset.flagged==='1')||(v==='copies'&&s.dataset.copy==='1');
s.style.display=on?'':'none';});}
document.querySelectorAll('input[name=show]').forEach(function(e){e.addEventListener('change',icdFilter);});
"""


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pr_svg(precision: np.ndarray, recall: np.ndarray, r90: float, thr90: float | None, ap: float) -> str:
    """Inline SVG (360 x 270 px) of the precision-recall curve with axes, ticks, labels and the P90 line."""
    w, h, left, right, top, bottom = 360, 270, 48, 12, 26, 40
    pw, ph = w - left - right, h - top - bottom

    def x(v: float) -> float:
        return left + pw * v

    def y(v: float) -> float:
        return top + ph * (1 - v)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            'role="img" aria-label="precision-recall curve" font-family="sans-serif" font-size="11">'),
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#888"/>']
    for t in np.linspace(0, 1, 6):
        out.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{left + pw}" y2="{y(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{t:.1f}</text>')
        out.append(f'<text x="{left - 5}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle" font-size="12">recall</text>')
    out.append(f'<text x="12" y="{top + ph / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 12 {top + ph / 2})">precision</text>')
    out.append(f'<text x="{left + pw / 2}" y="16" text-anchor="middle" font-size="12" font-weight="bold">'
               f'precision-recall (µAP {_fmt(ap, 3)})</text>')
    out.append(f'<line x1="{left}" y1="{y(0.9):.1f}" x2="{left + pw}" y2="{y(0.9):.1f}" stroke="#999" '
               'stroke-dasharray="4 3"/>')
    if len(precision) and not np.isnan(recall).all():
        keep = np.unique(np.linspace(0, len(precision) - 1, min(len(precision), 1000)).astype(np.int64))
        r = np.concatenate([[0.0], np.nan_to_num(recall[keep])])
        p = np.concatenate([[precision[0]], precision[keep]])
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(r, p, strict=True))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#2563eb" stroke-width="2"/>')
        if thr90 is not None:
            i = int(np.argmax((recall == r90) & (precision >= 0.9)))
            out.append(f'<circle cx="{x(r90):.1f}" cy="{y(precision[i]):.1f}" r="4.5" fill="#dc2626">'
                       f'<title>recall@P90 {r90:.3f} at score &gt;= {thr90:.4g}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _recall_at_p90_text(recall: float, threshold: float | None) -> str:
    if threshold is None:
        return f"{_fmt(recall)} (precision never reaches 0.9)"
    return f"{_fmt(recall)} at score &gt;= {_fmt(threshold, 6)}"


def _header_html(source: str, queries_dir: str, references_dir: str, rows: Sequence[PredictedMatch],
                 threshold: float, n_shown: int, n_pairs: int,
                 ground_truth: Sequence[GroundTruthMatch] | None, top: int) -> str:
    n_q = len({m.query_id for m in rows})
    n_r = len({m.reference_id for m in rows})
    kv = [("submission", f"<code>{_esc(source)}</code>"),
          ("queries folder", f"<code>{_esc(queries_dir)}</code>"),
          ("references folder", f"<code>{_esc(references_dir)}</code>"),
          ("submission counts", f"{n_q} queries, {len(rows)} rows, {n_r} references"),
          ("verdict threshold", f"{threshold:g} (score &gt;= threshold: copy)"),
          ("shown", f"{n_shown} queries, {n_pairs} pairs (top {top} rows per query)")]
    chart = ""
    if ground_truth is not None:
        from matcher.isc.metrics import evaluate_with_curve

        m, precision, recall, _ = evaluate_with_curve(rows, ground_truth)
        kv += [("µAP", _fmt(m.micro_ap)),
               ("recall@P90", _recall_at_p90_text(m.recall_at_p90, m.threshold_at_p90)),
               ("ground truth", (f"{m.n_gt_pairs} true pairs ({m.n_true_positives_predicted} in the "
                                 f"submission), {m.n_queries_with_gt} queries with a copy, "
                                 f"{m.n_queries_without_gt} without"))]
        svg = _pr_svg(precision, recall, m.recall_at_p90, m.threshold_at_p90, m.micro_ap)
        chart = f'<div class="card">{svg}</div>'
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv)
    return (f'<div class="top"><div class="card"><h1>icd report</h1><table class="kv">{table}</table></div>'
            f'{chart}</div>')


def _legend_html(with_truth: bool) -> str:
    swatches = (("#28dc28", "inlier match"), ("#ffdc00", "query frame mapped into the reference"),
                ("#00c8ff", "reference frame mapped into the query"))
    items = [f'<span><i class="sw" style="background:{c}"></i>{t}</span>' for c, t in swatches]
    filters = ('<span id="filters">show: '
               '<label><input type="radio" name="show" value="all" checked> all</label>'
               '<label><input type="radio" name="show" value="copies"> queries with a copy verdict</label>')
    if with_truth:
        filters += '<label><input type="radio" name="show" value="flagged"> flagged only</label>'
    filters += "</span>"
    return (f'<div class="card legend">{"".join(items)}<br><span class="muted">Drawing: query left, '
            f'reference right, from a local-feature verification of the pair.</span><br>{filters}</div>')


def _row_html(pair: ShownPair, visual: str, evidence: str) -> str:
    score = "not in submission" if pair.score is None else f"score {pair.score:.4f}"
    rank = "" if pair.rank is None else f' <span class="muted">rank {pair.rank}</span>'
    verdict = ('<span class="verdict copy">copy</span>' if pair.is_copy
               else '<span class="verdict nocopy">not a copy</span>')
    mark = ""
    if pair.mark is not None:
        label, ok = MARKS[pair.mark]
        mark = f'<span class="mark {"ok" if ok else "bad"}">{"&#10003;" if ok else "&#10007;"} {label}</span>'
    return (f'<div class="match" data-ref="{_esc(pair.reference_id)}" data-mark="{pair.mark or ""}">'
            f'<div class="visual">{visual}</div>'
            f'<div class="info"><div class="ref">reference {_esc(pair.reference_id)}</div>'
            f'<div class="score">{score}{rank}</div><div>{verdict}{mark}</div>{evidence}</div></div>')


def build_report(
    submission_rows: Sequence[PredictedMatch] | str | os.PathLike[str],
    queries_dir: str | os.PathLike[str],
    references_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ground_truth: Sequence[GroundTruthMatch] | str | os.PathLike[str] | None = None,
    top: int = 3,
    max_queries: int = 200,
    threshold: float = 0.5,
    config: MatcherConfig | None = None,
    progress: bool = True,
) -> ReportSummary:
    """Write the review page of a submission to ``output`` (HTML, atomically) and return what it holds.

    ``submission_rows`` / ``ground_truth``: rows in memory or a CSV path (read with
    :func:`~matcher.isc.submission.read_predictions` / :func:`~matcher.isc.submission.read_ground_truth`). Image ids
    map to files by stem (:func:`~matcher.io.folders.scan_folder`). Unusable images (no file for an id, unreadable
    data) are drawn as placeholders naming the file and cause and listed in ``problems``. ``config`` sets the
    verification (default :class:`MatcherConfig`); ``threshold`` alone decides the verdicts. Raises
    :class:`~matcher.isc.submission.SubmissionFormatError` on bad rows, FileNotFoundError for a missing folder,
    :class:`~matcher.io.folders.DuplicateIdError` on two files with one stem, ValueError on bad ``top``,
    ``max_queries`` or ``threshold``.
    """
    from tqdm import tqdm

    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if isinstance(submission_rows, (str, os.PathLike)):
        source, rows = os.fspath(submission_rows), read_predictions(submission_rows, max_rows=None)
    else:
        source, rows = "<rows given in memory>", list(submission_rows)
        validate_predictions(rows, None)
    if isinstance(ground_truth, (str, os.PathLike)):
        ground_truth = read_ground_truth(ground_truth)
    elif ground_truth is not None:
        ground_truth = list(ground_truth)
        validate_ground_truth(ground_truth)
    plans = plan_queries(rows, ground_truth, top=top, max_queries=max_queries, threshold=threshold)
    folders = (os.fspath(queries_dir), os.fspath(references_dir))
    query_files, reference_files = (image_ids(scan_folder(f)[0]) for f in folders)
    pictures = _Pictures(query_files, reference_files, folders, config or MatcherConfig())
    n_pairs = sum(len(p.pairs) for p in plans)
    sections: list[str] = []
    index: list[str] = []
    with tqdm(total=n_pairs, desc="pairs", unit="pair", disable=not progress) as bar:
        for i, plan in enumerate(plans):
            anchor = f"q{i}"
            cls = " flagged" if plan.flagged else ""
            index.append(f'<a href="#{anchor}" class="{cls.strip()}">{_esc(plan.query_id)}</a>')
            best = "no rows" if plan.best is None else f"best score {plan.best:.4f}"
            flag = ' <span class="mark bad">flagged</span>' if plan.flagged else ""
            body = []
            for pair in plan.pairs:
                body.append(_row_html(pair, *_pair_visual(pictures, plan.query_id, pair.reference_id)))
                bar.update(1)
            copy = int(any(p.is_copy and p.rank is not None for p in plan.pairs))
            sections.append(
                f'<section class="query{cls}" id="{anchor}" data-query="{_esc(plan.query_id)}" '
                f'data-flagged="{int(plan.flagged)}" data-copy="{copy}">'
                f'<h2>query {_esc(plan.query_id)} <span class="muted">{best}</span>{flag}</h2>{"".join(body)}'
                "</section>")
    problems = ""
    if pictures.problems:
        items = "".join(f"<li>{_esc(p.message)}</li>" for p in pictures.problems)
        problems = f'<div class="card problems"><h2>Images that could not be shown</h2><ul>{items}</ul></div>'
    header = _header_html(source, folders[0], folders[1], rows, threshold, len(plans), n_pairs, ground_truth,
                          top)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>icd report: {_esc(os.path.basename(source))}</title>"
            f"<style>{_CSS}</style></head><body>{header}{problems}{_legend_html(ground_truth is not None)}"
            f'<div class="card index"><b>queries</b> ({len(plans)}): {"".join(index)}</div>'
            f'{"".join(sections) or "<p>No queries to show.</p>"}<script>{_JS}</script></body></html>\n')
    atomic_write_text(output, page)
    return ReportSummary(len(plans), n_pairs, list(pictures.problems), os.fspath(output))
