"""Micro-benchmark of descriptor matching: pairs/s of one query (N descriptors) against R references (M each).

    python bench/local_matching_speed.py --refs 10 100 --threads 1 2

Paths (all apply ratio test + mutual check unless noted; random unit descriptors with planted near-copies):
- ``numba 1-to-many``: :func:`matcher.local.matching.match_one_to_many` (GEMM per chunk + Numba kernel), also with the
  mirrored query set in the same call (2 query sets per pair);
- ``numba split 1-to-many``: :func:`match_one_to_many_split`, plain + mirrored from the mirror split of SIFT-like
  descriptors (two half-width GEMMs; the engine's path), with and without the references' split (cached per bank in
  the engine);
- ``numba per pair``: :func:`match_mnn_ratio` called once per reference;
- ``numpy per pair``: :func:`match_mnn_ratio_numpy` called once per reference;
- ``cv2 BFMatcher``: ``knnMatch(k=2)`` + a Python ratio-0.8 loop per reference (no mutual check; the naive baseline);
- ``torch cpu``: :func:`match_one_to_many_torch` on CPU tensors;
- ``GEMM only``: the float32 similarity GEMMs alone (a lower bound for the GEMM-based paths).
Numba and torch use ``--threads`` threads; BLAS (numpy GEMM) keeps its default (set OPENBLAS_NUM_THREADS=1 in the
environment for one-thread runs; the engine itself limits OpenBLAS to ``LocalConfig.blas_threads``). Reports the
best of ``--repeat`` runs, in pairs per wall second and per CPU second.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import cv2
import numba
import numpy as np
import torch

from matcher.local.features import MIRROR_PERMUTATION
from matcher.local.matching import (
    DEFAULT_CHUNK_BYTES,
    match_mnn_ratio,
    match_mnn_ratio_numpy,
    match_one_to_many,
    match_one_to_many_split,
    match_one_to_many_torch,
    mirror_split,
)


def make_problem(n: int, m: int, r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query (n, 128), its mirrored set (n, 128), references (r*m, 128) float32 unit rows, offsets (r+1,) int64."""
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ref = unit(rng.standard_normal((r * m, 128)))
    q = unit(rng.standard_normal((n, 128)))
    k = n // 4  # a quarter of the query are noisy copies of descriptors of reference 0
    q[:k] = unit(ref[rng.choice(m, k, replace=False)] + 0.15 * rng.standard_normal((k, 128)))
    return q, unit(q[:, MIRROR_PERMUTATION].copy()), ref, np.arange(r + 1, dtype=np.int64) * m


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Smallest wall time and smallest process CPU time (s, all threads) of ``repeat`` calls after a warm-up call.
    CPU time is the steadier number on a shared machine; it also counts threads spinning while they wait."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def cv2_ratio_loop(q: np.ndarray, refs: list[np.ndarray], ratio: float = 0.8) -> int:
    """Naive baseline: BFMatcher(L2) knnMatch k=2 and a Python ratio loop per reference; returns the match count."""
    bf = cv2.BFMatcher(cv2.NORM_L2)
    total = 0
    for r in refs:
        for pair in bf.knnMatch(q, r, k=2):
            if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
                total += 1
    return total


def run(n: int, m: int, r: int, threads: int, repeat: int) -> list[tuple[str, float, float]]:
    """(path name, pairs per wall second, pairs per CPU second) for one (N, M, R) setting."""
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    q, qm, ref, offsets = make_problem(n, m, r)
    refs = [ref[offsets[i] : offsets[i + 1]] for i in range(r)]
    tq, tqm, tref = torch.from_numpy(q), torch.from_numpy(qm), torch.from_numpy(ref)
    width = max(m, DEFAULT_CHUNK_BYTES // (4 * n)) // m * m  # whole references per chunk, as match_one_to_many
    chunks = [ref[i : i + width] for i in range(0, len(ref), width)]
    buf = np.empty(n * width, np.float32)
    ref_split = mirror_split(ref, MIRROR_PERMUTATION)
    paths: list[tuple[str, Callable[[], object]]] = [
        ("GEMM only, same chunks (lower bound)",
         lambda: [np.matmul(q, x.T, out=buf[: n * len(x)].reshape(n, len(x))) for x in chunks]),
        ("numba 1-to-many", lambda: match_one_to_many(q, ref, offsets)),
        ("numba 1-to-many + mirrored", lambda: match_one_to_many(q, ref, offsets, mirrored=qm)),
        ("numba split 1-to-many (plain + mirrored)",
         lambda: match_one_to_many_split(*mirror_split(q, MIRROR_PERMUTATION), *ref_split, offsets)),
        ("numba split 1-to-many, incl. splitting the references",
         lambda: match_one_to_many_split(*mirror_split(q, MIRROR_PERMUTATION),
                                         *mirror_split(ref, MIRROR_PERMUTATION), offsets)),
        ("numba per pair", lambda: [match_mnn_ratio(q, x) for x in refs]),
        ("numpy per pair", lambda: [match_mnn_ratio_numpy(q, x) for x in refs]),
        ("cv2 BFMatcher knn2 + ratio loop", lambda: cv2_ratio_loop(q, refs)),
        ("torch cpu 1-to-many", lambda: match_one_to_many_torch(tq, tref, offsets)),
        ("torch cpu 1-to-many + mirrored", lambda: match_one_to_many_torch(tq, tref, offsets, mirrored=tqm)),
    ]
    out = []
    for name, fn in paths:
        wall, cpu = best_time(fn, repeat)
        out.append((name, r / wall, r / max(cpu, 1e-9)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="query descriptors")
    ap.add_argument("--m", type=int, default=1024, help="descriptors per reference")
    ap.add_argument("--refs", type=int, nargs="+", default=[10, 100], help="numbers of references R")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="numba/torch thread counts")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}, "
          f"cv2 {cv2.__version__}")
    print(f"# N={args.n} query descriptors, M={args.m} per reference, best of {args.repeat}; pairs/s (higher is better)")
    rows: dict[str, dict[tuple[int, int], tuple[float, float]]] = {}
    cols = [(r, t) for r in args.refs for t in args.threads]
    for r, t in cols:
        for name, wall, cpu in run(args.n, args.m, r, t, args.repeat):
            rows.setdefault(name, {})[(r, t)] = (wall, cpu)
    print(f"# threading layer {numba.threading_layer()}, load average {os.getloadavg()[0]:.1f}")
    print("# cells: pairs per wall second / pairs per CPU second (process CPU time, all threads)")
    print("| path | " + " | ".join(f"R={r}, {t} thr" for r, t in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, vals in rows.items():
        print(f"| {name} | " + " | ".join(f"{vals[c][0]:.1f} / {vals[c][1]:.1f}" for c in cols) + " |")

if __name__ == "__main__":
    main()
