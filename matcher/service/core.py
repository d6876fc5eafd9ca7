"""The engine side of the HTTP service: the models (loaded once), one open reference index, the locks that make
concurrent requests safe, and the request counters. Nothing here knows about HTTP; problems are raised as
:class:`ServiceError` (an HTTP status, a short error code and a message).

Concurrency (measured in bench/RESULTS.md, issue 16):

- Index reads and writes are serialised by a readers-writer lock: any number of matches read the index at once;
  adding or removing a reference waits for them and runs alone (the store does not promise that reading while
  it is written is safe).
- Model inference (describing a query, matching it, describing an added picture) runs in at most
  ``inference_slots`` threads at once (default 1: one inference at a time, each using all of torch's and
  OpenCV's threads). Decoding uploads and the HTTP work are not limited by it.
- Locks are always taken in the order index lock -> inference slot, so they cannot deadlock.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matcher.api import Matcher
from matcher.config import MatcherConfig
from matcher.io.images import ImageLoadError, load_image
from matcher.isc.formats import pair_row, select_rows
from matcher.pipeline.pipeline import PairMatch
from matcher.references.disk.store import IndexStore
from matcher.service.rwlock import ReadWriteLock
from matcher.service.stats import RequestStats

__all__ = ["LOAD_ERROR_STATUS", "ServiceCore", "ServiceError", "index_problem", "jsonable", "match_row"]

# HTTP status of each ImageLoadError reason (the others: 422, the image cannot be used)
LOAD_ERROR_STATUS: dict[str, int] = {"empty": 400, "too_many_pixels": 413}


class ServiceError(Exception):
    """A request the service refuses: HTTP ``status``, short ``error`` code, human-readable ``detail``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.error = error
        self.detail = detail


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values turned into Python ones and non-finite floats into None (JSON has no nan)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def match_row(m: PairMatch) -> dict[str, Any]:
    """One match as JSON: the row of :meth:`matcher.Matcher.match` and ``icd match --format jsonl``
    (:func:`matcher.isc.formats.pair_row`: score, verdict, local and global evidence, top contributions)."""
    return jsonable(pair_row(m))


class ServiceCore:
    """Models + one open index + locks + counters. Build with :meth:`open`; thread-safe; :meth:`close` at the end."""

    def __init__(self, matcher: Matcher, store: IndexStore, *, inference_slots: int = 1) -> None:
        self.matcher = matcher
        self.pipeline = matcher.pipeline
        self.config = matcher.config
        self.store = store
        self.index_path = str(Path(store.path).resolve())
        self.inference_slots = max(1, int(inference_slots))
        self.stats = RequestStats()
        self._index_lock = ReadWriteLock()
        self._slots = threading.BoundedSemaphore(self.inference_slots)
        self.components = self.pipeline.components()

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], config: MatcherConfig | None = None, *,
             inference_slots: int = 1) -> ServiceCore:
        """Open the index folder ``index_dir`` (made by ``icd index``; never created here) and load the models
        once. ``config`` None: the configuration stored with the index; a config that changes what the index
        stores is refused (:class:`~matcher.references.disk.store.IndexMismatchError`).
        :class:`~matcher.references.disk.store.IndexStoreError` when the folder holds no usable index."""
        with IndexStore.open(index_dir, config) as probe:
            config = probe.config
        matcher = Matcher.from_pretrained(config)
        p = matcher.pipeline
        store = IndexStore.open(index_dir, config, descriptor=p.descriptor, engine=p.engine)
        try:
            return cls(matcher, store, inference_slots=inference_slots)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the index (waits for running writes)."""
        with self._index_lock.write():
            self.store.close()

    def _count(self) -> int:
        """References that matching can return (removed ones not counted); call under the index lock."""
        return int(self.store.info["count"])

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with self._slots:
            yield

    # ------------------------------------------------------------------------------------------- requests
    def decode(self, name: str, data: bytes) -> np.ndarray:
        """The uploaded file ``name`` as RGB uint8 under the loader's limits (``config.load``);
        :class:`ServiceError` naming the upload and the problem otherwise."""
        try:
            return load_image(data, config=self.config.load)
        except ImageLoadError as exc:
            raise ServiceError(LOAD_ERROR_STATUS.get(exc.reason, 422), exc.reason, f"{name}: {exc.detail}") from None

    def match(self, name: str, data: bytes, *, top_k: int | None = None,
              min_score: float | None = None) -> dict[str, Any]:
        """Match one uploaded picture against the index: its best ``top_k`` (default ``config.top_k``) matches
        with ``score >= min_score``, best first, and the time per stage."""
        t0 = time.perf_counter()
        image = self.decode(name, data)
        t1 = time.perf_counter()
        with self._inference():
            (q,) = self.pipeline.describe_queries([(name, image)])
        t2 = time.perf_counter()
        with self._index_lock.read(), self._inference():
            matches = self.pipeline.match(q, self.store)
            n_refs = self._count()
        t3 = time.perf_counter()
        k = self.config.top_k if top_k is None else int(top_k)
        rows = select_rows((match_row(m) for m in matches), min_score=min_score, max_rows=k)
        return {"query": name, "references": n_refs, "threshold": self.pipeline.threshold, "matches": rows,
                "seconds": {"decode": round(t1 - t0, 4), "describe": round(t2 - t1, 4),
                            "match": round(t3 - t2, 4)}}

    def score(self, query: tuple[str, bytes], reference: tuple[str, bytes]) -> dict[str, Any]:
        """Score one (name, bytes) pair through the full pipeline (the index is not used): the match row plus
        the whole local evidence (``local``: transform, quads, dense check, ...) and every fusion term."""
        q_img = self.decode(*query)
        r_img = self.decode(*reference)
        with self._inference():
            pair = self.matcher.score(q_img, r_img)
        return {**match_row(pair), "query_id": query[0], "reference_id": reference[0],
                "local": jsonable(pair.to_dict()["local"]), "all_contributions": jsonable(pair.contributions)}

    def add(self, ref_id: str, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """Add the uploaded picture to the index as ``ref_id``: (201, added) or (200, already indexed with this
        content). :class:`ServiceError` 409 when the id is indexed with other content, 4xx for a bad image."""
        self.decode(name, data)  # refuse a bad picture before taking the index
        with self._index_lock.write(), self._inference():
            try:
                summary = self.store.add_images([(ref_id, bytes(data))])
            except ValueError as exc:  # an id the index refuses
                raise ServiceError(400, "bad_id", str(exc)) from None
            total = self._count()
        if summary.added:
            return 201, {"id": ref_id, "status": "added", "references": total}
        if summary.already:
            return 200, {"id": ref_id, "status": "already", "references": total}
        skipped = summary.skipped[0] if summary.skipped else None
        if skipped is None:  # pragma: no cover - add_images accounts for every item
            raise ServiceError(500, "not_added", f"{name}: the index neither added nor skipped it")
        if skipped.reason == "id_conflict":
            raise ServiceError(409, "id_conflict", f"reference id '{ref_id}' is already indexed with other "
                               "content; remove it first (DELETE /references/{id}) or use another id")
        raise ServiceError(LOAD_ERROR_STATUS.get(skipped.reason, 422), skipped.reason, f"{name}: {skipped.message}")

    def remove(self, ref_id: str) -> dict[str, Any]:
        """Remove reference ``ref_id`` from the index; :class:`ServiceError` 404 when it is not indexed."""
        with self._index_lock.write():
            summary = self.store.remove([ref_id])
            total = self._count()
        if ref_id not in summary.removed:
            raise ServiceError(404, "not_found", f"reference id '{ref_id}' is not in the index")
        return {"id": ref_id, "status": "removed", "references": total}

    def health(self, full: bool = True) -> dict[str, Any]:
        """Liveness: status, and (``full``) the index folder and its reference count."""
        if not full:
            return {"status": "ok"}
        with self._index_lock.read():
            n = self._count()
        return {"status": "ok", "index": self.index_path, "references": n}

    def describe(self) -> dict[str, Any]:
        """Counts of the index, the models, uptime and the request counters (``GET /stats``)."""
        with self._index_lock.read():
            info = self.store.info
        return jsonable({
            "index": self.index_path, "references": info["count"], "removed": info.get("removed_count", 0),
            "background": info.get("background_count", 0),
            "models": self.components, "threshold": self.pipeline.threshold, "top_k": self.config.top_k,
            "device": self.config.resolved_device(), "inference_slots": self.inference_slots,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.stats.started)),
            "uptime_s": round(self.stats.uptime, 1), **self.stats.snapshot(),
        })


def index_problem(index_dir: str | os.PathLike[str]) -> str | None:
    """Why ``index_dir`` cannot be served (not a folder, no index in it), or None when it holds an index."""
    from matcher.references.disk.store import DB_NAME

    p = Path(index_dir)
    if not p.exists():
        return f"{p}: no such folder"
    if not p.is_dir():
        return f"{p}: not a folder"
    if not (p / DB_NAME).is_file():
        return f"{p}: no icd-matcher index here ({DB_NAME} missing); build one with `icd index REFERENCES --index {p}`"
    return None
