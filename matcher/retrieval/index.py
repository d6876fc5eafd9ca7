"""Reference index for candidate retrieval: faiss over L2-normalised descriptor directions, plus an id map,
the descriptor norms (for the ASL gate) and metadata naming the descriptor model and its weights' sha256.

- Exact inner product (``IndexFlatIP``) by default; IVF-PQ (``index_type="ivfpq"``, or ``"auto"`` past
  ``index_threshold`` references at build time) for large collections; searched on GPU when faiss-gpu and a
  GPU are present.
- Extendable: :meth:`ReferenceIndex.add` appends references without rebuilding (IVF-PQ is trained once, on
  the first vectors it is given).
- Persistent: :meth:`save` writes ``index.faiss``, ``ids.json``, ``norms.npy`` and ``meta.json`` into a
  folder, each atomically; :meth:`load` reads them back and checks they agree, and that ``index.faiss`` has the
  CRC-32 ``meta.json`` records (a truncated or tampered file is refused by name). ``load(mmap=True)`` memory-maps
  the faiss file (faiss' ``IO_FLAG_MMAP_IFC``: flat vectors and IVF lists stay in the page cache, shared by the
  processes querying one index); :meth:`add` copies a mapped index into memory first.
- Queries made with another model are refused (:class:`IndexModelMismatchError`).
- Removable: :meth:`ReferenceIndex.remove` takes references out of every later search without rebuilding; the
  faiss rows stay (row i is still reference ``ids[i]``, so the rows of the other stores keep agreeing) and searches
  skip the removed rows through a faiss ID selector (:class:`RowExclusion`, shared with the crop index and the
  keypoint voter). The removed rows are saved in ``meta.json``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from matcher.config import DescriptorConfig
from matcher.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ["MMAP_FLAGS", "IndexModelMismatchError", "ReferenceIndex", "ReferenceIndexError", "RowExclusion",
           "SearchResult", "build_faiss_index", "exact_batches", "file_crc32", "in_memory"]

_FORMAT = 1


class ReferenceIndexError(ValueError):
    """A reference index that cannot be used (missing or inconsistent files, duplicate ids, bad shapes)."""


class IndexModelMismatchError(ReferenceIndexError):
    """The index was built with another descriptor model (name or weights hash) than the one querying it."""


@dataclass(frozen=True)
class SearchResult:
    """``scores`` float32 (M, k) cosine similarities, best first; ``rows`` int64 (M, k) reference rows
    (-1 where fewer than k references exist); ``ref_norms`` float32 (M, k) descriptor norms of those rows."""

    scores: np.ndarray
    rows: np.ndarray
    ref_norms: np.ndarray


def _unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ReferenceIndexError(f"descriptors must be a 2-D array (N, D), got shape {x.shape}")
    n = np.linalg.norm(x, axis=1).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ReferenceIndexError("descriptors contain NaN or infinite values")
    return np.ascontiguousarray(x / np.maximum(n, 1e-12)[:, None], dtype=np.float32), n


def build_faiss_index(dim: int, kind: str, n_expected: int = 0, nlist: int = 0) -> faiss.Index:
    """An empty faiss index over inner product: "flat" (exact) or "ivfpq" (``nlist`` lists, default
    ~4 sqrt(n_expected); PQ with dim/8 sub-quantisers of 8 bits; needs training)."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivfpq":
        nlist = nlist or max(16, int(4 * math.sqrt(max(n_expected, 1))))
        m = max(1, dim // 8)
        while dim % m:
            m -= 1
        return faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    raise ReferenceIndexError(f"unknown index type {kind!r}; known: flat, ivfpq, auto")


BLAS_MIN_QUERIES = 20  # exact searches of at least this many vectors at once go through a matrix product
_BLAS_LOCK = threading.Lock()


@contextlib.contextmanager
def exact_batches() -> Iterator[None]:
    """Within the block, faiss' exact (flat) searches of at least :data:`BLAS_MIN_QUERIES` vectors use its
    matrix-product (BLAS) path; the previous setting is restored after it (one block at a time in the process).

    faiss 1.15 takes that path only from 128,000 query vectors; below, it scans the whole index once per query
    vector, so a batch costs as much as its vectors searched one by one (measured, one thread, 100,000 x 256:
    384 vectors in 3.1 s scanning, 0.17 s through the product). Results: the same rows, cosines equal up to the
    last bits (another summation order)."""
    with _BLAS_LOCK:
        before = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = before


class RowExclusion:
    """faiss rows left out of every search (removed references): a sorted int64 array and the faiss search
    parameters that skip them (an ``IDSelectorNot`` over an ``IDSelectorBatch``; the selector objects are kept
    alive here, as faiss holds only pointers to them)."""

    def __init__(self, rows: np.ndarray | Sequence[int] = ()) -> None:
        self.rows = np.unique(np.asarray(rows, np.int64).reshape(-1))
        self._inner: Any = None
        self._selector: Any = None
        if len(self.rows):
            self._inner = faiss.IDSelectorBatch(self.rows)
            self._selector = faiss.IDSelectorNot(self._inner)

    def __len__(self) -> int:
        return len(self.rows)

    def params(self, index: faiss.Index) -> faiss.SearchParameters | None:
        """Search parameters for ``index`` that skip the rows (None when there are none); an IVF index keeps its
        ``nprobe``."""
        if self._selector is None:
            return None
        if isinstance(index, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=self._selector, nprobe=int(index.nprobe))
        return faiss.SearchParameters(sel=self._selector)

    def search(self, index: faiss.Index, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``index.search(x, k)`` without the excluded rows: (distances (M, k), rows (M, k) int64, -1 padded)."""
        params = self.params(index)
        if params is None:
            return index.search(x, k)
        return index.search(x, k, params=params)


def file_crc32(path: str | os.PathLike[str], chunk: int = 16 << 20) -> int:
    """CRC-32 of a file, read ``chunk`` bytes at a time (never held whole; ~2 GB/s on one core)."""
    crc = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return crc


MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC  # faiss.read_index flag: flat codes and IVF lists memory-mapped (read-only)


def in_memory(index: faiss.Index) -> faiss.Index:
    """A copy of ``index`` held in memory, for an index read with :data:`MMAP_FLAGS` (faiss cannot add to mapped data
    and aborts the process when asked to). IVF: the same index with its inverted lists copied into array lists (the
    coarse quantizer and the codes' trained parameters are in memory already); flat: a new flat index."""
    if isinstance(index, faiss.IndexIVFFastScan):  # packed block lists: a full copy through faiss' own format
        return faiss.deserialize_index(faiss.serialize_index(index))
    if isinstance(index, faiss.IndexIVF):
        lists = faiss.ArrayInvertedLists(index.nlist, index.code_size)
        index.invlists.copy_subset_to(lists, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, 0, int(index.ntotal))
        index.replace_invlists(lists, True)
        lists.this.disown()  # the index owns them now
        return index
    if isinstance(index, faiss.IndexFlat):
        copy = faiss.IndexFlat(index.d, index.metric_type)
        if index.ntotal:
            copy.add(index.reconstruct_n(0, int(index.ntotal)))
        return copy
    raise TypeError(f"cannot copy a memory-mapped {type(index).__name__} into memory")


def _drop_rows(scores: np.ndarray, rows: np.ndarray, excluded: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search results (M, K) with the ``excluded`` rows taken out, the rest moved left, cut to (M, k)."""
    keep = (rows >= 0) & ~np.isin(rows, excluded)
    out_s = np.full((rows.shape[0], k), -np.inf, np.float32)
    out_r = np.full((rows.shape[0], k), -1, np.int64)
    for i in range(rows.shape[0]):
        s, r = scores[i][keep[i]][:k], rows[i][keep[i]][:k]
        out_s[i, :len(s)], out_r[i, :len(r)] = s, r
    return out_s, out_r


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class ReferenceIndex:
    """Reference descriptors of one model. Build with :meth:`create`, fill with :meth:`add`."""

    def __init__(self, index: faiss.Index, ids: list[str], norms: np.ndarray, meta: dict[str, Any]) -> None:
        self.index = index
        self.ids = ids
        self.norms = norms.astype(np.float32)
        self.meta = meta
        self._row: dict[str, int] = {r: i for i, r in enumerate(ids)}
        self._gpu: faiss.Index | None = None
        self.mapped = False  # the faiss index is memory-mapped (read-only): add() copies it into memory first
        self.removed = RowExclusion(meta.pop("removed", ()))
        for r in self.removed.rows:
            if self._row.get(ids[int(r)]) == int(r):
                del self._row[ids[int(r)]]

    @classmethod
    def create(cls, dim: int, model: str, model_hash: str | None, cfg: DescriptorConfig | None = None,
               n_expected: int = 0) -> ReferenceIndex:
        """An empty index for ``dim``-d descriptors of ``model`` (weights sha256 ``model_hash``; None for
        weight-less baselines). ``cfg.index_type``: flat | ivfpq | auto (ivfpq when ``n_expected`` >
        ``cfg.index_threshold``)."""
        cfg = cfg or DescriptorConfig()
        kind = cfg.index_type
        if kind == "auto":
            kind = "ivfpq" if n_expected > cfg.index_threshold else "flat"
        index = build_faiss_index(dim, kind, n_expected)
        meta = {"format": _FORMAT, "model": model, "model_hash": model_hash, "dim": dim, "index_type": kind,
                "nprobe": cfg.nprobe}
        return cls(index, [], np.zeros(0, np.float32), meta)

    @classmethod
    def from_rows(cls, dim: int, model: str, model_hash: str | None, cfg: DescriptorConfig | None,
                  ids: Sequence[str], descriptors: np.ndarray, removed: Sequence[int] = ()) -> ReferenceIndex:
        """An index of rows ``ids`` / ``descriptors`` (N, D) with rows ``removed`` already removed (an id may
        recur when all but its last row are removed: a reference removed, then added again)."""
        gi = cls.create(dim, model, model_hash, cfg, n_expected=len(ids))
        gone = {int(r) for r in removed}
        start = 0
        for r in sorted(gone) + [len(ids)]:  # add up to and including each removed row, then remove it
            stop = min(r + 1, len(ids))
            if stop > start:
                gi.add(ids[start:stop], descriptors[start:stop])
            if r < len(ids):
                gi.remove([r])
            start = stop
        return gi

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_live(self) -> int:
        """References that searches can return (rows minus removed ones)."""
        return len(self.ids) - len(self.removed)

    def remove(self, rows: Sequence[int]) -> None:
        """Leave reference ``rows`` out of every later search (their ids may be added again, as new rows)."""
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < len(self.ids)]
        if bad:
            raise ReferenceIndexError(f"reference row {bad[0]} out of range (index holds {len(self.ids)} rows)")
        self.removed = RowExclusion(np.concatenate([self.removed.rows, np.asarray(rows, np.int64)]))
        for r in rows:
            if self._row.get(self.ids[r]) == r:
                del self._row[self.ids[r]]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def check_model(self, model: str, model_hash: str | None) -> None:
        """Raise :class:`IndexModelMismatchError` unless (model, model_hash) is the one the index was built with."""
        if model != self.meta["model"] or model_hash != self.meta["model_hash"]:
            raise IndexModelMismatchError(
                f"index was built with descriptor model {self.meta['model']!r} (weights sha256 "
                f"{str(self.meta['model_hash'])[:12]}), refused for {model!r} (sha256 {str(model_hash)[:12]})")

    def add(self, ids: Sequence[str], descriptors: np.ndarray) -> None:
        """Append references: ``ids`` (N,) unique new ids, ``descriptors`` (N, D) unnormalised float32.
        The directions are indexed, the norms kept for the ASL gate. An untrained IVF-PQ index is trained on
        these vectors first (needs at least ~39 x nlist of them)."""
        ids = [str(i) for i in ids]
        z, n = _unit(descriptors)
        if z.shape[0] != len(ids):
            raise ReferenceIndexError(f"{len(ids)} ids but {z.shape[0]} descriptors")
        if z.shape[0] and z.shape[1] != self.dim:
            raise ReferenceIndexError(f"descriptors have {z.shape[1]} dimensions, the index {self.dim}")
        dup = [i for i in ids if i in self._row]
        if dup or len(set(ids)) != len(ids):
            first = dup[0] if dup else next(i for i in ids if ids.count(i) > 1)
            raise ReferenceIndexError(f"reference id {first!r} is already in the index (ids must be unique)")
        if not ids:
            return
        if self.mapped:
            self.index = in_memory(self.index)
            self.mapped = False
        if not self.index.is_trained:
            self.index.train(z)
        self.index.add(z)
        for i in ids:
            self._row[i] = len(self.ids)
            self.ids.append(i)
        self.norms = np.concatenate([self.norms, n])
        self._gpu = None

    def _searcher(self) -> faiss.Index:
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = int(self.meta.get("nprobe", 16))
        if _gpu_available() and len(self) > 0:
            if self._gpu is None:
                self._res = faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._res, 0, self.index)
            return self._gpu
        return self.index

    def search(self, descriptors: np.ndarray, k: int, *, model: str | None = None,
               model_hash: str | None = None) -> SearchResult:
        """Top-``k`` references by cosine similarity for query descriptors (M, D) unnormalised. Passing
        ``model`` checks it (and ``model_hash``) against the index metadata first."""
        if model is not None:
            self.check_model(model, model_hash)
        z, _ = _unit(descriptors)
        if z.shape[0] and z.shape[1] != self.dim:
            raise ReferenceIndexError(f"queries have {z.shape[1]} dimensions, the index {self.dim}")
        k = max(1, int(k))
        if self.n_live == 0 or z.shape[0] == 0:
            m = z.shape[0]
            return SearchResult(np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64),
                                np.zeros((m, k), np.float32))
        searcher = self._searcher()
        if searcher is self.index:
            scores, rows = self.removed.search(searcher, z, min(k, len(self)))
        else:  # a GPU copy takes no ID selector: fetch as many more as there are removed rows, then drop them
            scores, rows = searcher.search(z, min(k + len(self.removed), len(self)))
            if len(self.removed):
                scores, rows = _drop_rows(scores, rows, self.removed.rows, k)
        scores = np.where(rows >= 0, scores, -np.inf)
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        rows = rows.astype(np.int64)
        ref_norms = np.where(rows >= 0, self.norms[np.maximum(rows, 0)], 0.0).astype(np.float32)
        return SearchResult(scores.astype(np.float32), rows, ref_norms)

    def reconstruct_directions(self) -> np.ndarray:
        """(N, D) float32 stored directions (exact for flat, approximate for IVF-PQ)."""
        if len(self) == 0:
            return np.zeros((0, self.dim), np.float32)
        if isinstance(self.index, faiss.IndexIVF):
            self.index.make_direct_map()
        return self.index.reconstruct_n(0, len(self))

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the index into ``folder`` (created if needed); each file is replaced atomically and
        ``meta.json`` (written last) records the count the other files must agree with."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self.index).tobytes()
        atomic_write_bytes(d / "index.faiss", data)
        atomic_write_text(d / "ids.json", json.dumps(self.ids))
        with atomic_write(d / "norms.npy", "wb") as fh:
            np.save(fh, self.norms, allow_pickle=False)
        atomic_write_text(d / "meta.json", json.dumps({**self.meta, "count": len(self), "crc32": zlib.crc32(data),
                                                       "removed": self.removed.rows.tolist()}, indent=1,
                                                      sort_keys=True))

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, mmap: bool = False) -> ReferenceIndex:
        """Read an index written by :meth:`save`; :class:`ReferenceIndexError` naming the folder if files are missing
        or disagree, or naming ``index.faiss`` when it is not the file saved (CRC-32; an index saved before the
        CRC was recorded is not checked). ``mmap``: memory-map the faiss file."""
        d = Path(folder)
        for name in ("index.faiss", "ids.json", "norms.npy", "meta.json"):
            if not (d / name).is_file():
                raise ReferenceIndexError(f"{d}: not a reference index ({name} missing)")
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ReferenceIndexError(f"{d}: unsupported index format {meta.get('format')!r}")
        crc = meta.pop("crc32", None)
        if crc is not None and file_crc32(d / "index.faiss") != crc:
            raise ReferenceIndexError(f"{d / 'index.faiss'}: corrupt global index (CRC-32 differs from meta.json)")
        try:
            index = faiss.read_index(str(d / "index.faiss"), MMAP_FLAGS if mmap else 0)
        except RuntimeError as e:
            raise ReferenceIndexError(f"{d / 'index.faiss'}: unreadable global index ({str(e).splitlines()[0]})"
                                      ) from None
        ids = json.loads((d / "ids.json").read_text())
        norms = np.load(d / "norms.npy", allow_pickle=False)
        count = meta.pop("count", None)
        removed = meta.get("removed", [])
        if not isinstance(removed, list) or any(not isinstance(r, int) or not 0 <= r < len(ids) for r in removed):
            raise ReferenceIndexError(f"{d}: corrupt list of removed rows in meta.json")
        if not (index.ntotal == len(ids) == norms.shape[0] == count) or index.d != meta.get("dim"):
            raise ReferenceIndexError(f"{d}: inconsistent index files (faiss {index.ntotal} x {index.d}, {len(ids)} ids, "
                              f"{norms.shape[0]} norms, meta count {count}, dim {meta.get('dim')})")
        out = cls(index, [str(i) for i in ids], norms, meta)
        out.mapped = mmap
        return out
