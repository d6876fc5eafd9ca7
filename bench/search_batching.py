"""The candidate stage's exact index searches at DISC scale: one query at a time (the pipeline before issue 15's
third pass) against a chunk of queries at once through faiss' matrix-product path
(``matcher.retrieval.candidates.search_queries``, ``matcher.retrieval.index.exact_batches``), one thread.

    python bench/search_batching.py --refs 1000000 --crops-per-ref 14 --queries 64 --out bench/results_search_batching.json

Per query the pipeline searches its V variants (12 on the home benchmark: full, 2x2 grid, centre, 3 rotations, 2
flips, ~1.2 detected pictures) against the global index and the whole query against the crop index, top
``global_k`` (20) each. Both indexes are faiss ``IndexFlatIP`` up to a million references (``descriptor.
index_threshold``; the crop index is always flat), so at a million references one query reads 1 GB of global
descriptors and 14 GB of crop descriptors from memory. The indexes here hold random unit vectors (the cost of an
exact search does not depend on the values); ``--crops-per-ref`` x ``--refs`` crop vectors need 1 KB each of RAM,
so the crop index can be measured at a fraction of its size (``--crop-refs``) and scaled linearly (an exact scan is
linear in the vectors it reads; reported as such).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.io.atomic import atomic_write_text
from matcher.retrieval.index import exact_batches


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def flat_index(n: int, dim: int, seed: int, block: int = 250_000) -> faiss.IndexFlatIP:
    """A flat inner-product index of ``n`` random unit vectors, filled block by block (bounded temporaries)."""
    rng = np.random.default_rng(seed)
    index = faiss.IndexFlatIP(dim)
    for s in range(0, n, block):
        index.add(unit(rng.standard_normal((min(block, n - s), dim), dtype=np.float32)))
    return index


def time_searches(global_index: faiss.Index, crop_index: faiss.Index, queries: list[np.ndarray], k: int,
                  chunk: int) -> float:
    """Seconds for the searches of every query: chunk 1 = each query alone (V vectors, then 1), else ``chunk``
    queries' variants in one global search and their whole-query vectors in one crop search."""
    t0 = time.perf_counter()
    with exact_batches() if chunk > 1 else contextlib.nullcontext():  # as search_queries does
        for s in range(0, len(queries), chunk):
            part = queries[s:s + chunk]
            global_index.search(np.concatenate(part), k)
            crop_index.search(np.stack([q[0] for q in part]), k)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=int, default=1_000_000, help="references in the global index")
    ap.add_argument("--crop-refs", type=int, default=200_000,
                    help="references whose crops are in the crop index (scaled to --refs linearly)")
    ap.add_argument("--crops-per-ref", type=int, default=14)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--variants", type=int, default=12, help="query variants searched in the global index")
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 32], help="queries per search call")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    t = time.perf_counter()
    g = flat_index(args.refs, args.dim, 0)
    c = flat_index(args.crop_refs * args.crops_per_ref, args.dim, 1)
    build_s = time.perf_counter() - t
    rng = np.random.default_rng(2)
    queries = [unit(rng.standard_normal((args.variants, args.dim), dtype=np.float32)) for _ in range(args.queries)]
    scale = args.refs / args.crop_refs
    rows = []
    for chunk in args.chunks:
        # global and crop searches timed apart, so that the crop part can be scaled to --refs
        t_g = time_searches(g, faiss.IndexFlatIP(args.dim), queries, args.k, chunk)
        t_c = time_searches(faiss.IndexFlatIP(args.dim), c, queries, args.k, chunk)
        row = {"chunk": chunk, "global_s_per_query": t_g / args.queries,
               "crops_s_per_query_measured": t_c / args.queries,
               "crops_s_per_query_at_refs": t_c / args.queries * scale}
        row["search_s_per_query_at_refs"] = row["global_s_per_query"] + row["crops_s_per_query_at_refs"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"command": "python " + " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
           "threads": args.threads, "refs": args.refs, "crop_vectors_measured": c.ntotal,
           "crop_vectors_at_refs": args.refs * args.crops_per_ref, "variants": args.variants, "k": args.k,
           "queries": args.queries, "build_s": build_s, "rows": rows}
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
