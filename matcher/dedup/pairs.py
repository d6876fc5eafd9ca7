"""Pairs of copies within one collection: the collection is indexed, then every picture of it is matched against
that index as a query (the same pipeline as ``icd match``).

Each unordered pair is reported once: the two directions (a matched against b, b matched against a) are merged,
keeping the higher score and the evidence of both, because the pipeline's score is asymmetric (a crop scores high
against its whole picture, the whole picture low against its crop). A picture matched against itself is dropped.
Byte-identical files are paired from their content hash (score 1, ``exact``) whatever the matching found: an exact
duplicate is a copy even when it has too little texture to be verified.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matcher.io.folders import ImageSet, SkippedFile
from matcher.io.inputs import PictureSet, is_in_memory, read_pictures
from matcher.io.progress import ProgressBars
from matcher.pipeline.batch import match_queries
from matcher.pipeline.pipeline import PairMatch, Pipeline
from matcher.pipeline.timer import StageTimer
from matcher.references.open import open_references

__all__ = ["Direction", "Pair", "PairCollection", "Picture", "collect_pairs", "exact_pairs", "merge_matches"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Picture:
    """One picture of the collection: its file, size in px and content hash."""

    id: str
    path: str
    width: int
    height: int
    sha256: str

    @property
    def area(self) -> int:
        """Pixel area."""
        return self.width * self.height


@dataclass(frozen=True)
class Direction:
    """One direction of a pair: the first picture matched as the query against the second as the reference.

    ``containment`` is the local evidence's (``query_in_reference``: the query shows a part of the reference;
    ``reference_in_query``; ``same_extent``; ``partial``; ``none``); ``log_norm_ratio``: log of the query's ASL
    descriptor norm minus the reference's (> 0: the query holds more content); ``frame_seam``: the seam strength
    along the reference's frame inside the query (:mod:`matcher.local.seam`: about 1 = the content runs on, well
    above 1 = a pasted border; nan when not measured)."""

    score: float
    containment: str = "none"
    log_norm_ratio: float = 0.0
    n_inliers: int = 0
    frame_seam: float = math.nan

    @classmethod
    def from_match(cls, m: PairMatch) -> Direction:
        """The direction a :class:`PairMatch` measured."""
        ev = m.evidence
        ok = ev is not None and ev.verified
        seam = ev.frame_seam if ok and ev.frame_seam is not None else math.nan
        return cls(float(m.score) if not math.isnan(m.score) else 0.0, ev.containment if ok else "none",
                   float(m.global_evidence.log_norm_ratio), int(ev.n_inliers) if ok else 0, float(seam))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {"score": round(self.score, 6), "containment": self.containment,
                "log_norm_ratio": round(self.log_norm_ratio, 6), "n_inliers": self.n_inliers,
                "frame_seam": round(self.frame_seam, 4) if math.isfinite(self.frame_seam) else None}


@dataclass
class Pair:
    """An unordered pair (``a`` < ``b``): ``score`` the higher of its two directions, ``ab`` = a matched against b,
    ``ba`` = b matched against a (None when that direction was not among the query's top matches), ``exact`` when
    the two files are byte-identical."""

    a: str
    b: str
    score: float
    ab: Direction | None = None
    ba: Direction | None = None
    exact: bool = False

    def direction(self, query: str) -> Direction | None:
        """The direction with ``query`` as the query (``query`` must be ``a`` or ``b``)."""
        if query not in (self.a, self.b):
            raise KeyError(f"{query!r} is not in the pair ({self.a!r}, {self.b!r})")
        return self.ab if query == self.a else self.ba

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """``{"a", "b", "score"}`` (+ ``exact`` when true; + both directions' evidence with ``details``)."""
        d: dict[str, Any] = {"a": self.a, "b": self.b, "score": round(self.score, 6)}
        if self.exact:
            d["exact"] = True
        if details:
            d["a_vs_b"] = None if self.ab is None else self.ab.to_dict()
            d["b_vs_a"] = None if self.ba is None else self.ba.to_dict()
        return d


@dataclass
class PairCollection:
    """Every pair found in a collection (any score), its pictures (``path``: the file, or ``<memory:ID>``), the
    files skipped, the time per stage (s), and the pictures that were given in memory (for drawing them)."""

    pairs: list[Pair]
    pictures: dict[str, Picture]
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # id -> picture, for the pictures given in memory


def merge_matches(matches: Iterable[tuple[str, str, Direction]], allowed: set[str] | None = None) -> list[Pair]:
    """Merge directed (query, reference, direction) matches into unordered pairs: self-pairs and ids outside
    ``allowed`` (when given) are dropped; a direction seen twice keeps its higher score. Sorted by score (highest
    first), then ids."""
    pairs: dict[tuple[str, str], Pair] = {}
    for q, r, d in matches:
        if q == r or (allowed is not None and (q not in allowed or r not in allowed)):
            continue
        a, b = (q, r) if q < r else (r, q)
        p = pairs.get((a, b))
        if p is None:
            p = pairs[(a, b)] = Pair(a, b, d.score)
        old = p.ab if q == a else p.ba
        if old is None or d.score > old.score:
            if q == a:
                p.ab = d
            else:
                p.ba = d
        p.score = max(p.score, d.score)
    return sorted(pairs.values(), key=lambda p: (-p.score, p.a, p.b))


def exact_pairs(pictures: Iterable[Picture]) -> list[tuple[str, str]]:
    """(a, b) with a < b for every two pictures with the same content hash."""
    by_sha: dict[str, list[str]] = {}
    for p in pictures:
        by_sha.setdefault(p.sha256, []).append(p.id)
    out = []
    for ids in by_sha.values():
        ids = sorted(ids)
        out.extend((ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids)))
    return out


def _add_exact(pairs: list[Pair], pictures: dict[str, Picture]) -> list[Pair]:
    """Mark (or add) the byte-identical pairs: score 1, ``exact``."""
    by_key = {(p.a, p.b): p for p in pairs}
    for a, b in exact_pairs(pictures.values()):
        p = by_key.get((a, b))
        if p is None:
            p = by_key[(a, b)] = Pair(a, b, 1.0)
        p.score, p.exact = 1.0, True
    return sorted(by_key.values(), key=lambda p: (-p.score, p.a, p.b))


def _unique(skipped: Iterable[SkippedFile]) -> list[SkippedFile]:
    """One entry per file (a file unreadable as a reference is unreadable as a query too)."""
    seen: set[str] = set()
    out = []
    for s in skipped:
        if s.path not in seen:
            seen.add(s.path)
            out.append(s)
    return out


def _labels(qset: ImageSet | PictureSet) -> dict[str, str]:
    """id -> how skipped lists name the picture: its path, or ``<memory:ID>`` for a picture given in memory."""
    if isinstance(qset, PictureSet):
        return {p.id: p.label for p in qset.pictures}
    return {i: os.fspath(p) for i, p in zip(qset.ids, qset.paths)}


def collect_pairs(pipeline: Pipeline, source: Any, *, index: PathLike | None = None, top_k: int | None = None,
                  progress: bool = False, chunk: int = 64) -> PairCollection:
    """Index ``source`` into ``index`` (a folder, created or resumed; a temporary one when None), match each of its
    pictures against that index, and return every pair found among the ``top_k`` (default ``config.top_k``) best
    matches of each picture, merged (see the module docstring).

    ``source``: a folder or a list of files/folders (ids = file stems), or pictures in memory with ids
    (``{id: picture}`` or ``[(id, picture), ...]``, :mod:`matcher.io.inputs`). Unreadable pictures are skipped
    and listed; two files with one stem raise :class:`~matcher.io.folders.DuplicateIdError` (before any work)."""
    cfg = pipeline.config
    k = cfg.top_k if top_k is None else int(top_k)
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    if is_in_memory(source):
        src: Any = source
    else:
        src = source if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
    qset = read_pictures(src, config=cfg.load)  # scans and checks ids before the (long) indexing
    label = _labels(qset)
    images = {p.id: p.data for p in qset.pictures if p.path is None} if isinstance(qset, PictureSet) else {}
    bars = ProgressBars(enabled=progress)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        with open_references(references=src, index=index, config=cfg, descriptor=pipeline.descriptor,
                             engine=pipeline.engine, progress=bars if progress else False) as (store, ref_skipped):
            seconds["index"] = time.perf_counter() - t0
            failed = {os.fspath(s.path) for s in ref_skipped}
            ids = [i for i in qset.ids if label[i] not in failed and i in store]
            records = store.records([store.row_of(i) for i in ids])
            pictures = {r["id"]: Picture(r["id"], label[r["id"]], int(r["width"]), int(r["height"]), r["sha256"])
                        for r in records}
            t1 = time.perf_counter()
            timer = StageTimer()
            found: list[tuple[str, str, Direction]] = []
            loaded = ((qid, image) for qid, _path, image in qset.iter_loaded() if qid in pictures)
            for done, matches in enumerate(match_queries(pipeline, store, loaded, chunk=chunk, timer=timer), 1):
                others = [m for m in matches if m.reference_id != m.query_id and m.reference_id in pictures]
                found.extend((m.query_id, m.reference_id, Direction.from_match(m)) for m in others[:k])
                bars("match", done, len(pictures))
            seconds["match"] = time.perf_counter() - t1
            seconds.update({f"match.{name}": round(v, 3) for name, v in timer.seconds.items()})
    finally:
        bars.close()
    unread = {os.fspath(s.path) for s in qset.skipped}
    pictures = {i: p for i, p in pictures.items() if p.path not in unread}
    pairs = _add_exact(merge_matches(found, set(pictures)), pictures)
    skipped = _unique([*ref_skipped, *qset.skipped])
    return PairCollection(pairs, pictures, skipped, seconds, {i: d for i, d in images.items() if i in pictures})
