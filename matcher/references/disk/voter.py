"""The index's keypoint voter on disk (``voter/``): which saved voter fits the index, bringing it up to date, and
saving it back.

A saved voter fits when it was built from the same local features (extractor signature), with the same seed and
codes (``pipeline.voting_codes``; an exact voter, below ``exact_below`` vectors, fits every codes setting), and its
rows are a prefix of the index's (a digest of their (id, sha256)). Rows added since are appended without
retraining, unless the voter has outgrown its training (:meth:`~matcher.retrieval.voting.KeypointVoter.outgrown`),
when it is rebuilt chunk by chunk from the feature store. It is saved back (atomically, a new faiss file then its
JSON) when it changed and this process holds, or can take, the folder's write lock; on a read-only medium it is
kept in memory only.

A voter that covers every reference is memory-mapped (read-only, its pages shared by every process querying the
index); one that must grow is read into memory. A saved voter whose file was truncated or changed since it was
saved (size or CRC-32, :meth:`~matcher.retrieval.voting.KeypointVoter.verify_file`) is refused with a warning naming
the file, and rebuilt from the feature store (the source of truth, CRC-checked shard by shard); the rebuilt one
replaces it on disk when the folder is writable. The matches are then those of a sound index, at the cost of the
rebuild.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from matcher.references.disk.compat import canonical
from matcher.references.disk.lock import write_lock
from matcher.references.disk.schema import VOTER_DIR, IndexStoreError
from matcher.retrieval.voting import KeypointVoter, VoterCorruptError, VoterFileError

if TYPE_CHECKING:  # pragma: no cover
    from matcher.references.disk.reader import IndexReader

__all__ = ["SavedVoter"]

_LOG = logging.getLogger(__name__)


class SavedVoter:
    """The voter of one open index (kept in memory once read or built)."""

    def __init__(self, reader: IndexReader) -> None:
        self._reader = reader
        self._voter: KeypointVoter | None = None
        self._lock = threading.Lock()

    def _signature(self) -> Any:
        return canonical(self._reader._info.get("local_signature"))

    def _codes(self) -> str:
        return str(self._reader.config.pipeline.voting_codes)

    def meta(self, seed: int) -> dict[str, Any] | None:
        """The saved voter's JSON when it fits this index (same local features, seed, codes, and its rows a prefix
        of the index's), else None."""
        r = self._reader
        try:
            meta = KeypointVoter.read_meta(r.path / VOTER_DIR)
            n = int(meta["n_refs"])
            codes = str(meta.get("codes", "flat")) if int(meta["trained_on"]) else self._codes()
        except (VoterFileError, KeyError, TypeError, ValueError):
            return None
        fits = (meta.get("signature") == self._signature() and meta.get("seed") == seed and codes == self._codes()
                and 0 < n <= len(r) and meta.get("rows_sha256") == r._rows_sha256(n))
        return meta if fits else None

    def is_current(self, seed: int) -> bool:
        """True when a fitting saved voter covers every reference."""
        meta = self.meta(seed)
        return meta is not None and int(meta["n_refs"]) == len(self._reader)

    def _load(self, meta: dict[str, Any], nprobe: int) -> KeypointVoter | None:
        """The fitting saved voter (memory-mapped when it covers every reference); None, with a warning naming the
        file, when it was truncated or tampered with or cannot be read."""
        r = self._reader
        try:
            return KeypointVoter.load(r.path / VOTER_DIR, nprobe=nprobe, mmap=int(meta["n_refs"]) == len(r))
        except VoterCorruptError as e:
            _LOG.warning("refused the saved keypoint voter: %s; rebuilding it from the feature store", e)
        except VoterFileError as e:
            _LOG.warning("cannot use the saved keypoint voter (%s); rebuilding it from the feature store", e)
        return None

    def get(self, *, seed: int | None = None, nprobe: int = 8) -> KeypointVoter:
        """The up-to-date voter over every reference (see the module docstring)."""
        r = self._reader
        if r._features is None:
            raise IndexStoreError(f"{r.path}: this index holds no local features (index.local_features off)")
        seed = int(r.config.seed if seed is None else seed)
        codes = self._codes()
        with self._lock:
            n = len(r)
            v = self._voter
            if v is None or v.seed != seed or v.n_refs > n or (v.trained_on and v.codes != codes):
                v = None
                meta = self.meta(seed)
                if meta is not None:
                    v = self._load(meta, nprobe)
            changed = False
            if v is not None and v.n_refs < n:
                extra = sum(f.n for chunk in r.feature_chunks(v.n_refs, n) for f in chunk)
                if v.outgrown(len(v) + extra):
                    v = None
                else:
                    for chunk in r.feature_chunks(v.n_refs, n):
                        v.add(chunk)
                    changed = True
            if v is None:
                v = KeypointVoter.from_chunks(lambda: r.feature_chunks(0, n), nprobe=nprobe, seed=seed, codes=codes)
                changed = True
            self._voter = v
            if changed and n:
                self._save(v)
            return v

    def _save(self, v: KeypointVoter) -> None:
        """Write the voter when this process holds the write lock or can take it (else keep it in memory; a
        read-only medium is not tried)."""
        r = self._reader
        if not r.writable:
            return
        meta = {"n_refs": v.n_refs, "rows_sha256": r._rows_sha256(v.n_refs), "seed": v.seed,
                "signature": self._signature()}
        if r._lock_depth:
            v.save(r.path / VOTER_DIR, **meta)
            return
        with contextlib.suppress(IndexStoreError, OSError), write_lock(r.path, ""):
            v.save(r.path / VOTER_DIR, **meta)
