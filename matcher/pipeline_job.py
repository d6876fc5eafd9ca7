"""The matching-track job over folders: queries (and references or a stored index) -> ISC submission.

``run_pipeline_match`` drives :class:`~matcher.pipeline.Pipeline` over a query folder in chunks: load (bad files
are skipped and reported), describe (detector, region descriptors, local features), candidates + verification
+ fusion; one progress bar per stage. Against ``references`` (a folder) it first builds or resumes an index
store (in ``index_dir`` when given, else a temporary folder removed afterwards).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from matcher.config import MatcherConfig
from matcher.io import read_images, write_skipped_csv
from matcher.match_job import MatchSummary
from matcher.pipeline import PairMatch, Pipeline, StageTimer
from matcher.submission import PredictedMatch, cap_total, write_predictions

__all__ = ["PipelineSummary", "run_pipeline_match"]


@dataclass
class PipelineSummary(MatchSummary):
    """What a pipeline job did: :class:`MatchSummary` plus candidate pairs verified and pairs above the threshold."""

    n_candidates: int = 0
    n_copies: int = 0

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        qps = self.n_queries / max(self.seconds.get("queries_total", 0.0), 1e-9)
        return (f"matched {self.n_queries} queries against {self.n_references} references ({self.n_candidates} "
                f"candidate pairs verified, {qps:.2f} queries/s): {self.n_rows} rows -> {self.output}; "
                f"{self.n_copies} pairs above the threshold; skipped {len(self.skipped)} file(s); time: {t}")


def run_pipeline_match(queries: str | Path, output: str | Path, *, references: str | Path | None = None,
                       index_dir: str | Path | None = None, config: MatcherConfig | None = None,
                       pipeline: Pipeline | None = None, progress: bool = True, chunk: int = 64,
                       on_query: Callable[[list[PairMatch]], None] | None = None) -> PipelineSummary:
    """Match the images under ``queries`` against ``references`` (a folder, indexed on the fly, into ``index_dir``
    when given) or against an existing index at ``index_dir``; write ``output`` (ISC CSV, at most
    ``config.top_k`` rows per query, ``config.max_rows`` in total) and ``skipped.csv`` beside it.

    ``on_query`` receives every query's scored candidates (all of them, best first), e.g. for benchmarks.
    """
    from matcher.index_store import IndexStore

    if references is None and index_dir is None:
        raise ValueError("give references (a folder) or index_dir (an index built by `icd index`)")
    output = Path(output)
    summary = PipelineSummary(output=str(output))
    tmp = None
    t_start = time.perf_counter()
    try:
        if references is not None:
            if index_dir is None:
                tmp = tempfile.mkdtemp(prefix="icd-index-")
                index_dir = tmp
            pipe = pipeline or Pipeline(config)
            # the store describes the references with the pipeline's descriptor (one model load, not two)
            store = IndexStore.open(index_dir, pipe.config, create=True, descriptor=pipe.descriptor)
            job = store.add_references(references, progress=progress)
            summary.skipped.extend(job.skipped)
        else:
            store = IndexStore.open(index_dir, config or (pipeline.config if pipeline else None))
            pipe = pipeline or Pipeline(store.config)
        summary.seconds["references"] = time.perf_counter() - t_start
        cfg = pipe.config
        summary.n_references = len(store)

        t_q = time.perf_counter()
        timer = StageTimer()
        qset = read_images(queries, config=cfg.load)
        rows: list[PredictedMatch] = []
        bars = {name: tqdm(total=len(qset), desc=name, unit="img", disable=not progress, leave=True)
                for name in ("describe", "match")}
        loaded = qset.iter_loaded()
        done = False
        while not done:
            items = []
            with timer("load"):
                for qid, _path, image in loaded:
                    items.append((qid, image))
                    if len(items) >= chunk:
                        break
                else:
                    done = True
            if not items:
                continue
            described = pipe.describe_queries(items, timer)
            bars["describe"].update(len(items))
            for q in described:
                matches = pipe.match(q, store, timer)
                summary.n_candidates += len(matches)
                if on_query is not None:
                    on_query(matches)
                for m in matches[: cfg.top_k]:
                    rows.append(PredictedMatch(m.query_id, m.reference_id, float(m.score)))
                    summary.n_copies += int(m.is_copy)
                summary.n_queries += 1
                bars["match"].update(1)
        for b in bars.values():
            b.close()
        summary.skipped.extend(qset.skipped)
        summary.seconds.update({k: round(v, 3) for k, v in timer.seconds.items()})
        summary.seconds["queries_total"] = time.perf_counter() - t_q

        rows = cap_total(rows, cfg.max_rows)
        write_predictions(output, rows, max_rows=cfg.max_rows)
        write_skipped_csv(summary.skipped, output.with_name("skipped.csv"))
        summary.n_rows = len(rows)
        return summary
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
