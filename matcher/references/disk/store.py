"""The persistent reference index (``icd index``): one folder holding everything the matcher needs about a
reference collection, appendable batch by batch and safe against crashes.

Layout::

    index.sqlite   info (format, model, config), refs (one row per reference = its faiss row), background
                   (:mod:`~matcher.references.disk.schema`)
    local/         FeatureStore of full-picture local features, keyed by the file's sha256
    global/        the saved faiss ReferenceIndex of the global descriptors (rebuilt from index.sqlite when
                   missing or stale, so a crash never leaves a wrong index in use)
    voter/         the saved keypoint voter over the references' local features (:mod:`~matcher.references.disk.
                   voter`)
    write.lock     held by the one writer (:mod:`~matcher.references.disk.lock`)

:class:`IndexStore` opens or creates the folder, checks that it fits the requested configuration
(:mod:`~matcher.references.disk.compat`), reads it (:class:`~matcher.references.disk.reader.IndexReader`) and adds
to it (:class:`~matcher.references.disk.writer.IndexWriter`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from matcher.config import MatcherConfig
from matcher.io.progress import Progress, ProgressBars
from matcher.references.disk.compat import check_config, check_signature, stored_config
from matcher.references.disk.lock import write_lock
from matcher.references.disk.reader import DEFAULT_CACHE_BYTES, IndexReader
from matcher.references.disk.schema import (
    DB_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    GLOBAL_DIR,
    LOCAL_DIR,
    LOCK_NAME,
    SKIPPED_NAME,
    VOTER_DIR,
    IndexMismatchError,
    IndexStoreError,
    connect,
    create_database,
)
from matcher.references.disk.writer import DescribeReferences, IndexJobSummary, IndexWriter, RemoveSummary

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine

__all__ = ["DB_NAME", "FORMAT_VERSION", "SKIPPED_NAME", "IndexJobSummary", "IndexMismatchError", "IndexStore",
           "IndexStoreError", "RemoveSummary"]


@contextlib.contextmanager
def _progress(progress: bool | Progress) -> Iterator[Progress | None]:
    """The callback a job reports to: progress bars on stderr (closed afterwards) for True, else the given callback
    (None for False)."""
    if progress is not True:
        yield progress or None
        return
    bars = ProgressBars()
    try:
        yield bars
    finally:
        bars.close()


class IndexStore(IndexReader):
    """An on-disk reference index folder. Make with :meth:`open`; fill with :meth:`add_references`."""

    def __init__(self, path: Path, con: sqlite3.Connection, info: dict[str, Any], config: MatcherConfig,
                 descriptor: GlobalDescriptor | None, cache_bytes: int, engine: LocalEngine | None = None) -> None:
        super().__init__(path, con, info, config, cache_bytes)
        self._writer = IndexWriter(self, descriptor, engine)

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: MatcherConfig | None = None, *, create: bool = False,
             descriptor: GlobalDescriptor | None = None, engine: LocalEngine | None = None,
             cache_bytes: int = DEFAULT_CACHE_BYTES) -> IndexStore:
        """Open the index folder ``path``; ``create`` makes a new one (or opens an existing compatible one).

        ``config`` None uses the configuration stored with the index (a new index gets the defaults); a config
        or ``descriptor`` whose data-shaping settings differ from the stored ones raises
        :class:`IndexMismatchError`. A folder that is not an index, another format version or a corrupt
        database raises :class:`IndexStoreError`. ``descriptor`` / ``engine``: loaded models to describe added
        pictures with (loaded on first need when None). ``cache_bytes``: in-memory LRU of local features, bytes.
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
        con, info = connect(db)
        try:
            stored = stored_config(db, info)
            if config is None:
                config = stored
            else:
                check_config(p, info, stored, config, descriptor)
            if info.get("local_signature") is not None:  # the queries' local features must be the references'
                from matcher.local.features import create_extractor

                check_signature(p, info, create_extractor(config.local, device="cpu").signature())
            return cls(p, con, info, config, descriptor, cache_bytes, engine)
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
        with write_lock(p, f"{p}: index is being created by another process"):
            if not (p / DB_NAME).exists():
                create_database(p, info)
        return descriptor

    def add_references(self, source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                       progress: bool | Progress = False, background: bool = False,
                       batch_size: int | None = None, describe: DescribeReferences | None = None) -> IndexJobSummary:
        """Index the pictures of ``source`` (a folder, a file, or a list of files/folders; ids = file stems); see
        :meth:`IndexWriter.add <matcher.references.disk.writer.IndexWriter.add>`. ``progress``: True for
        progress bars on stderr, or a :data:`~matcher.io.progress.Progress` callback. ``describe``: what describes
        the new references of each batch (default: this process, with the store's models)."""
        with _progress(progress) as report:
            return self._writer.add(source, progress=report, background=background, batch_size=batch_size,
                                    describe=describe)

    def add_images(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]], *, progress: bool | Progress = False,
                   background: bool = False, batch_size: int | None = None) -> IndexJobSummary:
        """Index pictures given with their ids: ``{id: picture}`` or ``[(id, picture), ...]``, a picture being
        encoded bytes, a numpy array, a PIL image or a path (:mod:`matcher.io.inputs`); as :meth:`add_references`
        otherwise (an id indexed with the same content counts as ``already``, with other content it is skipped
        as ``id_conflict``; undecodable pictures are skipped). Bad or repeated ids raise :class:`ValueError`."""
        from matcher.io.inputs import memory_pictures

        pictures = memory_pictures(items)
        with _progress(progress) as report:
            return self._writer.add_pictures(pictures, progress=report, background=background, batch_size=batch_size)

    def remove(self, ids: Sequence[str]) -> RemoveSummary:
        """Remove references ``ids``; see :meth:`IndexWriter.remove <matcher.references.disk.writer.IndexWriter.
        remove>` (no rebuild; a removed reference is never returned again; its id may be indexed again)."""
        return self._writer.remove(ids)

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
        return (f"IndexStore({str(self.path)!r}, {len(self._ids) - len(self._removed)} references, "
                f"{len(self._bg_ids)} background)")
