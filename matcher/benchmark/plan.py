"""Planning a benchmark build: usable photos, content units (photos or disjoint tiles), roles and jobs.

See :mod:`matcher.benchmark.builder` for the rules; everything here is deterministic given the generator.
"""
from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import LoadConfig
from matcher.io.folders import SkippedFile, scan_folder
from matcher.io.images import ImageLoadError, load_image

__all__ = [
    "MIN_UNIT_SIDE", "BenchmarkError", "Box", "Photo", "Unit",
    "check_args", "make_units", "plan_jobs", "scan_photos",
]

MIN_UNIT_SIDE = 64  # px, shorter side of a photo or tile to be usable

Box = tuple[int, int, int, int]


class BenchmarkError(ValueError):
    """Settings the photo folder cannot satisfy, or bad arguments; the message says what is needed."""


@dataclass(frozen=True)
class Unit:
    """A piece of content: ``box`` [x0, y0, x1, y1] (px) of photo number ``photo``."""

    photo: int
    box: Box


@dataclass(frozen=True)
class Photo:
    """A usable photo: its file, its name in the manifest and its size."""

    path: str
    name: str  # path relative to the photo folder (POSIX)
    size: tuple[int, int]  # (w, h) px


def _probe(path: str) -> tuple[tuple[int, int] | None, SkippedFile | None]:
    """Decode one photo fully (so corrupt files are caught now); its (w, h) or why it is skipped."""
    try:
        img = load_image(path, config=LoadConfig(min_side=MIN_UNIT_SIDE))
    except ImageLoadError as e:
        return None, SkippedFile(str(path), e.reason, str(e))
    return (int(img.shape[1]), int(img.shape[0])), None


def scan_photos(folder: Path, workers: int) -> tuple[list[Photo], list[SkippedFile]]:
    """Every image under ``folder`` that decodes and has a shorter side >= MIN_UNIT_SIDE, in name order, and
    the files skipped (with the reason). Decodes in ``workers`` processes when there are many photos."""
    paths, skipped = scan_folder(folder)
    names = [p.relative_to(folder).as_posix() for p in paths]
    args = [str(p) for p in paths]
    if workers > 1 and len(args) >= 64:  # a pool only pays off for many photos
        with mp.get_context("spawn").Pool(workers) as pool:
            probed = pool.map(_probe, args, chunksize=16)
    else:
        probed = [_probe(a) for a in args]
    photos = []
    for path, name, (size, skip) in zip(args, names, probed, strict=True):
        if skip is not None:
            skipped.append(skip)
        else:
            photos.append(Photo(path, name, size))
    return photos, skipped


def _tiles(size: tuple[int, int], k: int) -> list[Box]:
    """Split a (w, h) photo into k = 1, 2 (halves across the longer side) or 4 (quadrants) disjoint boxes."""
    w, h = size
    if k == 1:
        return [(0, 0, w, h)]
    if k == 2:
        return [(0, 0, w // 2, h), (w // 2, 0, w, h)] if w >= h else [(0, 0, w, h // 2), (0, h // 2, w, h)]
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def make_units(photos: list[Photo], need: int) -> tuple[list[Unit], int]:
    """The fewest tiles per photo (1, 2 or 4) that give >= ``need`` units with sides >= MIN_UNIT_SIDE."""
    units: list[Unit] = []
    for k in (1, 2, 4):
        units = [Unit(i, b) for i, p in enumerate(photos) for b in _tiles(p.size, k)
                 if min(b[2] - b[0], b[3] - b[1]) >= MIN_UNIT_SIDE]
        if len(units) >= need:
            return units, k
    raise BenchmarkError(
        f"these settings need {need} disjoint pieces of content (references, distractors, hard negatives, "
        f"background, one filler and one negative source), but the {len(photos)} usable photos give at most "
        f"{len(units)} even when cut into 4 tiles; add photos or lower the counts"
    )


def check_args(
    n_references: int, n_queries: int, copy_fraction: float, counts: dict[str, int], workers: int
) -> None:
    """Raise :class:`BenchmarkError` on negative or non-integer counts, workers < 1, a copy fraction outside
    [0, 1], or copies without references."""
    named = {"n_references": n_references, "n_queries": n_queries, **counts, "workers": workers}
    for name, v in named.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise BenchmarkError(f"{name} must be a non-negative integer, got {v!r}")
    if workers < 1:
        raise BenchmarkError(f"workers must be >= 1, got {workers}")
    if not (isinstance(copy_fraction, (int, float)) and 0.0 <= copy_fraction <= 1.0):
        raise BenchmarkError(f"copy_fraction must lie in [0, 1], got {copy_fraction!r}")
    if round(copy_fraction * n_queries) > 0 and n_references == 0:
        raise BenchmarkError(
            "positive queries need references: n_references is 0 but copy_fraction * n_queries > 0"
        )


def _family_cycle(rng: np.random.Generator, n: int, families: tuple[str, ...]) -> list[str]:
    """``n`` primary families, each family equally often (shuffled rounds over ``families``)."""
    out: list[str] = []
    while len(out) < n:
        out.extend(families[i] for i in rng.permutation(len(families)))
    return out[:n]


def _crop_box(rng: np.random.Generator, box: Box, area: tuple[float, float]) -> Box:
    """A random sub-box of ``box`` holding an ``area`` fraction (range) of it, aspect ratio x 1/1.5..1.5."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a = rng.uniform(*area)
    r = math.exp(rng.uniform(-math.log(1.5), math.log(1.5)))
    cw = int(min(w, max(32, round(w * math.sqrt(a * r)))))
    ch = int(min(h, max(32, round(h * math.sqrt(a / r)))))
    cx, cy = x0 + int(rng.integers(0, w - cw + 1)), y0 + int(rng.integers(0, h - ch + 1))
    return cx, cy, cx + cw, cy + ch


def _same_scene_boxes(rng: np.random.Generator, box: Box) -> tuple[Box, Box, Box]:
    """Quadrants A, B (neighbours: side by side or stacked) and C (one of the other two) of ``box``."""
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
    q = {
        (0, 0): (x0, y0, xm, ym), (0, 1): (xm, y0, x1, ym), (1, 0): (x0, ym, xm, y1), (1, 1): (xm, ym, x1, y1)
    }
    cells = list(q)
    a = cells[int(rng.integers(4))]
    nbrs = [(a[0], 1 - a[1]), (1 - a[0], a[1])]
    b = nbrs[int(rng.integers(2))]
    rest = [c for c in cells if c not in (a, b)]
    c = rest[int(rng.integers(2))]
    return q[a], q[b], q[c]


def _ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    return [f"{prefix}{int(i):06d}" for i in rng.permutation(n)]


def plan_jobs(
    rng: np.random.Generator, units: list[Unit], n_ref: int, n_pos: int, n_neg: int, counts: dict[str, int],
    families: tuple[str, ...], reshoots: Sequence[tuple[int, int]] = (),
) -> tuple[list[dict[str, Any]], list[Unit], int]:
    """All jobs (references, queries, background) with fresh ids; also the filler units and the number of
    negative sources. ``families``: the recipe's chain families (primary families cycle over them).
    ``reshoots``: pairs of photo numbers showing the same subject in two different photos: one becomes a
    reference, the other (lightly edited) a query that copies nothing; their photos get no other role."""
    taken = {p for pair in reshoots for p in pair}
    reshoot_units = {u.photo: u for u in units if u.photo in taken}
    units = [u for u in units if u.photo not in taken]
    order = [units[i] for i in rng.permutation(len(units))]
    take = iter(order)
    refs = [next(take) for _ in range(n_ref)]
    distractors = [next(take) for _ in range(counts["n_distractors"])]
    holistic = [next(take) for _ in range(counts["n_holistic"])]
    same_scene = [next(take) for _ in range(counts["n_same_scene"])]
    background = [next(take) for _ in range(counts["n_background"])]
    shared = [(next(take), next(take)) for _ in range(counts.get("n_shared_overlay", 0))]
    spare = list(take)
    n_chain_queries = n_pos + n_neg + 2 * counts["n_same_scene"]
    if n_neg > 0:
        n_fill = max(1, min(max(8, len(units) // 20), 200, len(spare) // 4)) if n_chain_queries else 0
        neg_sources = spare[n_fill:n_fill + n_neg]
    else:
        n_fill, neg_sources = (min(len(spare), max(8, len(units) // 20), 200) if n_chain_queries else 0), []
    fillers = spare[:n_fill]

    ref_specs: list[tuple[Unit, Box, dict[str, Any]]] = []  # (unit, box, extra)
    query_specs: list[dict[str, Any]] = []
    for u in refs:
        ref_specs.append((u, u.box, {"kind": "reference"}))
    for u in distractors:
        ref_specs.append((u, u.box, {"kind": "distractor"}))
    pos_order = [int(i) for i in rng.permutation(n_ref)] if n_ref else []
    for i, fam in enumerate(_family_cycle(rng, n_pos, families)):
        r = pos_order[i % n_ref]
        query_specs.append({"unit": refs[r], "box": refs[r].box, "kind": "copy", "ref": r, "primary": fam})
    for j, fam in enumerate(_family_cycle(rng, n_neg, families)):
        u = neg_sources[j % len(neg_sources)]
        query_specs.append({"unit": u, "box": u.box, "kind": "negative", "ref": None, "primary": fam})
    for u in holistic:
        r = len(ref_specs)
        ref_specs.append((u, _crop_box(rng, u.box, (0.2, 0.5)), {"kind": "holistic_crop"}))
        query_specs.append(
            {"unit": u, "box": u.box, "kind": "hard_negative_holistic", "ref": None, "primary": None,
             "related": [r]}
        )
    fams = _family_cycle(rng, 2 * len(same_scene), families)
    for k, u in enumerate(same_scene):
        a, b, c = _same_scene_boxes(rng, u.box)
        ra, rb = len(ref_specs), len(ref_specs) + 1
        ref_specs.append((u, a, {"kind": "same_scene_crop", "pair": rb}))
        ref_specs.append((u, b, {"kind": "same_scene_crop", "pair": ra}))
        query_specs.append(
            {"unit": u, "box": a, "kind": "copy", "ref": ra, "primary": fams[2 * k], "pair": rb}
        )
        query_specs.append({"unit": u, "box": c, "kind": "hard_negative_same_scene", "ref": None,
                            "primary": fams[2 * k + 1], "related": [ra, rb]})
    for a, b in reshoots:  # the same subject in two photos; which is the reference alternates (seeded)
        ur, uq = (reshoot_units[a], reshoot_units[b]) if rng.random() < 0.5 else (reshoot_units[b], reshoot_units[a])
        r = len(ref_specs)
        ref_specs.append((ur, ur.box, {"kind": "reshoot_reference"}))
        query_specs.append({"unit": uq, "box": uq.box, "kind": "hard_negative_reshoot", "ref": None,
                            "primary": None, "related": [r]})
    for k, (ur, uq) in enumerate(shared):  # two different pictures carrying the same words or symbol
        overlay = int(rng.integers(1 << 31))
        r = len(ref_specs)
        ref_specs.append((ur, ur.box, {"kind": "shared_overlay_reference", "overlay": overlay}))
        query_specs.append({"unit": uq, "box": uq.box, "kind": "hard_negative_shared_overlay", "ref": None,
                            "primary": None, "related": [r], "overlay": overlay})

    rids, qids = _ids(rng, "R", len(ref_specs)), _ids(rng, "Q", len(query_specs))
    bids = _ids(rng, "B", len(background))
    jobs: list[dict[str, Any]] = []
    for i, (u, box, extra) in enumerate(ref_specs):
        ex = {"kind": extra["kind"]}
        if "pair" in extra:
            ex["same_scene_pair"] = rids[extra["pair"]]
        jobs.append({"section": "references", "id": rids[i], "index": i, "photo": u.photo, "unit_box": u.box,
                     "box": box, "extra": ex, "overlay": extra.get("overlay")})
    for i, q in enumerate(query_specs):
        ex = {}
        if "pair" in q:
            ex["same_scene_pair"] = rids[q["pair"]]
        if "related" in q:
            ex["related_references"] = [rids[r] for r in q["related"]]
        jobs.append({"section": "queries", "id": qids[i], "index": i, "photo": q["unit"].photo,
                     "unit_box": q["unit"].box, "box": q["box"], "kind": q["kind"], "primary": q["primary"],
                     "reference_id": None if q["ref"] is None else rids[q["ref"]], "extra": ex,
                     "overlay": q.get("overlay")})
    for i, u in enumerate(background):
        jobs.append({"section": "background", "id": bids[i], "index": i, "photo": u.photo, "unit_box": u.box,
                     "box": u.box})
    return jobs, fillers, len(neg_sources)
