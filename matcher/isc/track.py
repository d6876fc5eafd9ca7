"""The matching-track job over folders: queries (and references or a stored index) -> ISC submission.

``run_pipeline_match`` opens the references (:func:`~matcher.references.open.open_references`: an index, or a
folder indexed into ``index_dir`` or a temporary folder), matches the query folder chunk by chunk
(:func:`~matcher.pipeline.batch.match_queries`: load, bad files skipped and reported, describe, candidates,
verification, fusion; one progress bar per stage) and writes the rows (ISC CSV, or JSON lines / Parquet with the
evidence of every pair: :mod:`matcher.isc.formats`) and its skipped-files list ``OUT.skipped.csv``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.config import MatcherConfig
from matcher.io.folders import read_images
from matcher.io.progress import ProgressBars
from matcher.isc.exhaustive import MatchSummary
from matcher.isc.formats import pair_row, resolve_format
from matcher.pipeline.batch import match_queries
from matcher.pipeline.pipeline import PairMatch, Pipeline
from matcher.pipeline.timer import StageTimer
from matcher.references.open import open_references

__all__ = ["PipelineSummary", "run_pipeline_match"]


@dataclass
class PipelineSummary(MatchSummary):
    """What a pipeline job did: :class:`MatchSummary` plus candidate pairs verified, pairs above the threshold, the
    processes that matched (``workers``; 1 = this one) and worker slices matched again after their worker died."""

    n_candidates: int = 0
    n_copies: int = 0
    workers: int = 1
    worker_retries: int = 0

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        qps = self.n_queries / max(self.seconds.get("queries_total", 0.0), 1e-9)
        return (f"matched {self.n_queries} queries against {self.n_references} references ({self.n_candidates} "
                f"candidate pairs verified, {qps:.2f} queries/s): {self.n_rows} rows -> {self.output}; "
                f"{self.n_copies} pairs above the threshold; skipped {len(self.skipped)} file(s)"
                f"{self._skipped_note()}; time: {t}")


def run_pipeline_match(queries: str | Path, output: str | Path, *, references: str | Path | None = None,
                       index_dir: str | Path | None = None, config: MatcherConfig | None = None,
                       pipeline: Pipeline | None = None, progress: bool = True, chunk: int = 64,
                       on_query: Callable[[list[PairMatch]], None] | None = None, output_format: str | None = None,
                       min_score: float | None = None, workers: int = 1) -> PipelineSummary:
    """Match the images under ``queries`` against ``references`` (a folder, indexed on the fly, into ``index_dir``
    when given) or against an existing index at ``index_dir``; write ``output`` (at most ``config.top_k`` rows per
    query, ``config.max_rows`` in total, none scoring below ``min_score``) in ``output_format`` (csv: the ISC
    submission; jsonl / parquet: every pair's evidence; None: from the suffix, else csv) and ``OUT.skipped.csv``
    beside it.

    ``on_query`` receives every query's scored candidates (all of them, best first), e.g. for benchmarks.
    ``workers`` > 1: the queries are matched by that many one-thread processes (:mod:`matcher.isc.workers`; the
    seconds per stage are then summed over them).
    """
    if references is None and index_dir is None:
        raise ValueError("give references (a folder) or index_dir (an index built by `icd index`)")
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    if workers > 1 and (on_query is not None or pipeline is not None):
        raise ValueError("workers > 1 matches in other processes: on_query and a pipeline object need workers=1")
    output = Path(output)
    fmt = resolve_format(output, output_format)  # before any work: a bad format or a missing pyarrow fails fast
    summary = PipelineSummary(output=str(output), format=fmt, min_score=min_score)
    t_start = time.perf_counter()
    pipe = pipeline
    if references is not None:
        pipe = pipe or Pipeline(config)  # the store describes the references with the pipeline's descriptor
        opened = open_references(references=references, index=index_dir, config=pipe.config,
                                 descriptor=pipe.descriptor, engine=pipe.engine, progress=progress)
    else:
        opened = open_references(index=index_dir, config=config or (pipeline.config if pipeline else None))
    with opened as (store, skipped):
        summary.skipped.extend(skipped)
        if pipe is None and workers == 1:  # workers load their own models
            pipe = Pipeline(store.config)
        summary.seconds["references"] = time.perf_counter() - t_start
        cfg = pipe.config if pipe is not None else store.config
        summary.n_references = len(store)

        t_q = time.perf_counter()
        timer = StageTimer()
        qset = read_images(queries, config=cfg.load)
        rows: list[dict[str, Any]] = []
        bars = ProgressBars(enabled=progress)
        described = 0

        def on_described(n: int) -> None:
            nonlocal described
            described += n
            bars("describe", described, len(qset))

        if workers > 1:
            _match_in_workers(store, cfg, qset, workers, fmt, summary, rows, bars)
            summary.seconds["queries_total"] = time.perf_counter() - t_q
            summary.write(rows, cfg.max_rows)
            return summary
        loaded = ((qid, image) for qid, _path, image in qset.iter_loaded())
        try:
            assert pipe is not None
            for matches in match_queries(pipe, store, loaded, chunk=chunk, timer=timer, on_described=on_described):
                summary.n_candidates += len(matches)
                if on_query is not None:
                    on_query(matches)
                for m in matches[: cfg.top_k]:
                    rows.append(pair_row(m, evidence=fmt != "csv"))
                    summary.n_copies += int(m.is_copy)
                summary.n_queries += 1
                bars("match", summary.n_queries, len(qset))
        finally:
            bars.close()
        summary.skipped.extend(qset.skipped)
        summary.seconds.update({k: round(v, 3) for k, v in timer.seconds.items()})
        summary.seconds["queries_total"] = time.perf_counter() - t_q

    summary.write(rows, cfg.max_rows)
    return summary


def _match_in_workers(store: Any, cfg: MatcherConfig, qset: Any, workers: int, fmt: str, summary: PipelineSummary,
                      rows: list[dict[str, Any]], bars: ProgressBars) -> None:
    """The query loop of :func:`run_pipeline_match` in worker processes over the store's index folder (its voter
    brought up to date and saved first, so the workers map it instead of each rebuilding it)."""
    from matcher.isc.workers import match_in_workers, skipped_files

    path = getattr(store, "path", None)
    if path is None:
        raise ValueError("workers > 1 needs references stored in an index folder")
    if cfg.pipeline.keypoint_voting and len(store) and cfg.index.local_features:
        store.keypoint_voter(seed=cfg.seed)
    try:
        got = match_in_workers(path, cfg, qset, workers=workers, evidence=fmt != "csv",
                               on_progress=lambda n: bars("match", n, len(qset)))
    finally:
        bars.close()
    rows.extend(got.rows)
    summary.skipped.extend(qset.skipped)
    summary.skipped.extend(skipped_files(got))
    summary.n_queries, summary.n_candidates, summary.n_copies = got.n_queries, got.n_candidates, got.n_copies
    summary.workers, summary.worker_retries = workers, got.retries
    summary.seconds.update({k: round(v, 3) for k, v in got.seconds.items()})
