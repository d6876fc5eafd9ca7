"""The index's crop index on disk (``crops/``): the reference crops' unit descriptors as one faiss flat
inner-product index, saved at the end of each ``icd index`` job and memory-mapped by the processes that query it.

Before this file existed every query process built its own copy from the database on its first search: 14 crops x
256 float32 per reference, ~14 KB private memory per reference in every process (1.4 GB at 100,000 references,
14 GB at a million) and ~1.3 s of start-up per process at 10,000. Saved, the faiss file is read with faiss'
``IO_FLAG_MMAP_IFC``: its pages are the page cache's, shared by every process on the index.

Files: ``index.faiss`` (faiss ``IndexFlatIP``, row j = crop ``crop[j]`` of reference row ``owner[j]``),
``owner.npy`` and ``crop.npy`` (int64), and ``meta.json`` (written last): the number of reference rows covered
(``n_refs``), a digest of their (id, sha256) (the same as the keypoint voter's), the crop count, the dimension, the
most crops of one reference and the faiss file's size and CRC-32. A saved crop index fits an index when its rows
are a prefix of the index's; rows added since are appended in memory (and saved by the next writer). A file that
was truncated or changed since it was saved is refused with a warning naming it and the index is rebuilt from the
database (the source of truth). Removed references keep their crops here: searches skip them.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from matcher.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from matcher.retrieval.index import MMAP_FLAGS, file_crc32, in_memory

__all__ = ["CROPS_DIR", "CropIndexError", "RegionIndex", "load_crop_index", "read_crop_meta", "save_crop_index",
           "unit_rows"]

CROPS_DIR = "crops"
_FORMAT = "icd-matcher crop index 1"
_LOG = logging.getLogger(__name__)


class CropIndexError(RuntimeError):
    """A saved crop index that cannot be used (missing, unreadable, truncated or tampered with)."""


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) rows scaled to unit L2 norm (zero rows stay zero), float32 C-contiguous."""
    x = np.ascontiguousarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), np.float32)


@dataclass
class RegionIndex:
    """The faiss index of every reference crop: ``index`` row j is crop ``crop[j]`` (position in the reference's
    crop list) of reference row ``owner[j]``; ``most``: the most crops of one reference; ``n_refs``: reference rows
    covered; ``mapped``: the faiss data is a read-only memory map (copied into memory before it grows)."""

    index: faiss.Index
    owner: np.ndarray  # (C,) int64
    crop: np.ndarray  # (C,) int64
    most: int = 0
    n_refs: int = 0
    mapped: bool = False

    @classmethod
    def empty(cls, dim: int) -> RegionIndex:
        return cls(faiss.IndexFlatIP(dim), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def add(self, items: list[tuple[int, np.ndarray]]) -> None:
        """Append (reference row, crop descriptors (n, D) float, unnormalised) items, rows in order."""
        if not items:
            return
        if self.mapped:  # faiss aborts the process when asked to grow mapped data
            self.index, self.mapped = in_memory(self.index), False
        parts = [d for _, d in items if len(d)]
        if parts:
            self.index.add(unit_rows(np.concatenate(parts).astype(np.float32)))
        self.owner = np.concatenate([self.owner, *[np.full(len(d), r, np.int64) for r, d in items]])
        self.crop = np.concatenate([self.crop, *[np.arange(len(d), dtype=np.int64) for _, d in items]])
        self.most = max([self.most, *[len(d) for _, d in items]])
        self.n_refs = max(self.n_refs, max(r for r, _ in items) + 1)


def save_crop_index(folder: str | Path, reg: RegionIndex, rows_sha256: str) -> None:
    """Write ``reg`` into ``folder`` (created if needed): each file replaced atomically, ``meta.json`` last.
    ``rows_sha256``: the digest of the ``reg.n_refs`` reference rows it covers."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    data = faiss.serialize_index(reg.index).tobytes()
    atomic_write_bytes(d / "index.faiss", data)
    for name, arr in (("owner.npy", reg.owner), ("crop.npy", reg.crop)):
        with atomic_write(d / name, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr, np.int64), allow_pickle=False)
    meta = {"format": _FORMAT, "n_refs": int(reg.n_refs), "rows_sha256": rows_sha256, "ntotal": int(reg.index.ntotal),
            "dim": int(reg.index.d), "most": int(reg.most), "bytes": len(data), "crc32": zlib.crc32(data)}
    atomic_write_text(d / "meta.json", json.dumps(meta, indent=1, sort_keys=True))


def read_crop_meta(folder: str | Path) -> dict[str, Any] | None:
    """The saved crop index's ``meta.json``, or None when there is none (or it is not one)."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == _FORMAT else None


def load_crop_index(folder: str | Path, meta: dict[str, Any], *, mmap: bool) -> RegionIndex:
    """The crop index saved in ``folder`` whose ``meta`` (:func:`read_crop_meta`) was checked to fit; ``mmap``:
    memory-map the faiss data. :class:`CropIndexError` naming the file when one is missing, truncated, tampered
    with (size or CRC-32) or inconsistent with the others."""
    d = Path(folder)
    path = d / "index.faiss"
    try:
        size = path.stat().st_size
        if size != int(meta["bytes"]):
            raise CropIndexError(f"{path}: {size} bytes, {meta['bytes']} when it was saved (truncated or replaced)")
        if file_crc32(path) != int(meta["crc32"]):
            raise CropIndexError(f"{path}: contents changed since it was saved (CRC-32 differs from meta.json)")
        index = faiss.read_index(str(path), MMAP_FLAGS if mmap else 0)
        owner = np.load(d / "owner.npy", allow_pickle=False)
        crop = np.load(d / "crop.npy", allow_pickle=False)
    except CropIndexError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise CropIndexError(f"{d}: unreadable crop index ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
    n = int(meta["ntotal"])
    if not (index.ntotal == n == owner.shape[0] == crop.shape[0]) or index.d != int(meta["dim"]) \
            or owner.dtype != np.int64 or crop.dtype != np.int64 or (n and int(owner.max()) >= int(meta["n_refs"])):
        raise CropIndexError(f"{d}: inconsistent crop index files (faiss {index.ntotal} x {index.d}, {owner.shape[0]} "
                             f"owners, {crop.shape[0]} crop numbers, meta {n} x {meta['dim']})")
    return RegionIndex(index, owner, crop, int(meta["most"]), int(meta["n_refs"]), mmap)
