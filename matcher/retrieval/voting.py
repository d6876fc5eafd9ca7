"""Candidates by local-feature votes: every query keypoint votes for the reference owning its nearest reference
keypoint (as the ISC 3rd-place solution did). Catches heavy crops and mosaics that global descriptors miss.

The voter indexes all reference RootSIFT descriptors of a store in faiss (exact below ``exact_below`` vectors,
an IVF index above it with 2 sqrt(n) lists, trained on a seeded sample). The IVF lists hold the vectors as
``codes`` (:data:`VOTER_CODES`): "flat" float32 (512 bytes per keypoint), "sq8" 8-bit scalar quantised (128
bytes), "pq32" / "pq64" product quantised with 32 / 64 sub-quantisers of 8 bits (32 / 64 bytes), "pq32fs" /
"pq64fs" with 32 / 64 sub-quantisers of 4 bits in faiss' fast-scan layout (16 / 32 bytes; lists stored in blocks of
32 codes and scanned with SIMD lookups in registers: the list scan ~2x faster than 8-bit codes at 10,000
references; faiss 1.15 does not memory-map these lists, it reads them into the process), plus 8 bytes of row id
per keypoint in every case. The exact index below ``exact_below`` stays float32 whatever ``codes`` says: it
is at most ~100 MB and exact, and compression only pays at scale. A reference is a candidate when it gets more
than ``min_votes`` votes; the best ``top`` by votes are returned. Mirrored query descriptors vote as well
(mirrored copies). It is built from chunks of references (:meth:`KeypointVoter.from_chunks`: three passes, so only
one chunk and the training sample are held besides the index), grows by :meth:`~KeypointVoter.add` without
retraining, and is saved next to a reference index (:meth:`~KeypointVoter.save`, faiss' own file format plus a
JSON file; never a pickle) so a query process loads it instead of rebuilding it.

Files: the JSON records the faiss file's size, CRC-32 and its state on disk when saved (device, inode, size,
mtime, ctime). :meth:`~KeypointVoter.load` refuses a file of another size, and reads the whole file to check its
CRC-32 unless its state is one already verified (the saved one, or one recorded in ``verified.json`` by an
earlier load), so a truncated or tampered file is refused by name (:class:`VoterFileError`) at the cost of one
read per file state (~2 GB/s). ``mmap=True`` memory-maps the file (faiss ``IO_FLAG_MMAP``): the inverted lists
stay in the page cache, shared by every process querying the same index; such a voter is read-only
(:meth:`~KeypointVoter.add` copies it into memory first).
Memory (flat codes): 512 bytes per reference keypoint, about 0.5 GB per 1,000 references at 1,024 keypoints.

Coarse assignment at vote time: an IVF voter assigns the query keypoints to their ``nprobe`` nearest lists through
an HNSW graph over its centroids (:func:`centroid_graph`, built once per voter in one thread, so it is the same
graph in every process), not the flat quantizer the index was trained and filled with: faiss' flat quantizer
searched with one query's ~1,500 descriptors cost ~45 ms per 768 at 10,000 references (5,726 lists) and grows with
the square root of the keypoints; the graph (efSearch :data:`COARSE_EF`) ~12 ms, finding 99.5 % of the exact 8
nearest lists (bench/RESULTS.md, issue 15). Adding keypoints to an IVF voter finds their list through the same
graph (faiss ``add_core`` with the assignment given): the flat quantizer's assignment costs 2 x lists x 128 flops
per keypoint, ~1 hour for the 82 million keypoints of 100,000 references on 2 cores. The saved file keeps the flat
quantizer (its centroids); the graph is rebuilt from them.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from matcher.local.types import LocalFeatures
from matcher.retrieval.index import MMAP_FLAGS, RowExclusion, file_crc32, in_memory

__all__ = ["ADD_EF", "COARSE_EF", "VOTER_CODES", "VOTER_FORMAT", "KeypointVoter", "VoterCorruptError", "VoterFileError",
           "centroid_graph", "count_votes", "file_state"]

VOTER_FORMAT = "icd-keypoint-voter/1"
VOTER_CODES = ("flat", "sq8", "pq32", "pq64", "pq32fs", "pq64fs")  # how the IVF lists hold the keypoints (above)
COARSE_EF = 32  # efSearch of the centroid graph (breadth of its search; 8 nearest lists: 99.5 % found at 32)
ADD_EF = 16  # efSearch when adding keypoints (their one list): 98.9 % the nearest list, 9 us per keypoint (32: 99.8 %,
# 17 us; the flat quantizer ~2 us per 1,000 lists), measured at 10,000 references (5,726 lists)
_COARSE_M = 32  # links per centroid in the graph
_MIN_SLICE = 128  # keypoints per thread, at least, when a search is split over threads
_META = "voter.json"
_VERIFIED = "verified.json"


class VoterFileError(ValueError):
    """A saved voter that is missing, unreadable or does not fit what it is loaded for."""


class VoterCorruptError(VoterFileError):
    """A saved voter whose faiss file was truncated or changed since it was saved (size or CRC-32 differ)."""


def file_state(path: str | os.PathLike[str]) -> list[int]:
    """[device, inode, size, mtime ns, ctime ns] of a file: any write to it (or a copy elsewhere) changes it."""
    st = os.stat(path)
    return [int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)]


def _check_codes(codes: str) -> str:
    if codes not in VOTER_CODES:
        raise ValueError(f"voter codes must be one of {', '.join(VOTER_CODES)}; got {codes!r}")
    return codes


def _ivf(dim: int, nlist: int, codes: str) -> tuple[faiss.IndexIVF, faiss.Index]:
    """An empty IVF index over L2 holding ``codes`` and its coarse quantizer (kept alive by the caller)."""
    quantizer = faiss.IndexFlatL2(dim)
    if codes == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
    elif codes == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit)
    elif codes.endswith("fs"):
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, int(codes[2:-2]), 4)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(codes[2:]), 8)
    return index, quantizer


def count_votes(ends: np.ndarray, nn: np.ndarray, n_refs: int) -> np.ndarray:
    """(n_refs,) int64 votes: ``nn`` (K,) int64 nearest reference-keypoint rows (-1 = none) -> counts per owning
    reference, each query keypoint voting at most once. ``ends`` (n_refs,) int64: the cumulative keypoint counts
    of the references in row order (reference r owns keypoint rows ``ends[r-1]:ends[r]``), so no table of one
    entry per keypoint is held (8 bytes per keypoint: 6.4 GB at a million references)."""
    nn = nn[nn >= 0]
    if len(nn) == 0:
        return np.zeros(n_refs, np.int64)
    return np.bincount(np.searchsorted(ends, nn, side="right"), minlength=n_refs).astype(np.int64)


def centroid_graph(centroids: np.ndarray, ef: int = COARSE_EF) -> faiss.IndexHNSWFlat:
    """An HNSW graph (L2) over ``centroids`` (nlist, D) float32, rows in order, searched with ``ef``. Built in one
    thread: faiss' parallel insertion depends on thread timing, one thread gives the same graph everywhere."""
    graph = faiss.IndexHNSWFlat(int(centroids.shape[1]), _COARSE_M)
    graph.hnsw.efConstruction = 80
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        graph.add(np.ascontiguousarray(centroids, np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    graph.hnsw.efSearch = int(ef)
    return graph


def _ef(ef: int) -> faiss.SearchParametersHNSW:
    """Per-call HNSW search parameters (the graph itself is shared, never changed while searched)."""
    return faiss.SearchParametersHNSW(efSearch=int(ef))


def _descriptors(features: Sequence[LocalFeatures], dim: int) -> np.ndarray:
    parts = [np.asarray(f.descriptors, np.float32) for f in features if f.n]
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


class KeypointVoter:
    """A faiss index over every reference keypoint descriptor; ``vote(features)`` -> best (row, votes).

    Build one with :meth:`from_features` (a list in memory) or :meth:`from_chunks` (a stream of chunks)."""

    def __init__(self, index: faiss.Index, sizes: np.ndarray, *, trained_on: int = 0, exact_below: int = 200_000,
                 nprobe: int = 8, seed: int = 0, codes: str = "flat", mapped: bool = False) -> None:
        """``index`` holds ``sizes.sum()`` vectors, ``sizes[i]`` of reference row i in order; ``trained_on``: the
        vector count an IVF was trained for (0 = exact index); ``codes``: the setting it was built for (an exact
        index is float32 whatever it says); ``mapped``: its lists are memory-mapped (read-only)."""
        self.index = index
        self.codes = _check_codes(codes)
        self.mapped = bool(mapped)
        self.sizes = np.asarray(sizes, np.int64)
        self.ends = np.cumsum(self.sizes)  # (n_refs,) keypoint rows of references 0..r end at ends[r]
        self.trained_on = int(trained_on)
        self.exact_below, self.nprobe, self.seed = int(exact_below), int(nprobe), int(seed)
        self.excluded_refs = np.zeros(0, np.int64)  # reference rows whose keypoints no longer vote (removed)
        self._exclusion = RowExclusion()
        self._graph: faiss.IndexHNSWFlat | None = None  # centroid graph for vote-time coarse assignment (lazy)
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = self.nprobe
        if isinstance(index, faiss.IndexIVFPQ):  # no precomputed distance table (lists x M x 256 floats, private
            index.use_precomputed_table = -1  # to each process: 64 MB at 1.2k references, ~1.9 GB at a million);
            index.precomputed_table.resize(0)  # the same votes and vote time without it (bench/RESULTS.md)

    @classmethod
    def from_features(cls, features: Sequence[LocalFeatures], *, exact_below: int = 200_000, nprobe: int = 8,
                      seed: int = 0, codes: str = "flat") -> KeypointVoter:
        """Build over ``features`` (reference rows in order)."""
        return cls.from_chunks(lambda: [features], exact_below=exact_below, nprobe=nprobe, seed=seed, codes=codes)

    @classmethod
    def from_chunks(cls, chunks: Callable[[], Iterable[Sequence[LocalFeatures]]], *, exact_below: int = 200_000,
                    nprobe: int = 8, seed: int = 0, codes: str = "flat") -> KeypointVoter:
        """Build over the references yielded, in row order, by ``chunks()`` (called up to three times: sizes,
        training sample, adding). Exact search below ``exact_below`` vectors, else IVF with ``codes`` (seeded)."""
        _check_codes(codes)
        sizes, dim = [], 128
        for chunk in chunks():
            for f in chunk:
                sizes.append(f.n)
                if f.n:
                    dim = int(f.descriptors.shape[1])
        total = int(sum(sizes))
        if total < exact_below:
            voter = cls(faiss.IndexFlatL2(dim), np.zeros(0, np.int64), exact_below=exact_below, nprobe=nprobe,
                        seed=seed, codes=codes)
        else:
            # 2 sqrt(n) lists, trained on 40 points per list for 10 k-means rounds: the training cost grows as
            # n (not n^1.5 x 25 rounds as with faiss' defaults), ~1 min at 10k references on 2 cores. The same
            # sample trains the codes: PQ's 256 centroids per sub-quantiser need ~10k points (39 each), and the
            # sample holds 80 sqrt(n) >= 35k points past the exact_below default (200k vectors)
            nlist = int(2 * np.sqrt(total))
            pick = np.random.default_rng(seed).choice(total, size=min(total, 40 * nlist), replace=False)
            order = np.argsort(pick)
            sample = np.zeros((len(pick), dim), np.float32)
            sample[order] = cls._gather(chunks, pick[order], dim)
            index, quantizer = _ivf(dim, nlist, codes)
            index.cp.seed = seed
            index.cp.niter = 10
            index.cp.max_points_per_centroid = 40
            if isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
                index.pq.cp.seed = seed
            index.train(sample)
            voter = cls(index, np.zeros(0, np.int64), trained_on=total, exact_below=exact_below, nprobe=nprobe,
                        seed=seed, codes=codes)
            voter._quantizer = quantizer  # keep it alive with the index
        for chunk in chunks():
            voter.add(chunk)
        return voter

    @staticmethod
    def _gather(chunks: Callable[[], Iterable[Sequence[LocalFeatures]]], rows: np.ndarray, dim: int) -> np.ndarray:
        """Descriptor rows ``rows`` (sorted global keypoint numbers) from a pass over the chunks."""
        out, start = [], 0
        for chunk in chunks():
            d = _descriptors(chunk, dim)
            a, b = np.searchsorted(rows, [start, start + len(d)])
            out.append(d[rows[a:b] - start])
            start += len(d)
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def add(self, features: Sequence[LocalFeatures]) -> None:
        """Append references (the next rows) without retraining (a memory-mapped voter is copied into memory
        first: faiss cannot add to mapped lists)."""
        if self.mapped and features:
            self.index = in_memory(self.index)  # an IVF index keeps itself (and its nprobe), its lists copied
            self.mapped = False
        dim = int(self.index.d)
        d = _descriptors(features, dim)
        sizes = np.array([f.n for f in features], np.int64)
        self.ends = np.concatenate([self.ends, (self.ends[-1] if len(self.ends) else 0) + np.cumsum(sizes)])
        self.sizes = np.concatenate([self.sizes, sizes])
        if not len(d):
            return
        if not isinstance(self.index, faiss.IndexIVF):
            self.index.add(d)
            return
        d = np.ascontiguousarray(d)  # IVF: each vector's list found through the centroid graph, then stored
        if isinstance(self.index, faiss.IndexIVFFastScan):
            self._add_fast_scan(d)
            return
        lists = np.ascontiguousarray(self._centroid_graph().search(d, 1, params=_ef(ADD_EF))[1][:, 0])
        missing = lists < 0  # the graph found no centroid (never seen; the flat quantizer then decides)
        if missing.any():
            lists[missing] = self.index.quantizer.assign(d[missing], 1)[:, 0]
        self.index.add_core(len(d), faiss.swig_ptr(d), None, faiss.swig_ptr(lists))

    def _add_fast_scan(self, d: np.ndarray) -> None:
        """Append (n, D) float32 vectors to a fast-scan IVF: faiss packs their codes into its blocks only in its own
        ``add`` (``add_core`` would write unpacked codes into the packed lists), so the centroid graph stands in for
        the flat quantizer during the call (an HNSW search always returns a centroid of a non-empty graph; it searches
        with the graph's own efSearch, :data:`COARSE_EF`: the graph is shared with votes and never changed)."""
        index, n0 = self.index, int(self.index.ntotal)
        flat = index.quantizer
        index.quantizer = self._centroid_graph()
        try:
            index.add(d)
        finally:
            index.quantizer = flat
        if int(index.ntotal) != n0 + len(d):
            raise RuntimeError(f"keypoint voter: {n0 + len(d) - int(index.ntotal)} of {len(d)} keypoints were not "
                               "assigned a list")

    def exclude(self, rows: Sequence[int] | np.ndarray) -> None:
        """Leave the keypoints of reference ``rows`` (< :attr:`n_refs`) out of every later vote: their vectors stay
        in the faiss index and searches skip them with an ID selector (no rebuild); replaces the excluded set."""
        rows = np.unique(np.asarray(rows, np.int64).reshape(-1))
        rows = rows[rows < self.n_refs]
        if np.array_equal(rows, self.excluded_refs):
            return
        kp = [np.arange(self.ends[r] - self.sizes[r], self.ends[r], dtype=np.int64) for r in rows]
        self.excluded_refs = rows
        self._exclusion = RowExclusion(np.concatenate(kp) if kp else np.zeros(0, np.int64))

    def outgrown(self, total: int) -> bool:
        """True when ``total`` vectors call for a new index: an exact one past ``exact_below``, or an IVF trained
        for a quarter of them or fewer (its lists would grow too long)."""
        return total >= self.exact_below if self.trained_on == 0 else total > 4 * self.trained_on

    @property
    def owner(self) -> np.ndarray:
        """(K,) int64 reference row of each keypoint row, made on demand (the voter keeps only :attr:`ends`)."""
        return np.repeat(np.arange(len(self.sizes), dtype=np.int64), self.sizes)

    @property
    def n_refs(self) -> int:
        return len(self.sizes)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def vote(self, query: LocalFeatures, top: int, min_votes: int = 3, mirrored: bool = True,
             nprobe: int | None = None) -> list[tuple[int, int]]:
        """Best ``top`` (reference row, votes) with votes > ``min_votes``, most votes first; ``nprobe``: IVF lists
        visited per keypoint (None = the voter's own)."""
        if query.n == 0 or len(self) == 0 or top <= 0:
            return []
        n_refs = self.n_refs
        x = np.asarray(query.descriptors, np.float32)
        both = mirrored and query.mirrored is not None
        if both:  # one search for both (one graph search, one split over threads)
            x = np.concatenate([x, np.asarray(query.mirrored, np.float32)])
        nn = self.nearest(x, nprobe)
        votes = count_votes(self.ends, nn[: query.n], n_refs)
        if both:
            votes = np.maximum(votes, count_votes(self.ends, nn[query.n:], n_refs))
        rows = np.flatnonzero(votes > min_votes)
        rows = rows[np.lexsort((rows, -votes[rows]))][:top]
        return [(int(r), int(votes[r])) for r in rows]

    def _centroid_graph(self) -> faiss.IndexHNSWFlat:
        """The HNSW graph over this IVF voter's centroids (built on first use; they never change)."""
        if self._graph is None:
            self._graph = centroid_graph(self.index.quantizer.reconstruct_n(0, int(self.index.nlist)))
        return self._graph

    def nearest(self, x: np.ndarray, nprobe: int | None = None) -> np.ndarray:
        """(M,) int64 row of the nearest reference keypoint of each of ``x`` (M, D) float32 (-1 = none), excluded
        references left out; an IVF voter visits ``nprobe`` lists (None = its own) found by the centroid graph."""
        index = self.index
        if not isinstance(index, faiss.IndexIVF):
            return self._exclusion.search(index, x, 1)[1][:, 0]
        nprobe = int(self.nprobe if nprobe is None else nprobe)
        if nprobe < 1:
            raise ValueError(f"the voter's nprobe must be at least 1; got {nprobe}")
        nprobe = min(nprobe, int(index.nlist))
        x = np.ascontiguousarray(x, np.float32)
        # (M, nprobe) distances and lists (-1 where the graph found fewer lists: faiss skips those)
        dq, lists = self._centroid_graph().search(x, nprobe, params=_ef(max(COARSE_EF, nprobe)))
        params = self._exclusion.params(index) or faiss.SearchParametersIVF()
        params.nprobe = nprobe  # faiss reads nprobe columns of the assignment from here
        dist = np.empty((len(x), 1), np.float32)
        rows = np.empty((len(x), 1), np.int64)

        def scan(a: int, b: int) -> None:  # rows a..b-1 (faiss releases the GIL)
            index.search_preassigned_c(b - a, faiss.swig_ptr(x[a:b]), 1, faiss.swig_ptr(lists[a:b]),
                                       faiss.swig_ptr(dq[a:b]), faiss.swig_ptr(dist[a:b]), faiss.swig_ptr(rows[a:b]),
                                       False, params)

        # faiss scans preassigned lists in the calling thread (its own search splits the queries over its threads):
        # the rows are split here over faiss' thread count, in contiguous slices (the same rows either way)
        threads = min(faiss.omp_get_max_threads(), len(x) // _MIN_SLICE)
        if threads <= 1:
            scan(0, len(x))
        else:
            bounds = [int(v) for v in np.linspace(0, len(x), threads + 1)]
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(scan, bounds[:-1], bounds[1:]))
        return rows[:, 0]

    # ------------------------------------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike[str], **meta: Any) -> None:
        """Write into ``folder``: a new faiss file, then ``voter.json`` naming it with its size, CRC-32 and file state
        (atomic rename), then remove older faiss files; a crash leaves the previous voter or the new one, never a
        mix. ``meta``: extra JSON fields the owner checks on :meth:`load` (e.g. which references the rows are).
        OSError when the folder cannot be written (e.g. a read-only medium)."""
        from matcher.io.atomic import atomic_write_text

        p = Path(folder)
        p.mkdir(parents=True, exist_ok=True)
        name = f"voter-{uuid.uuid4().hex[:12]}.faiss"
        tmp = p / f".{name}.tmp"
        try:
            faiss.write_index(self.index, str(tmp))
        except RuntimeError as exc:  # faiss reports a failed write as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise OSError(f"{tmp}: cannot write the keypoint voter ({str(exc).splitlines()[0]})") from None
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        crc = file_crc32(tmp)
        os.replace(tmp, p / name)
        data = {**meta, "format": VOTER_FORMAT, "faiss": name, "bytes": (p / name).stat().st_size,
                "crc32": crc, "state": file_state(p / name), "vectors": len(self), "sizes": self.sizes.tolist(),
                "trained_on": self.trained_on, "exact_below": self.exact_below, "seed": self.seed,
                "codes": self.codes}
        atomic_write_text(p / _META, json.dumps(data) + "\n")
        for old in [*p.glob("voter-*.faiss"), *p.glob(".voter-*.tmp")]:  # older voters, a crashed save's rest
            if old.name != name:
                old.unlink(missing_ok=True)
        (p / _VERIFIED).unlink(missing_ok=True)

    @staticmethod
    def read_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
        """The JSON written by :meth:`save`; :class:`VoterFileError` when missing or unreadable."""
        p = Path(folder) / _META
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VoterFileError(f"{p}: no saved keypoint voter") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoterFileError(f"{p}: unreadable keypoint voter ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != VOTER_FORMAT:
            raise VoterFileError(f"{p}: not an {VOTER_FORMAT} file")
        return data

    @staticmethod
    def verify_file(folder: str | os.PathLike[str], meta: dict[str, Any], *, always: bool = False) -> None:
        """Refuse (:class:`VoterCorruptError`, naming the file) a saved voter's faiss file whose size or CRC-32 is
        not the one ``meta`` records. The CRC-32 is computed (a full read) unless the file's state on disk is one
        already verified: the state recorded at save, or one recorded in ``verified.json`` by an earlier check
        (written when the folder allows; a read-only medium verifies on every load). ``always``: compute it
        anyway. A voter saved before checksums were recorded is checked for size only."""
        p = Path(folder)
        f = p / str(meta["faiss"])
        if f.parent != p:
            raise VoterFileError(f"{f}: not a file of {p}")
        try:
            state = file_state(f)
        except OSError as exc:
            raise VoterCorruptError(f"{f}: missing or unreadable keypoint voter ({exc.strerror or exc})") from None
        if state[2] != int(meta["bytes"]):
            raise VoterCorruptError(f"{f}: truncated or overwritten keypoint voter ({state[2]} bytes, {_META} says "
                                    f"{int(meta['bytes'])})")
        if "crc32" not in meta:
            return
        verified = [meta.get("state")]
        with contextlib.suppress(OSError, ValueError, TypeError):
            rec = json.loads((p / _VERIFIED).read_text(encoding="utf-8"))
            if rec.get("faiss") == meta["faiss"] and rec.get("crc32") == meta["crc32"]:
                verified.append(rec.get("state"))
        if not always and state in verified:
            return
        try:
            crc = file_crc32(f)
        except OSError as exc:
            raise VoterCorruptError(f"{f}: unreadable keypoint voter ({exc.strerror or exc})") from None
        if crc != int(meta["crc32"]):
            raise VoterCorruptError(f"{f}: corrupt keypoint voter (CRC-32 {crc:08x}, {_META} says "
                                    f"{int(meta['crc32']):08x}): it was changed after it was saved")
        if state not in verified:  # remember this state (best effort: a read-only medium checks every time)
            from matcher.io.atomic import atomic_write_text

            with contextlib.suppress(OSError):
                atomic_write_text(p / _VERIFIED, json.dumps({"faiss": meta["faiss"], "crc32": meta["crc32"],
                                                             "state": state}) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, nprobe: int = 8, mmap: bool = False,
             verify: bool = False) -> KeypointVoter:
        """Read a voter written by :meth:`save`; :class:`VoterFileError` when missing, truncated, tampered with
        (:class:`VoterCorruptError`, see :meth:`verify_file`; ``verify`` computes the CRC-32 whatever the file
        state) or inconsistent. ``mmap``: memory-map the faiss file (shared pages, read-only voter)."""
        p = Path(folder)
        meta = cls.read_meta(p)
        try:
            f = p / str(meta["faiss"])
            sizes = np.asarray(meta["sizes"], np.int64).reshape(-1)
            cls.verify_file(p, meta, always=verify)
            index = faiss.read_index(str(f), (MMAP_FLAGS if mmap else 0) | faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
            if int(index.ntotal) != int(sizes.sum()) or int(index.ntotal) != int(meta["vectors"]):
                raise VoterCorruptError(f"{f}: holds {index.ntotal} vectors, {_META} says {int(sizes.sum())}")
            return cls(index, sizes, trained_on=int(meta["trained_on"]), exact_below=int(meta["exact_below"]),
                       nprobe=nprobe, seed=int(meta["seed"]), codes=str(meta.get("codes", "flat")), mapped=mmap)
        except VoterFileError:
            raise
        except (KeyError, TypeError, ValueError, OSError, RuntimeError) as exc:
            raise VoterFileError(f"{p}: unusable keypoint voter ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                                 ) from None
