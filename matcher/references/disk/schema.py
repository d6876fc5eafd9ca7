"""The on-disk index's SQLite database: its schema, its named rows, and the few statements that read and write
them (each write batch is one transaction).

Tables::

    info        key TEXT -> value (JSON): format, format version, descriptor model / weights sha256 / dim, local
                extractor signature, the configuration the index was built with
    refs        one row per reference = its faiss row: id, path, size, content sha256, global descriptor (float32),
                crop tags (JSON), crop boxes (int32), crop descriptors (float16)
    background  the background set for score normalisation: id, path, sha256, global descriptor (float32)
    thumbnails  per reference row, its grey thumbnail for the dense alignment check (zlib-compressed uint8);
                indexes written before it existed lack the table or some rows (the check is then skipped)
    removed     the reference rows removed from the index (``icd index --remove``): row, the id it had, when; the
                ``refs`` row stays (rows are faiss rows) with its id replaced by a tombstone (:func:`tombstone`),
                so that the id can be indexed again
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matcher.references.records import ReferenceRecord

__all__ = [
    "DB_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GLOBAL_DIR",
    "LOCAL_DIR",
    "LOCK_NAME",
    "SKIPPED_NAME",
    "VOTER_DIR",
    "BackgroundRow",
    "IndexMismatchError",
    "IndexStoreError",
    "RefRow",
    "ThumbRow",
    "connect",
    "count_rows",
    "create_database",
    "insert_background",
    "insert_refs",
    "mark_removed",
    "read_background",
    "read_ref",
    "read_removed",
    "read_thumbnails",
    "tombstone",
]

FORMAT_NAME = "icd-matcher reference index"
FORMAT_VERSION = 1
DB_NAME = "index.sqlite"
LOCK_NAME = "write.lock"
LOCAL_DIR = "local"
GLOBAL_DIR = "global"
VOTER_DIR = "voter"
SKIPPED_NAME = "skipped.csv"

SCHEMA = """
CREATE TABLE info(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs(row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, path TEXT NOT NULL, width INTEGER NOT NULL,
                  height INTEGER NOT NULL, sha256 TEXT NOT NULL, nbytes INTEGER NOT NULL, added REAL NOT NULL,
                  descriptor BLOB NOT NULL, region_tags TEXT NOT NULL, region_boxes BLOB NOT NULL,
                  region_descriptors BLOB NOT NULL);
CREATE INDEX refs_sha256 ON refs(sha256);
CREATE TABLE background(row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, path TEXT NOT NULL,
                        sha256 TEXT NOT NULL, descriptor BLOB NOT NULL);
CREATE INDEX background_sha256 ON background(sha256);
CREATE TABLE thumbnails(row INTEGER PRIMARY KEY, width INTEGER NOT NULL, height INTEGER NOT NULL,
                        pixels BLOB NOT NULL);
CREATE TABLE removed(row INTEGER PRIMARY KEY, id TEXT NOT NULL, removed REAL NOT NULL);
"""
_REMOVED = "CREATE TABLE IF NOT EXISTS removed(row INTEGER PRIMARY KEY, id TEXT NOT NULL, removed REAL NOT NULL)"
_THUMBNAILS = """CREATE TABLE IF NOT EXISTS thumbnails(row INTEGER PRIMARY KEY, width INTEGER NOT NULL,
                 height INTEGER NOT NULL, pixels BLOB NOT NULL)"""


class IndexStoreError(ValueError):
    """A folder that is not a usable index (missing, not an index, other format version, corrupt, locked)."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another descriptor model or data-shaping configuration; ``differences`` lists
    them as "key stored vs requested"."""

    def __init__(self, path: Path, differences: list[str]) -> None:
        super().__init__(f"{path}: index was built with other settings (index vs requested): "
                         + "; ".join(differences) + " - use the index's settings or build a new index")
        self.differences = differences


@dataclass(frozen=True)
class RefRow:
    """One row of ``refs``, its fields in column order (blobs as stored: descriptor float32 little-endian, region
    tags JSON, region boxes int32 (n, 4), region descriptors float16 (n, D))."""

    row: int
    id: str
    path: str
    width: int
    height: int
    sha256: str
    nbytes: int
    added: float
    descriptor: bytes
    region_tags: str
    region_boxes: bytes
    region_descriptors: bytes

    @classmethod
    def from_record(cls, row: int, record: ReferenceRecord, *, id: str, path: str, sha256: str, nbytes: int,
                    added: float) -> RefRow:
        """The row of a described picture (``record``) stored under ``id`` / ``path``."""
        return cls(row, id, path, int(record.width), int(record.height), sha256, int(nbytes), added,
                   np.asarray(record.descriptor, "<f4").reshape(-1).tobytes(), json.dumps(list(record.region_tags)),
                   np.asarray(record.region_boxes, "<i4").reshape(-1, 4).tobytes(),
                   np.asarray(record.region_descriptors, np.float32).astype("<f2").tobytes())

    def copy_as(self, row: int, *, id: str, path: str, sha256: str, nbytes: int, added: float) -> RefRow:
        """This row's picture data stored again as another reference (same content, another id)."""
        return dataclasses.replace(self, row=row, id=id, path=path, sha256=sha256, nbytes=nbytes, added=added)

    def descriptor_array(self) -> np.ndarray:
        """(D,) float32 global descriptor."""
        return np.frombuffer(self.descriptor, "<f4").astype(np.float32)

    def region_descriptor_array(self, dim: int) -> np.ndarray:
        """(n, D) float16 crop descriptors, as stored."""
        return np.frombuffer(self.region_descriptors, "<f2").reshape(-1, dim)


@dataclass(frozen=True)
class ThumbRow:
    """One row of ``thumbnails``: reference ``row``'s grey thumbnail, ``pixels`` zlib-compressed uint8 (h, w)."""

    row: int
    width: int
    height: int
    pixels: bytes

    @classmethod
    def from_array(cls, row: int, thumb: np.ndarray) -> ThumbRow:
        t = np.ascontiguousarray(thumb, np.uint8)
        return cls(row, int(t.shape[1]), int(t.shape[0]), zlib.compress(t.tobytes(), 1))

    def array(self) -> np.ndarray:
        """The (height, width) uint8 thumbnail."""
        return np.frombuffer(zlib.decompress(self.pixels), np.uint8).reshape(self.height, self.width).copy()


@dataclass(frozen=True)
class BackgroundRow:
    """One row of ``background`` (descriptor: float32 little-endian bytes)."""

    row: int
    id: str
    path: str
    sha256: str
    descriptor: bytes


_REF_FIELDS = tuple(f.name for f in dataclasses.fields(RefRow))
_BACKGROUND_FIELDS = tuple(f.name for f in dataclasses.fields(BackgroundRow))
_THUMB_FIELDS = tuple(f.name for f in dataclasses.fields(ThumbRow))


def create_database(folder: Path, info: dict[str, Any]) -> None:
    """Write a new, empty ``folder/index.sqlite`` holding ``info``: built aside, fsynced and renamed in (the caller
    holds the folder's write lock)."""
    tmp = folder / f".{DB_NAME}.creating"
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        with con:
            con.executescript(SCHEMA)
            con.executemany("INSERT INTO info VALUES (?, ?)",
                            [(k, json.dumps(v, sort_keys=True)) for k, v in info.items()])
    finally:
        con.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / DB_NAME)


def connect(db: Path, format_name: str = FORMAT_NAME, format_version: int = FORMAT_VERSION,
            ) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """Open an index database (WAL journal where the medium allows it) and read its ``info``;
    :class:`IndexStoreError` naming the file when it is not an index of this format version or is corrupt. In a
    folder this process cannot write (a read-only medium) the database is opened read-only and nothing is written
    (:func:`_connect_read_only`)."""
    read_only = not os.access(db.parent, os.W_OK)
    try:
        con = _connect_read_only(db) if read_only else sqlite3.connect(db, timeout=30.0, isolation_level=None,
                                                                      check_same_thread=False)
    except sqlite3.Error as e:
        raise IndexStoreError(f"{db}: cannot open the index database ({e})") from None
    try:
        if not read_only:
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
    if info.get("format") != format_name:
        con.close()
        raise IndexStoreError(f"{db}: not an icd-matcher reference index (format {info.get('format')!r})")
    if info.get("format_version") != format_version:
        con.close()
        v = info.get("format_version")
        age = "a newer" if isinstance(v, int) and v > format_version else "an older"
        raise IndexStoreError(f"{db}: index format version {v} was written by {age} icd-matcher; this build "
                              f"reads version {format_version} - rebuild the index")
    return con, info


def _connect_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection to ``db`` in a folder this process cannot write: ``mode=ro`` (sees a writer's commits
    when one is at work, through its WAL files), else, when SQLite cannot open it so (a WAL database whose
    ``-shm`` file cannot be created: a read-only medium, where no writer can be), ``immutable=1``."""
    uri = db.resolve().as_uri()
    for query in ("mode=ro", "mode=ro&immutable=1"):
        con = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=30.0, isolation_level=None,
                              check_same_thread=False)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:
            con.close()
            if query != "mode=ro":
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def count_rows(con: sqlite3.Connection) -> tuple[int, int, int]:
    """(references, background pictures, removed references) in the database."""
    has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'removed'").fetchone()
    return (con.execute("SELECT COUNT(*) FROM refs").fetchone()[0],
            con.execute("SELECT COUNT(*) FROM background").fetchone()[0],
            con.execute("SELECT COUNT(*) FROM removed").fetchone()[0] if has else 0)


def read_ref(con: sqlite3.Connection, row: int) -> RefRow:
    """The ``refs`` row ``row`` (KeyError when absent)."""
    found = con.execute(f"SELECT {', '.join(_REF_FIELDS)} FROM refs WHERE row = ?", (int(row),)).fetchone()
    if found is None:
        raise KeyError(f"no reference row {row}")
    return RefRow(*found)


def read_background(con: sqlite3.Connection, row: int) -> BackgroundRow:
    """The ``background`` row ``row`` (KeyError when absent)."""
    found = con.execute(f"SELECT {', '.join(_BACKGROUND_FIELDS)} FROM background WHERE row = ?",
                        (int(row),)).fetchone()
    if found is None:
        raise KeyError(f"no background row {row}")
    return BackgroundRow(*found)


def _insert(con: sqlite3.Connection, tables: Sequence[tuple[str, Sequence[str], Iterable[Any]]]) -> None:
    """Insert rows into several tables, ``(table, fields, rows of dataclasses with those fields)`` each, in ONE
    transaction (rolled back on any error)."""
    try:
        con.execute("BEGIN IMMEDIATE")
        for table, fields, rows in tables:
            values = [tuple(getattr(r, f) for f in fields) for r in rows]
            con.executemany(f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({','.join('?' * len(fields))})",
                            values)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise


def insert_refs(con: sqlite3.Connection, rows: Sequence[RefRow], thumbs: Sequence[ThumbRow] = ()) -> None:
    """Append reference rows and their thumbnails, one transaction (the thumbnails table is added to an index
    that predates it)."""
    if thumbs:
        con.execute(_THUMBNAILS)
    _insert(con, [("refs", _REF_FIELDS, rows), ("thumbnails", _THUMB_FIELDS, thumbs)] if thumbs
            else [("refs", _REF_FIELDS, rows)])


def insert_background(con: sqlite3.Connection, rows: Sequence[BackgroundRow]) -> None:
    """Append background rows, one transaction."""
    _insert(con, [("background", _BACKGROUND_FIELDS, rows)])


def tombstone(row: int) -> str:
    """The id a removed reference row is stored under (a NUL-led name no file stem or accepted id can have)."""
    return f"\x00removed:{int(row)}"


def read_removed(con: sqlite3.Connection) -> dict[int, str]:
    """Removed reference rows -> the ids they had (an index without the table: none)."""
    has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'removed'").fetchone()
    if not has:
        return {}
    return {int(r): str(i) for r, i in con.execute("SELECT row, id FROM removed ORDER BY row")}


def mark_removed(con: sqlite3.Connection, rows: dict[int, str], when: float) -> None:
    """Record reference ``rows`` (row -> id) as removed and free their ids, ONE transaction."""
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute(_REMOVED)
        con.executemany("INSERT INTO removed (row, id, removed) VALUES (?, ?, ?)",
                        [(int(r), i, when) for r, i in rows.items()])
        con.executemany("UPDATE refs SET id = ? WHERE row = ?", [(tombstone(r), int(r)) for r in rows])
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise


def read_thumbnails(con: sqlite3.Connection, rows: Sequence[int]) -> dict[int, ThumbRow]:
    """The stored thumbnails of ``rows`` (rows without one, or an index without the table: absent)."""
    has = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'thumbnails'").fetchone()
    uniq = sorted({int(r) for r in rows})
    out: dict[int, ThumbRow] = {}
    if not has:
        return out
    for s in range(0, len(uniq), 500):
        chunk = uniq[s:s + 500]
        q = f"SELECT {', '.join(_THUMB_FIELDS)} FROM thumbnails WHERE row IN ({','.join('?' * len(chunk))})"
        for found in con.execute(q, chunk):
            out[found[0]] = ThumbRow(*found)
    return out
