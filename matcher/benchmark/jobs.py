"""The worker side of a benchmark build: make and save one reference, query or background image per job.

Jobs are plain dicts made by :func:`matcher.benchmark.plan.plan_jobs`; each query draws its random choices
from its own generator seeded with (seed, 1, index), so the result does not depend on the process that runs
it.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matcher.benchmark.chain import apply_chain, fit_size
from matcher.benchmark.edits import EditContext
from matcher.benchmark.overlays import shared_overlay
from matcher.benchmark.plan import MIN_UNIT_SIDE, Box, Photo, Unit
from matcher.benchmark.recipes import get_recipe
from matcher.config import LoadConfig
from matcher.io.images import load_image

__all__ = ["JPEG_QUALITY", "MAX_SIDE", "MAX_TRIES", "MIN_VISIBLE", "WorkerState", "execute"]

JPEG_QUALITY = 92
MAX_SIDE = 1024  # px, longer side of every output image
MIN_VISIBLE = 0.08  # a chain leaving less of its source visible is redrawn (copies must still show content)
MAX_TRIES = 8


@dataclass
class WorkerState:
    """What every job needs: the photos, the filler units, where to write, the seed; plus a per-process LRU
    cache of unit images."""

    photos: list[Photo]
    fillers: list[Unit]
    out_dir: Path
    seed: int
    recipe: str = "augly"  # the edit recipe (matcher.benchmark.recipes)
    symbols: tuple[Path, ...] = ()  # pictures used as shared logos/signs (hard_negative_shared_overlay)
    cache: OrderedDict[tuple[int, Box], np.ndarray] = field(default_factory=OrderedDict)


_STATE: WorkerState | None = None


def _init_worker(state: WorkerState) -> None:
    global _STATE
    _STATE = state
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def _unit_image(state: WorkerState, unit: Unit, box: Box | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) content of ``box`` (default the unit's box) of the unit's photo, rescaled so its
    longer side is <= MAX_SIDE. Cached per process (LRU)."""
    box = box or unit.box
    key = (unit.photo, box)
    img = state.cache.get(key)
    if img is None:
        photo = load_image(state.photos[unit.photo].path, config=LoadConfig(min_side=MIN_UNIT_SIDE))
        x0, y0, x1, y1 = box
        img = photo[y0:y1, x0:x1]
        w, h = fit_size(x1 - x0, y1 - y0, MAX_SIDE, MIN_UNIT_SIDE)
        if (w, h) != (x1 - x0, y1 - y0):
            img = np.array(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
        img = np.ascontiguousarray(img)
        img.setflags(write=False)
        state.cache[key] = img
        if len(state.cache) > 64:
            state.cache.popitem(last=False)
    else:
        state.cache.move_to_end(key)
    return img


def _box_or_none(state: WorkerState, photo: int, box: Box) -> list[int] | None:
    w, h = state.photos[photo].size
    return None if tuple(box) == (0, 0, w, h) else [int(v) for v in box]


def _unit_record(state: WorkerState, unit: Unit) -> dict[str, Any]:
    return {"source": state.photos[unit.photo].name, "crop_box": _box_or_none(state, unit.photo, unit.box)}


def _save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    """Encode RGB uint8 (H, W, 3) as JPEG and move it into place atomically (temp file + rename).

    No fsync per image (it cost ~17 ms per file here, most of a build's time): the builder calls ``os.sync()``
    once after all images and only then writes ``manifest.json`` (with fsync), so a manifest on disk always
    describes complete, durable images.
    """
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one writer per id, one file at a time

    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # mode: 0o666 less the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _run_job(job: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Make and save one output image; returns (section, id, manifest entry)."""
    state = _STATE
    if state is None:
        raise RuntimeError("benchmark worker used before _init_worker")
    unit = Unit(job["photo"], tuple(job["unit_box"]))
    box = tuple(job["box"])
    src = _unit_image(state, unit, box)
    entry: dict[str, Any] = {
        "source": state.photos[unit.photo].name, "crop_box": _box_or_none(state, unit.photo, box)
    }
    if job.get("overlay") is not None:  # the same words or symbol on two different pictures
        src, overlay_params = shared_overlay(src, int(job["overlay"]), state.symbols,
                                             np.random.default_rng([state.seed, 2, job["index"], int(
                                                 job["section"] == "queries")]))
        entry["overlay"] = overlay_params
    if job["section"] in ("references", "background"):
        folder = "references" if job["section"] == "references" else "background"
        _save_jpeg(state.out_dir / folder / f"{job['id']}.jpg", src, JPEG_QUALITY)
        entry.update({"file": f"{folder}/{job['id']}.jpg", "size": [int(src.shape[1]), int(src.shape[0])]})
        entry.update(job.get("extra", {}))
        return job["section"], job["id"], entry

    rng = np.random.default_rng([state.seed, 1, job["index"]])
    fillers: list[int] = []

    def other_photo(r: np.random.Generator) -> np.ndarray:
        j = int(r.integers(len(state.fillers)))
        fillers.append(j)
        return _unit_image(state, state.fillers[j])

    ctx = EditContext(random_other_photo=other_photo)
    recipe = get_recipe(state.recipe)
    if job["primary"] is None:  # lightly edited: one mild edit (3 in 4) or none
        res = apply_chain(src, rng, ctx, families=["mild"] if rng.random() < 0.75 else [], max_side=MAX_SIDE,
                          recipe=recipe)
    else:
        for _ in range(MAX_TRIES):
            fillers.clear()
            res = apply_chain(src, rng, ctx, primary=job["primary"], max_side=MAX_SIDE, recipe=recipe)
            if res.visible_fraction is None or res.visible_fraction >= MIN_VISIBLE:
                break
        else:
            fillers.clear()
            res = apply_chain(src, rng, ctx, families=[job["primary"]], max_side=MAX_SIDE, recipe=recipe)
    quality = res.save_quality or JPEG_QUALITY
    _save_jpeg(state.out_dir / "queries" / f"{job['id']}.jpg", res.image, quality)
    entry.update({
        "kind": job["kind"],
        "reference_id": job["reference_id"],
        "file": f"queries/{job['id']}.jpg",
        "size": [int(res.image.shape[1]), int(res.image.shape[0])],
        "jpeg_quality": int(quality),
        "primary_family": job["primary"],
        "families": res.families,
        "edits": res.edits,
        "fit": res.fit,
        "fillers": [_unit_record(state, state.fillers[j]) for j in fillers],
        "placement_quad": res.placement_quad,
        "placement_box": res.placement_box,
        "visible_fraction": res.visible_fraction,
    })
    entry.update(job.get("extra", {}))
    return "queries", job["id"], entry


def execute(
    jobs: list[dict[str, Any]], state: WorkerState, workers: int, progress: bool
) -> list[tuple[str, str, dict[str, Any]]]:
    """Run every job (in ``workers`` spawned processes when > 1); results in job order."""
    global _STATE
    from tqdm import tqdm

    results = []
    bar = tqdm(total=len(jobs), desc="make-benchmark", unit="img", disable=not progress, file=sys.stderr)
    with bar:
        if workers > 1:
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
                for r in pool.imap(_run_job, jobs, chunksize=4):
                    results.append(r)
                    bar.update()
        else:
            saved, _STATE = _STATE, state
            try:
                for job in jobs:
                    results.append(_run_job(job))
                    bar.update()
            finally:
                _STATE = saved
    return results
