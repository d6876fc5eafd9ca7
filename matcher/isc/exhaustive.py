"""The exhaustive matching job: every query against every reference with cached features -> ISC submission.

Folder in, rows out (ISC CSV, JSON lines or Parquet: :mod:`matcher.isc.formats`). Bad files are skipped and reported
(``OUT.skipped.csv`` beside the output ``OUT``), never fatal.
Reference features are computed once (optionally kept in an on-disk feature store keyed by content hash, so
re-runs skip extraction); each query is matched against all references at once through the packed bank.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from matcher.config import MatcherConfig
from matcher.io.folders import SkippedFile, read_images, write_skipped_csv
from matcher.io.images import ImageLoadError, load_image
from matcher.isc.formats import local_row, resolve_format, select_rows, skipped_path, write_rows
from matcher.local.engine import LocalEngine
from matcher.local.types import LocalFeatures
from matcher.local.verify import ReferenceBank

__all__ = ["MatchSummary", "run_exhaustive_match"]


@dataclass
class MatchSummary:
    """What a matching job did; ``skipped`` lists every input file that was not used, with its reason (also written
    to ``skipped_output``); ``format``: csv, jsonl or parquet; rows scoring below ``min_score`` are not written."""

    n_queries: int = 0
    n_references: int = 0
    n_rows: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    output: str = ""
    format: str = "csv"
    min_score: float | None = None
    skipped_output: str = ""

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"matched {self.n_queries} queries against {self.n_references} references: {self.n_rows} rows "
                f"-> {self.output}; skipped {len(self.skipped)} file(s){self._skipped_note()}; time: {t}")

    def _skipped_note(self) -> str:
        return f" (listed in {self.skipped_output})" if self.skipped and self.skipped_output else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: every field, skipped files as ``{path, reason, message}``."""
        return dataclasses.asdict(self)

    def write(self, rows: list[dict[str, Any]], max_rows: int) -> None:
        """Write the job's outputs: ``rows`` (:mod:`matcher.isc.formats` rows) scoring at least ``min_score``,
        capped at ``max_rows`` (best first), as ``output`` in ``format``, and ``OUT.skipped.csv`` beside it (header
        only when nothing was skipped)."""
        output = Path(self.output)
        rows = select_rows(rows, min_score=self.min_score, max_rows=max_rows)
        write_rows(output, rows, self.format, max_rows=max_rows)
        self.skipped_output = str(skipped_path(output))
        write_skipped_csv(self.skipped, self.skipped_output)
        self.n_rows = len(rows)


def _content_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _reference_features(engine: LocalEngine, references: str | Path, cache_dir: str | Path | None,
                        progress: bool, skipped: list[SkippedFile]) -> ReferenceBank:
    refs = read_images(references, config=engine.config.load)
    store = None
    if cache_dir is not None:
        from matcher.references.features import FeatureStore

        store = FeatureStore(cache_dir, engine.extractor.signature())
    ids: list[str] = []
    feats: list[LocalFeatures] = []
    tags: list[str] = []
    # With reference regions (grids, detected boxes) each reference becomes several bank entries; the feature
    # store then holds only full-image features, so region features are computed on every run.
    multi = tuple(engine.config.local.reference_regions) != ("full",)
    new: dict[str, LocalFeatures] = {}
    for rid, path in tqdm(list(zip(refs.ids, refs.paths)), desc="references", unit="img", disable=not progress):
        key = None
        if store is not None and not multi:
            try:
                key = _content_key(path)
            except OSError:
                key = None
            if key is not None and key in store:
                ids.append(rid)
                feats.append(store.get(key))
                tags.append("full")
                continue
        try:
            image = load_image(path, config=engine.config.load)
        except ImageLoadError as exc:
            skipped.append(SkippedFile(str(path), exc.reason, str(exc)))
            continue
        if multi:
            for tag, f in engine.reference_region_features(image):
                ids.append(rid)
                feats.append(f)
                tags.append(tag)
            continue
        f = engine.reference_features(image)
        ids.append(rid)
        feats.append(f)
        tags.append("full")
        if key is not None:
            new[key] = f
    if store is not None and new:
        store.add(new)
    skipped.extend(refs.skipped)
    return ReferenceBank.build(ids, feats, tags if multi else None)


def run_exhaustive_match(queries: str | Path, references: str | Path, output: str | Path, *,
                         config: MatcherConfig | None = None, cache_dir: str | Path | None = None,
                         progress: bool = True, engine: LocalEngine | None = None, output_format: str | None = None,
                         min_score: float | None = None) -> MatchSummary:
    """Match every query image under ``queries`` against every reference under ``references``.

    Writes ``output`` (at most ``config.top_k`` rows per query and ``config.max_rows`` in total, none below
    ``min_score``) in ``output_format`` (csv, jsonl or parquet; None: from the suffix, else csv; see
    :func:`~matcher.isc.formats.resolve_format`) and ``OUT.skipped.csv`` beside it (header only when nothing was
    skipped). jsonl / parquet rows carry the local evidence (no global evidence, no fusion contributions). Returns
    the :class:`MatchSummary`.
    """
    output = Path(output)
    fmt = resolve_format(output, output_format)  # before any work: a bad format or a missing pyarrow fails fast
    engine = engine or LocalEngine(config)
    config = engine.config
    summary = MatchSummary(output=str(output), format=fmt, min_score=min_score)
    t0 = time.perf_counter()
    bank = _reference_features(engine, references, cache_dir, progress, summary.skipped)
    summary.n_references = len(set(bank.ids))
    summary.seconds["references"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    qset = read_images(queries, config=config.load)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(qset), desc="queries", unit="img", disable=not progress)
    for qid, _path, image in qset.iter_loaded():
        for pair in engine.match_query(engine.query_features(image), bank):
            rows.append(local_row(qid, pair, config.threshold, evidence=fmt != "csv"))
        summary.n_queries += 1
        bar.update(1)
    bar.update(len(qset) - bar.n)
    bar.close()
    summary.skipped.extend(qset.skipped)
    summary.seconds["queries"] = time.perf_counter() - t1

    summary.write(rows, config.max_rows)
    return summary
