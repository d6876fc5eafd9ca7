"""DISC-scale projection: measured per-stage costs on this machine, scaled to a million references and 50,000
queries, give the cluster size, the wall time and the memory per node.

    python bench/disc_projection.py --match-small /tmp/s4/match_1k.json --match-large /tmp/s4/match_10k.json \\
        --index-run /tmp/s4/build10k.json --index-dir /tmp/idx10k --out bench/results_disc_projection.json

Inputs are ``icd match --json`` summaries of one query set against two index sizes (stage seconds and the number
of references), the ``icd index --json`` summary of an indexing run (stage seconds per added reference) and an
index folder (bytes per reference on disk, by part). The model, per query and per stage:

- ``voting``: a + b sqrt(N): the voter is IVF with 2 sqrt(n) lists and a fixed nprobe, so both the coarse
  quantiser and the lists scanned grow as sqrt(N) (n = keypoints, proportional to N);
- ``search``: a + b N while the global and crop indexes are exact (flat); the configured switch to IVF-PQ at a
  million references is not measured here, so the flat figure is reported as it is (it is the bound to beat).
  ``--search-measured`` (``bench/search_batching.py``'s output at ``--references``) replaces the fit with the
  faiss searches measured at that size, one thread, a chunk of queries at once, as the pipeline searches (taken as
  the seconds of the 2-core process: conservative, faiss' product would use both cores);
- every other stage: constant per query (it depends on the query and its ~40 candidates, not on N); the larger
  run's figure is used (its feature reads miss the cache, as they would at a million).

Scaling is linear in nodes (queries are independent; the index is replicated on every node or read from a shared
filesystem) and in cores within a node (measured on 2 cores; not measured past 2). GPU figures are projections unless
``--gpu-describe-per-s`` comes from a measured run: the descriptor, detector and keypoint passes move to the GPU, the
rest stays on the node's CPU cores.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.io.atomic import atomic_write_text

SQRT_STAGES = ("voting",)
LINEAR_STAGES = ("search",)
GPU_STAGES = ("describe", "detect")  # query stages a GPU takes over (projection; SIFT stays on the CPU)
SKIP = ("queries_total", "references", "load")


def per_query(summary: dict[str, Any]) -> dict[str, float]:
    """Seconds per query for each stage of an ``icd match --json`` summary."""
    n = max(1, int(summary["n_queries"]))
    return {k: float(v) / n for k, v in summary["seconds"].items() if k not in SKIP}


def fit(stage: str, n1: int, s1: float, n2: int, s2: float) -> tuple[float, float, str]:
    """(a, b, form) with s(N) = a + b f(N) through the two measured points; f = sqrt for voting, identity for
    search, and a constant (the larger run's figure) for the rest."""
    if stage in SQRT_STAGES or stage in LINEAR_STAGES:
        f = math.sqrt if stage in SQRT_STAGES else float
        b = (s2 - s1) / max(1e-12, f(n2) - f(n1))
        return s2 - b * f(n2), b, "sqrt" if stage in SQRT_STAGES else "linear"
    return s2, 0.0, "constant"


def at(model: tuple[float, float, str], n: int) -> float:
    a, b, form = model
    return a + b * (math.sqrt(n) if form == "sqrt" else n if form == "linear" else 0.0)


def folder_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk per top-level part of an index folder (files directly inside count as 'database')."""
    out: dict[str, int] = {}
    for p in path.iterdir():
        key = p.name if p.is_dir() else "database"
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        out[key] = out.get(key, 0) + sum(f.stat().st_size for f in files)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--match-small", type=Path, required=True)
    ap.add_argument("--match-large", type=Path, required=True)
    ap.add_argument("--index-run", type=Path, required=True, help="icd index --json summary of an indexing run")
    ap.add_argument("--index-dir", type=Path, required=True)
    ap.add_argument("--references", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--wall-hours", type=float, default=24.0, help="target wall time for matching and for indexing")
    ap.add_argument("--node-cores", type=int, default=16)
    ap.add_argument("--gpu-describe-per-s", type=float, default=2000.0,
                    help="descriptor passes per second on one GPU (ASSUMED unless measured)")
    ap.add_argument("--measured-cores", type=int, default=2)
    ap.add_argument("--passes-per-reference", type=int, default=15, help="descriptor passes per reference")
    ap.add_argument("--passes-per-query", type=int, default=12, help="descriptor passes per query (variants)")
    ap.add_argument("--search-measured", type=Path, default=None,
                    help="bench/search_batching.py output at --references: the search stage as measured there")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    small, large = (json.loads(p.read_text(encoding="utf-8")) for p in (args.match_small, args.match_large))
    index_run = json.loads(args.index_run.read_text(encoding="utf-8"))
    n1, n2 = int(small["n_references"]), int(large["n_references"])
    q1, q2 = per_query(small), per_query(large)
    stages = sorted(set(q1) & set(q2))
    models = {s: fit(s, n1, q1[s], n2, q2[s]) for s in stages}
    n = args.references
    cpu_query = {s: at(models[s], n) for s in stages}
    if args.search_measured is not None:
        measured = json.loads(args.search_measured.read_text(encoding="utf-8"))
        if int(measured["refs"]) != n:
            ap.error(f"{args.search_measured}: measured at {measured['refs']} references, not {n}")
        row = max(measured["rows"], key=lambda r: int(r["chunk"]))
        cpu_query["search"] = float(row["search_s_per_query_at_refs"])
        models["search"] = (cpu_query["search"], 0.0, f"measured at {n} (chunk {row['chunk']})")
    total_query = sum(cpu_query.values())
    match_core_hours = total_query * args.queries * args.measured_cores / 3600
    nodes_match = math.ceil(match_core_hours / args.node_cores / args.wall_hours)

    job = index_run["jobs"][0] if "jobs" in index_run else index_run
    added = max(1, int(job.get("added", 0)))
    per_ref_stage = {k: float(v) / added for k, v in job.get("seconds", {}).items() if k not in ("total", "voter")}
    per_ref = sum(per_ref_stage.values())
    index_core_hours = per_ref * n * args.measured_cores / 3600
    nodes_index = math.ceil(index_core_hours / args.node_cores / args.wall_hours)
    # GPU nodes: the descriptor passes go to the GPU (assumed rate), the rest stays on the node's CPU cores
    gpu_ref_cpu = sum(v for k, v in per_ref_stage.items() if k != "describe")
    gpu_index_node_hours = max(gpu_ref_cpu * args.measured_cores / args.node_cores,
                               args.passes_per_reference / args.gpu_describe_per_s) * n / 3600

    parts = folder_bytes(args.index_dir)
    per_ref_disk = {k: v / n2 for k, v in parts.items()}

    gpu_query_cpu = sum(v for s, v in cpu_query.items() if s not in GPU_STAGES)
    gpu_match_node_hours = max(gpu_query_cpu * args.measured_cores / args.node_cores,
                               args.passes_per_query / args.gpu_describe_per_s) * args.queries / 3600
    out = {
        "inputs": {"match_small": str(args.match_small), "match_large": str(args.match_large),
                   "index_run": str(args.index_run), "index_dir": str(args.index_dir),
                   "search_measured": None if args.search_measured is None else str(args.search_measured)},
        "measured": {"references": [n1, n2], "seconds_per_query": {s: [round(q1[s], 4), round(q2[s], 4)]
                                                                    for s in stages},
                     "index_seconds_per_reference": {k: round(v, 4) for k, v in per_ref_stage.items()},
                     "bytes_per_reference_on_disk": {k: round(v) for k, v in per_ref_disk.items()}},
        "model": {s: {"a": models[s][0], "b": models[s][1], "form": models[s][2]} for s in stages},
        "projection": {
            "references": n, "queries": args.queries, "node_cores": args.node_cores,
            "cpu_seconds_per_query_2_cores": {s: round(v, 4) for s, v in cpu_query.items()},
            "cpu_seconds_per_query_total": round(total_query, 3),
            "match_core_hours": round(match_core_hours, 1),
            "index_core_hours": round(index_core_hours, 1),
            "match_nodes_for_wall_hours": nodes_match,
            "index_nodes_for_wall_hours": nodes_index,
            "wall_hours": args.wall_hours,
            "index_disk_gb": round(sum(per_ref_disk.values()) * n / 1e9, 1),
            "index_disk_gb_by_part": {k: round(v * n / 1e9, 1) for k, v in per_ref_disk.items()},
            "gpu_ASSUMED_describe_passes_per_s": args.gpu_describe_per_s,
            "gpu_node_cpu_seconds_per_query_2_cores": round(gpu_query_cpu, 4),
            "gpu_match_node_hours": round(gpu_match_node_hours, 1),
            "gpu_index_node_hours": round(gpu_index_node_hours, 1),
            "gpu_nodes_for_wall_hours": {"match": math.ceil(gpu_match_node_hours / args.wall_hours),
                                         "index": math.ceil(gpu_index_node_hours / args.wall_hours)},
        },
    }
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["projection"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
