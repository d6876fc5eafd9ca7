"""The write side of the on-disk index: adding references (or background pictures) batch by batch.

Each batch of ``config.index.batch_size`` pictures is read and hashed; pictures whose (id, content) is indexed
already are counted without decoding; the others are decoded and described (one batched descriptor pass over the
pictures and their crops, plus local features), their local features are appended to the feature store, then
their rows are committed in ONE SQLite transaction. A crash loses at most the current batch: features written
before the crash are found by content hash and reused on the next run. At the end of a job the faiss index is
saved (converted to IVF-PQ when the collection outgrew a flat one), so is the crop index (``crops/``), and the
keypoint voter is brought up to date, so that query processes load them instead of building them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matcher.io.folders import SkippedFile, scan_folder
from matcher.io.images import ImageLoadError, load_image
from matcher.io.inputs import MemoryPicture
from matcher.io.progress import Progress, no_progress
from matcher.local.types import LocalFeatures
from matcher.references.disk.compat import check_descriptor, check_signature
from matcher.references.disk.lock import write_lock
from matcher.references.disk.schema import (
    GLOBAL_DIR,
    BackgroundRow,
    RefRow,
    ThumbRow,
    count_rows,
    insert_background,
    insert_refs,
    mark_removed,
    read_background,
    read_ref,
    read_thumbnails,
)
from matcher.references.records import DescribedReference, ReferenceRecord, describe_references
from matcher.retrieval.index import ReferenceIndex

if TYPE_CHECKING:  # pragma: no cover
    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine
    from matcher.references.disk.reader import IndexReader

__all__ = ["DescribeReferences", "IndexJobSummary", "IndexWriter", "RemoveSummary", "job_items", "writing"]

# How a batch of decoded references is described: :func:`~matcher.references.records.describe_references` or a
# function with its signature (e.g. one that hands the work to a cluster, :mod:`matcher.cluster.describe`).
DescribeReferences = Callable[..., list[DescribedReference]]

_LOG = logging.getLogger(__name__)


@dataclass
class IndexJobSummary:
    """What one :meth:`IndexWriter.add` call did. ``seconds``: wall time per stage, s."""

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


@dataclass
class RemoveSummary:
    """What one :meth:`IndexWriter.remove` call did: ids ``removed``, ids not in the index (``missing``)."""

    removed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    total: int = 0  # references in the index after the job (removed ones not counted)

    def __str__(self) -> str:
        return (f"removed {len(self.removed)}, not in the index {len(self.missing)}; {self.total} references in "
                "the index")


@dataclass
class _Pending:
    """One row to insert: a new picture (``record``) or a copy of stored content (``copy_of``)."""

    id: str
    path: str  # the file, or <memory:ID>
    sha256: str
    nbytes: int
    record: ReferenceRecord | None = None
    copy_of: int | None = None  # stored row with the same content
    image: np.ndarray | None = None


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


def _skip(path: str, exc: ImageLoadError) -> SkippedFile:
    return SkippedFile(str(path), exc.reason, f"cannot load '{path}': {exc.detail}")


@contextlib.contextmanager
def writing(reader: IndexReader) -> Iterator[None]:
    """Hold the folder's write lock for ``reader`` (re-entrant within the object); state read before it is
    refreshed (another process may have written since the index was opened)."""
    if reader._lock_depth:
        reader._lock_depth += 1
        try:
            yield
        finally:
            reader._lock_depth -= 1
        return
    with write_lock(reader.path, f"{reader.path}: index is being written by another process"):
        reader._lock_depth = 1
        try:
            with reader._db_lock:
                n, nb, n_removed = count_rows(reader._con)
            if n != len(reader._ids) or nb != len(reader._bg_ids) or n_removed != len(reader._removed):
                # another process wrote since we opened
                reader._load_state()
            else:  # features of a crashed writer's last batch may have landed since
                reader._features = reader._open_features()
            yield
        finally:
            reader._lock_depth = 0


def job_items(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
              ) -> tuple[list[tuple[str, Path]], list[SkippedFile]]:
    """The (id, file) pairs an index job over ``source`` (a folder, a file, or a list of files/folders) takes, ids
    being file stems, in scan order, and the files passed over: those the scan refused, and every later file whose
    stem repeats an earlier one's (``duplicate_id``)."""
    paths, passed_over = scan_folder(source) if isinstance(source, (str, os.PathLike)) else \
        scan_folder([Path(s) for s in source])
    items: list[tuple[str, Path]] = []
    first: dict[str, Path] = {}
    for p in paths:
        if p.stem in first:
            passed_over.append(SkippedFile(str(p), "duplicate_id", (
                f"skipped '{p}': id '{p.stem}' is also the id of '{first[p.stem]}' in this job (ids are "
                "file stems and must be unique)")))
            continue
        first[p.stem] = p
        items.append((p.stem, p))
    return items, passed_over


class IndexWriter:
    """Adds pictures to an open index (``reader``) with the given models (loaded on first need when None)."""

    def __init__(self, reader: IndexReader, descriptor: GlobalDescriptor | None = None,
                 engine: LocalEngine | None = None) -> None:
        self.reader = reader
        self._descriptor = descriptor
        self._engine = engine

    # ------------------------------------------------------------------------------------------- models
    def descriptor(self) -> GlobalDescriptor:
        """The descriptor model (the index's: refused when it differs)."""
        if self._descriptor is None:
            from matcher.descriptors.extractor import GlobalDescriptor

            self._descriptor = GlobalDescriptor(self.reader.config)
        check_descriptor(self.reader.path, self.reader._info, self._descriptor)
        return self._descriptor

    def engine(self) -> LocalEngine:
        """The local engine (the index's feature extractor: refused when it differs)."""
        if self._engine is None:
            from matcher.local.engine import LocalEngine

            self._engine = LocalEngine(self.reader.config)
        check_signature(self.reader.path, self.reader._info, self._engine.extractor.signature())
        return self._engine

    # ------------------------------------------------------------------------------------------- the job
    def add(self, source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
            progress: Progress | None = None, background: bool = False,
            batch_size: int | None = None, describe: DescribeReferences | None = None) -> IndexJobSummary:
        """Index the pictures of ``source`` (a folder, a file, or a list of files/folders; ids = file stems).

        Batches of ``batch_size`` (default ``config.index.batch_size``) are described and committed one
        transaction each. Already indexed (id, content) pairs are counted in ``already`` without decoding; an
        id indexed with OTHER content, a repeated id and unreadable files are skipped with a reason. A new id
        whose content is indexed reuses the stored data. ``background`` adds to the background set (global
        descriptor only) instead of the references. ``progress`` is called after each batch with
        ("indexing" or "background", pictures done, pictures in the job), and ("voter", 0, 1) then
        ("voter", 1, 1) around an update of the keypoint voter. ``describe``: what describes each batch of new
        references (default :func:`~matcher.references.records.describe_references`, same signature); only this
        writer writes, whoever describes.
        """
        items, passed_over = job_items(source)
        return self._run(list(items), passed_over, progress, background, batch_size,
                         describe or describe_references)

    def add_pictures(self, pictures: Sequence[MemoryPicture], *, progress: Progress | None = None,
                     background: bool = False, batch_size: int | None = None) -> IndexJobSummary:
        """Index pictures given in memory or by explicit path, each under its own id (checked, unique:
        :func:`~matcher.io.inputs.memory_pictures`); otherwise as :meth:`add`. The content of encoded bytes is
        the file's (adding a file's bytes under its indexed id counts as ``already``)."""
        items = [(p.id, p.path if p.path is not None else p) for p in pictures]
        return self._run(items, [], progress, background, batch_size, describe_references)

    def _run(self, items: list[tuple[str, Path | MemoryPicture]], passed_over: list[SkippedFile],
             progress: Progress | None, background: bool, batch_size: int | None,
             describe: DescribeReferences) -> IndexJobSummary:
        """The indexing job over (id, file or in-memory picture) ``items``, batch by batch, new references described
        by ``describe`` (see :meth:`add`)."""
        r = self.reader
        progress = progress or no_progress
        t_start = time.perf_counter()
        summary = IndexJobSummary(kind="background" if background else "references")
        sec = summary.seconds
        for k in ("read", "decode", "describe", "local", "write"):
            sec[k] = 0.0
        bs = max(1, int(batch_size or r.config.index.batch_size))
        stage = "background" if background else "indexing"
        with writing(r):
            summary.skipped.extend(passed_over)
            progress(stage, 0, len(items))
            try:
                for s in range(0, len(items), bs):
                    self._add_batch(items[s:s + bs], background, summary, describe)
                    progress(stage, min(len(items), s + bs), len(items))
            finally:
                t = time.perf_counter()
                self._finish_global()
                sec["write"] += time.perf_counter() - t
            if not background and len(r) and not r.crops_saved():  # after a failed job, readers build it
                t = time.perf_counter()
                r.save_crops()  # query processes map it instead of each building it from the database
                sec["write"] += time.perf_counter() - t
            if (not background and r.config.pipeline.keypoint_voting and r._features is not None and len(r)
                    and not r.voter_is_current(r.config.seed)):
                t = time.perf_counter()  # bring the saved voter up to date: queries load it, not build it
                _LOG.info("keypoint voter: updating it for %d references", len(r))
                progress("voter", 0, 1)
                r.keypoint_voter()
                progress("voter", 1, 1)
                sec["voter"] = time.perf_counter() - t
        summary.total = len(r._bg_ids) if background else len(r)
        sec["total"] = time.perf_counter() - t_start
        return summary

    def remove(self, ids: Sequence[str]) -> RemoveSummary:
        """Remove references ``ids`` from the index, ONE transaction: no search returns them again (the faiss
        indexes and the keypoint voter skip their rows; nothing is rebuilt) and their ids may be indexed again.
        Ids not in the index are listed in ``missing``. The global index is saved at once."""
        r = self.reader
        summary = RemoveSummary()
        with writing(r):
            rows: dict[int, str] = {}
            for ref_id in dict.fromkeys(str(i) for i in ids):
                row = r._row_by_id.get(ref_id)
                if row is None:
                    summary.missing.append(ref_id)
                else:
                    rows[row] = ref_id
            if rows:
                with r._db_lock:
                    mark_removed(r._con, rows, time.time())
                r._removed_refs(rows)
                t = time.perf_counter()
                assert r._global is not None
                r._global.save(r.path / GLOBAL_DIR)
                r._global_dirty = False
                _LOG.info("removed %d references in %.2fs", len(rows), time.perf_counter() - t)
            summary.removed = list(rows.values())
        summary.total = r.info["count"]
        return summary

    def _stored_sha(self, ref_id: str, background: bool) -> str | None:
        r = self.reader
        if background:
            return r._bg_sha_by_id.get(ref_id)
        row = r._row_by_id.get(ref_id)
        return None if row is None else r._shas[row]

    def _add_batch(self, items: list[tuple[str, Path | MemoryPicture]], background: bool,
                   summary: IndexJobSummary, describe: DescribeReferences) -> None:
        """Read, hash and decode one batch, then describe (``describe``) and commit it (one transaction)."""
        r = self.reader
        sec = summary.seconds
        t0 = time.perf_counter()
        decode = 0.0
        stored_row_by_sha = r._bg_row_by_sha if background else r._row_by_sha
        pending: list[_Pending] = []
        new_by_sha: dict[str, _Pending] = {}
        for ref_id, src in items:
            path = str(src) if isinstance(src, Path) else src.label
            try:
                if isinstance(src, Path):
                    data: Any = _read_file(src)
                    sha, nbytes = hashlib.sha256(data).hexdigest(), len(data)
                else:
                    sha, nbytes, data = src.content()
            except ImageLoadError as e:
                summary.skipped.append(_skip(path, e))
                continue
            old = self._stored_sha(ref_id, background)
            if old is not None:
                if old == sha:
                    summary.already += 1
                else:
                    summary.skipped.append(SkippedFile(str(path), "id_conflict", (
                        f"skipped '{path}': id '{ref_id}' is already indexed with other content (sha256 "
                        f"{old[:16]}..., this file {sha[:16]}...); rename the file or build a new index")))
                continue
            item = _Pending(ref_id, path, sha, nbytes)
            if sha in stored_row_by_sha:
                item.copy_of = stored_row_by_sha[sha]
            elif sha not in new_by_sha:
                t = time.perf_counter()
                try:
                    item.image = load_image(data, config=r.config.load)
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
            self._commit_refs(pending, decoded, new_by_sha, summary, describe)

    def _commit_refs(self, pending: list[_Pending], decoded: list[_Pending], new_by_sha: dict[str, _Pending],
                     summary: IndexJobSummary, describe: DescribeReferences) -> None:
        r = self.reader
        sec = summary.seconds
        if decoded:
            descriptor = self.descriptor()
            engine = self.engine() if r._features is not None else None
            store = r._features
            mask = [store is not None and it.sha256 not in store for it in decoded]
            described = describe([it.image for it in decoded], descriptor, engine, r.config,
                                 local_mask=mask, seconds=sec)
            new_local: dict[str, LocalFeatures] = {}
            for it, d in zip(decoded, described, strict=True):
                h, w = it.image.shape[:2]  # type: ignore[union-attr]
                it.record = ReferenceRecord(
                    it.id, str(it.path), int(w), int(h), it.sha256, it.nbytes, d.descriptor,
                    [g.tag for g in d.regions], np.array([g.box for g in d.regions], np.int32).reshape(-1, 4),
                    d.region_descriptors, d.local, d.thumbnail)
                it.image = None
                if d.local is not None:
                    new_local[it.sha256] = d.local
            if store is not None and new_local:
                t = time.perf_counter()
                store.add(new_local)
                sec["write"] += time.perf_counter() - t
        if not pending:
            return
        t = time.perf_counter()
        now = time.time()
        n0 = len(r)
        rows: list[RefRow] = []
        thumbs: list[ThumbRow] = []
        with r._db_lock:
            stored_thumbs = read_thumbnails(r._con, [it.copy_of for it in pending if it.copy_of is not None])
            for j, it in enumerate(pending):
                where = {"id": it.id, "path": str(it.path), "sha256": it.sha256, "nbytes": it.nbytes, "added": now}
                src = it if it.record is not None else new_by_sha.get(it.sha256)
                if src is not None and src.record is not None:  # described now (this item or an earlier one)
                    rows.append(RefRow.from_record(n0 + j, src.record, **where))
                    if src.record.thumbnail is not None:
                        thumbs.append(ThumbRow.from_array(n0 + j, src.record.thumbnail))
                else:  # same content as a stored row
                    assert it.copy_of is not None
                    rows.append(read_ref(r._con, it.copy_of).copy_as(n0 + j, **where))
                    old = stored_thumbs.get(it.copy_of)
                    if old is not None:
                        thumbs.append(ThumbRow(n0 + j, old.width, old.height, old.pixels))
            insert_refs(r._con, rows, thumbs)
        r._appended_refs(rows)
        summary.added += len(rows)
        sec["write"] += time.perf_counter() - t

    def _commit_background(self, pending: list[_Pending], decoded: list[_Pending],
                           summary: IndexJobSummary) -> None:
        r = self.reader
        sec = summary.seconds
        descs: dict[str, bytes] = {}
        if decoded:
            descriptor = self.descriptor()
            t = time.perf_counter()
            f = np.asarray(descriptor.describe([it.image for it in decoded]), "<f4")
            sec["describe"] += time.perf_counter() - t
            for it, d in zip(decoded, f, strict=True):
                descs[it.sha256] = d.tobytes()
                it.image = None
        if not pending:
            return
        t = time.perf_counter()
        n0 = len(r._bg_ids)
        rows: list[BackgroundRow] = []
        with r._db_lock:
            for j, it in enumerate(pending):
                blob = descs.get(it.sha256)
                if blob is None:
                    assert it.copy_of is not None
                    blob = read_background(r._con, it.copy_of).descriptor
                rows.append(BackgroundRow(n0 + j, it.id, str(it.path), it.sha256, blob))
            insert_background(r._con, rows)
        r._appended_background(rows)
        summary.added += len(rows)
        sec["write"] += time.perf_counter() - t

    def _finish_global(self) -> None:
        """Convert to IVF-PQ when the collection has outgrown a flat index ("auto"), then save if changed."""
        r = self.reader
        assert r._global is not None
        cfg = r.config.descriptor
        want = cfg.index_type if cfg.index_type != "auto" else (
            "ivfpq" if len(r) > cfg.index_threshold else "flat")
        if want == "ivfpq" and r._global.meta.get("index_type") != "ivfpq" and len(r):
            model, sha, dim = r._meta()
            gi = ReferenceIndex.from_rows(dim, model, sha, dataclasses.replace(cfg, index_type="ivfpq"), r.ids,
                                          r.global_descriptors(), r.removed_rows.tolist())
            r._global, r._global_dirty = gi, True
        if r._global_dirty:
            r._global.save(r.path / GLOBAL_DIR)
            r._global_dirty = False
