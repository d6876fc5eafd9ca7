"""Build a DISC21-like copy-detection benchmark from any folder of photos.

Roles. Every photo (or, for small folders, every disjoint tile of a photo: see "Content units") gets exactly
one role, so that no query holds content of a reference unless it is labelled a copy of it:

* references: ``n_references`` units, plus ``n_distractors`` units that no query copies;
* positive queries (``round(copy_fraction * n_queries)``): edited copies of the references, spread evenly;
* negative queries (the rest of ``n_queries``): units that are no reference, edited with the same chain
  distribution (when spare units run short a negative source is reused with other edits);
* filler: units used only as overlay backgrounds, mosaic tiles and blend partners of composite edits, in
  positive and negative queries alike. They are never references nor negative sources, so a negative query
  never contains reference content (and a composite never adds a second reference to a copy);
* hard negatives (on top of ``n_queries``): ``n_holistic`` units P whose crop (20-50% of the area) is a
  reference while the query is the whole P lightly edited (kind ``hard_negative_holistic``, no copy);
  ``n_same_scene`` units split into a 2x2 grid: two neighbouring quadrants A and B become references, the
  query is an edited copy of A (kind ``copy``, with ``same_scene_pair`` = B) and a third quadrant C gives a
  query that copies nothing (kind ``hard_negative_same_scene``);
* background: ``n_background`` units used in no query or reference (for score normalisation).

Content units. When the folder has fewer usable photos than the roles need, every photo is cut into 2 halves
(or, if still short, 4 quadrants) and the tiles are the units. Tiles of one photo never overlap, so the rule
above still holds ("a negative query's content is disjoint from every reference's"), but tiles of one photo
share a scene. Photos whose shorter side is below 64 px are skipped.

Files. ``references/R*.jpg``, ``queries/Q*.jpg``, ``background/B*.jpg`` (JPEG quality 92; a query whose last
edit is a JPEG re-encode at quality q is saved at quality q instead, so the file keeps that edit's artefacts),
``ground_truth.csv`` (every query; empty reference id = no copy), ``manifest.json`` and ``skipped.csv``. Ids
are fresh random numbers, so neither names nor id order leak the label. Images are at most 1024 px on the
longer side.

Manifest (``manifest.json``, version 1). ``references``: {rid: {source, crop_box (px box in the source photo,
null = whole photo), kind (one of REFERENCE_KINDS), file, size [w, h], same_scene_pair | holistic_query}}.
``queries``: {qid: {source, crop_box, kind (one of QUERY_KINDS), reference_id (null = no copy), file, size,
jpeg_quality, primary_family, families, edits [{name, family, params}], fit (final rescale or null), fillers
[{source, crop_box}] (photos pasted around/into it), placement_quad, placement_box, visible_fraction,
same_scene_pair | related_references}}. The placement fields say where the query's *source content* lies in
the query (the reference for a copy; the negative's own source otherwise): the 4 mapped corners (unclipped),
the bounding box of the part still visible (clipped to the query and to any crop on the way), and the visible
fraction of its area. ``background``: {bid: source}; ``background_crop_boxes``: {bid: box} for tiles;
``plan``: how units were made and the filler list; ``skipped``: [{path, reason, message}].

Determinism. All role choices come from one generator seeded with ``seed``; each output image from its own
generator seeded with (seed, kind, index), so ``workers > 1`` gives byte-identical files. The manifest holds
no timestamps.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matcher.benchmark.jobs import JPEG_QUALITY, MAX_SIDE, MIN_VISIBLE, WorkerState, execute
from matcher.benchmark.plan import BenchmarkError, Photo, check_args, make_units, plan_jobs, scan_photos
from matcher.benchmark.recipes import get_recipe
from matcher.io.atomic import atomic_write
from matcher.io.folders import SkippedFile, list_images, write_skipped_csv
from matcher.isc.submission import GroundTruthMatch, write_ground_truth

__all__ = [
    "BenchmarkError",
    "BenchmarkSummary",
    "build_benchmark",
]

MANIFEST_VERSION = 1
REFERENCE_KINDS = ("reference", "distractor", "holistic_crop", "same_scene_crop", "shared_overlay_reference",
                   "reshoot_reference")
QUERY_KINDS = ("copy", "negative", "hard_negative_holistic", "hard_negative_same_scene",
               "hard_negative_shared_overlay", "hard_negative_reshoot")
_ID_RE = re.compile(r"^[RQB]\d{6,}\.jpg$")
_TMP_RE = re.compile(r"^\.[RQB]\d{6,}\.jpg\.\d+\.tmp$")  # left by an interrupted build


@dataclass(frozen=True)
class BenchmarkSummary:
    """What :func:`build_benchmark` wrote: counts per reference/query kind and per edit family."""

    out_dir: Path
    n_photos: int
    skipped: list[SkippedFile]
    tiles_per_photo: int
    references: dict[str, int]
    queries: dict[str, int]
    families: dict[str, int]
    n_background: int
    n_filler: int
    n_negative_sources: int
    ground_truth_pairs: int

    def __str__(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

        refs, queries, n_skip = self.references, self.queries, len(self.skipped)
        n_neg = self.n_negative_sources
        lines: list[str] = [
            f"benchmark in {self.out_dir}",
            f"  photos used: {self.n_photos} ({n_skip} skipped); tiles per photo: {self.tiles_per_photo}",
            f"  references: {sum(refs.values())} ({fmt(refs)})",
            f"  queries: {sum(queries.values())} ({fmt(queries)}); copy pairs: {self.ground_truth_pairs}",
            f"  background: {self.n_background}; filler: {self.n_filler}; negative sources: {n_neg}",
            f"  edit families (all chain edits): {fmt(self.families)}",
        ]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more skipped (see skipped.csv)")
        return "\n".join(lines)


def _ordered(counts: Counter[str], order: tuple[str, ...]) -> dict[str, int]:
    return {k: counts[k] for k in order if counts[k]}


def _reshoot_pairs(path: str | Path, photos: list[Photo]) -> list[tuple[int, int]]:
    """Photo numbers of the pairs listed in the JSON file ``path``; :class:`BenchmarkError` naming the file and
    the problem (unreadable, a name not among the usable photos, a photo in two pairs, a photo paired with
    itself)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        pairs = [(str(p["a"]), str(p["b"])) for p in data]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BenchmarkError(f"re-shoot pairs file '{path}' is unusable: {exc}") from None
    by_name = {p.name: i for i, p in enumerate(photos)}
    by_stem = {Path(p.name).stem: i for i, p in enumerate(photos)}
    out: list[tuple[int, int]] = []
    used: set[int] = set()
    for a, b in pairs:
        idx = []
        for name in (a, b):
            i = by_name.get(name, by_stem.get(name))
            if i is None:
                raise BenchmarkError(f"re-shoot pairs file '{path}': '{name}' is not a usable photo of the folder")
            idx.append(i)
        if idx[0] == idx[1] or used & set(idx):
            raise BenchmarkError(f"re-shoot pairs file '{path}': pair ({a}, {b}) repeats a photo")
        used.update(idx)
        out.append((idx[0], idx[1]))
    return out


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete id-named images of an earlier build in our three folders that this build did not write, and temp
    files of interrupted builds."""
    for folder in ("references", "queries", "background"):
        for p in (out_dir / folder).iterdir():
            if (_ID_RE.match(p.name) and f"{folder}/{p.name}" not in keep) or _TMP_RE.match(p.name):
                p.unlink()


def build_benchmark(
    photos: str | Path,
    out_dir: str | Path,
    *,
    n_references: int = 1000,
    n_queries: int = 2000,
    copy_fraction: float = 0.4,
    n_distractors: int = 0,
    n_background: int = 100,
    n_holistic: int = 100,
    n_same_scene: int = 50,
    n_shared_overlay: int = 0,
    recipe: str = "augly",
    symbols: str | Path | None = None,
    reshoot_pairs: str | Path | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> BenchmarkSummary:
    """Build the benchmark described in this module's docstring from the photos in folder ``photos`` into
    ``out_dir``. Unreadable photos are skipped and reported. Raises :class:`BenchmarkError` for settings the
    folder cannot satisfy. Same arguments (``workers`` and ``progress`` aside) => byte-identical output.

    ``recipe``: the edit recipe of the queries (:mod:`matcher.benchmark.recipes`: "augly", the default, or
    "independent"). ``n_shared_overlay``: pairs of different pictures carrying the same caption, sign or symbol
    (the reference, and a lightly edited query that is no copy of it); ``symbols``: a folder of pictures used as
    those symbols (e.g. clip art), else drawn signs and captions only. ``reshoot_pairs``: a JSON file listing pairs
    of photos of the folder (``[{"a": name, "b": name}, ...]``, names relative to ``photos``) that show the same
    subject in two different photos: one becomes a reference, the other a lightly edited query that copies nothing
    (kind ``hard_negative_reshoot``)."""
    counts = {"n_distractors": n_distractors, "n_background": n_background, "n_holistic": n_holistic,
              "n_same_scene": n_same_scene, "n_shared_overlay": n_shared_overlay}
    check_args(n_references, n_queries, copy_fraction, counts, workers)
    try:
        chain_families = get_recipe(recipe).chain_families
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None
    symbol_paths: tuple[Path, ...] = ()
    if symbols is not None:
        if not Path(symbols).is_dir():
            raise BenchmarkError(f"symbols folder not found: '{symbols}'")
        symbol_paths = tuple(list_images(symbols))
        if not symbol_paths:
            raise BenchmarkError(f"symbols folder '{symbols}' holds no pictures")
    folder, out = Path(photos), Path(out_dir)
    if not folder.is_dir():
        raise BenchmarkError(f"photo folder not found: '{folder}'")
    if out.resolve().is_relative_to(folder.resolve()):
        raise BenchmarkError(f"the output folder '{out}' must not lie inside the photo folder '{folder}'")
    photo_list, skipped = scan_photos(folder, workers)
    reshoots = _reshoot_pairs(reshoot_pairs, photo_list) if reshoot_pairs is not None else []
    n_pos = round(copy_fraction * n_queries)
    n_neg = n_queries - n_pos
    # every role needs its own units, plus one filler unit (composites) and one negative source
    need = (n_references + sum(counts.values()) + n_shared_overlay + 2 * len(reshoots)
            + int(n_queries + n_same_scene > 0) + int(n_neg > 0))
    units, k = make_units(photo_list, need)
    if reshoots and k != 1:
        raise BenchmarkError(f"re-shoot pairs need whole photos, but these settings cut every photo into {k} "
                             "tiles; add photos or lower the counts")
    rng = np.random.default_rng([seed, 0])
    jobs, fillers, n_neg_sources = plan_jobs(rng, units, n_references, n_pos, n_neg, counts, chain_families,
                                             reshoots)

    for sub in ("references", "queries", "background"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an old manifest must not describe a half-rebuilt folder
    state = WorkerState(photo_list, fillers, out, seed, recipe, symbol_paths)
    results = execute(jobs, state, workers, progress)

    sections: dict[str, dict[str, Any]] = {"references": {}, "queries": {}, "background": {}}
    for section, oid, entry in results:
        sections[section][oid] = entry
    refs = dict(sorted(sections["references"].items()))
    queries = dict(sorted(sections["queries"].items()))
    background = dict(sorted(sections["background"].items()))
    for qid, q in queries.items():  # link holistic crops and shared-overlay references to their query
        if q["kind"] == "hard_negative_holistic":
            refs[q["related_references"][0]]["holistic_query"] = qid
        elif q["kind"] == "hard_negative_shared_overlay":
            refs[q["related_references"][0]]["shared_overlay_query"] = qid
        elif q["kind"] == "hard_negative_reshoot":
            refs[q["related_references"][0]]["reshoot_query"] = qid
    os.sync()  # the images are durable before the files that describe them are written
    gt = [GroundTruthMatch(qid, q["reference_id"] or "") for qid, q in queries.items()]
    write_ground_truth(out / "ground_truth.csv", gt)
    write_skipped_csv(skipped, out / "skipped.csv")
    manifest = {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "params": {"n_references": n_references, "n_queries": n_queries, "copy_fraction": copy_fraction,
                   "n_distractors": n_distractors, "n_background": n_background, "n_holistic": n_holistic,
                   "n_same_scene": n_same_scene, "jpeg_quality": JPEG_QUALITY, "max_side": MAX_SIDE,
                   "min_visible": MIN_VISIBLE, "n_shared_overlay": n_shared_overlay, "recipe": recipe,
                   "symbols": None if symbols is None else str(symbols),
                   "reshoot_pairs": None if reshoot_pairs is None else str(reshoot_pairs)},
        "photos": str(photos),
        "plan": {"n_photos": len(photo_list), "tiles_per_photo": k, "n_units": len(units),
                 "n_filler": len(fillers), "n_negative_sources": n_neg_sources,
                 "filler": [{"source": photo_list[u.photo].name,
                             "crop_box": None if k == 1 else list(u.box)} for u in fillers]},
        "skipped": [{"path": s.path, "reason": s.reason, "message": s.message} for s in skipped],
        "references": refs,
        "queries": queries,
        "background": {bid: b["source"] for bid, b in background.items()},
        "background_crop_boxes": {bid: b["crop_box"] for bid, b in background.items() if b["crop_box"]},
    }
    with atomic_write(out / "manifest.json", "w") as fh:
        fh.write(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    _remove_stale(out, {e["file"] for e in (*refs.values(), *queries.values(), *background.values())})

    families = Counter(f for q in queries.values() for f in q["families"])
    return BenchmarkSummary(
        out_dir=out, n_photos=len(photo_list), skipped=skipped, tiles_per_photo=k,
        references=_ordered(Counter(r["kind"] for r in refs.values()), REFERENCE_KINDS),
        queries=_ordered(Counter(q["kind"] for q in queries.values()), QUERY_KINDS),
        families={f: families[f] for f in (*chain_families, "mild") if families[f]},
        n_background=len(background), n_filler=len(fillers), n_negative_sources=n_neg_sources,
        ground_truth_pairs=sum(1 for m in gt if m.reference_id),
    )
