"""The persistent reference index (``icd index``): one folder holding everything the matcher needs about a
reference collection, appendable batch by batch and safe against crashes.

Layout::

    index.sqlite   info (format, model, config), refs (one row per reference = its faiss row), background
    local/         FeatureStore of full-picture local features, keyed by the file's sha256
    global/        the saved faiss ReferenceIndex of the global descriptors (rebuilt from index.sqlite when
                   missing or stale, so a crash never leaves a wrong index in use)
    voter/         the saved keypoint voter (matcher.voting) over the references' local features, brought up to
                   date at the end of each indexing job (only new rows are added) and when found stale
    write.lock     flock'ed by the one writer

Each batch of ``config.index.batch_size`` references is described, its local features are appended to the
FeatureStore, then its rows are committed in ONE sqlite transaction. A crash loses at most the current batch:
features written before the crash are found by content hash and reused on the next run. Re-running skips every
file whose (id, sha256) is already indexed without decoding it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from tqdm import tqdm

from matcher.config import MatcherConfig
from matcher.index import ReferenceIndex, ReferenceIndexError
from matcher.io import ImageLoadError, SkippedFile, load_image, scan_folder
from matcher.local.store import FeatureCache, FeatureStore, FeatureStoreError
from matcher.local.types import LocalFeatures
from matcher.reference_records import ReferenceRecord, describe_references

if TYPE_CHECKING:
    import faiss

    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine
    from matcher.voting import KeypointVoter

__all__ = ["FORMAT_VERSION", "IndexJobSummary", "IndexMismatchError", "IndexStore", "IndexStoreError"]

FORMAT_NAME = "icd-matcher reference index"
FORMAT_VERSION = 1
DB_NAME = "index.sqlite"
LOCK_NAME = "write.lock"
LOCAL_DIR = "local"
GLOBAL_DIR = "global"
VOTER_DIR = "voter"
SKIPPED_NAME = "skipped.csv"
DEFAULT_CACHE_BYTES = 512 << 20  # in-memory LRU of decoded local features, bytes

# Config keys that change what is stored (others, e.g. matching thresholds, may differ freely between runs).
_DESCRIPTOR_KEYS = ("model", "dim", "image_size", "scales")
_LOCAL_KEYS = ("extractor", "working_size", "max_keypoints", "max_upscale", "sift_contrast_threshold",
               "sift_edge_threshold", "sift_octave_layers", "sift_sigma")
_DETECTOR_KEYS = ("weights", "conf", "iou", "max_boxes", "imgsz")

_SCHEMA = """
CREATE TABLE info(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs(row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, path TEXT NOT NULL, width INTEGER NOT NULL,
                  height INTEGER NOT NULL, sha256 TEXT NOT NULL, nbytes INTEGER NOT NULL, added REAL NOT NULL,
                  descriptor BLOB NOT NULL, region_tags TEXT NOT NULL, region_boxes BLOB NOT NULL,
                  region_descriptors BLOB NOT NULL);
CREATE INDEX refs_sha256 ON refs(sha256);
CREATE TABLE background(row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, path TEXT NOT NULL,
                        sha256 TEXT NOT NULL, descriptor BLOB NOT NULL);
CREATE INDEX background_sha256 ON background(sha256);
"""
_REF_COLUMNS = ("row, id, path, width, height, sha256, nbytes, added, descriptor, region_tags, region_boxes, "
                "region_descriptors")


class IndexStoreError(ValueError):
    """A folder that is not a usable index (missing, not an index, other format version, corrupt, locked)."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another descriptor model or data-shaping configuration; ``differences`` lists
    them as "key stored vs requested"."""

    def __init__(self, path: Path, differences: list[str]) -> None:
        super().__init__(f"{path}: index was built with other settings (index vs requested): "
                         + "; ".join(differences) + " - use the index's settings or build a new index")
        self.differences = differences


@dataclass
class IndexJobSummary:
    """What one :meth:`IndexStore.add_references` call did. ``seconds``: wall time per stage, s."""

    added: int = 0  # new rows (a new id whose content is already indexed is added without decoding)
    already: int = 0  # files whose id and content were already indexed
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    total: int = 0  # rows of the table after the job
    kind: str = "references"  # "references" or "background"

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"{self.kind}: added {self.added}, already indexed {self.already}, skipped {len(self.skipped)}; "
                f"{self.total} in the index; time: {t}")


# ----------------------------------------------------------------------------------------------- helpers
def _canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def _shaping(config: MatcherConfig) -> dict[str, Any]:
    """The config values that shape stored data, "section.key" -> JSON value."""
    out: dict[str, Any] = {f"descriptor.{k}": getattr(config.descriptor, k) for k in _DESCRIPTOR_KEYS}
    out["pipeline.reference_regions"] = config.pipeline.reference_regions
    out["index.local_features"] = config.index.local_features
    if config.index.local_features:
        out.update({f"local.{k}": getattr(config.local, k) for k in _LOCAL_KEYS})
    if "yolo" in config.pipeline.reference_regions:
        out.update({f"detector.{k}": getattr(config.detector, k) for k in _DETECTOR_KEYS})
    return _canonical(out)


def _weights_sha256(config: MatcherConfig) -> str | None:
    """sha256 of the descriptor weights file ``config`` names (None for a weight-less model)."""
    from matcher.descriptors.registry import get_spec
    from matcher.descriptors.weights import file_sha256

    path = config.descriptor.weights or get_spec(config.descriptor.model).weights_path()
    return file_sha256(path) if path else None


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:16] + "..." if isinstance(v, str) and len(v) == 64 else s


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), np.float32)


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file; :class:`ImageLoadError` (reason missing / not_a_file / unreadable)."""
    name = str(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageLoadError(name, "not_a_file", "is a directory" if stat.S_ISDIR(st.st_mode)
                                 else "is not a regular file")
        return path.read_bytes()
    except FileNotFoundError as e:
        raise ImageLoadError(name, "missing", "no such file") from e
    except OSError as e:
        raise ImageLoadError(name, "unreadable", f"cannot read file ({e.strerror or e})") from e


def _skip(path: Path, exc: ImageLoadError) -> SkippedFile:
    return SkippedFile(str(path), exc.reason, f"cannot load '{path}': {exc.detail}")


@dataclass
class _Pending:
    """One row to insert: a new picture (``record``) or a copy of stored content (``copy_of``)."""

    id: str
    path: Path
    sha256: str
    nbytes: int
    record: ReferenceRecord | None = None
    copy_of: int | None = None  # stored row with the same content
    image: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- store
class IndexStore:
    """An on-disk reference index folder. Make with :meth:`open`; fill with :meth:`add_references`."""

    def __init__(self, path: Path, con: sqlite3.Connection, info: dict[str, Any], config: MatcherConfig,
                 descriptor: GlobalDescriptor | None, cache_bytes: int) -> None:
        self.path = path
        self.config = config
        self._con = con
        self._db_lock = threading.RLock()
        self._features_lock = threading.Lock()
        self._info = info
        self._descriptor = descriptor
        self._engine: LocalEngine | None = None
        self._lock_depth = 0
        self._cache = FeatureCache(cache_bytes)
        self._global: ReferenceIndex | None = None
        self._global_dirty = False
        self._region: tuple[faiss.Index, np.ndarray, np.ndarray, int] | None = None  # index, ref row, idx, max n
        self._voter: KeypointVoter | None = None
        self._voter_lock = threading.Lock()
        self._load_state()

    # ------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], config: MatcherConfig | None = None, *, create: bool = False,
             descriptor: GlobalDescriptor | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> IndexStore:
        """Open the index folder ``path``; ``create`` makes a new one (or opens an existing compatible one).

        ``config`` None uses the configuration stored with the index (a new index gets the defaults); a config
        or ``descriptor`` whose data-shaping settings differ from the stored ones raises
        :class:`IndexMismatchError`. A folder that is not an index, another format version or a corrupt
        database raises :class:`IndexStoreError`. ``cache_bytes``: in-memory LRU of local features, bytes.
        """
        p = Path(path)
        db = p / DB_NAME
        if p.exists() and not p.is_dir():
            raise IndexStoreError(f"{p}: not an index folder (it is a file)")
        if not db.exists():
            if not create:
                raise IndexStoreError(f"{p}: no icd-matcher index here ({DB_NAME} missing); create one with "
                                      "`icd index REFERENCES --index DIR`")
            config = config or MatcherConfig()
            descriptor = cls._create(p, config, descriptor)
        con, info = cls._connect(db)
        try:
            stored = cls._stored_config(db, info)
            if config is None:
                config = stored
            else:
                cls._check_config(p, info, stored, config, descriptor)
            return cls(p, con, info, config, descriptor, cache_bytes)
        except BaseException:
            con.close()
            raise

    @staticmethod
    def _create(p: Path, config: MatcherConfig, descriptor: GlobalDescriptor | None) -> GlobalDescriptor:
        """Initialise a new index in ``p`` (empty or new folder): the database is built aside and renamed in."""
        p.mkdir(parents=True, exist_ok=True)
        allowed = {LOCK_NAME, LOCAL_DIR, GLOBAL_DIR, VOTER_DIR, SKIPPED_NAME}
        other = sorted(e.name for e in p.iterdir() if e.name not in allowed and not e.name.startswith(f".{DB_NAME}"))
        if other:
            raise IndexStoreError(f"{p}: folder is not empty and holds no index ({len(other)} entries, e.g. "
                                  f"{other[0]!r}); use a new or empty folder")
        if descriptor is None:
            from matcher.descriptors.extractor import GlobalDescriptor

            descriptor = GlobalDescriptor(config)
        signature = None
        if config.index.local_features:
            from matcher.local.features import create_extractor

            signature = create_extractor(config.local, device="cpu").signature()
        info = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": time.time(),
            "descriptor_model": descriptor.name,
            "descriptor_sha256": descriptor.sha256,
            "descriptor_dim": int(descriptor.dim),
            "local_signature": signature,
            "config": config.to_dict(),
            "config.descriptor": dataclasses.asdict(config.descriptor),
            "config.local": dataclasses.asdict(config.local),
            "config.pipeline.reference_regions": list(config.pipeline.reference_regions),
        }
        with _flock(p, f"{p}: index is being created by another process"):
            if (p / DB_NAME).exists():
                return descriptor
            tmp = p / f".{DB_NAME}.creating"
            tmp.unlink(missing_ok=True)
            con = sqlite3.connect(tmp)
            try:
                with con:
                    con.executescript(_SCHEMA)
                    con.executemany("INSERT INTO info VALUES (?, ?)",
                                    [(k, json.dumps(v, sort_keys=True)) for k, v in info.items()])
            finally:
                con.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, p / DB_NAME)
        return descriptor

    @staticmethod
    def _connect(db: Path) -> tuple[sqlite3.Connection, dict[str, Any]]:
        try:
            con = sqlite3.connect(db, timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise IndexStoreError(f"{db}: cannot open the index database ({e})") from None
        try:
            with contextlib.suppress(sqlite3.OperationalError):  # read-only media: keep the default journal
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash never loses a commit
            raw = dict(con.execute("SELECT key, value FROM info").fetchall())
        except sqlite3.DatabaseError as e:
            con.close()
            raise IndexStoreError(f"{db}: not an icd-matcher index database or corrupt ({e})") from None
        try:
            info = {k: json.loads(v) for k, v in raw.items()}
        except (TypeError, ValueError) as e:
            con.close()
            raise IndexStoreError(f"{db}: corrupt index information ({e})") from None
        if info.get("format") != FORMAT_NAME:
            con.close()
            raise IndexStoreError(f"{db}: not an icd-matcher reference index (format {info.get('format')!r})")
        if info.get("format_version") != FORMAT_VERSION:
            con.close()
            v = info.get("format_version")
            age = "a newer" if isinstance(v, int) and v > FORMAT_VERSION else "an older"
            raise IndexStoreError(f"{db}: index format version {v} was written by {age} icd-matcher; this build "
                                  f"reads version {FORMAT_VERSION} - rebuild the index")
        return con, info

    @staticmethod
    def _stored_config(db: Path, info: dict[str, Any]) -> MatcherConfig:
        try:
            return MatcherConfig.make(**info["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexStoreError(f"{db}: the stored configuration does not fit this build ({e})") from None

    @staticmethod
    def _check_config(p: Path, info: dict[str, Any], stored: MatcherConfig, config: MatcherConfig,
                      descriptor: GlobalDescriptor | None) -> None:
        diffs: list[str] = []
        a, b = _shaping(stored), _shaping(config)
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{k} {_short(a.get(k))} vs {_short(b.get(k))}")
        try:
            sha = descriptor.sha256 if descriptor is not None else _weights_sha256(config)
        except (OSError, KeyError, ValueError) as e:
            raise IndexStoreError(f"{p}: cannot read the descriptor weights of the requested config ({e})") from None
        if sha != info.get("descriptor_sha256"):
            diffs.append(f"descriptor weights sha256 {_short(info.get('descriptor_sha256'))} vs {_short(sha)}")
        if descriptor is not None:
            if descriptor.name != info.get("descriptor_model"):
                diffs.append(f"descriptor model {info.get('descriptor_model')} vs {descriptor.name}")
            if int(descriptor.dim) != info.get("descriptor_dim"):
                diffs.append(f"descriptor dim {info.get('descriptor_dim')} vs {descriptor.dim}")
        if diffs:
            raise IndexMismatchError(p, diffs)

    def _load_state(self) -> None:
        """(Re)read the row metadata, the feature store and the global index from disk."""
        with self._db_lock:
            refs = self._con.execute("SELECT row, id, sha256 FROM refs ORDER BY row").fetchall()
            bg = self._con.execute("SELECT row, id, sha256 FROM background ORDER BY row").fetchall()
        for name, rows in (("refs", refs), ("background", bg)):
            if any(r[0] != i for i, r in enumerate(rows)):
                raise IndexStoreError(f"{self.path / DB_NAME}: table {name} has non-contiguous rows (corrupt)")
        self._ids: list[str] = [r[1] for r in refs]
        self._shas: list[str] = [r[2] for r in refs]
        self._row_by_id = {r: i for i, r in enumerate(self._ids)}
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

    # ------------------------------------------------------------------------------------------- locking
    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the folder's write lock (re-entrant within this object); refreshes state taken before it."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with _flock(self.path, f"{self.path}: index is being written by another process"):
            self._lock_depth = 1
            try:
                with self._db_lock:
                    n = self._con.execute("SELECT COUNT(*) FROM refs").fetchone()[0]
                    nb = self._con.execute("SELECT COUNT(*) FROM background").fetchone()[0]
                if n != len(self._ids) or nb != len(self._bg_ids):  # another process wrote since we opened
                    self._load_state()
                else:  # features of a crashed writer's last batch may have landed since
                    self._features = self._open_features()
                yield
            finally:
                self._lock_depth = 0

    # ------------------------------------------------------------------------------------------- global index
    def _meta(self) -> tuple[str, str | None, int]:
        return (str(self._info["descriptor_model"]), self._info.get("descriptor_sha256"),
                int(self._info["descriptor_dim"]))

    def _load_global(self) -> ReferenceIndex:
        """The saved faiss index if it agrees with the refs table, else one rebuilt from the stored descriptors."""
        model, sha, dim = self._meta()
        with contextlib.suppress(ReferenceIndexError, OSError, ValueError, RuntimeError, KeyError):
            gi = ReferenceIndex.load(self.path / GLOBAL_DIR)
            if gi.ids == self._ids and gi.meta.get("model") == model and gi.meta.get("model_hash") == sha \
                    and gi.dim == dim:
                self._global_dirty = False
                return gi
        gi = ReferenceIndex.create(dim, model, sha, self.config.descriptor, n_expected=len(self._ids))
        gi.add(self._ids, self.global_descriptors())
        self._global_dirty = True
        self._save_global_if_free(gi)
        return gi

    def _save_global_if_free(self, gi: ReferenceIndex) -> None:
        """Write the rebuilt index when no other process is writing (else keep it in memory only)."""
        if self._lock_depth:
            return  # saved at the end of the job
        with contextlib.suppress(IndexStoreError, OSError), _flock(self.path, ""):
            gi.save(self.path / GLOBAL_DIR)
            self._global_dirty = False

    def _finish_global(self) -> None:
        """Convert to IVF-PQ when the collection has outgrown a flat index ("auto"), then save if changed."""
        assert self._global is not None
        cfg = self.config.descriptor
        want = cfg.index_type if cfg.index_type != "auto" else (
            "ivfpq" if len(self._ids) > cfg.index_threshold else "flat")
        if want == "ivfpq" and self._global.meta.get("index_type") != "ivfpq" and self._ids:
            model, sha, dim = self._meta()
            gi = ReferenceIndex.create(dim, model, sha, dataclasses.replace(cfg, index_type="ivfpq"),
                                       n_expected=len(self._ids))
            gi.add(self._ids, self.global_descriptors())
            self._global, self._global_dirty = gi, True
        if self._global_dirty:
            self._global.save(self.path / GLOBAL_DIR)
            self._global_dirty = False

    # ------------------------------------------------------------------------------------------- read side
    @property
    def ids(self) -> list[str]:
        """Reference ids in row order (do not modify)."""
        return self._ids

    @property
    def info(self) -> dict[str, Any]:
        """The stored index information (format, model, config, ...) plus current counts."""
        return {**self._info, "count": len(self._ids), "background_count": len(self._bg_ids),
                "path": str(self.path)}

    @property
    def global_index(self) -> ReferenceIndex:
        """faiss index of the global descriptors; row i = reference ``ids[i]``."""
        assert self._global is not None
        return self._global

    def __len__(self) -> int:
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
        dim = int(self._info["descriptor_dim"])
        with self._db_lock:
            blobs = [b for (b,) in self._con.execute(f"SELECT descriptor FROM {table} ORDER BY row")]
        if not blobs:
            return np.zeros((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), dim).astype(np.float32)

    def global_descriptors(self) -> np.ndarray:
        """(N, D) float32 unnormalised global descriptors of the references, row order (kept in memory after the
        first call and re-read when references were added; do not modify)."""
        cached = getattr(self, "_global_cache", None)
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
        dim = int(self._info["descriptor_dim"])
        return (list(json.loads(tags)), np.frombuffer(boxes, "<i4").reshape(-1, 4).astype(np.int32),
                np.frombuffer(desc, "<f2").reshape(-1, dim).astype(np.float32))

    def _region_index(self) -> tuple[faiss.Index, np.ndarray, np.ndarray, int]:
        if self._region is None:
            import faiss

            dim = int(self._info["descriptor_dim"])
            index = faiss.IndexFlatIP(dim)
            self._region = (index, np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
            with self._db_lock:
                blobs = self._con.execute("SELECT row, region_descriptors FROM refs ORDER BY row").fetchall()
            self._add_regions([(r, np.frombuffer(b, "<f2").reshape(-1, dim)) for r, b in blobs])
        return self._region

    def _add_regions(self, items: list[tuple[int, np.ndarray]]) -> None:
        """Append (ref row, region descriptors (n, D)) to the in-memory region index when it exists."""
        if self._region is None or not items:
            return
        index, ref_rows, idx, most = self._region
        parts = [d for _, d in items if len(d)]
        if parts:
            index.add(_unit_rows(np.concatenate(parts).astype(np.float32)))
        ref_rows = np.concatenate([ref_rows, *[np.full(len(d), r, np.int64) for r, d in items]])
        idx = np.concatenate([idx, *[np.arange(len(d), dtype=np.int64) for _, d in items]])
        most = max([most, *[len(d) for _, d in items]])
        self._region = (index, ref_rows, idx, most)

    def search_regions(self, queries: np.ndarray, k: int, *, per_reference: bool = False,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` reference crops by cosine for queries (M, D) float32 unnormalised.

        Returns (ref_rows (M, k) int64, region_idx (M, k) int64 = position in :meth:`region_descriptors`,
        cosine (M, k) float32), best first, padded with -1 / -1 / -inf. ``per_reference`` keeps only the
        best crop of each reference (k distinct references).
        """
        q = np.asarray(queries, np.float32)
        dim = int(self._info["descriptor_dim"])
        if q.ndim != 2 or (q.shape[0] and q.shape[1] != dim):
            raise ValueError(f"region queries must be (M, {dim}), got shape {q.shape}")
        k = max(1, int(k))
        m = q.shape[0]
        out_rows = np.full((m, k), -1, np.int64)
        out_idx = np.full((m, k), -1, np.int64)
        out_cos = np.full((m, k), -np.inf, np.float32)
        index, ref_rows, idx, most = self._region_index()
        if m == 0 or index.ntotal == 0:
            return out_rows, out_idx, out_cos
        kk = min(index.ntotal, k * most if per_reference else k)
        cos, hits = index.search(_unit_rows(q), kk)
        for i in range(m):
            seen: set[int] = set()
            j = 0
            for c, h in zip(cos[i], hits[i], strict=True):
                if h < 0 or j == k:
                    break
                r = int(ref_rows[h])
                if per_reference:
                    if r in seen:
                        continue
                    seen.add(r)
                out_rows[i, j], out_idx[i, j], out_cos[i, j] = r, idx[h], c
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

    # ------------------------------------------------------------------------------------------- keypoint voter
    def _feature_chunks(self, start: int, stop: int, size: int = 256) -> Iterator[list[LocalFeatures]]:
        for a in range(start, stop, size):
            yield self.local_features(range(a, min(stop, a + size)))

    def _rows_sha256(self, n: int) -> str:
        """Digest of the first ``n`` rows' (id, content sha256): which references a saved voter's rows are."""
        h = hashlib.sha256()
        for i in range(n):
            h.update(f"{self._ids[i]}\t{self._shas[i]}\n".encode())
        return h.hexdigest()

    def _voter_meta(self, seed: int) -> dict[str, Any] | None:
        """The saved voter's JSON when it fits this index (same local features, seed, and its rows a prefix of
        ours), else None."""
        from matcher.voting import KeypointVoter, VoterFileError

        try:
            meta = KeypointVoter.read_meta(self.path / VOTER_DIR)
            n = int(meta["n_refs"])
        except (VoterFileError, KeyError, TypeError, ValueError):
            return None
        fits = (meta.get("signature") == _canonical(self._info.get("local_signature")) and meta.get("seed") == seed
                and 0 < n <= len(self._ids) and meta.get("rows_sha256") == self._rows_sha256(n))
        return meta if fits else None

    def keypoint_voter(self, *, seed: int | None = None, nprobe: int = 8) -> KeypointVoter:
        """The keypoint voter (:mod:`matcher.voting`) over every reference's local features, row i = reference
        ``ids[i]``: the one saved in ``voter/`` when it fits (rows added since are appended), else one built from
        the feature store chunk by chunk (never all features in memory at once). Saved back when it changed and
        no other process is writing. :class:`IndexStoreError` when the index holds no local features."""
        from matcher.voting import KeypointVoter, VoterFileError

        if self._features is None:
            raise IndexStoreError(f"{self.path}: this index holds no local features (index.local_features off)")
        seed = int(self.config.seed if seed is None else seed)
        with self._voter_lock:
            n = len(self._ids)
            v = self._voter
            if v is None or v.seed != seed or v.n_refs > n:
                v = None
                if self._voter_meta(seed) is not None:
                    with contextlib.suppress(VoterFileError):
                        v = KeypointVoter.load(self.path / VOTER_DIR, nprobe=nprobe)
            changed = False
            if v is not None and v.n_refs < n:
                extra = sum(f.n for chunk in self._feature_chunks(v.n_refs, n) for f in chunk)
                if v.outgrown(len(v) + extra):
                    v = None
                else:
                    for chunk in self._feature_chunks(v.n_refs, n):
                        v.add(chunk)
                    changed = True
            if v is None:
                v = KeypointVoter.from_chunks(lambda: self._feature_chunks(0, n), nprobe=nprobe, seed=seed)
                changed = True
            self._voter = v
            if changed and n:
                self._save_voter(v)
            return v

    def _save_voter(self, v: KeypointVoter) -> None:
        """Write the voter when this process holds the write lock or can take it (else keep it in memory)."""
        meta = {"n_refs": v.n_refs, "rows_sha256": self._rows_sha256(v.n_refs), "seed": v.seed,
                "signature": _canonical(self._info.get("local_signature"))}
        if self._lock_depth:
            v.save(self.path / VOTER_DIR, **meta)
            return
        with contextlib.suppress(IndexStoreError, OSError), _flock(self.path, ""):
            v.save(self.path / VOTER_DIR, **meta)

    # ------------------------------------------------------------------------------------------- writing
    def _get_descriptor(self) -> GlobalDescriptor:
        if self._descriptor is None:
            from matcher.descriptors.extractor import GlobalDescriptor

            self._descriptor = GlobalDescriptor(self.config)
        d = self._descriptor
        model, sha, dim = self._meta()
        diffs = [f"descriptor {k} {_short(a)} vs {_short(b)}" for k, a, b in
                 (("model", model, d.name), ("weights sha256", sha, d.sha256), ("dim", dim, int(d.dim))) if a != b]
        if diffs:
            raise IndexMismatchError(self.path, diffs)
        return d

    def _get_engine(self) -> LocalEngine:
        if self._engine is None:
            from matcher.local.engine import LocalEngine

            self._engine = LocalEngine(self.config)
        sig = _canonical(self._engine.extractor.signature())
        stored = _canonical(self._info.get("local_signature"))
        if sig != stored:
            diffs = [f"local extractor {k} {_short(stored.get(k))} vs {_short(sig.get(k))}"
                     for k in sorted(set(stored) | set(sig)) if stored.get(k) != sig.get(k)]
            raise IndexMismatchError(self.path, diffs)
        return self._engine

    def add_references(self, source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                       progress: bool = True, background: bool = False,
                       batch_size: int | None = None) -> IndexJobSummary:
        """Index the pictures of ``source`` (a folder, a file, or a list of files/folders; ids = file stems).

        Batches of ``batch_size`` (default ``config.index.batch_size``) are described and committed one
        transaction each. Already indexed (id, content) pairs are counted in ``already`` without decoding; an
        id indexed with OTHER content, a repeated id and unreadable files are skipped with a reason. A new id
        whose content is indexed reuses the stored data. ``background`` adds to the background set (global
        descriptor only) instead of the references.
        """
        t_start = time.perf_counter()
        summary = IndexJobSummary(kind="background" if background else "references")
        sec = summary.seconds
        for k in ("read", "decode", "describe", "local", "write"):
            sec[k] = 0.0
        bs = max(1, int(batch_size or self.config.index.batch_size))
        with self._writing():
            paths, passed_over = scan_folder(source) if isinstance(source, (str, os.PathLike)) else \
                scan_folder([Path(s) for s in source])
            summary.skipped.extend(passed_over)
            items: list[tuple[str, Path]] = []
            first: dict[str, Path] = {}
            for p in paths:
                if p.stem in first:
                    summary.skipped.append(SkippedFile(str(p), "duplicate_id", (
                        f"skipped '{p}': id '{p.stem}' is also the id of '{first[p.stem]}' in this job (ids are "
                        "file stems and must be unique)")))
                    continue
                first[p.stem] = p
                items.append((p.stem, p))
            bar = tqdm(total=len(items), desc="background" if background else "indexing", unit="img",
                       disable=not progress)
            try:
                for s in range(0, len(items), bs):
                    self._add_batch(items[s:s + bs], background, summary)
                    bar.set_postfix(added=summary.added, skipped=len(summary.skipped), refresh=False)
                    bar.update(len(items[s:s + bs]))
            finally:
                bar.close()
                t = time.perf_counter()
                self._finish_global()
                sec["write"] += time.perf_counter() - t
            if not background and self.config.pipeline.keypoint_voting and self._features is not None and self._ids:
                meta = self._voter_meta(self.config.seed)
                if meta is None or int(meta["n_refs"]) != len(self._ids):
                    t = time.perf_counter()  # bring the saved voter up to date: queries load it, not build it
                    if progress:
                        print(f"keypoint voter: updating it for {len(self._ids)} references", file=sys.stderr,
                              flush=True)
                    self.keypoint_voter()
                    sec["voter"] = time.perf_counter() - t
        summary.total = len(self._bg_ids) if background else len(self._ids)
        sec["total"] = time.perf_counter() - t_start
        return summary

    def _stored_sha(self, ref_id: str, background: bool) -> str | None:
        if background:
            return self._bg_sha_by_id.get(ref_id)
        row = self._row_by_id.get(ref_id)
        return None if row is None else self._shas[row]

    def _add_batch(self, items: list[tuple[str, Path]], background: bool, summary: IndexJobSummary) -> None:
        """Read, hash and decode one batch, then describe and commit it (one transaction)."""
        sec = summary.seconds
        t0 = time.perf_counter()
        decode = 0.0
        stored_row_by_sha = self._bg_row_by_sha if background else self._row_by_sha
        pending: list[_Pending] = []
        new_by_sha: dict[str, _Pending] = {}
        for ref_id, path in items:
            try:
                data = _read_file(path)
            except ImageLoadError as e:
                summary.skipped.append(_skip(path, e))
                continue
            sha = hashlib.sha256(data).hexdigest()
            old = self._stored_sha(ref_id, background)
            if old is not None:
                if old == sha:
                    summary.already += 1
                else:
                    summary.skipped.append(SkippedFile(str(path), "id_conflict", (
                        f"skipped '{path}': id '{ref_id}' is already indexed with other content (sha256 "
                        f"{old[:16]}..., this file {sha[:16]}...); rename the file or build a new index")))
                continue
            item = _Pending(ref_id, path, sha, len(data))
            if sha in stored_row_by_sha:
                item.copy_of = stored_row_by_sha[sha]
            elif sha not in new_by_sha:
                t = time.perf_counter()
                try:
                    item.image = load_image(data, config=self.config.load)
                except ImageLoadError as e:
                    summary.skipped.append(_skip(path, e))
                    continue
                finally:
                    decode += time.perf_counter() - t
                new_by_sha[sha] = item
            pending.append(item)
        sec["decode"] += decode
        sec["read"] += time.perf_counter() - t0 - decode
        decoded = [it for it in pending if it.image is not None]
        if background:
            self._commit_background(pending, decoded, summary)
        else:
            self._commit_refs(pending, decoded, new_by_sha, summary)

    def _commit_refs(self, pending: list[_Pending], decoded: list[_Pending], new_by_sha: dict[str, _Pending],
                     summary: IndexJobSummary) -> None:
        sec = summary.seconds
        if decoded:
            descriptor = self._get_descriptor()
            engine = self._get_engine() if self._features is not None else None
            store = self._features
            mask = [store is not None and it.sha256 not in store for it in decoded]
            described = describe_references([it.image for it in decoded], descriptor, engine, self.config,
                                            local_mask=mask, seconds=sec)
            new_local: dict[str, LocalFeatures] = {}
            for it, (desc, regs, rdesc, local) in zip(decoded, described, strict=True):
                h, w = it.image.shape[:2]  # type: ignore[union-attr]
                it.record = ReferenceRecord(
                    it.id, str(it.path), int(w), int(h), it.sha256, it.nbytes, desc, [r.tag for r in regs],
                    np.array([r.box for r in regs], np.int32).reshape(-1, 4), rdesc, local)
                it.image = None
                if local is not None:
                    new_local[it.sha256] = local
            if store is not None and new_local:
                t = time.perf_counter()
                store.add(new_local)
                sec["write"] += time.perf_counter() - t
        if not pending:
            return
        t = time.perf_counter()
        now = time.time()
        n0 = len(self._ids)
        values: list[tuple[Any, ...]] = []
        with self._db_lock:
            for j, it in enumerate(pending):
                if it.record is None:  # same content as a stored row or an earlier one of this batch
                    src = new_by_sha.get(it.sha256)
                    if src is not None and src.record is not None:
                        rec = src.record
                        values.append((n0 + j, it.id, str(it.path), rec.width, rec.height, it.sha256, it.nbytes,
                                       now, *_record_blobs(rec)))
                    else:
                        w, h, d, tags, boxes, rdesc = self._con.execute(
                            "SELECT width, height, descriptor, region_tags, region_boxes, region_descriptors "
                            "FROM refs WHERE row = ?", (it.copy_of,)).fetchone()
                        values.append((n0 + j, it.id, str(it.path), w, h, it.sha256, it.nbytes, now, d, tags,
                                       boxes, rdesc))
                else:
                    rec = it.record
                    values.append((n0 + j, it.id, str(it.path), rec.width, rec.height, it.sha256, it.nbytes, now,
                                   *_record_blobs(rec)))
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany(f"INSERT INTO refs ({_REF_COLUMNS}) VALUES ({','.join('?' * 12)})", values)
                self._con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("ROLLBACK")
                raise
        dim = int(self._info["descriptor_dim"])
        ids = [v[1] for v in values]
        desc = np.frombuffer(b"".join(v[8] for v in values), "<f4").reshape(len(values), dim)
        for v in values:
            self._row_by_id[v[1]] = v[0]
            self._row_by_sha.setdefault(v[5], v[0])
            self._ids.append(v[1])
            self._shas.append(v[5])
        assert self._global is not None
        if not self._global.index.is_trained:  # an empty IVF-PQ: never train it on one small batch; flat
            model, sha, _ = self._meta()  # now, converted by _finish_global once the job is done
            self._global = ReferenceIndex.create(dim, model, sha, dataclasses.replace(
                self.config.descriptor, index_type="flat"))
        self._global.add(ids, desc)
        self._global_dirty = True
        self._add_regions([(v[0], np.frombuffer(v[11], "<f2").reshape(-1, dim)) for v in values])
        summary.added += len(values)
        sec["write"] += time.perf_counter() - t

    def _commit_background(self, pending: list[_Pending], decoded: list[_Pending],
                           summary: IndexJobSummary) -> None:
        sec = summary.seconds
        descs: dict[str, bytes] = {}
        if decoded:
            descriptor = self._get_descriptor()
            t = time.perf_counter()
            f = np.asarray(descriptor.describe([it.image for it in decoded]), "<f4")
            sec["describe"] += time.perf_counter() - t
            for it, d in zip(decoded, f, strict=True):
                descs[it.sha256] = d.tobytes()
                it.image = None
        if not pending:
            return
        t = time.perf_counter()
        n0 = len(self._bg_ids)
        values = []
        with self._db_lock:
            for j, it in enumerate(pending):
                blob = descs.get(it.sha256)
                if blob is None:
                    (blob,) = self._con.execute("SELECT descriptor FROM background WHERE row = ?",
                                                (it.copy_of,)).fetchone()
                values.append((n0 + j, it.id, str(it.path), it.sha256, blob))
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany("INSERT INTO background (row, id, path, sha256, descriptor) "
                                      "VALUES (?, ?, ?, ?, ?)", values)
                self._con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("ROLLBACK")
                raise
        for v in values:
            self._bg_ids.append(v[1])
            self._bg_sha_by_id[v[1]] = v[3]
            self._bg_row_by_sha.setdefault(v[3], v[0])
        summary.added += len(values)
        sec["write"] += time.perf_counter() - t

    # ------------------------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the database connection."""
        with self._db_lock:
            self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IndexStore({str(self.path)!r}, {len(self._ids)} references, {len(self._bg_ids)} background)"


def _record_blobs(rec: ReferenceRecord) -> tuple[bytes, str, bytes, bytes]:
    """(descriptor float32, region tags JSON, region boxes int32, region descriptors float16) of a record."""
    return (np.asarray(rec.descriptor, "<f4").reshape(-1).tobytes(), json.dumps(list(rec.region_tags)),
            np.asarray(rec.region_boxes, "<i4").reshape(-1, 4).tobytes(),
            np.asarray(rec.region_descriptors, np.float32).astype("<f2").tobytes())


@contextlib.contextmanager
def _flock(folder: Path, message: str) -> Iterator[None]:
    """Exclusive non-blocking flock on ``folder/write.lock`` (released on exit or process death);
    :class:`IndexStoreError` with ``message`` when another process holds it."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStoreError(message) from None
        yield
    finally:
        os.close(fd)
