"""Variant groups: files of a picture corpus that are one picture in other colours, orientations or backgrounds, or
with a small element changed (one clip-art puzzle piece in four colours, a clock face with its hands elsewhere, a
wallpaper with and without a logo).

A benchmark built from such a corpus labels a query made from one variant a non-copy of a reference made from
another, although by its own edit recipes (colour shifts, rotations, overlays) the query *is* an edited copy. Those
pairs are ambiguous, not negatives: :func:`variant_pairs` lists them so that scoring can set them aside (neither a
hit nor a false positive) and fusion training can leave them out. Different drawings of one subject or in one style
(two stop signs, flags sharing a Union Jack, one figure in two poses) are *not* variants: they stay hard negatives.

The groups ship in ``bench/graphics_variants.json`` (checked by eye), keyed by corpus ``"<folder>/<split>"``, e.g.
``"graphics/bench"``: ``{"corpora": {KEY: {"groups": [[STEM, ...], ...], ...}}}``; members are file names without
their extension.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["corpus_key", "load_variant_groups", "outside_pairs", "variant_pairs"]


def corpus_key(photos: str | os.PathLike[str]) -> str:
    """``"<folder>/<split>"`` of a benchmark's source folder (a manifest's ``photos``), e.g. ``graphics/bench``."""
    p = Path(photos)
    return f"{p.parent.name}/{p.name}"


def load_variant_groups(path: str | os.PathLike[str], photos: str | os.PathLike[str]) -> list[frozenset[str]]:
    """The variant groups of the corpus that ``photos`` names (empty when the file lists none for it).

    Raises ValueError naming ``path`` when it is not a valid groups file (not JSON, wrong shape, a member in two
    groups, a group of fewer than two)."""
    try:
        data = json.loads(Path(path).read_text())
        corpora = data["corpora"]
        entry = corpora.get(corpus_key(photos), {})
        groups = [frozenset(str(m) for m in g) for g in entry.get("groups", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a variant-groups file ({exc})") from exc
    seen: set[str] = set()
    for g in groups:
        if len(g) < 2:
            raise ValueError(f"{path}: a variant group needs two or more members: {sorted(g)}")
        if seen & g:
            raise ValueError(f"{path}: {sorted(seen & g)} in more than one group")
        seen |= g
    return groups


def _stem(name: str) -> str:
    return Path(name).stem


def variant_pairs(manifest: Mapping[str, Any], groups: list[frozenset[str]]) -> set[tuple[str, str]]:
    """(query id, reference id) pairs of a benchmark manifest where a picture shown in the query (its source or a
    filler of a mosaic or paste) and the reference's source are two different members of one variant group. A pair
    whose query shows the reference's own source (a true copy) is never listed."""
    group_of = {m: k for k, g in enumerate(groups) for m in g}
    refs_by_group: dict[int, list[tuple[str, str]]] = {}
    for rid, r in manifest.get("references", {}).items():
        src = _stem(str(r.get("source", "")))
        if src in group_of:
            refs_by_group.setdefault(group_of[src], []).append((rid, src))
    out: set[tuple[str, str]] = set()
    for qid, q in manifest.get("queries", {}).items():
        shown = {_stem(str(q.get("source", "")))}
        shown |= {_stem(str(f.get("source", ""))) for f in q.get("fillers") or () if isinstance(f, Mapping)}
        for k in {group_of[s] for s in shown if s in group_of}:
            out |= {(qid, rid) for rid, src in refs_by_group.get(k, ()) if src not in shown}
    return out


def outside_pairs(query_ids: np.ndarray, reference_ids: np.ndarray, pairs: set[tuple[str, str]]) -> np.ndarray:
    """(N,) bool: the rows of a candidate table (ids (N,)) whose (query, reference) pair is not in ``pairs``."""
    return np.fromiter(((str(q), str(r)) not in pairs for q, r in zip(query_ids, reference_ids, strict=True)),
                       bool, count=len(query_ids))
