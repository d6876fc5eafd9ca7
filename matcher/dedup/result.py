"""One collection against itself: pairs of copies (:mod:`matcher.dedup.pairs`), grouped with their likely
original (:mod:`matcher.dedup.groups`), written as JSON or as an HTML page (:mod:`matcher.dedup.html`).

``groups.json``::

    {"groups": [{"original": ID, "members": [ID, ...], "pairs": [{"a": ID, "b": ID, "score": S}, ...]}, ...],
     "skipped": [{"path", "reason", "message"}, ...], "threshold": T, "n_pictures": N}

Pairs have ``a`` < ``b`` and appear once; byte-identical pairs carry ``"exact": true``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from matcher.dedup.groups import Group, group_pairs
from matcher.dedup.pairs import Pair, Picture, collect_pairs
from matcher.io.atomic import atomic_write_text
from matcher.io.folders import SkippedFile
from matcher.pipeline.pipeline import Pipeline

__all__ = ["DedupResult", "dedup"]

PathLike = str | os.PathLike[str]


@dataclass
class DedupResult:
    """Groups of copies in one collection. ``pairs``: every pair at or above ``threshold`` (highest first);
    ``pictures``: id -> :class:`~matcher.dedup.pairs.Picture` of every picture used; ``skipped``: unreadable
    files; ``seconds``: time per stage."""

    groups: list[Group]
    pairs: list[Pair]
    pictures: dict[str, Picture]
    threshold: float
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # id -> picture, for the pictures given in memory

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """The ``groups.json`` document (see the module docstring); ``details`` adds both directions' evidence to
        each pair."""
        return {"groups": [g.to_dict(details) for g in self.groups],
                "skipped": [{"path": s.path, "reason": s.reason, "message": s.message} for s in self.skipped],
                "threshold": self.threshold, "n_pictures": len(self.pictures)}

    def to_json(self, path: PathLike, *, details: bool = False) -> None:
        """Write :meth:`to_dict` to ``path`` (UTF-8 JSON, atomically: a temp file renamed over it)."""
        atomic_write_text(path, json.dumps(self.to_dict(details), indent=1, ensure_ascii=False) + "\n")

    def to_html(self, path: PathLike, *, max_groups: int | None = None) -> None:
        """Write the review page (:mod:`matcher.dedup.html`) to ``path``, atomically."""
        from matcher.dedup.html import write_page

        write_page(path, self.groups, self.pictures, self.threshold, skipped=self.skipped,
                   n_pictures=len(self.pictures), max_groups=max_groups, images=self.images)

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items() if "." not in k)
        n = sum(len(g.members) for g in self.groups)
        return (f"{len(self.pictures)} pictures: {len(self.groups)} groups of copies holding {n} pictures, "
                f"{len(self.pairs)} pairs at or above {self.threshold:g}; skipped {len(self.skipped)} file(s); "
                f"time: {t}")


def dedup(pipeline: Pipeline, source: Any, *, threshold: float | None = None, top_k: int | None = None,
          index: PathLike | None = None, progress: bool = False) -> DedupResult:
    """Find the copies within ``source`` (a folder or a list of files/folders, ids = file stems; or pictures in
    memory with ids, as :func:`~matcher.dedup.pairs.collect_pairs` takes them): index it (into
    ``index`` when given, kept for re-runs; else a temporary folder), match every picture against the others
    (its ``top_k`` best matches, default ``config.top_k``) and group the pairs scoring at least ``threshold``
    (default: the pipeline's decision threshold)."""
    thr = pipeline.threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr}")
    found = collect_pairs(pipeline, source, index=index, top_k=top_k, progress=progress)
    t = time.perf_counter()
    groups = group_pairs(found.pairs, found.pictures, thr)
    seconds = {**found.seconds, "group": time.perf_counter() - t}
    return DedupResult(groups, [p for p in found.pairs if p.score >= thr], found.pictures, thr, found.skipped,
                       seconds, found.images)
