"""Descriptor matching: nearest neighbour + Lowe ratio test + mutual check, one pair or one query against many.

Descriptors are L2-normalised float rows, so ``||q - r||^2 = 2 - 2 q.r`` and all similarities come from one BLAS GEMM
(``desc_q @ ref.T``, float32). The selection rules (ties: lowest index wins; second best = best over the other
columns; ratio test ``d1^2 < ratio^2 * d2^2`` in float64, always passed when the reference has one descriptor; mutual =
the query is also its reference descriptor's nearest query; ``dist = float32(sqrt(d1^2))``; matches in query order)
are written out in :mod:`matcher.local.kernels` and are identical in the three implementations here:

- :func:`match_one_to_many` (numpy GEMM per chunk of references + Numba kernel, the CPU hot path) and
  :func:`match_mnn_ratio` (one pair, same kernel);
- :func:`match_one_to_many_torch` (torch, runs on the device of its input tensors, used on GPU);
- :func:`match_mnn_ratio_numpy` (plain numpy, the reference the others are tested against).

The ``mirrored`` option matches a second set of query descriptors (the query's mirrored descriptors) against the same
references in the same call: both query sets go through one GEMM per reference chunk.

:func:`match_one_to_many_split` gives the same plain + mirrored result for half the GEMM work when the mirrored
descriptors are a fixed bin permutation of the plain ones (SIFT): both sides are first split by :func:`mirror_split`
into the permutation's symmetric and antisymmetric halves, whose two half-width products give the plain similarities
as their sum and the mirrored ones as their difference (see :mod:`matcher.local.kernels`). The similarities then
differ from the direct GEMM's by float32 rounding (~1e-7), so matches can differ where two candidates tie to that
precision.
"""
from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the CPU path does not need it
    import torch

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SPLIT_CHUNK_BYTES",
    "MatchBatch",
    "Matches",
    "MatchingInputError",
    "OneToMany",
    "blas_threads",
    "match_mnn_ratio",
    "match_mnn_ratio_numpy",
    "match_one_to_many",
    "match_one_to_many_split",
    "match_one_to_many_torch",
    "mirror_split",
]

DEFAULT_CHUNK_BYTES = 16 << 20  # float32 similarity block per GEMM on the CPU path (bench/local_matching_speed.py)
SPLIT_CHUNK_BYTES = 4 << 20  # both product blocks of one chunk on the mirror-split path: ~1 reference of 1024
# keypoints, so the kernel reads them from cache (measured ~10 % faster than 16 MiB)
DEFAULT_TORCH_CHUNK_ELEMS = 1 << 24  # padded similarities per chunk on the torch path (64 MiB float32, ~5x in temps)


class MatchingInputError(ValueError):
    """Descriptor arrays or reference offsets with the wrong shape, dtype or layout."""


@dataclass(frozen=True, eq=False)
class Matches:
    """Tentative matches of one query/reference pair.

    idx_q: (K,) int32 index into the query descriptors; idx_r: (K,) int32 index into the reference descriptors;
    dist: (K,) float32 L2 distance between the matched unit descriptors (in [0, 2]). Sorted by idx_q.
    """

    idx_q: np.ndarray
    idx_r: np.ndarray
    dist: np.ndarray

    def __len__(self) -> int:
        return int(self.idx_q.shape[0])

    @classmethod
    def empty(cls) -> Matches:
        """No matches (K = 0)."""
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))


@dataclass(frozen=True, eq=False)
class MatchBatch:
    """Matches of one query set against R references, packed.

    idx_q, idx_r, dist: (K,) as in :class:`Matches` (idx_r indexes the reference's own descriptors);
    offsets: (R+1,) int64, the matches with reference r are ``[offsets[r], offsets[r+1])``.
    Behaves as a sequence of R :class:`Matches` (``batch[r]`` returns views).
    """

    idx_q: np.ndarray
    idx_r: np.ndarray
    dist: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def __getitem__(self, r: int) -> Matches:
        n = len(self)
        if not -n <= r < n:
            raise IndexError(f"reference {r} out of range for {n} references")
        r = r % n
        a, b = int(self.offsets[r]), int(self.offsets[r + 1])
        return Matches(self.idx_q[a:b], self.idx_r[a:b], self.dist[a:b])

    def __iter__(self) -> Iterator[Matches]:
        return (self[r] for r in range(len(self)))

    def counts(self) -> np.ndarray:
        """(R,) int64 number of matches per reference."""
        return np.diff(self.offsets)

    def to_list(self) -> list[Matches]:
        """The R per-reference :class:`Matches`."""
        return list(self)


@dataclass(frozen=True, eq=False)
class OneToMany:
    """Result of matching one query against many references: ``plain`` for the query's descriptors, ``mirrored``
    for its mirrored descriptors (None when none were given)."""

    plain: MatchBatch
    mirrored: MatchBatch | None = None


# ------------------------------------------------------------------------------------------------------ BLAS threads
_OPENBLAS_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                     ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                     ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                     ("openblas_get_num_threads", "openblas_set_num_threads"))


@lru_cache(maxsize=1)
def _openblas() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr] | None:
    """(get, set) thread-count functions of the OpenBLAS loaded by numpy, or None (not Linux, not OpenBLAS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                get, set_ = getattr(lib, get_name), getattr(lib, set_name)
                get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                return get, set_
    return None


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS limited to ``n`` threads (n <= 0, or no OpenBLAS found: unchanged).

    The setting is process-wide while the block runs and restored after it (torch's thread count too, which an
    OpenMP build of OpenBLAS changes along with its own). Measured on 2 shared cores
    (bench/RESULTS.md): with other processes competing, the matching GEMMs on 2 OpenBLAS threads ran up to ~4x
    slower than on one (threads waiting for each other), so the engine limits them (``LocalConfig.blas_threads``).
    """
    fns = _openblas() if n > 0 else None
    if fns is None:
        yield
        return
    get, set_ = fns
    before = int(get())
    if before == n:
        yield
        return
    torch = sys.modules.get("torch")  # an OpenMP build of OpenBLAS sets OpenMP's thread count too, which torch
    torch_threads = torch.get_num_threads() if torch is not None else None  # reads: restore it as well
    set_(n)
    try:
        yield
    finally:
        set_(before)
        if torch is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


# ----------------------------------------------------------------------------------------------------------- checks
def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise MatchingInputError(f"ratio must be in (0, 1], got {ratio}")
    return ratio


def _check_desc(desc: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """(N, D) float descriptors -> float32 C-contiguous (no copy when already so)."""
    desc = np.asarray(desc)
    if desc.ndim != 2:
        raise MatchingInputError(f"{name}: expected a (N, D) array, got shape {desc.shape}")
    if not np.issubdtype(desc.dtype, np.floating):
        raise MatchingInputError(f"{name}: expected float descriptors, got dtype {desc.dtype}")
    if dim is not None and desc.shape[1] != dim:
        raise MatchingInputError(f"{name}: descriptor length {desc.shape[1]} != {dim}")
    return np.ascontiguousarray(desc, dtype=np.float32)


def _check_offsets(offsets: np.ndarray, n_ref_desc: int) -> np.ndarray:
    """(R+1,) int non-decreasing offsets from 0 to ``n_ref_desc`` -> int64."""
    off = np.asarray(offsets)
    if off.ndim != 1 or off.shape[0] < 1 or not np.issubdtype(off.dtype, np.integer):
        raise MatchingInputError(f"ref_offsets: expected a (R+1,) integer array, got shape {off.shape} {off.dtype}")
    off = np.ascontiguousarray(off, dtype=np.int64)
    if off[0] != 0 or off[-1] != n_ref_desc or np.any(np.diff(off) < 0):
        raise MatchingInputError(
            f"ref_offsets must rise from 0 to the number of reference descriptors ({n_ref_desc}); "
            f"got first {int(off[0])}, last {int(off[-1])}")
    return off


def _empty_batch(n_ref: int) -> MatchBatch:
    return MatchBatch(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32),
                      np.zeros(n_ref + 1, np.int64))


def _chunks(offsets: np.ndarray, max_cols: int) -> list[tuple[int, int]]:
    """Consecutive segment ranges [s0, s1) of at most ``max_cols`` columns (a bigger segment gets its own chunk)."""
    n_seg = offsets.shape[0] - 1
    out: list[tuple[int, int]] = []
    s0 = 0
    while s0 < n_seg:
        s1 = int(np.searchsorted(offsets, offsets[s0] + max_cols, side="right")) - 1
        s1 = min(max(s1, s0 + 1), n_seg)
        out.append((s0, s1))
        s0 = s1
    return out


def _pack(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], n_ref: int) -> MatchBatch:
    """Concatenate per-chunk (idx_q, idx_r, dist, counts) in reference order."""
    if not parts:
        return _empty_batch(n_ref)
    counts = np.concatenate([p[3] for p in parts])
    offsets = np.zeros(n_ref + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return MatchBatch(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                      np.concatenate([p[2] for p in parts]), offsets)


# -------------------------------------------------------------------------------------------------- numba / numpy
def _out_buffers(n_blocks: int, n: int, seg: np.ndarray, mutual: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kernel output buffers for n_blocks query blocks of n rows against the (S+1,) segment offsets ``seg``:
    (out_q int32, out_r int32, out_d float32, out_base (n_blocks*S+1,) int64, counts (n_blocks*S,) int64)."""
    sizes = np.diff(seg)
    cap = np.tile(np.minimum(sizes, n) if mutual else np.where(sizes > 0, n, 0), n_blocks)
    base = np.zeros(cap.shape[0] + 1, np.int64)
    np.cumsum(cap, out=base[1:])
    total = int(base[-1])
    return (np.empty(total, np.int32), np.empty(total, np.int32), np.empty(total, np.float32), base,
            np.zeros(cap.shape[0], np.int64))


def _unpack(out_q: np.ndarray, out_r: np.ndarray, out_d: np.ndarray, base: np.ndarray, counts: np.ndarray,
            n_blocks: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block (idx_q, idx_r, dist, counts (S,)) with the matches packed in segment order."""
    n_seg = counts.shape[0] // n_blocks
    parts = []
    for b in range(n_blocks):
        cb = counts[b * n_seg : (b + 1) * n_seg]
        k = int(cb.sum())
        pos = np.repeat(base[b * n_seg : (b + 1) * n_seg] - (np.cumsum(cb) - cb), cb) + np.arange(k, dtype=np.int64)
        parts.append((out_q[pos], out_r[pos], out_d[pos], cb))
    return parts


def _select_segments(
    sim: np.ndarray, n_blocks: int, seg: np.ndarray, ratio: float, mutual: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Run the Numba kernel on a (n_blocks*N, C) float32 C-contiguous similarity block with (S+1,) int64 column
    offsets ``seg`` (0 .. C); per block return (idx_q int32, idx_r int32, dist float32, counts (S,) int64), the
    matches packed in segment order."""
    from matcher.local import kernels

    n = sim.shape[0] // n_blocks
    n_seg = seg.shape[0] - 1
    out_q, out_r, out_d, base, counts = _out_buffers(n_blocks, n, seg, mutual)
    kernel = kernels.segments_kernel(n_blocks * n_seg, sim.size)
    kernel(sim, np.int64(n_blocks), np.ascontiguousarray(seg, np.int64), np.float64(ratio * ratio), bool(mutual),
           out_q, out_r, out_d, base, counts)
    return _unpack(out_q, out_r, out_d, base, counts, n_blocks)


def _select_split(
    sim_s: np.ndarray, sim_a: np.ndarray, seg: np.ndarray, ratio: float, mutual: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The split kernel on (N, C) float32 C-contiguous ``sim_s``, ``sim_a``: [plain part, mirrored part] as in
    :func:`_select_segments`."""
    from matcher.local import kernels

    out_q, out_r, out_d, base, counts = _out_buffers(2, sim_s.shape[0], seg, mutual)
    kernel = kernels.split_kernel(seg.shape[0] - 1, 2 * sim_s.size)
    kernel(sim_s, sim_a, np.ascontiguousarray(seg, np.int64), np.float64(ratio * ratio), bool(mutual),
           out_q, out_r, out_d, base, counts)
    return _unpack(out_q, out_r, out_d, base, counts, 2)


def match_one_to_many(
    desc_q: np.ndarray,
    ref_desc: np.ndarray,
    ref_offsets: np.ndarray,
    *,
    ratio: float = 0.85,
    mutual: bool = True,
    mirrored: np.ndarray | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> OneToMany:
    """Match one query against R references (the hot path): a GEMM per chunk of references + a Numba kernel.

    desc_q: (N, D) float unit descriptors of the query. ref_desc: (sumM, D) float (float32 or float16) unit
    descriptors of all references, concatenated; reference r owns rows ``ref_offsets[r]:ref_offsets[r+1]``.
    ref_offsets: (R+1,) int, from 0 to sumM, non-decreasing (empty references allowed).
    mirrored: optional (N, D) second query set (mirrored descriptors), matched in the same GEMMs.
    chunk_bytes: bound on the float32 similarity block of one GEMM (a single larger reference still fits whole).
    Returns :class:`OneToMany`, each batch with R entries. Runs the kernel on Numba's threads (parallel over
    references and query sets).
    """
    ratio = _check_ratio(ratio)
    desc_q = _check_desc(desc_q, "desc_q")
    dim = desc_q.shape[1]
    ref_desc = np.asarray(ref_desc)
    if ref_desc.ndim != 2 or ref_desc.shape[1] != dim or not np.issubdtype(ref_desc.dtype, np.floating):
        raise MatchingInputError(
            f"ref_desc: expected a (sumM, {dim}) float array, got shape {ref_desc.shape} {ref_desc.dtype}")
    offsets = _check_offsets(ref_offsets, ref_desc.shape[0])
    blocks = [desc_q]
    if mirrored is not None:
        mirrored = _check_desc(mirrored, "mirrored", dim)
        if mirrored.shape[0] != desc_q.shape[0]:
            raise MatchingInputError(
                f"mirrored: {mirrored.shape[0]} descriptors but desc_q has {desc_q.shape[0]}")
        blocks.append(mirrored)
    n_blocks, n, n_ref = len(blocks), desc_q.shape[0], offsets.shape[0] - 1
    if n == 0 or ref_desc.shape[0] == 0:
        return OneToMany(_empty_batch(n_ref), _empty_batch(n_ref) if mirrored is not None else None)

    q_all = blocks[0] if n_blocks == 1 else np.concatenate(blocks)
    max_cols = max(1, int(chunk_bytes) // (4 * q_all.shape[0]))
    chunks = _chunks(offsets, max_cols)
    widest = max(int(offsets[s1] - offsets[s0]) for s0, s1 in chunks)
    sim_buf = np.empty(q_all.shape[0] * widest, np.float32)
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n_blocks)]
    for s0, s1 in chunks:
        c0, c1 = int(offsets[s0]), int(offsets[s1])
        ref = ref_desc[c0:c1]
        if ref.dtype != np.float32 or not ref.flags.c_contiguous:
            ref = np.ascontiguousarray(ref, dtype=np.float32)
        sim = sim_buf[: q_all.shape[0] * (c1 - c0)].reshape(q_all.shape[0], c1 - c0)
        np.matmul(q_all, ref.T, out=sim)
        for b, part in enumerate(_select_segments(sim, n_blocks, offsets[s0 : s1 + 1] - c0, ratio, mutual)):
            parts[b].append(part)
    batches = [_pack(p, n_ref) for p in parts]
    return OneToMany(batches[0], batches[1] if n_blocks == 2 else None)


@lru_cache(maxsize=8)
def _split_plan(perm: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, fixed) int64: the 2-cycles (lo[k], hi[k]), lo < hi, and the fixed points of an involution."""
    p = np.asarray(perm, np.int64)
    if np.any(np.sort(p) != np.arange(p.size)) or np.any(p[p] != np.arange(p.size)):
        raise MatchingInputError("mirror permutation must be an involution (a permutation that is its own inverse)")
    idx = np.arange(p.size)
    return idx[idx < p], p[idx < p], idx[idx == p]


def mirror_split(desc: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split (N, D) float descriptors for the involutive bin permutation ``perm`` (D,) (the mirror of a descriptor
    ``x`` is ``x[perm]``): returns sym (N, K+F) and anti (N, K) float32 C-contiguous, K the 2-cycles and F the fixed
    bins of ``perm``, with ``x . y = sym_x . sym_y + anti_x . anti_y`` and ``x[perm] . y = sym_x . sym_y -
    anti_x . anti_y`` (an orthogonal change of basis)."""
    from matcher.local import kernels

    perm = np.asarray(perm)
    desc = _check_desc(desc, "desc", perm.shape[0] if perm.ndim == 1 else None)
    if perm.ndim != 1:
        raise MatchingInputError(f"mirror permutation: expected a (D,) array, got shape {perm.shape}")
    lo, hi, fixed = _split_plan(tuple(int(v) for v in perm))
    sym = np.empty((desc.shape[0], lo.size + fixed.size), np.float32)
    anti = np.empty((desc.shape[0], lo.size), np.float32)
    kernels.split_rows(desc, lo, hi, fixed, sym, anti)
    return sym, anti


def match_one_to_many_split(
    q_sym: np.ndarray,
    q_anti: np.ndarray,
    ref_sym: np.ndarray,
    ref_anti: np.ndarray,
    ref_offsets: np.ndarray,
    *,
    ratio: float = 0.85,
    mutual: bool = True,
    chunk_bytes: int = SPLIT_CHUNK_BYTES,
) -> OneToMany:
    """Plain and mirrored matches of one query against R references from mirror-split descriptors: the result of
    ``match_one_to_many(desc_q, ref_desc, ref_offsets, mirrored=desc_q[:, perm])`` (up to float32 rounding of the
    similarities) for the GEMM work of the plain pass alone.

    q_sym (N, Ds), q_anti (N, Da): :func:`mirror_split` of the query descriptors; ref_sym (sumM, Ds), ref_anti
    (sumM, Da): of the references' descriptors (concatenated, reference r owns rows
    ``ref_offsets[r]:ref_offsets[r+1]``).
    chunk_bytes bounds the two float32 product blocks of one chunk together. Returns :class:`OneToMany` with both
    batches set.
    """
    ratio = _check_ratio(ratio)
    q_sym = _check_desc(q_sym, "q_sym")
    q_anti = _check_desc(q_anti, "q_anti")
    ref_sym = _check_desc(ref_sym, "ref_sym", q_sym.shape[1])
    ref_anti = _check_desc(ref_anti, "ref_anti", q_anti.shape[1])
    if q_anti.shape[0] != q_sym.shape[0] or ref_anti.shape[0] != ref_sym.shape[0]:
        raise MatchingInputError(f"split halves differ in length: query {q_sym.shape[0]} vs {q_anti.shape[0]}, "
                                 f"references {ref_sym.shape[0]} vs {ref_anti.shape[0]}")
    offsets = _check_offsets(ref_offsets, ref_sym.shape[0])
    n, n_ref = q_sym.shape[0], offsets.shape[0] - 1
    if n == 0 or ref_sym.shape[0] == 0:
        return OneToMany(_empty_batch(n_ref), _empty_batch(n_ref))
    max_cols = max(1, int(chunk_bytes) // (4 * 2 * n))
    chunks = _chunks(offsets, max_cols)
    widest = max(int(offsets[s1] - offsets[s0]) for s0, s1 in chunks)
    buf_s = np.empty(n * widest, np.float32)
    buf_a = np.empty(n * widest, np.float32)
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[], []]
    for s0, s1 in chunks:
        c0, c1 = int(offsets[s0]), int(offsets[s1])
        sim_s = buf_s[: n * (c1 - c0)].reshape(n, c1 - c0)
        sim_a = buf_a[: n * (c1 - c0)].reshape(n, c1 - c0)
        np.matmul(q_sym, ref_sym[c0:c1].T, out=sim_s)
        np.matmul(q_anti, ref_anti[c0:c1].T, out=sim_a)
        for b, part in enumerate(_select_split(sim_s, sim_a, offsets[s0 : s1 + 1] - c0, ratio, mutual)):
            parts[b].append(part)
    return OneToMany(_pack(parts[0], n_ref), _pack(parts[1], n_ref))


def match_mnn_ratio(desc_q: np.ndarray, desc_r: np.ndarray, ratio: float = 0.85, mutual: bool = True) -> Matches:
    """Matches of one pair: desc_q (N, D), desc_r (M, D) float unit descriptors -> :class:`Matches` (Numba kernel)."""
    desc_r = np.asarray(desc_r)
    offsets = np.array([0, desc_r.shape[0] if desc_r.ndim == 2 else 0], np.int64)
    return match_one_to_many(desc_q, desc_r, offsets, ratio=ratio, mutual=mutual).plain[0]


def match_mnn_ratio_numpy(
    desc_q: np.ndarray, desc_r: np.ndarray, ratio: float = 0.85, mutual: bool = True
) -> Matches:
    """Plain-numpy reference of :func:`match_mnn_ratio` (same rules, dense (N, M) arrays; for tests and baselines)."""
    ratio = _check_ratio(ratio)
    q = _check_desc(desc_q, "desc_q")
    r = _check_desc(desc_r, "desc_r", q.shape[1])
    if q.shape[0] == 0 or r.shape[0] == 0:
        return Matches.empty()
    return _select_numpy(q @ r.T, ratio, mutual)


def _select_numpy(sim: np.ndarray, ratio: float, mutual: bool) -> Matches:
    """The selection rules on a dense (N, M) float32 similarity matrix, N, M >= 1 (plain numpy)."""
    n, m = sim.shape
    rows = np.arange(n)
    j1 = np.argmax(sim, axis=1)  # first maximum: lowest index wins (-0.0 == +0.0)
    d1 = np.maximum(2.0 - 2.0 * sim[rows, j1].astype(np.float64), 0.0)
    keep = np.ones(n, bool)
    if m > 1:
        rest = sim.copy()
        rest[rows, j1] = -np.inf
        d2 = np.maximum(2.0 - 2.0 * rest.max(axis=1).astype(np.float64), 0.0)
        keep &= d1 < ratio * ratio * d2
    if mutual:
        keep &= np.argmax(sim, axis=0)[j1] == rows
    return Matches(rows[keep].astype(np.int32), j1[keep].astype(np.int32), np.sqrt(d1[keep]).astype(np.float32))


# ---------------------------------------------------------------------------------------------------------- torch
def match_one_to_many_torch(
    desc_q: torch.Tensor,
    ref_desc: torch.Tensor,
    ref_offsets: np.ndarray | torch.Tensor,
    *,
    ratio: float = 0.85,
    mutual: bool = True,
    mirrored: torch.Tensor | None = None,
    chunk_elems: int = DEFAULT_TORCH_CHUNK_ELEMS,
) -> OneToMany:
    """Torch version of :func:`match_one_to_many` with the same rules and result, computed on the device of the
    input tensors (cuda on GPU machines); the small match arrays are returned as numpy.

    desc_q: (N, D), ref_desc: (sumM, D), mirrored: optional (N, D) float tensors on one device; ref_offsets: (R+1,).
    References are processed in chunks padded to the longest reference: at most ``chunk_elems`` padded
    similarities (float32) per chunk (peak memory about 20 * chunk_elems bytes). The GEMM is float32: with
    ``torch.backends.cuda.matmul.allow_tf32`` switched on (off by default) similarities lose precision and results can
    differ from the CPU path.
    """
    import torch

    ratio = _check_ratio(ratio)
    for name, t in (("desc_q", desc_q), ("ref_desc", ref_desc), ("mirrored", mirrored)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.is_floating_point()):
            raise MatchingInputError(f"{name}: expected a 2-D float tensor, got {type(t).__name__} "
                                     f"{tuple(getattr(t, 'shape', ()))}")
    dim, dev = desc_q.shape[1], desc_q.device
    if ref_desc.shape[1] != dim or (mirrored is not None and mirrored.shape != desc_q.shape):
        raise MatchingInputError(f"descriptor shapes disagree: desc_q {tuple(desc_q.shape)}, ref_desc "
                                 f"{tuple(ref_desc.shape)}, mirrored {None if mirrored is None else tuple(mirrored.shape)}")
    if ref_desc.device != dev or (mirrored is not None and mirrored.device != dev):
        raise MatchingInputError(f"desc_q, ref_desc and mirrored must be on one device; got {dev}, {ref_desc.device}"
                                 f"{'' if mirrored is None else ', ' + str(mirrored.device)}")
    if isinstance(ref_offsets, torch.Tensor):
        ref_offsets = ref_offsets.cpu().numpy()
    offsets = _check_offsets(ref_offsets, ref_desc.shape[0])
    n_blocks = 1 if mirrored is None else 2
    n, n_ref = desc_q.shape[0], offsets.shape[0] - 1
    if n == 0 or ref_desc.shape[0] == 0:
        return OneToMany(_empty_batch(n_ref), _empty_batch(n_ref) if mirrored is not None else None)

    q_all = desc_q.float() if mirrored is None else torch.cat([desc_q.float(), mirrored.float()])
    sizes_all = np.diff(offsets)
    m_max = int(sizes_all.max())
    per_chunk = max(1, int(chunk_elems) // (q_all.shape[0] * m_max))
    r2 = ratio * ratio
    ar_m = torch.arange(m_max, dtype=torch.int32, device=dev)
    ar_n = torch.arange(n, dtype=torch.int32, device=dev)
    parts: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(n_blocks)]
    for s0 in range(0, n_ref, per_chunk):
        s1 = min(s0 + per_chunk, n_ref)
        c0, c1 = int(offsets[s0]), int(offsets[s1])
        sizes = torch.as_tensor(sizes_all[s0:s1], device=dev)
        starts = torch.as_tensor(offsets[s0:s1] - c0, device=dev)
        if c1 == c0:  # only empty references in this chunk
            for b in range(n_blocks):
                z = torch.zeros(0, dtype=torch.int64, device=dev)
                parts[b].append((z, z, z.double(), torch.zeros(s1 - s0, dtype=torch.int64, device=dev)))
            continue
        sim = q_all @ ref_desc[c0:c1].float().T  # (nb*N, W)
        valid = ar_m[None, :] < sizes[:, None]  # (S, Mmax)
        cols = torch.where(valid, starts[:, None] + ar_m[None, :], 0)
        pad = sim[:, cols].view(n_blocks, n, s1 - s0, m_max)
        pad.masked_fill_(~valid, -torch.inf)
        best = pad.amax(dim=3)  # (nb, N, S)
        j1 = torch.where(pad == best[..., None], ar_m, m_max).amin(dim=3)
        second = pad.scatter(3, j1[..., None].long(), -torch.inf).amax(dim=3)
        d1 = (2.0 - 2.0 * best.double()).clamp_min(0.0)
        d2 = (2.0 - 2.0 * second.double()).clamp_min(0.0)
        keep = ((d1 < r2 * d2) | (sizes == 1)) & (sizes > 0)
        if mutual:
            col_best = pad.amax(dim=1, keepdim=True)  # (nb, 1, S, Mmax)
            col_arg = torch.where(pad == col_best, ar_n[:, None, None], n).amin(dim=1)  # (nb, S, Mmax)
            keep &= col_arg.gather(2, j1.permute(0, 2, 1).long()).permute(0, 2, 1) == ar_n[:, None]
        for b in range(n_blocks):
            kb = keep[b].T  # (S, N): nonzero() walks segments, then queries in order
            seg_i, q_i = kb.nonzero(as_tuple=True)
            parts[b].append((q_i, j1[b][q_i, seg_i], d1[b][q_i, seg_i], kb.sum(dim=1)))
    out = []
    for b in range(n_blocks):
        q_i, r_i, d_i, cnt = (torch.cat([p[k] for p in parts[b]]) for k in range(4))
        offs = np.zeros(n_ref + 1, np.int64)
        np.cumsum(cnt.cpu().numpy(), out=offs[1:])
        out.append(MatchBatch(q_i.to(torch.int32).cpu().numpy(), r_i.to(torch.int32).cpu().numpy(),
                              torch.sqrt(d_i).to(torch.float32).cpu().numpy(), offs))
    return OneToMany(out[0], out[1] if n_blocks == 2 else None)
