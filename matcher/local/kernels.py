"""Numba kernels of the local engine: descriptor matching (best/second-best per row and best per column, per
reference segment) and LO-RANSAC for the geometric fit.

Matching. The kernels read a similarity matrix (dot products of unit descriptors, so L2 distance^2 = 2 - 2*sim) that
the caller computed with BLAS GEMMs. Rules shared by every implementation in :mod:`matcher.local.matching`:

- ties: among equal similarities the LOWEST index wins (columns for a row's best, rows for a column's best); +0.0 and
  -0.0 are equal;
- a row's second best is the best over all its other columns, so an exact duplicate of the best reference descriptor
  makes the ratio test fail (which is why the row tie rule never shows in the output; the column rule does, through
  the mutual check);
- the ratio test is evaluated in float64 on the float32 similarities: ``d1^2 < ratio^2 * d2^2`` with
  ``d^2 = max(2 - 2*sim, 0)``; a segment with a single column always passes it;
- mutual: the row is also the best row of its best column (over the rows of its block);
- the reported distance is ``float32(sqrt(d1^2))``; matches are written in row order.

Row maxima are taken on integer keys of the float bits (monotone in the float value, -0.0 and +0.0 map to 0) because
LLVM vectorises integer max/min reductions but not float ones; column maxima use float compare-and-select, which it
vectorises. Two passes per row: (1) column update + row maximum, (2) first index of the maximum, how often it occurs
and the largest key below it (the second best). Similarities must be finite.

Mirror split. For descriptors whose mirrored version is a fixed involutive permutation of their bins (SIFT), the
plain and the mirrored similarities come from one GEMM's worth of work: with sym = (x + Px) / sqrt(2) and
anti = (x - Px) / sqrt(2) per bin pair, ``q . r = sym_q . sym_r + anti_q . anti_r`` and
``(Pq) . r = sym_q . sym_r - anti_q . anti_r``. :func:`mnn_ratio_split_segments` reads the two half-size products and
forms both similarity rows on the fly (float32 sum / difference).

Signatures are explicit and compiled eagerly when this module is imported (``matcher.local.matching`` and
``matcher.local.geometry`` import it on first use), with ``cache=True``: the first import on a machine compiles (about
20 s of CPU) and writes the cache next to this file (or under ``NUMBA_CACHE_DIR``); later processes load it. The
parallel matching kernels (Numba's threading layer) and their serial twins share all code; the serial ones are used
unless a block is very large: measured on 2 shared cores, waking the thread pool cost more than it saved
(bench/RESULTS.md).
"""
from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable

import numba
import numpy as np
from numba import boolean, float32, float64, int32, int64, njit, prange, types, uint64, void

# Loading the parallel kernels starts Numba's OpenMP thread pool, which sets OpenMP's thread count, which torch reads
# as its own: the host's torch thread count is put back once this module is loaded and after each parallel call.
_TORCH = sys.modules.get("torch")
_TORCH_THREADS = _TORCH.get_num_threads() if _TORCH is not None else 0


def _restore_torch_threads(n: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _keeping_torch_threads(kernel: Callable[..., None]) -> Callable[..., None]:
    """``kernel`` (a parallel one), called so that torch's thread count is the same after the call as before."""

    @functools.wraps(kernel)
    def call(*args: object) -> None:
        torch = sys.modules.get("torch")
        n = torch.get_num_threads() if torch is not None else 0
        try:
            kernel(*args)
        finally:
            _restore_torch_threads(n)

    return call

__all__ = [
    "PARALLEL_MIN_ELEMS",
    "draw_sample",
    "least_squares",
    "local_optimise",
    "minimal_solve",
    "mnn_ratio_segments",
    "mnn_ratio_segments_serial",
    "mnn_ratio_split_segments",
    "mnn_ratio_split_segments_serial",
    "msac_loss",
    "ransac",
    "rng_seed",
    "sample_ok",
    "segments_kernel",
    "split_kernel",
    "split_rows",
]

PARALLEL_MIN_ELEMS = 1 << 25  # similarity blocks smaller than this run on one thread (thread wake-up cost; blocks
# are bounded by matching.DEFAULT_CHUNK_BYTES, so by default everything runs on the calling thread)

_I32_MIN = np.int32(-2147483648)
_MAG = np.int32(0x7FFFFFFF)


@njit(int32(int32), inline="always", cache=True)
def _key(bits):  # pragma: no cover - jit
    """Order-preserving int key of float32 bits (int32): k(x) < k(y) iff x < y; k(-0.0) == k(+0.0) == 0."""
    return bits if bits >= 0 else np.int32(-(bits & _MAG))  # the cast keeps the vector code 32-bit wide


@njit(int32(int32), cache=True)
def _bits(key):  # pragma: no cover - jit
    """float32 bits (int32) of a key from :func:`_key` (0 maps to +0.0)."""
    return key if key >= 0 else (-key) | _I32_MIN


@njit(int32(float32[::1], int32[::1], float32[::1], int32[::1], int32), cache=True)
def _col_update_row_max(row_f, row_i, col_best, col_arg, i):  # pragma: no cover - jit
    """Pass 1 over a row: raise ``col_best``/``col_arg`` where ``row_f`` is strictly larger; return the row's max
    key."""
    m = _I32_MIN
    for j in range(row_f.shape[0]):
        s = row_f[j]
        gt = s > col_best[j]
        col_best[j] = s if gt else col_best[j]
        col_arg[j] = i if gt else col_arg[j]
        k = _key(row_i[j])
        m = max(m, k)
    return m


@njit(types.UniTuple(int32, 2)(int32[::1], int32), cache=True)
def _first_and_second(row_i, k1):  # pragma: no cover - jit
    """Pass 2 over a row whose max key is ``k1``: (lowest index j with key k1, second-best key), the second best
    being the max over all other indices (k1 again when k1 occurs twice; ``_I32_MIN`` when the row has one entry)."""
    n = np.int32(row_i.shape[0])
    first = n
    below = _I32_MIN
    count = np.int32(0)
    for j in range(n):
        k = _key(row_i[j])
        eq = k == k1
        first = min(first, np.int32(j) if eq else n)
        count += np.int32(1) if eq else np.int32(0)
        below = max(below, k if k < k1 else _I32_MIN)
    return first, (k1 if count > 1 else below)


@njit(int64(float32[::1], float32[::1], int32[::1], int32[::1], int64, int64, float64, boolean,
            int32[::1], int32[::1], float32[::1], int64, int64), cache=True)
def _emit(best, second, arg, col_arg, n_rows, m, r2, mutual, out_q, out_r, out_d, base, end):  # pragma: no cover
    """Write the rows passing the mutual and ratio tests into [base, end) of the output buffers; return the count."""
    k = 0
    for i in range(n_rows):
        j = arg[i]
        if mutual and col_arg[j] != i:
            continue
        d1 = max(2.0 - 2.0 * np.float64(best[i]), 0.0)
        if m > 1:
            d2 = max(2.0 - 2.0 * np.float64(second[i]), 0.0)
            if not d1 < r2 * d2:
                continue
        if base + k >= end:
            break
        out_q[base + k] = i
        out_r[base + k] = j
        out_d[base + k] = np.float32(math.sqrt(d1))
        k += 1
    return k


@njit(void(float32[::1], int32[::1], float32[::1], int32[::1], int32, int32[::1], int32[::1], int32[::1]),
      cache=True)
def _scan_row(row_f, row_i, col_best, col_arg, i, best_bits, second_bits, arg):  # pragma: no cover - jit
    """Both passes over row i: update the column maxima, record the row's best/second-best bits and best column."""
    k1 = _col_update_row_max(row_f, row_i, col_best, col_arg, i)
    j1, k2 = _first_and_second(row_i, k1)
    best_bits[i] = _bits(k1)
    second_bits[i] = _bits(k2)
    arg[i] = j1


@njit(int64(float32[:, ::1], int32[:, ::1], int64, int64, int64, int64, float64, boolean,
            int32[::1], int32[::1], float32[::1], int64, int64), cache=True)
def _match_block(sim, sim_i, row0, n_rows, c0, c1, r2, mutual, out_q, out_r, out_d, base, end):  # pragma: no cover
    """Match rows [row0, row0+n_rows) of ``sim`` against columns [c0, c1); write into [base, end) of the output
    buffers (never past ``end``); return the count."""
    m = c1 - c0
    if n_rows == 0 or m == 0:
        return 0
    best_bits = np.empty(n_rows, dtype=np.int32)
    second_bits = np.empty(n_rows, dtype=np.int32)
    arg = np.empty(n_rows, dtype=np.int32)
    col_best = np.full(m, -np.inf, dtype=np.float32)
    col_arg = np.zeros(m, dtype=np.int32)
    for i in range(n_rows):
        _scan_row(sim[row0 + i, c0:c1], sim_i[row0 + i, c0:c1], col_best, col_arg, np.int32(i),
                  best_bits, second_bits, arg)
    return _emit(best_bits.view(np.float32), second_bits.view(np.float32), arg, col_arg, n_rows, m, r2, mutual,
                 out_q, out_r, out_d, base, end)


@njit(int64(float32[:, ::1], int32[:, ::1], int64, int64[::1], int64, float64, boolean, int32[::1], int32[::1],
            float32[::1], int64[::1]), cache=True)
def _task(sim, sim_i, n_blocks, seg_offsets, t, r2, mutual, out_q, out_r, out_d, out_base):  # pragma: no cover
    """Task t = b*S + s of :func:`mnn_ratio_segments`: block b against segment s; returns its match count."""
    n_seg = seg_offsets.shape[0] - 1
    n = sim.shape[0] // n_blocks
    b = t // n_seg
    s = t - b * n_seg
    return _match_block(sim, sim_i, b * n, n, seg_offsets[s], seg_offsets[s + 1], r2, mutual,
                        out_q, out_r, out_d, out_base[t], out_base[t + 1])


_SEGMENTS_SIG = void(float32[:, ::1], int64, int64[::1], float64, boolean, int32[::1], int32[::1], float32[::1],
                     int64[::1], int64[::1])


@njit(_SEGMENTS_SIG, parallel=True, cache=True)
def mnn_ratio_segments(sim, n_blocks, seg_offsets, r2, mutual, out_q, out_r, out_d, out_base, counts):
    """Ratio + (optional) mutual nearest-neighbour matches of each row block against each column segment.

    sim: (n_blocks*N, C) float32 C-contiguous similarities; rows [b*N, (b+1)*N) are query block b (e.g. plain and
        mirrored descriptors of one query).
    n_blocks: int64 >= 1.
    seg_offsets: (S+1,) int64 column offsets of the S reference segments inside ``sim`` (non-decreasing, from 0).
    r2: float64 ratio^2. mutual: bool.
    out_q, out_r: int32 buffers, out_d: float32 buffer; task t = b*S + s (block b, segment s) writes its matches into
        ``[out_base[t], out_base[t+1])`` (out_base: (n_blocks*S+1,) int64, non-decreasing, last <= buffer length):
        query row within the block, column within the segment, distance. Room for min(N, segment size) entries
        when mutual, else N, is always enough; a task never writes past its range.
    counts: (n_blocks*S,) int64, set to the number of matches each task wrote.
    Parallel over the n_blocks*S tasks (Numba threads); :func:`mnn_ratio_segments_serial` is the one-thread twin.
    """
    n_seg = seg_offsets.shape[0] - 1
    sim_i = sim.view(np.int32)
    for t in prange(n_blocks * n_seg):
        counts[t] = _task(sim, sim_i, n_blocks, seg_offsets, t, r2, mutual, out_q, out_r, out_d, out_base)


@njit(_SEGMENTS_SIG, cache=True)
def mnn_ratio_segments_serial(sim, n_blocks, seg_offsets, r2, mutual, out_q, out_r, out_d, out_base, counts):
    """:func:`mnn_ratio_segments` on the calling thread only (no thread-pool wake-up: for small problems)."""
    n_seg = seg_offsets.shape[0] - 1
    sim_i = sim.view(np.int32)
    for t in range(n_blocks * n_seg):
        counts[t] = _task(sim, sim_i, n_blocks, seg_offsets, t, r2, mutual, out_q, out_r, out_d, out_base)


def segments_kernel(n_tasks: int, n_elems: int) -> Callable[..., None]:
    """The parallel kernel when it pays (several tasks, a big enough block, more than one Numba thread), else the
    serial one."""
    if n_tasks > 1 and n_elems >= PARALLEL_MIN_ELEMS and numba.get_num_threads() > 1:
        return _keeping_torch_threads(mnn_ratio_segments)
    return mnn_ratio_segments_serial


# ------------------------------------------------------------------------------------------------- mirror split
@njit(void(float32[:, ::1], int64[::1], int64[::1], int64[::1], float32[:, ::1], float32[:, ::1]), cache=True)
def split_rows(x, lo, hi, fixed, out_sym, out_anti):  # pragma: no cover - jit
    """Mirror split of (N, D) rows for an involutive bin permutation with 2-cycles (lo[k], hi[k]) and fixed bins
    ``fixed``: out_sym (N, K+F) = [(x_lo + x_hi) / sqrt(2), x_fixed], out_anti (N, K) = (x_lo - x_hi) / sqrt(2).
    An orthogonal change of basis, so dot products are kept: q.r = sym_q.sym_r + anti_q.anti_r."""
    c = np.float32(1.0 / math.sqrt(2.0))
    n_pairs = lo.shape[0]
    for i in range(x.shape[0]):
        for k in range(n_pairs):
            a = x[i, lo[k]]
            b = x[i, hi[k]]
            out_sym[i, k] = (a + b) * c
            out_anti[i, k] = (a - b) * c
        for k in range(fixed.shape[0]):
            out_sym[i, n_pairs + k] = x[i, fixed[k]]


@njit(types.UniTuple(int64, 2)(float32[:, ::1], float32[:, ::1], int64, int64, float64, boolean, int32[::1],
                               int32[::1], float32[::1], int64, int64, int64, int64), cache=True)
def _match_split_block(sim_s, sim_a, c0, c1, r2, mutual, out_q, out_r, out_d, base_p, end_p, base_m,
                       end_m):  # pragma: no cover - jit
    """Plain (sim_s + sim_a) and mirrored (sim_s - sim_a) matches of all rows against columns [c0, c1); writes
    into [base_p, end_p) and [base_m, end_m) of the output buffers; returns the two counts."""
    n_rows = sim_s.shape[0]
    m = c1 - c0
    if n_rows == 0 or m == 0:
        return 0, 0
    row_p = np.empty(m, np.float32)
    row_m = np.empty(m, np.float32)
    row_p_i = row_p.view(np.int32)
    row_m_i = row_m.view(np.int32)
    best_bits = np.empty((2, n_rows), np.int32)
    second_bits = np.empty((2, n_rows), np.int32)
    arg = np.empty((2, n_rows), np.int32)
    col_best = np.full((2, m), -np.inf, np.float32)
    col_arg = np.zeros((2, m), np.int32)
    for i in range(n_rows):
        a = sim_s[i, c0:c1]
        b = sim_a[i, c0:c1]
        for j in range(m):
            row_p[j] = a[j] + b[j]
            row_m[j] = a[j] - b[j]
        ii = np.int32(i)
        _scan_row(row_p, row_p_i, col_best[0], col_arg[0], ii, best_bits[0], second_bits[0], arg[0])
        _scan_row(row_m, row_m_i, col_best[1], col_arg[1], ii, best_bits[1], second_bits[1], arg[1])
    kp = _emit(best_bits[0].view(np.float32), second_bits[0].view(np.float32), arg[0], col_arg[0], n_rows, m, r2,
               mutual, out_q, out_r, out_d, base_p, end_p)
    km = _emit(best_bits[1].view(np.float32), second_bits[1].view(np.float32), arg[1], col_arg[1], n_rows, m, r2,
               mutual, out_q, out_r, out_d, base_m, end_m)
    return kp, km


_SPLIT_SIG = void(float32[:, ::1], float32[:, ::1], int64[::1], float64, boolean, int32[::1], int32[::1],
                  float32[::1], int64[::1], int64[::1])


@njit(_SPLIT_SIG, parallel=True, cache=True)
def mnn_ratio_split_segments(sim_s, sim_a, seg_offsets, r2, mutual, out_q, out_r, out_d, out_base, counts):
    """Plain and mirrored matches of one query against each column segment from its mirror-split products.

    sim_s, sim_a: (N, C) float32 C-contiguous, sym_q . sym_r and anti_q . anti_r (see :func:`split_rows`); the
        plain similarities are ``sim_s + sim_a``, the mirrored ones ``sim_s - sim_a`` (float32).
    seg_offsets, r2, mutual, out_*, counts: as :func:`mnn_ratio_segments` with n_blocks = 2 (task s: plain
        matches with segment s, task S + s: mirrored matches with segment s).
    Parallel over segments; :func:`mnn_ratio_split_segments_serial` is the one-thread twin.
    """
    n_seg = seg_offsets.shape[0] - 1
    for s in prange(n_seg):
        kp, km = _match_split_block(sim_s, sim_a, seg_offsets[s], seg_offsets[s + 1], r2, mutual, out_q, out_r,
                                    out_d, out_base[s], out_base[s + 1], out_base[n_seg + s],
                                    out_base[n_seg + s + 1])
        counts[s] = kp
        counts[n_seg + s] = km


@njit(_SPLIT_SIG, cache=True)
def mnn_ratio_split_segments_serial(sim_s, sim_a, seg_offsets, r2, mutual, out_q, out_r, out_d, out_base, counts):
    """:func:`mnn_ratio_split_segments` on the calling thread only."""
    n_seg = seg_offsets.shape[0] - 1
    for s in range(n_seg):
        kp, km = _match_split_block(sim_s, sim_a, seg_offsets[s], seg_offsets[s + 1], r2, mutual, out_q, out_r,
                                    out_d, out_base[s], out_base[s + 1], out_base[n_seg + s],
                                    out_base[n_seg + s + 1])
        counts[s] = kp
        counts[n_seg + s] = km


def split_kernel(n_tasks: int, n_elems: int) -> Callable[..., None]:
    """:func:`mnn_ratio_split_segments` when it pays (as :func:`segments_kernel`), else the serial twin."""
    if n_tasks > 1 and n_elems >= PARALLEL_MIN_ELEMS and numba.get_num_threads() > 1:
        return _keeping_torch_threads(mnn_ratio_split_segments)
    return mnn_ratio_split_segments_serial


# ===================================================================================================== RANSAC
# LO-RANSAC with MSAC scoring for :func:`matcher.local.geometry.fit_geometry` (the numpy ``_ransac_numpy`` there is
# the reference it is tested against). Models: 0 homography (4-point sample), 1 affine (3), 2 similarity (2).
# Minimal samples are drawn with a seeded xorshift64* generator, so a fit is deterministic for a seed.
_LO_ITERS = 4  # least-squares re-fits per local optimisation (as geometry._LO_ITERS)
_REWEIGHT_ITERS = 3  # reweighted DLT passes (as geometry._REWEIGHT_ITERS)
_MIN_SAMPLE_AREA = 1e-3  # triangle area (normalised coordinates) below which a minimal sample is degenerate
_U12, _U25, _U27 = np.uint64(12), np.uint64(25), np.uint64(27)
_U11 = np.uint64(11)
_XS_MUL = np.uint64(0x2545F4914F6CDD1D)


@njit(uint64(uint64[::1]), cache=True)
def _next_u64(state):  # pragma: no cover - jit
    """xorshift64* step on ``state[0]`` (never 0); returns the next 64-bit output."""
    x = state[0]
    x ^= x >> _U12
    x ^= x << _U25
    x ^= x >> _U27
    state[0] = x
    return x * _XS_MUL


@njit(uint64(int64), cache=True)
def rng_seed(seed):  # pragma: no cover - jit
    """A non-zero xorshift state from any int64 seed (splitmix64 finaliser)."""
    z = np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z if z != np.uint64(0) else np.uint64(1)


@njit(int64(uint64[::1], int64), cache=True)
def _below(state, n):  # pragma: no cover - jit
    """Uniform integer in [0, n) (n >= 1)."""
    return min(int64(np.float64(_next_u64(state) >> _U11) * (1.0 / 9007199254740992.0) * n), n - 1)


@njit(void(uint64[::1], int64, int64[::1]), cache=True)
def draw_sample(state, n, idx):  # pragma: no cover - jit
    """Fill ``idx`` (length s <= n) with distinct uniform indices in [0, n)."""
    s = idx.shape[0]
    for a in range(s):
        while True:
            v = _below(state, n)
            dup = False
            for b in range(a):
                if idx[b] == v:
                    dup = True
            if not dup:
                idx[a] = v
                break


@njit(float64(float64[:, ::1], int64[::1], int64, int64, int64), cache=True)
def _tri(p, idx, i, j, k):  # pragma: no cover - jit
    """Doubled signed area of the triangle p[idx[i]], p[idx[j]], p[idx[k]]."""
    a, b, c = idx[i], idx[j], idx[k]
    return (p[b, 0] - p[a, 0]) * (p[c, 1] - p[a, 1]) - (p[b, 1] - p[a, 1]) * (p[c, 0] - p[a, 0])


@njit(boolean(int64, float64[:, ::1], float64[:, ::1], int64[::1], boolean), cache=True)
def sample_ok(model, qn, rn, idx, allow_reflection):  # pragma: no cover - jit
    """Minimal sample non-degenerate (areas, distances in normalised coordinates) and consistently oriented
    (every point triple keeps its orientation; reflected only when ``allow_reflection``)."""
    if model == 2:
        dq = math.hypot(qn[idx[1], 0] - qn[idx[0], 0], qn[idx[1], 1] - qn[idx[0], 1])
        dr = math.hypot(rn[idx[1], 0] - rn[idx[0], 0], rn[idx[1], 1] - rn[idx[0], 1])
        return dq > 1e-3 and dr > 1e-3
    n_tri = 1 if model == 1 else 4
    sign0 = 0.0
    for t in range(n_tri):
        i, j, k = (0, 1, 2) if t == 0 else ((0, 1, 3) if t == 1 else ((0, 2, 3) if t == 2 else (1, 2, 3)))
        aq = _tri(qn, idx, i, j, k)
        ar = _tri(rn, idx, i, j, k)
        if not (abs(aq) > _MIN_SAMPLE_AREA and abs(ar) > _MIN_SAMPLE_AREA):
            return False
        prod = np.sign(aq) * np.sign(ar)
        if t == 0:
            sign0 = prod
            if not allow_reflection and prod < 0:
                return False
        elif prod != sign0:
            return False
    return True


@njit(void(float64[:, ::1], float64[:, ::1]), cache=True)
def _adj3(m, out):  # pragma: no cover - jit
    """Adjugate of a 3x3 matrix (inverse times determinant) into ``out``."""
    out[0, 0] = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    out[0, 1] = m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]
    out[0, 2] = m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]
    out[1, 0] = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    out[1, 1] = m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]
    out[1, 2] = m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]
    out[2, 0] = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    out[2, 1] = m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]
    out[2, 2] = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]


@njit(void(float64[:, ::1], float64[:, ::1], float64[:, ::1]), cache=True)
def _mul3(a, b, out):  # pragma: no cover - jit
    """out = a @ b for 3x3 matrices (``out`` must not alias ``a`` or ``b``)."""
    for i in range(3):
        for j in range(3):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j]


@njit(void(float64[:, ::1], int64[::1], float64[:, ::1], float64[:, ::1]), cache=True)
def _basis(p, idx, m, out):  # pragma: no cover - jit
    """Projective basis mapping e1, e2, e3, (1, 1, 1) to the 4 points p[idx] (``m`` is a 3x3 work array)."""
    for c in range(3):
        m[0, c] = p[idx[c], 0]
        m[1, c] = p[idx[c], 1]
        m[2, c] = 1.0
    _adj3(m, out)
    x, y = p[idx[3], 0], p[idx[3], 1]
    lam0 = out[0, 0] * x + out[0, 1] * y + out[0, 2]
    lam1 = out[1, 0] * x + out[1, 1] * y + out[1, 2]
    lam2 = out[2, 0] * x + out[2, 1] * y + out[2, 2]
    for r in range(3):
        out[r, 0] = m[r, 0] * lam0
        out[r, 1] = m[r, 1] * lam1
        out[r, 2] = m[r, 2] * lam2


@njit(void(int64, float64[:, ::1], float64[:, ::1], int64[::1], float64[:, ::1], float64[:, :, ::1]), cache=True)
def minimal_solve(model, qn, rn, idx, h, work):  # pragma: no cover - jit
    """Transform h (3x3) mapping the minimal sample qn[idx] -> rn[idx] exactly (normalised coordinates);
    ``work`` is a (4, 3, 3) scratch array. h may be singular or non-finite for degenerate samples."""
    if model == 0:
        _basis(rn, idx, work[0], work[1])  # work[1] = basis of the reference points
        _basis(qn, idx, work[0], work[2])
        _adj3(work[2], work[3])
        _mul3(work[1], work[3], h)
    elif model == 1:
        m = work[0]
        for a in range(3):
            m[a, 0] = qn[idx[a], 0]
            m[a, 1] = qn[idx[a], 1]
            m[a, 2] = 1.0
        _adj3(m, work[1])
        det = m[0, 0] * work[1][0, 0] + m[0, 1] * work[1][1, 0] + m[0, 2] * work[1][2, 0]
        for c in range(3):  # column c of the solution: coefficients of x, y, 1 for output coordinate d
            for d in range(2):
                h[d, c] = (work[1][c, 0] * rn[idx[0], d] + work[1][c, 1] * rn[idx[1], d]
                           + work[1][c, 2] * rn[idx[2], d]) / det
        h[2, 0], h[2, 1], h[2, 2] = 0.0, 0.0, 1.0
    else:
        zq0 = complex(qn[idx[0], 0], qn[idx[0], 1])
        zq1 = complex(qn[idx[1], 0], qn[idx[1], 1])
        zr0 = complex(rn[idx[0], 0], rn[idx[0], 1])
        zr1 = complex(rn[idx[1], 0], rn[idx[1], 1])
        a = (zr1 - zr0) / (zq1 - zq0)
        t = zr0 - a * zq0
        h[0, 0], h[0, 1], h[0, 2] = a.real, -a.imag, t.real
        h[1, 0], h[1, 1], h[1, 2] = a.imag, a.real, t.imag
        h[2, 0], h[2, 1], h[2, 2] = 0.0, 0.0, 1.0


@njit(float64(float64[:, ::1], float64[:, ::1], float64[:, ::1], float64, float64, float64,
              float64[::1], float64[:, ::1]), cache=True)
def msac_loss(h, q, r, thr, back, stop, err, inv):  # pragma: no cover - jit
    """MSAC loss sum(min(e, thr)^2) of h over the n points q -> r, e = max(|h q - r|, back * |h^-1 r - q|)
    (inf behind either camera or non-finite). Writes e into ``err`` (inf where e >= thr) and stops early,
    returning a value >= ``stop``, once the partial sum reaches ``stop`` (the loss cannot beat it then).
    ``inv`` is a 3x3 scratch array."""
    _adj3(h, inv)
    det = h[0, 0] * inv[0, 0] + h[0, 1] * inv[1, 0] + h[0, 2] * inv[2, 0]
    sgn = 1.0 if det > 0 else (-1.0 if det < 0 else 0.0)
    thr2 = thr * thr
    loss = 0.0
    for i in range(q.shape[0]):
        x, y = q[i, 0], q[i, 1]
        e = np.inf
        w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        if w > 1e-12:
            u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w - r[i, 0]
            v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w - r[i, 1]
            ef = math.sqrt(u * u + v * v)
            if ef < thr:
                rx, ry = r[i, 0], r[i, 1]
                wb = sgn * (inv[2, 0] * rx + inv[2, 1] * ry + inv[2, 2])
                if wb > 1e-12:
                    ub = sgn * (inv[0, 0] * rx + inv[0, 1] * ry + inv[0, 2]) / wb - x
                    vb = sgn * (inv[1, 0] * rx + inv[1, 1] * ry + inv[1, 2]) / wb - y
                    e = max(ef, back * math.sqrt(ub * ub + vb * vb))
        if e < thr:
            err[i] = e
            loss += e * e
        else:
            err[i] = np.inf
            loss += thr2
        if loss >= stop:
            return loss
    return loss


@njit(void(float64[:, ::1], boolean[::1], float64[:, ::1]), cache=True)
def _normaliser(p, mask, t):  # pragma: no cover - jit
    """Hartley similarity t (centroid to 0, mean distance sqrt(2)) of the points p[mask]."""
    cx, cy, m = 0.0, 0.0, 0
    for i in range(p.shape[0]):
        if mask[i]:
            cx += p[i, 0]
            cy += p[i, 1]
            m += 1
    cx /= max(m, 1)
    cy /= max(m, 1)
    d = 0.0
    for i in range(p.shape[0]):
        if mask[i]:
            d += math.hypot(p[i, 0] - cx, p[i, 1] - cy)
    d /= max(m, 1)
    s = math.sqrt(2.0) / d if d > 1e-12 else 1.0
    t[0, 0], t[0, 1], t[0, 2] = s, 0.0, -s * cx
    t[1, 0], t[1, 1], t[1, 2] = 0.0, s, -s * cy
    t[2, 0], t[2, 1], t[2, 2] = 0.0, 0.0, 1.0


@njit(void(float64[:, ::1], float64[:, ::1]), cache=True)
def _inv_normaliser(t, out):  # pragma: no cover - jit
    """Inverse of a normaliser from :func:`_normaliser`."""
    s = t[0, 0]
    out[0, 0], out[0, 1], out[0, 2] = 1.0 / s, 0.0, -t[0, 2] / s
    out[1, 0], out[1, 1], out[1, 2] = 0.0, 1.0 / s, -t[1, 2] / s
    out[2, 0], out[2, 1], out[2, 2] = 0.0, 0.0, 1.0


@njit(boolean(int64, float64[:, ::1], float64[:, ::1], float64[:, ::1]), cache=True)
def least_squares(model, q, r, h):  # pragma: no cover - jit
    """Least-squares transform q -> r (normalised (m, 2) points, m >= minimal size) into h; False when
    degenerate. Similarity: closed form; affine: normal equations, rank 3 required; homography: DLT reweighted by
    the projective depth (approximates the geometric error), as geometry._least_squares. Small (3x3, 9x9) LAPACK
    calls only: one on a tall matrix costs far more (OpenBLAS wakes its threads for it)."""
    m = q.shape[0]
    if model == 2:
        cq, cr = 0j, 0j
        for i in range(m):
            cq += complex(q[i, 0], q[i, 1])
            cr += complex(r[i, 0], r[i, 1])
        cq /= m
        cr /= m
        den, num = 0.0, 0j
        for i in range(m):
            dq = complex(q[i, 0], q[i, 1]) - cq
            num += dq.conjugate() * (complex(r[i, 0], r[i, 1]) - cr)
            den += dq.real * dq.real + dq.imag * dq.imag
        if den < 1e-12:
            return False
        a = num / den
        t = cr - a * cq
        h[0, 0], h[0, 1], h[0, 2] = a.real, -a.imag, t.real
        h[1, 0], h[1, 1], h[1, 2] = a.imag, a.real, t.imag
        h[2, 0], h[2, 1], h[2, 2] = 0.0, 0.0, 1.0
        return True
    if model == 1:  # normal equations of [x, y, 1] -> (u, v), rank 3 required
        ata = np.zeros((3, 3))
        atb = np.zeros((3, 2))
        row = np.empty(3)
        for i in range(m):
            row[0], row[1], row[2] = q[i, 0], q[i, 1], 1.0
            for a in range(3):
                for b in range(3):
                    ata[a, b] += row[a] * row[b]
                atb[a, 0] += row[a] * r[i, 0]
                atb[a, 1] += row[a] * r[i, 1]
        u, sv, vt = np.linalg.svd(ata)
        if not sv[2] > 1e-12 * sv[0]:  # A's singular values within 1e-6 of each other (A^T A squares them)
            return False
        for d in range(2):
            for c in range(3):
                acc = 0.0
                for k in range(3):
                    acc += vt[k, c] * (u[0, k] * atb[0, d] + u[1, k] * atb[1, d] + u[2, k] * atb[2, d]) / sv[k]
                h[d, c] = acc
        h[2, 0], h[2, 1], h[2, 2] = 0.0, 0.0, 1.0
        return True
    weights = np.ones(m)
    row = np.zeros(9)
    ata = np.zeros((9, 9))
    found = False
    for _ in range(_REWEIGHT_ITERS):
        # A^T A of the weighted DLT rows (9x9): its eigenvectors are A's right singular vectors (a LAPACK call
        # on the tall (2m, 9) matrix is far slower, with OpenBLAS threads waking up for it)
        ata[:, :] = 0.0
        for i in range(m):
            x, y, u, v = q[i, 0], q[i, 1], r[i, 0], r[i, 1]
            iw = 1.0 / weights[i]
            for half in range(2):
                row[:] = 0.0
                o = 0 if half == 0 else 3
                t = u if half == 0 else v
                row[o], row[o + 1], row[o + 2] = x * iw, y * iw, iw
                row[6], row[7], row[8] = -t * x * iw, -t * y * iw, -t * iw
                for a in range(9):
                    ra = row[a]
                    if ra != 0.0:
                        for b in range(9):
                            ata[a, b] += ra * row[b]
        _, sv, vt = np.linalg.svd(ata)  # symmetric PSD: singular values are A's squared
        if math.sqrt(max(sv[7], 0.0)) < 1e-12:
            return found
        for k in range(9):
            h[k // 3, k % 3] = vt[8, k]
        found = True
        mean_w = 0.0
        for i in range(m):
            w = abs(q[i, 0] * h[2, 0] + q[i, 1] * h[2, 1] + h[2, 2])
            if w < 1e-9:
                return True
            weights[i] = w
            mean_w += w
        mean_w /= m
        for i in range(m):
            weights[i] /= mean_w
    return found


_MIN_SAMPLE_SIZE = (4, 3, 2)  # minimal sample size per model id


@njit(float64(int64, float64[:, ::1], float64[:, ::1], boolean[::1], float64, float64, float64[:, ::1],
              float64[::1], float64[:, :, ::1]), cache=True)
def local_optimise(model, q, r, mask, thr, back, best, err, work):  # pragma: no cover - jit
    """Least-squares re-fits on the inliers ``mask`` (px in/out, normalised internally), up to _LO_ITERS times
    while the MSAC loss drops; writes the best re-fit into ``best`` and returns its loss (inf when none;
    ``mask`` is overwritten). ``err`` (n,) and ``work`` (8, 3, 3) are scratch arrays."""
    s = _MIN_SAMPLE_SIZE[model]
    best_loss = np.inf
    n = q.shape[0]
    for _ in range(_LO_ITERS):
        m = 0
        for i in range(n):
            m += mask[i]
        if m < s:
            break
        tq, tr, hn, h, tmp = work[0], work[1], work[2], work[3], work[4]
        _normaliser(q, mask, tq)
        _normaliser(r, mask, tr)
        qs = np.empty((m, 2))
        rs = np.empty((m, 2))
        k = 0
        for i in range(n):
            if mask[i]:
                qs[k, 0] = tq[0, 0] * q[i, 0] + tq[0, 2]
                qs[k, 1] = tq[1, 1] * q[i, 1] + tq[1, 2]
                rs[k, 0] = tr[0, 0] * r[i, 0] + tr[0, 2]
                rs[k, 1] = tr[1, 1] * r[i, 1] + tr[1, 2]
                k += 1
        if not least_squares(model, qs, rs, hn):
            break
        _inv_normaliser(tr, work[5])
        _mul3(work[5], hn, tmp)
        _mul3(tmp, tq, h)
        ok = abs(h[2, 2]) >= 1e-12
        for a in range(3):
            for b in range(3):
                ok = ok and np.isfinite(h[a, b])
        if not ok:
            break
        z = h[2, 2]
        for a in range(3):
            for b in range(3):
                h[a, b] /= z
        loss = msac_loss(h, q, r, thr, back, np.inf, err, work[6])
        if loss >= best_loss:
            break
        best_loss = loss
        best[:, :] = h
        same = True
        for i in range(n):
            new = err[i] < thr
            same = same and new == mask[i]
            mask[i] = new
        if same:
            break
    return best_loss


@njit(types.Tuple((boolean, int64, int64))(
    int64, float64[:, ::1], float64[:, ::1], float64, float64, int64, float64, int64, boolean, float64[:, ::1]),
    cache=True)
def ransac(model, q, r, thr, back, max_iters, confidence, seed, allow_reflection, out):  # pragma: no cover - jit
    """LO-RANSAC (MSAC) for a transform q -> r on n >= s correspondences (px, (n, 2) float64), as
    geometry._ransac_numpy + the final re-fit, one hypothesis at a time.

    model: 0 homography, 1 affine, 2 similarity. thr: inlier threshold on e = max(|h q - r|, back * |h^-1 r - q|)
    (reference px). Draws up to ``max_iters`` minimal samples (fewer once an all-inlier sample was drawn with
    ``confidence``), skips degenerate or inconsistently oriented samples (reflections unless ``allow_reflection``),
    scores hypotheses by MSAC loss (stopping a hypothesis' scoring once it cannot win), locally optimises every new
    best hypothesis and finally re-fits the best on its inliers. Deterministic for ``seed``.
    Returns (found, draws, inliers of the result); the transform (H[2, 2] == 1) goes into ``out``."""
    n = q.shape[0]
    s = _MIN_SAMPLE_SIZE[model]
    state = np.empty(1, np.uint64)
    state[0] = rng_seed(seed)
    work = np.empty((8, 3, 3))
    tq, tr, tr_inv, hn, h, tmp, best = work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    lo_work = np.empty((8, 3, 3))
    allm = np.ones(n, np.bool_)
    _normaliser(q, allm, tq)
    _normaliser(r, allm, tr)
    _inv_normaliser(tr, tr_inv)
    qn = np.empty((n, 2))
    rn = np.empty((n, 2))
    for i in range(n):
        qn[i, 0] = tq[0, 0] * q[i, 0] + tq[0, 2]
        qn[i, 1] = tq[1, 1] * q[i, 1] + tq[1, 2]
        rn[i, 0] = tr[0, 0] * r[i, 0] + tr[0, 2]
        rn[i, 1] = tr[1, 1] * r[i, 1] + tr[1, 2]
    idx = np.empty(s, np.int64)
    err = np.empty(n)
    mask = np.empty(n, np.bool_)
    h_lo = np.empty((3, 3))
    best_loss, best_count, found = np.inf, 0, False
    needed, done = max_iters, 0
    while done < min(needed, max_iters):
        done += 1
        draw_sample(state, n, idx)
        if not sample_ok(model, qn, rn, idx, allow_reflection):
            continue
        minimal_solve(model, qn, rn, idx, hn, lo_work)
        _mul3(tr_inv, hn, tmp)
        _mul3(tmp, tq, h)
        z = h[2, 2]
        if not abs(z) > 1e-12:
            continue
        for a in range(3):
            for b in range(3):
                h[a, b] /= z
        loss = msac_loss(h, q, r, thr, back, best_loss, err, tmp)
        if not loss < best_loss:
            continue
        best[:, :] = h
        best_loss = loss
        found = True
        for i in range(n):
            mask[i] = err[i] < thr
        loss_lo = local_optimise(model, q, r, mask, thr, back, h_lo, err, lo_work)
        if loss_lo < best_loss:
            best[:, :] = h_lo
            best_loss = loss_lo
        msac_loss(best, q, r, thr, back, np.inf, err, tmp)
        count = 0
        for i in range(n):
            count += err[i] < thr
        if count > best_count:
            best_count = count
            w = count / n
            if w >= 1.0:
                needed = 0
            else:
                denom = math.log(max(1e-300, 1.0 - w ** s))
                needed = int64(math.ceil(math.log(1.0 - confidence) / denom)) if denom < 0 else max_iters
    if not found:
        return False, done, 0
    # final least-squares re-fit on the inliers of all correspondences
    msac_loss(best, q, r, thr, back, np.inf, err, tmp)
    for i in range(n):
        mask[i] = err[i] < thr
    if local_optimise(model, q, r, mask, thr, back, h_lo, err, lo_work) < np.inf:
        best[:, :] = h_lo
    msac_loss(best, q, r, thr, back, np.inf, err, tmp)
    count = 0
    for i in range(n):
        count += err[i] < thr
    out[:, :] = best
    return True, done, count


_restore_torch_threads(_TORCH_THREADS)  # see the top of the module
