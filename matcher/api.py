"""The Python API: one object that scores pairs, builds reference indexes and matches queries.

    from matcher import Matcher
    m = Matcher.from_pretrained()
    result = m.score("query.jpg", "reference.jpg")      # PairMatch: .score, .is_copy, .evidence, .contributions
    m.index("references/", "refs.icdindex")              # build or resume an on-disk index
    rows = m.match("queries/", index="refs.icdindex")    # MatchRows: list of dicts, .to_csv(), .to_jsonl(), ...

No side effects beyond the files you name: nothing is downloaded, and the host process is left as it was (its
environment, ``PIL.Image.open``, ultralytics' settings file: the detector runs without importing ultralytics).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.io.folders import SkippedFile
from matcher.io.images import load_image
from matcher.io.inputs import read_pictures
from matcher.isc.formats import COLUMNS, pair_row, select_rows, write_rows
from matcher.pipeline.pipeline import PairMatch, Pipeline

__all__ = ["MatchRows", "Matcher"]


class MatchRows(list):
    """Rows of :meth:`Matcher.match` (a list of dicts with :data:`columns`, the evidence of each pair as described in
    :mod:`matcher.isc.formats`), plus ``skipped`` input files."""

    columns = COLUMNS

    def __init__(self, rows: Iterable[dict[str, Any]] = (), skipped: list[SkippedFile] | None = None) -> None:
        super().__init__(rows)
        self.skipped: list[SkippedFile] = skipped or []

    def to_pandas(self) -> Any:
        """A pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(list(self), columns=list(self.columns))

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write as an ISC submission (query_id,reference_id,score), best first, atomically."""
        write_rows(path, self, "csv")

    def to_jsonl(self, path: str | os.PathLike[str]) -> None:
        """Write every row with its evidence as JSON lines (one object per pair, in this order), atomically."""
        write_rows(path, self, "jsonl")

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write every row with its evidence as Parquet (needs pyarrow: ``pip install 'icd-matcher[parquet]'``),
        atomically."""
        write_rows(path, self, "parquet")


class Matcher:
    """Models (ASL descriptor, local features, detector, fusion) + config; build with :meth:`from_pretrained`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config

    @classmethod
    def from_pretrained(cls, config: MatcherConfig | None = None) -> Matcher:
        """Load the shipped weights (:mod:`matcher.resources`; ``config.weights_dir`` overrides their folder)
        with ``config`` (default settings when None)."""
        return cls(Pipeline(config or MatcherConfig()))

    def _image(self, source: Any) -> np.ndarray:
        return load_image(source, config=self.config.load)

    def score(self, query: Any, reference: Any) -> PairMatch:
        """Fused score of one pair through the full pipeline. ``query``/``reference``: path, PIL image or RGB array.

        Raises :class:`~matcher.io.images.ImageLoadError` naming the input when an image cannot be read."""
        from matcher.references.memory import MemoryStore

        p = self.pipeline
        store = MemoryStore(self.config, p.descriptor)
        store.add("reference", self._image(reference), p.descriptor, p.engine)
        (q,) = p.describe_queries([("query", self._image(query))])
        return p.match(q, store)[0]

    def index(self, references: Any, path: str | os.PathLike[str], *, progress: bool = False,
              ray: str | None = None) -> Any:
        """Add reference pictures to the on-disk index at ``path`` (created if needed). ``references``: a folder
        or a list of files (ids = file stems), or pictures in memory with ids: ``{id: picture}`` or
        ``[(id, picture), ...]`` where a picture is encoded bytes, a numpy array, a PIL image or a path
        (:mod:`matcher.io.inputs`). Already indexed (id, content) pairs are counted, not redone. Returns the job
        summary (``.added``, ``.already``, ``.skipped``). ``ray``: describe the references on a Ray cluster
        (``"local"``, ``"auto"`` or ``"HOST:PORT"``; needs ``icd-matcher[ray]``; pictures in memory are described
        here), this process writing the index: the same index as without it."""
        from matcher.io.inputs import is_in_memory
        from matcher.references.disk.store import IndexStore

        with IndexStore.open(path, self.config, create=True, descriptor=self.pipeline.descriptor,
                             engine=self.pipeline.engine) as store:
            if is_in_memory(references):
                return store.add_images(references, progress=progress)
            src = references if isinstance(references, (str, os.PathLike)) else [Path(p) for p in references]
            if ray is None:
                return store.add_references(src, progress=progress)
            from matcher.cluster.jobs import add_on_cluster

            return add_on_cluster(store, src, address=ray, progress=progress)

    def remove(self, ids: str | Iterable[str], *, index: str | os.PathLike[str]) -> Any:
        """Remove references ``ids`` (one id or several) from the on-disk ``index``: no rebuild, never returned
        again, the ids free to be indexed again. Returns the summary (``.removed``, ``.missing``, ``.total``)."""
        from matcher.references.disk.store import IndexStore

        with IndexStore.open(index) as store:
            return store.remove([ids] if isinstance(ids, str) else list(ids))

    def match(self, queries: Any, *, index: str | os.PathLike[str] | None = None,
              references: Any = None, top_k: int | None = None,
              min_score: float | None = None, progress: bool = False, ray: str | None = None) -> MatchRows:
        """Match queries (a folder, a list of files, one image path, or pictures in memory with ids as
        :meth:`index` takes them) against ``index`` (a folder made by :meth:`index`) or ``references`` (a folder
        or pictures in memory, indexed for this call into a temporary folder: the same path as ``icd match
        --references``). Returns the best ``top_k`` (default ``config.top_k``) rows per query scoring at
        least ``min_score`` (None: all of them), best first; unreadable query and reference files are listed in
        ``.skipped``. ``ray``: run on a Ray cluster (``"local"``, ``"auto"`` or ``"HOST:PORT"``; needs
        ``icd-matcher[ray]``; the index folder at the same path on every node): the same rows."""
        from matcher.pipeline.batch import match_queries
        from matcher.references.open import open_references

        p = self.pipeline
        k = self.config.top_k if top_k is None else int(top_k)
        if index is None and references is None:
            raise ValueError("give index= (a folder made by Matcher.index) or references= (a folder)")
        if ray is not None:
            return self._match_on_cluster(queries, index, references, k, min_score, progress, ray)
        qset = read_pictures(queries, config=self.config.load)
        out = MatchRows()
        opened = (open_references(index=index, config=self.config) if index is not None else
                  open_references(references=references, config=self.config, descriptor=p.descriptor,
                                  engine=p.engine, progress=progress))
        with opened as (store, skipped):
            items = ((qid, img) for qid, _p, img in qset.iter_loaded())
            for matches in match_queries(p, store, items):
                out.extend(pair_row(m) for m in matches[:k])
        out.skipped = skipped + list(qset.skipped)
        out[:] = select_rows(sorted(out, key=lambda r: (r["query_id"], r["reference_id"])), min_score=min_score)
        return out

    def _match_on_cluster(self, queries: Any, index: Any, references: Any, k: int, min_score: float | None,
                          progress: bool, ray: str) -> MatchRows:
        from matcher.cluster.jobs import cluster_match, cluster_references

        with cluster_references(references=references, index=index, config=self.config, address=ray,
                                progress=progress) as (folder, _stored, skipped):
            got = cluster_match(queries, folder, self.config, address=ray, top_k=k, progress=progress)
        rows = sorted(got.rows, key=lambda r: (r["query_id"], r["reference_id"]))
        return MatchRows(select_rows(rows, min_score=min_score), skipped + got.skipped)

    def dedup(self, source: Any, *, threshold: float | None = None, top_k: int | None = None,
              index: str | os.PathLike[str] | None = None, progress: bool = False) -> Any:
        """Groups of copies within one collection (a folder or a list of files, ids = file stems; or pictures in
        memory with ids, as :meth:`index` takes them): every picture is matched against the others, pairs scoring
        at least ``threshold`` (default: the decision threshold) are grouped, each group with its likely
        original. ``index``: a folder to keep (and reuse) the collection's index in. Returns a
        :class:`~matcher.dedup.result.DedupResult` (``.groups``, ``.pairs``, ``.skipped``, ``.to_json(path)``,
        ``.to_html(path)``)."""
        from matcher.dedup.result import dedup

        return dedup(self.pipeline, source, threshold=threshold, top_k=top_k, index=index, progress=progress)
