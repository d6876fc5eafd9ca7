"""Numba kernels for descriptor matching: best/second-best per row and best per column, per reference segment.

The kernels read a similarity matrix (dot products of unit descriptors, so L2 distance^2 = 2 - 2*sim) that the caller
computed with one BLAS GEMM. Rules shared by every implementation in :mod:`matcher.local.matching`:

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
vectorises. Similarities must be finite.

Signatures are explicit and compiled eagerly when this module is imported (``matcher.local.matching`` imports it on the
first match), with ``cache=True``: the first import on a machine compiles (about 4 s of CPU) and writes the cache next
to this file (or under ``NUMBA_CACHE_DIR``); later processes load it (about 0.35 s of CPU, most of it Numba's own
start-up). The parallel kernel (Numba's OpenMP layer here) and its serial twin share all code; the serial one is used
for small blocks, where waking the thread pool costs more than it saves.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np
from numba import boolean, float32, float64, int32, int64, njit, prange, void

__all__ = ["PARALLEL_MIN_ELEMS", "mnn_ratio_segments", "mnn_ratio_segments_serial", "segments_kernel"]

PARALLEL_MIN_ELEMS = 1 << 21  # similarity blocks smaller than this run on one thread (thread wake-up cost)

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
    """One pass over a row: raise ``col_best``/``col_arg`` where ``row_f`` is strictly larger; return the row's max key."""
    m = _I32_MIN
    for j in range(row_f.shape[0]):
        s = row_f[j]
        gt = s > col_best[j]
        col_best[j] = s if gt else col_best[j]
        col_arg[j] = i if gt else col_arg[j]
        k = _key(row_i[j])
        m = max(m, k)
    return m


@njit(int32(int32[::1], int64), cache=True)
def _key_max_except(row_i, skip):  # pragma: no cover - jit
    """Max key of row_i (int32 bits) over all indices but ``skip``; ``_I32_MIN`` when there is none."""
    m = _I32_MIN
    for j in range(row_i.shape[0]):
        k = _key(row_i[j]) if j != skip else _I32_MIN
        m = max(m, k)
    return m


@njit(int64(int32[::1], int32), cache=True)
def _key_first(row_i, key):  # pragma: no cover - jit
    """Lowest index j with key(row_i[j]) == key (len(row_i) if none)."""
    n = np.int32(row_i.shape[0])
    f = n
    for j in range(n):
        f = min(f, np.int32(j) if _key(row_i[j]) == key else n)
    return f


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
        row_f = sim[row0 + i, c0:c1]
        row_i = sim_i[row0 + i, c0:c1]
        k1 = _col_update_row_max(row_f, row_i, col_best, col_arg, np.int32(i))
        j1 = _key_first(row_i, k1)
        best_bits[i] = _bits(k1)
        arg[i] = j1
        if m > 1:
            second_bits[i] = _bits(_key_max_except(row_i, j1))
    best = best_bits.view(np.float32)
    second = second_bits.view(np.float32)
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
        return mnn_ratio_segments
    return mnn_ratio_segments_serial
