"""On-disk local feature store (large reference collections) and the in-memory :class:`FeatureCache`.

Layout of a store directory::

    index.json            format name + version, extractor signature, descriptor dtype, and per shard:
                          file name, byte length, CRC-32 and the ids it holds (in order)
    shard-000000.bin      one shard per :meth:`FeatureStore.add` call (binary, little-endian, below)

Shard file (FORMAT_VERSION 1)::

    header  32 bytes: magic b"ICDLOCF1", uint32 format version, uint32 n_images, uint64 n_keypoints,
            uint32 descriptor dim, uint8 descriptor dtype code (1 float16, 2 uint8), 3 bytes zero
    counts        uint32 (n_images,)          keypoints per image
    sizes         int32  (n_images, 2)        (width, height) of each original image
    keypoints     float32 (K, 2)              K = n_keypoints, x, y in original px
    scales        float32 (K,)
    orientations  float32 (K,)                degrees
    descriptors   float16 (K, D) or uint8 (K, D) (value * 255, rounded)
    trailer       uint32 CRC-32 of everything above

Nothing is pickled. Every file is written to a temporary file in the same directory, fsynced and renamed, the
index last, so a failed or interrupted :meth:`FeatureStore.add` leaves the previous store readable (at most an
unreferenced shard file remains, overwritten by the next add). Shards are read memory-mapped (their pages are
shared by every process reading the store) and decoded item by item; the length is checked whenever a shard is
opened (once per shard while it stays in the LRU of ``cache_shards`` open shards) and the CRC-32 once per shard file
state (device, inode, size, mtime: a shard opened again unchanged, after it left the LRU, is not read whole again),
and a truncated or corrupt file raises :class:`FeatureStoreError` naming it. One writer at a time.

Mirrored descriptors are not stored: they are recomputed on load by bin permutation
(:func:`matcher.local.features.mirror_sift_descriptors`), which costs far less than reading them.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from matcher.io.atomic import atomic_write_bytes
from matcher.local.features import mirror_sift_descriptors
from matcher.local.types import DESCRIPTOR_DIM, LocalFeatures

__all__ = ["FORMAT_VERSION", "FeatureCache", "FeatureStore", "FeatureStoreError", "as_stored", "features_nbytes"]

FORMAT_VERSION = 1
FORMAT_NAME = "icd-matcher local feature store"
INDEX_NAME = "index.json"
_MAGIC = b"ICDLOCF1"
_HEADER = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u4"),
        ("n_images", "<u4"),
        ("n_keypoints", "<u8"),
        ("dim", "<u4"),
        ("dtype", "u1"),
        ("pad", "V3"),
    ]
)
_DTYPE_CODES = {"float16": 1, "uint8": 2}


class FeatureStoreError(Exception):
    """A store that cannot be used: wrong version or signature, corrupt or truncated file. Names the file."""


# --------------------------------------------------------------------------------------------- file helpers
def _canonical(signature: Mapping[str, Any]) -> dict[str, Any]:
    """``signature`` as it reads back from JSON (tuples become lists), for comparison."""
    try:
        return json.loads(json.dumps(dict(signature), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"extractor signature must be JSON-serialisable: {e}") from None


def features_nbytes(features: LocalFeatures) -> int:
    """Bytes held by the arrays of ``features`` (mirrored included when present)."""
    arrays = [features.keypoints, features.scales, features.orientations, features.descriptors]
    if features.mirrored is not None:
        arrays.append(features.mirrored)
    return int(sum(a.nbytes for a in arrays))


# --------------------------------------------------------------------------------------------- shard codec
def _unit_rows(desc: np.ndarray) -> np.ndarray:
    """(K, D) stored descriptors (float16, or uint8 = value * 255) -> float32 exact unit rows."""
    d = desc.astype(np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", d, d))[:, None]  # einsum: far faster than linalg.norm here
    d /= np.where(norm > 0, norm, np.float32(1.0))  # exact unit rows after rounding (and undo the x255)
    return d


def _stored_descriptors(desc: np.ndarray, dtype: str) -> np.ndarray:
    """(K, D) float descriptors as a store of ``dtype`` holds them: float16, or uint8 = round(value * 255)."""
    if dtype == "float16":
        return np.asarray(desc).astype("<f2")
    return np.clip(np.rint(np.asarray(desc) * 255.0), 0, 255).astype(np.uint8)


def as_stored(features: LocalFeatures, dtype: str = "uint8") -> LocalFeatures:
    """``features`` as a store with descriptors of ``dtype`` gives them back (descriptors rounded and
    renormalised, no mirrored descriptors): what matching reads for a reference, wherever it is held."""
    return LocalFeatures(
        keypoints=np.asarray(features.keypoints, "<f4").astype(np.float32),
        scales=np.asarray(features.scales, "<f4").astype(np.float32),
        orientations=np.asarray(features.orientations, "<f4").astype(np.float32),
        descriptors=_unit_rows(_stored_descriptors(features.descriptors, dtype)),
        image_size=(int(features.image_size[0]), int(features.image_size[1])),
        mirrored=None,
    )


def _encode_shard(items: list[LocalFeatures], dim: int, dtype: str) -> bytes:
    """Bytes of one shard holding ``items`` (all with (N, dim) descriptors)."""
    counts = np.array([f.n for f in items], "<u4")
    sizes = np.array([f.image_size for f in items], "<i4").reshape(-1, 2)
    k = int(counts.sum())
    header = np.zeros((), _HEADER)
    header["magic"], header["version"], header["n_images"] = _MAGIC, FORMAT_VERSION, len(items)
    header["n_keypoints"], header["dim"], header["dtype"] = k, dim, _DTYPE_CODES[dtype]
    kps = np.concatenate([f.keypoints for f in items]).astype("<f4") if k else np.zeros((0, 2), "<f4")
    scales = np.concatenate([f.scales for f in items]).astype("<f4") if k else np.zeros(0, "<f4")
    ori = np.concatenate([f.orientations for f in items]).astype("<f4") if k else np.zeros(0, "<f4")
    desc = np.concatenate([f.descriptors for f in items]) if k else np.zeros((0, dim), np.float32)
    desc_bytes = _stored_descriptors(desc, dtype).tobytes()
    body = b"".join(
        [
            header.tobytes(),
            counts.tobytes(),
            sizes.tobytes(),
            kps.tobytes(),
            scales.tobytes(),
            ori.tobytes(),
            desc_bytes,
        ]
    )
    return body + np.array([zlib.crc32(body)], "<u4").tobytes()


class _Shard:
    """One shard, memory-mapped (or held as bytes): its stored arrays are views of the file's pages (shared page
    cache), decoded item by item on :meth:`item` (descriptors to float32 unit rows); the file was checked whole
    (length, header, CRC-32) when it was opened."""

    def __init__(self, path: Path, data: bytes | mmap.mmap, expect_version: int, *, check_crc: bool = True) -> None:
        """``check_crc``: check the trailer's CRC-32 (False when the caller checked the whole file's already)."""
        def fail(problem: str) -> FeatureStoreError:
            return FeatureStoreError(f"{path}: {problem}")

        if len(data) < _HEADER.itemsize + 4:
            raise fail(f"truncated shard ({len(data)} bytes, shorter than its header)")
        view = memoryview(data)
        body, trailer = view[:-4], view[-4:]
        if check_crc and zlib.crc32(body) != int(np.frombuffer(trailer, "<u4")[0]):
            raise fail("corrupt shard (CRC-32 mismatch)")
        h = np.frombuffer(body, _HEADER, count=1)[0]
        if bytes(h["magic"]) != _MAGIC:
            raise fail("not a feature store shard (bad magic)")
        if int(h["version"]) != expect_version:
            raise fail(f"shard format version {int(h['version'])}, expected {expect_version}")
        n, k, dim = int(h["n_images"]), int(h["n_keypoints"]), int(h["dim"])
        code = int(h["dtype"])
        if code not in _DTYPE_CODES.values():
            raise fail(f"unknown descriptor dtype code {code}")
        desc_dtype = np.dtype("<f2") if code == 1 else np.dtype(np.uint8)
        parts = [
            ("counts", "<u4", (n,)),
            ("sizes", "<i4", (n, 2)),
            ("kps", "<f4", (k, 2)),
            ("scales", "<f4", (k,)),
            ("ori", "<f4", (k,)),
            ("desc", desc_dtype, (k, dim)),
        ]
        expected = _HEADER.itemsize + sum(int(np.prod(s)) * np.dtype(t).itemsize for _, t, s in parts)
        if expected != len(body):
            raise fail(f"shard length {len(body)} does not match its header (expected {expected})")
        arrays: dict[str, np.ndarray] = {}
        offset = _HEADER.itemsize
        for name, dt, shape in parts:
            count = int(np.prod(shape))
            arrays[name] = np.frombuffer(body, dt, count=count, offset=offset).reshape(shape)
            offset += count * np.dtype(dt).itemsize
        if int(arrays["counts"].sum()) != k:
            raise fail("keypoint counts do not add up to the header's total")
        self.counts = arrays["counts"].astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.sizes = arrays["sizes"].astype(np.int64)
        self.keypoints, self.scales = arrays["kps"], arrays["scales"]  # views of the file (little-endian float32)
        self.orientations, self.descriptors = arrays["ori"], arrays["desc"]

    def item(self, i: int, with_mirrored: bool) -> LocalFeatures:
        """Item ``i`` decoded into new arrays (nothing refers to the file afterwards)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        desc = _unit_rows(self.descriptors[a:b])
        w, h = (int(v) for v in self.sizes[i])
        return LocalFeatures(
            keypoints=self.keypoints[a:b].astype(np.float32),
            scales=self.scales[a:b].astype(np.float32),
            orientations=self.orientations[a:b].astype(np.float32),
            descriptors=desc,
            image_size=(w, h),
            mirrored=mirror_sift_descriptors(desc) if with_mirrored else None,
        )


# --------------------------------------------------------------------------------------------- store
class FeatureStore:
    """Appendable directory of feature shards for the extractor described by ``signature``.

    ``FeatureStore(path, extractor.signature())`` opens an existing store (refusing another format version or
    signature with :class:`FeatureStoreError`) or, if ``path`` holds no index, an empty one that is created on
    the first :meth:`add`. ``descriptor_dtype`` ("float16" or "uint8") applies to a new store; an existing
    store keeps its own. The default is uint8 (value * 255): half the bytes of float16 and ~9x faster to load, at a
    cosine >= 0.9999 to the float32 descriptors (bench/local_features_measure.py). ``cache_shards`` checked,
    memory-mapped shards are kept open for :meth:`get` (decoding is per item).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signature: Mapping[str, Any],
        *,
        descriptor_dtype: str = "uint8",
        cache_shards: int = 2,
    ) -> None:
        if descriptor_dtype not in _DTYPE_CODES:
            raise ValueError(
                f"descriptor_dtype must be one of {sorted(_DTYPE_CODES)}, got {descriptor_dtype!r}"
            )
        self.path = Path(path)
        self.signature = _canonical(signature)
        self._index_path = self.path / INDEX_NAME
        self._cache_shards = max(1, int(cache_shards))
        self._shards: list[dict[str, Any]] = []
        self._where: dict[str, tuple[int, int]] = {}  # id -> (shard number, position in shard)
        self._decoded: OrderedDict[int, _Shard] = OrderedDict()
        self._verified: dict[int, tuple[int, ...]] = {}  # shard number -> file state whose CRC-32 was checked here
        self.descriptor_dtype = descriptor_dtype
        self.descriptor_dim = DESCRIPTOR_DIM
        if self._index_path.exists():
            self._read_index()

    # ---- index
    def _read_index(self) -> None:
        where = self._index_path
        try:
            index = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FeatureStoreError(f"{where}: unreadable index ({e})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            raise FeatureStoreError(f"{where}: not an icd-matcher local feature store index")
        version = index.get("format_version")
        if version != FORMAT_VERSION:
            raise FeatureStoreError(
                f"{where}: store format version {version}, this build reads version {FORMAT_VERSION}; "
                "re-extract the features into a new store"
            )
        stored = index.get("signature")
        if stored != self.signature:
            keys = sorted(
                k
                for k in set(stored or {}) | set(self.signature)
                if (stored or {}).get(k) != self.signature.get(k)
            )
            diffs = ", ".join(
                f"{k}: store {(stored or {}).get(k)!r} vs {self.signature.get(k)!r}" for k in keys
            )
            raise FeatureStoreError(
                f"{where}: store was built by another extractor ({diffs}); use a new store"
            )
        try:
            self.descriptor_dtype = str(index["descriptor_dtype"])
            self.descriptor_dim = int(index["descriptor_dim"])
            shards = []
            for s, shard in enumerate(index["shards"]):
                ids = [str(i) for i in shard["ids"]]
                shards.append(
                    {
                        "file": str(shard["file"]),
                        "bytes": int(shard["bytes"]),
                        "crc32": int(shard["crc32"]),
                        "ids": ids,
                    }
                )
                for j, item_id in enumerate(ids):
                    self._where[item_id] = (s, j)
        except (KeyError, TypeError, ValueError) as e:
            raise FeatureStoreError(f"{where}: malformed index ({e!r})") from None
        if self.descriptor_dtype not in _DTYPE_CODES:
            raise FeatureStoreError(f"{where}: unknown descriptor dtype {self.descriptor_dtype!r}")
        self._shards = shards

    def _index_bytes(self, shards: list[dict[str, Any]]) -> bytes:
        index = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "signature": self.signature,
            "descriptor_dtype": self.descriptor_dtype,
            "descriptor_dim": self.descriptor_dim,
            "shards": shards,
        }
        return json.dumps(index, sort_keys=True).encode("utf-8")

    # ---- writing
    def add(self, items: Mapping[str, LocalFeatures]) -> int:
        """Append ``items`` (id -> features) as one new shard; returns the number added.

        Ids must be new strings (``ValueError`` otherwise, nothing written); descriptors must be (N, D) with
        the store's D. Add in large batches: each call writes one shard and rewrites the index.
        """
        if not items:
            return 0
        ids = list(items)
        bad = [i for i in ids if not isinstance(i, str)]
        if bad:
            raise ValueError(f"feature store ids must be str, got {type(bad[0]).__name__} ({bad[0]!r})")
        dupes = [i for i in ids if i in self._where]
        if dupes:
            raise ValueError(f"{len(dupes)} ids already in {self.path}, e.g. {dupes[:3]}")
        feats = [items[i] for i in ids]
        for item_id, f in zip(ids, feats, strict=True):
            n = f.n
            if (
                f.keypoints.shape != (n, 2)
                or f.scales.shape != (n,)
                or f.orientations.shape != (n,)
                or f.descriptors.shape != (n, self.descriptor_dim)
            ):
                raise ValueError(
                    f"features of {item_id!r} have inconsistent shapes: keypoints {f.keypoints.shape}, "
                    f"scales {f.scales.shape}, orientations {f.orientations.shape}, "
                    f"descriptors {f.descriptors.shape} "
                    f"(store descriptor dim {self.descriptor_dim})"
                )
        data = _encode_shard(feats, self.descriptor_dim, self.descriptor_dtype)
        self.path.mkdir(parents=True, exist_ok=True)
        number = len(self._shards)
        name = f"shard-{number:06d}.bin"
        entry = {"file": name, "bytes": len(data), "crc32": zlib.crc32(data), "ids": ids}
        atomic_write_bytes(self.path / name, data)
        shards = [*self._shards, entry]
        atomic_write_bytes(self._index_path, self._index_bytes(shards))
        self._shards = shards
        for j, item_id in enumerate(ids):
            self._where[item_id] = (number, j)
        return len(ids)

    # ---- reading
    def _shard(self, number: int) -> _Shard:
        if number in self._decoded:
            self._decoded.move_to_end(number)
            return self._decoded[number]
        entry = self._shards[number]
        path = self.path / entry["file"]
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                size, state = st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if size != int(entry["bytes"]):
                    raise FeatureStoreError(
                        f"{path}: truncated or overwritten shard ({size} bytes, index says {entry['bytes']})"
                    )
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # shard files are never rewritten
        except OSError as e:
            raise FeatureStoreError(f"{path}: cannot read shard ({e.strerror or e})") from None
        except ValueError as e:  # an empty file cannot be mapped
            raise FeatureStoreError(f"{path}: truncated shard ({e})") from None
        if self._verified.get(number) != state:  # the whole file's CRC-32 (the trailer's is then implied)
            if zlib.crc32(data) != int(entry["crc32"]):
                raise FeatureStoreError(f"{path}: corrupt shard (CRC-32 differs from the index)")
            self._verified[number] = state
        shard = _Shard(path, data, FORMAT_VERSION, check_crc=False)
        if len(shard.counts) != len(entry["ids"]):
            raise FeatureStoreError(
                f"{path}: holds {len(shard.counts)} images, index lists {len(entry['ids'])}"
            )
        self._decoded[number] = shard
        while len(self._decoded) > self._cache_shards:
            self._decoded.popitem(last=False)
        return shard

    def get(self, item_id: str, with_mirrored: bool = True) -> LocalFeatures:
        """Features of ``item_id`` (arrays copied out of the shard); ``KeyError`` when absent.

        ``with_mirrored`` fills ``mirrored`` by bin permutation. Descriptors come back float32, unit rows.
        """
        try:
            number, pos = self._where[item_id]
        except KeyError:
            raise KeyError(f"{item_id!r} not in feature store {self.path}") from None
        return self._shard(number).item(pos, with_mirrored)

    def load_all(self, with_mirrored: bool = True) -> dict[str, LocalFeatures]:
        """Every item, id -> features, in insertion order."""
        out: dict[str, LocalFeatures] = {}
        for number, entry in enumerate(self._shards):
            shard = self._shard(number)
            for j, item_id in enumerate(entry["ids"]):
                out[str(item_id)] = shard.item(j, with_mirrored)
            self._decoded.pop(number, None)  # a whole-store read does not fill the shard cache
        return out

    def ids(self) -> list[str]:
        """All ids, in insertion order."""
        return [str(i) for entry in self._shards for i in entry["ids"]]

    def verify(self) -> list[str]:
        """Problems found reading every shard (empty when the store is sound); does not raise."""
        problems = []
        for number in range(len(self._shards)):
            try:
                self._shard(number)
            except FeatureStoreError as e:
                problems.append(str(e))
        return problems

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())


# --------------------------------------------------------------------------------------------- cache
class FeatureCache:
    """In-memory LRU cache of :class:`LocalFeatures` by key, bounded by ``max_bytes`` (None: unbounded).

    The matcher keeps every image's features here so that each image is extracted once, never per pair:
    ``cache.get_or_compute(key, lambda: extractor.extract(image))``. Thread-safe. An item larger than
    ``max_bytes`` is returned but not kept.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, LocalFeatures] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: LocalFeatures | None = None) -> LocalFeatures | None:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def __getitem__(self, key: Hashable) -> LocalFeatures:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Hashable, value: LocalFeatures) -> None:
        size = features_nbytes(value)
        with self._lock:
            self._drop(key)
            if self.max_bytes is not None and size > self.max_bytes:
                return
            self._items[key] = value
            self._sizes[key] = size
            self.nbytes += size
            while self.max_bytes is not None and self.nbytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def _drop(self, key: Hashable) -> None:
        if key in self._items:
            del self._items[key]
            self.nbytes -= self._sizes.pop(key)

    def get_or_compute(self, key: Hashable, compute: Callable[[], LocalFeatures]) -> LocalFeatures:
        """Cached features of ``key``, calling ``compute()`` (and caching the result) on a miss."""
        value = self.get(key)
        if value is not None:
            with self._lock:
                self.hits += 1
            return value
        with self._lock:
            self.misses += 1
        value = compute()
        self[key] = value
        return value

    def pop(self, key: Hashable, default: LocalFeatures | None = None) -> LocalFeatures | None:
        with self._lock:
            value = self._items.get(key, default)
            self._drop(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self.nbytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
