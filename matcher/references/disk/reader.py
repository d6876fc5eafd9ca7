"""The read side of the on-disk index: what matching reads about the references (ids, metadata, global and crop
descriptors, the faiss index, local features, the keypoint voter), from the database and the files beside it.

The faiss index of global descriptors (``global/``) is used when it agrees with the ``refs`` table, else rebuilt
from the stored descriptors (and saved when no other process is writing), so a crash never leaves a wrong index in
use. The crop index is read from ``crops/`` (:mod:`matcher.references.disk.crops`) or, where that is missing or
out of date, built in memory from the database on first use. Local features come from the feature store through an
in-memory LRU. The keypoint voter is read and kept up to date by :mod:`matcher.references.disk.voter`.

Memory-mapped where it pays: the saved global index, the crop index and the keypoint voter are read with faiss'
mmap flag and the feature store's shards are mapped, so processes querying one index share those pages (page cache)
instead of each holding a copy; what each process holds privately is the decoded-feature LRU and the global
descriptors. On a medium this process cannot write (``writable`` False: a read-only file system or folder) nothing
is written: the database is opened read-only, and an index that is out of date (a rebuilt global index or voter)
is kept in memory only.

Removed references (``icd index --remove``) keep their rows (a row is a faiss row in every index of the folder)
but leave every search: the global index, the crop index and the keypoint voter skip them through faiss ID
selectors (:class:`~matcher.retrieval.index.RowExclusion`), and their ids are free to be indexed again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.local.types import LocalFeatures
from matcher.references.disk.crops import (
    CROPS_DIR,
    CropIndexError,
    RegionIndex,
    load_crop_index,
    read_crop_meta,
    save_crop_index,
    unit_rows,
)
from matcher.references.disk.lock import write_lock
from matcher.references.disk.schema import (
    DB_NAME,
    GLOBAL_DIR,
    LOCAL_DIR,
    BackgroundRow,
    IndexStoreError,
    RefRow,
    read_removed,
    read_thumbnails,
)
from matcher.references.features import FeatureCache, FeatureStore, FeatureStoreError
from matcher.retrieval.index import ReferenceIndex, ReferenceIndexError, RowExclusion

if TYPE_CHECKING:  # pragma: no cover
    from matcher.retrieval.voting import KeypointVoter

__all__ = ["DEFAULT_CACHE_BYTES", "IndexReader", "RegionIndex"]  # RegionIndex: from .crops

_LOG = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 << 20  # in-memory LRU of decoded local features, bytes


class IndexReader:
    """The read API of an index folder (a :class:`~matcher.references.store.ReferenceStore`). Made by
    :meth:`matcher.references.disk.store.IndexStore.open`, which also checks the folder and the config."""

    def __init__(self, path: Path, con: sqlite3.Connection, info: dict[str, Any], config: MatcherConfig,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        from matcher.references.disk.voter import SavedVoter

        self.path = path
        self.config = config
        self.writable = os.access(path, os.W_OK)  # False on a read-only medium (EROFS) or folder: never write
        self._con = con
        self._db_lock = threading.RLock()
        self._features_lock = threading.Lock()
        self._info = info
        self._lock_depth = 0  # > 0 while this object holds the folder's write lock
        self._cache = FeatureCache(cache_bytes)
        self._global: ReferenceIndex | None = None
        self._global_dirty = False
        self._global_cache: np.ndarray | None = None
        self._region: RegionIndex | None = None
        self._voter = SavedVoter(self)
        self._load_state()

    # ------------------------------------------------------------------------------------------- state
    def _load_state(self) -> None:
        """(Re)read the row metadata, the feature store and the global index from disk."""
        with self._db_lock:
            refs = self._con.execute("SELECT row, id, sha256 FROM refs ORDER BY row").fetchall()
            bg = self._con.execute("SELECT row, id, sha256 FROM background ORDER BY row").fetchall()
            removed = read_removed(self._con)
        for name, rows in (("refs", refs), ("background", bg)):
            if any(r[0] != i for i, r in enumerate(rows)):
                raise IndexStoreError(f"{self.path / DB_NAME}: table {name} has non-contiguous rows (corrupt)")
        if any(not 0 <= r < len(refs) for r in removed):
            raise IndexStoreError(f"{self.path / DB_NAME}: table removed names rows the index lacks (corrupt)")
        # removed rows keep the id they had in memory (the digests of saved voters cover it)
        self._ids: list[str] = [removed.get(r[0], r[1]) for r in refs]
        self._shas: list[str] = [r[2] for r in refs]
        self._removed = RowExclusion(sorted(removed))
        self._region_excluded: tuple[tuple[int, int], RowExclusion] | None = None  # (removed, crops) -> rows
        self._row_by_id = {r: i for i, r in enumerate(self._ids) if i not in removed}
        self._row_by_sha: dict[str, int] = {}
        for i, s in enumerate(self._shas):
            self._row_by_sha.setdefault(s, i)
        self._bg_ids = [r[1] for r in bg]
        self._bg_sha_by_id = {r[1]: r[2] for r in bg}
        self._bg_row_by_sha: dict[str, int] = {}
        for r in bg:
            self._bg_row_by_sha.setdefault(r[2], r[0])
        self._features = self._open_features()
        self._region = None
        self._global = self._load_global()

    def _open_features(self) -> FeatureStore | None:
        """The local feature store as it is on disk now (None when the index keeps no local features)."""
        signature = self._info.get("local_signature")
        if signature is None:
            return None
        try:
            # ~1.7 MB per shard of 16 references: 128 decoded shards (~220 MB) keep random access off the disk
            return FeatureStore(self.path / LOCAL_DIR, signature, cache_shards=128)
        except FeatureStoreError as e:
            raise IndexStoreError(f"{self.path}: local feature store unusable ({e})") from None

    def _appended_refs(self, rows: Sequence[RefRow]) -> None:
        """Take newly committed reference rows into the in-memory state (ids, global and crop indexes)."""
        dim = self.dim
        for r in rows:
            self._row_by_id[r.id] = r.row
            self._row_by_sha.setdefault(r.sha256, r.row)
            self._ids.append(r.id)
            self._shas.append(r.sha256)
        assert self._global is not None
        if not self._global.index.is_trained:  # an empty IVF-PQ: never train it on one small batch; flat now,
            model, sha, _ = self._meta()  # converted by the writer's finish once the job is done
            self._global = ReferenceIndex.create(dim, model, sha, dataclasses.replace(
                self.config.descriptor, index_type="flat"))
        self._global.add([r.id for r in rows], np.stack([r.descriptor_array() for r in rows]).reshape(-1, dim))
        self._global_dirty = True
        if self._region is not None:
            self._region.add([(r.row, r.region_descriptor_array(dim)) for r in rows])

    def _removed_refs(self, rows: dict[int, str]) -> None:
        """Take newly removed reference rows (row -> id) into the in-memory state (the searches skip them)."""
        for row, ref_id in rows.items():
            if self._row_by_id.get(ref_id) == row:
                del self._row_by_id[ref_id]
        self._removed = RowExclusion(np.concatenate([self._removed.rows, np.fromiter(rows, np.int64)]))
        assert self._global is not None
        self._global.remove(list(rows))

    def _appended_background(self, rows: Sequence[BackgroundRow]) -> None:
        """Take newly committed background rows into the in-memory state."""
        for r in rows:
            self._bg_ids.append(r.id)
            self._bg_sha_by_id[r.id] = r.sha256
            self._bg_row_by_sha.setdefault(r.sha256, r.row)

    def _rows_sha256(self, n: int) -> str:
        """Digest of the first ``n`` rows' (id, content sha256): which references a saved voter's rows are."""
        h = hashlib.sha256()
        for i in range(n):
            h.update(f"{self._ids[i]}\t{self._shas[i]}\n".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------------------------------- global index
    def _meta(self) -> tuple[str, str | None, int]:
        return (str(self._info["descriptor_model"]), self._info.get("descriptor_sha256"),
                int(self._info["descriptor_dim"]))

    @property
    def dim(self) -> int:
        """Global descriptor size D."""
        return int(self._info["descriptor_dim"])

    def _load_global(self) -> ReferenceIndex:
        """The saved faiss index if it agrees with the refs table, else one rebuilt from the stored descriptors."""
        model, sha, dim = self._meta()
        removed = self._removed.rows
        gi = None
        try:
            gi = ReferenceIndex.load(self.path / GLOBAL_DIR, mmap=not self._lock_depth)
        except (ReferenceIndexError, OSError, ValueError, RuntimeError, KeyError) as e:
            if (self.path / GLOBAL_DIR).exists():
                _LOG.warning("rebuilding the global index from the database: %s", e)
        if gi is not None and gi.ids == self._ids and gi.meta.get("model") == model \
                and gi.meta.get("model_hash") == sha and gi.dim == dim and np.isin(gi.removed.rows, removed).all():
            extra = np.setdiff1d(removed, gi.removed.rows)
            self._global_dirty = len(extra) > 0
            if len(extra):  # removed since it was saved (by a process that could not save it)
                gi.remove(extra.tolist())
                self._save_global_if_free(gi)
            return gi
        gi = ReferenceIndex.from_rows(dim, model, sha, self.config.descriptor, self._ids, self.global_descriptors(),
                                      removed.tolist())
        self._global_dirty = True
        self._save_global_if_free(gi)
        return gi

    def _save_global_if_free(self, gi: ReferenceIndex) -> None:
        """Write the rebuilt index when no other process is writing (else keep it in memory only)."""
        if self._lock_depth or not self.writable:
            return  # saved at the end of the job; never on a read-only medium
        with contextlib.suppress(IndexStoreError, OSError), write_lock(self.path, ""):
            gi.save(self.path / GLOBAL_DIR)
            self._global_dirty = False

    # ------------------------------------------------------------------------------------------- read side
    @property
    def ids(self) -> list[str]:
        """Reference ids in row order (do not modify)."""
        return self._ids

    @property
    def info(self) -> dict[str, Any]:
        """The stored index information (format, model, config, ...) plus current counts: ``count`` references
        (removed ones not counted), ``removed_count``, ``rows`` (= len), ``background_count``."""
        return {**self._info, "count": len(self._ids) - len(self._removed), "removed_count": len(self._removed),
                "rows": len(self._ids), "background_count": len(self._bg_ids), "path": str(self.path)}

    @property
    def removed_rows(self) -> np.ndarray:
        """Sorted int64 rows of the removed references (no search returns them)."""
        return self._removed.rows

    def live_ids(self) -> list[str]:
        """Ids of the references that matching can return (not removed), in row order."""
        return [self._ids[r] for r in sorted(self._row_by_id.values())]

    @property
    def global_index(self) -> ReferenceIndex:
        """faiss index of the global descriptors; row i = reference ``ids[i]``."""
        assert self._global is not None
        return self._global

    def __len__(self) -> int:
        """Rows, removed ones included (rows are positions in the faiss indexes; see :attr:`info` for counts)."""
        return len(self._ids)

    def __contains__(self, ref_id: object) -> bool:
        return ref_id in self._row_by_id

    def row_of(self, ref_id: str) -> int:
        """Row of reference ``ref_id`` (KeyError when not indexed)."""
        return self._row_by_id[ref_id]

    def _check_rows(self, rows: Sequence[int]) -> list[int]:
        out = [int(r) for r in rows]
        bad = [r for r in out if not 0 <= r < len(self._ids)]
        if bad:
            raise IndexError(f"reference row {bad[0]} out of range (index holds {len(self._ids)} references)")
        return out

    def records(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Metadata of ``rows``: dicts with id, path, width, height (px), sha256, in the order given."""
        rows = self._check_rows(rows)
        found: dict[int, dict[str, Any]] = {}
        uniq = sorted(set(rows))
        with self._db_lock:
            for s in range(0, len(uniq), 500):
                chunk = uniq[s:s + 500]
                q = ("SELECT row, id, path, width, height, sha256 FROM refs WHERE row IN "
                     f"({','.join('?' * len(chunk))})")
                for r, i, p, w, h, sha in self._con.execute(q, chunk):
                    found[r] = {"id": i, "path": p, "width": w, "height": h, "sha256": sha}
        return [dict(found[r]) for r in rows]

    def _descriptors(self, table: str) -> np.ndarray:
        dim = self.dim
        with self._db_lock:
            blobs = [b for (b,) in self._con.execute(f"SELECT descriptor FROM {table} ORDER BY row")]
        if not blobs:
            return np.zeros((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), dim).astype(np.float32)

    def global_descriptors(self) -> np.ndarray:
        """(N, D) float32 unnormalised global descriptors of the references, row order (kept in memory after the
        first call and re-read when references were added; do not modify)."""
        cached = self._global_cache
        if cached is None or len(cached) != len(self):
            cached = self._descriptors("refs")
            self._global_cache = cached
        return cached

    def background_descriptors(self) -> np.ndarray:
        """(B, D) float32 unnormalised descriptors of the background set ((0, D) when there is none)."""
        return self._descriptors("background")

    def region_descriptors(self, row: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Crops of reference ``row``: (tags, boxes (n, 4) int32 x0, y0, x1, y1 original px, descriptors (n, D)
        float32 unnormalised, stored as float16)."""
        (row,) = self._check_rows([row])
        with self._db_lock:
            tags, boxes, desc = self._con.execute(
                "SELECT region_tags, region_boxes, region_descriptors FROM refs WHERE row = ?", (row,)).fetchone()
        return (list(json.loads(tags)), np.frombuffer(boxes, "<i4").reshape(-1, 4).astype(np.int32),
                np.frombuffer(desc, "<f2").reshape(-1, self.dim).astype(np.float32))

    def _region_index(self) -> RegionIndex:
        """The crop index over every reference row: the saved one (``crops/``, memory-mapped when it covers every
        row; rows added since it was saved appended in memory), else built from the database."""
        if self._region is None:
            self._region = self._load_crops() or RegionIndex.empty(self.dim)
            n0 = self._region.n_refs
            if n0 < len(self):
                with self._db_lock:
                    blobs = self._con.execute("SELECT row, region_descriptors FROM refs WHERE row >= ? ORDER BY row",
                                              (n0,)).fetchall()
                self._region.add([(r, np.frombuffer(b, "<f2").reshape(-1, self.dim)) for r, b in blobs])
                self._region.n_refs = len(self)
                if not self._lock_depth and self.writable:  # a writer saves it at the end of its job
                    with contextlib.suppress(IndexStoreError, OSError), write_lock(self.path, ""):
                        self.save_crops()
        return self._region

    def _saved_crops(self) -> tuple[dict[str, Any], int] | None:
        """(meta, reference rows covered) of the crop index in ``crops/`` when it fits this index (its rows a prefix
        of this index's, same dimension), else None."""
        meta = read_crop_meta(self.path / CROPS_DIR)
        if meta is None:
            return None
        try:
            n = int(meta["n_refs"])
            fits = 0 < n <= len(self) and int(meta["dim"]) == self.dim and meta["rows_sha256"] == self._rows_sha256(n)
        except (KeyError, TypeError, ValueError):
            return None
        return (meta, n) if fits else None

    def _load_crops(self) -> RegionIndex | None:
        """The saved crop index when it fits (:meth:`_saved_crops`), else None (with a warning naming the file when
        one is there but truncated, tampered with or unreadable)."""
        saved = self._saved_crops()
        if saved is None:
            return None
        meta, n = saved
        try:
            return load_crop_index(self.path / CROPS_DIR, meta, mmap=n == len(self) and not self._lock_depth)
        except CropIndexError as e:
            _LOG.warning("refused the saved crop index: %s; rebuilding it from the database", e)
            return None

    def crops_saved(self) -> bool:
        """True when ``crops/`` holds a crop index that covers every reference row as they are now."""
        saved = self._saved_crops()
        return saved is not None and saved[1] == len(self)

    def save_crops(self) -> None:
        """Write the crop index over every reference row into ``crops/`` (the caller holds the write lock)."""
        reg = self._region_index()
        save_crop_index(self.path / CROPS_DIR, reg, self._rows_sha256(reg.n_refs))

    def _region_exclusion(self, reg: RegionIndex) -> RowExclusion:
        """The crop-index rows of removed references (recomputed when references were removed or added)."""
        key = (len(self._removed), len(reg.owner))
        if self._region_excluded is None or self._region_excluded[0] != key:
            self._region_excluded = (key, RowExclusion(np.flatnonzero(np.isin(reg.owner, self._removed.rows))))
        return self._region_excluded[1]

    def search_regions(self, queries: np.ndarray, k: int, *, per_reference: bool = False,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` reference crops by cosine for queries (M, D) float32 unnormalised.

        Returns (ref_rows (M, k) int64, region_idx (M, k) int64 = position in :meth:`region_descriptors`,
        cosine (M, k) float32), best first, padded with -1 / -1 / -inf. ``per_reference`` keeps only the
        best crop of each reference (k distinct references).
        """
        q = np.asarray(queries, np.float32)
        dim = self.dim
        if q.ndim != 2 or (q.shape[0] and q.shape[1] != dim):
            raise ValueError(f"region queries must be (M, {dim}), got shape {q.shape}")
        k = max(1, int(k))
        m = q.shape[0]
        out_rows = np.full((m, k), -1, np.int64)
        out_idx = np.full((m, k), -1, np.int64)
        out_cos = np.full((m, k), -np.inf, np.float32)
        reg = self._region_index()
        if m == 0 or reg.index.ntotal == 0:
            return out_rows, out_idx, out_cos
        kk = min(reg.index.ntotal, k * reg.most if per_reference else k)
        cos, hits = self._region_exclusion(reg).search(reg.index, unit_rows(q), kk)
        for i in range(m):
            seen: set[int] = set()
            j = 0
            for c, h in zip(cos[i], hits[i], strict=True):
                if h < 0 or j == k:
                    break
                r = int(reg.owner[h])
                if per_reference:
                    if r in seen:
                        continue
                    seen.add(r)
                out_rows[i, j], out_idx[i, j], out_cos[i, j] = r, reg.crop[h], c
                j += 1
        return out_rows, out_idx, out_cos

    def local_features(self, rows: Sequence[int]) -> list[LocalFeatures]:
        """Full-picture local features of ``rows`` (from the feature store, through an in-memory LRU; shared
        objects: do not modify). Raises :class:`IndexStoreError` when the index holds no local features."""
        rows = self._check_rows(rows)
        if self._features is None:
            raise IndexStoreError(f"{self.path}: this index holds no local features (index.local_features off)")
        store = self._features
        out = []  # references are matched with plain descriptors only (the query carries the mirrored ones)
        for r in rows:
            sha = self._shas[r]
            if sha not in store:
                raise IndexStoreError(f"{self.path}: local features of reference {self._ids[r]!r} are missing")
            with self._features_lock:  # FeatureStore's shard cache is not thread-safe
                out.append(self._cache.get_or_compute(sha, lambda s=sha: store.get(s, with_mirrored=False)))
        return out

    def thumbnails(self, rows: Sequence[int]) -> list[np.ndarray | None]:
        """Grey uint8 thumbnails of ``rows`` for the dense alignment check; None for a reference indexed before
        thumbnails were kept (rebuild the index to check those pairs densely)."""
        rows = self._check_rows(rows)
        with self._db_lock:
            found = read_thumbnails(self._con, rows)
        return [found[r].array() if r in found else None for r in rows]

    def feature_chunks(self, start: int, stop: int, size: int = 256) -> Iterator[list[LocalFeatures]]:
        """Local features of rows ``start``..``stop``-1, ``size`` references at a time."""
        for a in range(start, stop, size):
            yield self.local_features(range(a, min(stop, a + size)))

    def keypoint_voter(self, *, seed: int | None = None, nprobe: int = 8) -> KeypointVoter:
        """The keypoint voter (:mod:`matcher.retrieval.voting`) over every reference's local features, row i =
        reference ``ids[i]``: the one saved in ``voter/`` when it fits (rows added since are appended), else one
        built from the feature store chunk by chunk (never all features in memory at once). Saved back when it
        changed and no other process is writing. :class:`IndexStoreError` when the index holds no local
        features."""
        voter = self._voter.get(seed=seed, nprobe=nprobe)
        voter.exclude(self._removed.rows)
        return voter

    def voter_is_current(self, seed: int | None = None) -> bool:
        """True when the saved voter covers every reference (queries load it instead of updating it)."""
        return self._voter.is_current(int(self.config.seed if seed is None else seed))
