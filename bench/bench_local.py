"""Issue-4 benchmark: accuracy and throughput of the local-verification engine against its peers, in one run.

    python bench/bench_local.py --photos ../shared/data/photos/bench --out /tmp/bench_local
    python bench/bench_local.py --benchmark /tmp/bench_local_s/benchmark --out /tmp/tp --throughput-only
    python bench/bench_local.py ... --local '{"ransac_impl": "numpy", "mirror_split": false, "blas_threads": 0}'

Accuracy (exhaustive: every query against every reference) on a benchmark built by the foundation builder:
the engine, the naive baseline (OpenCV SIFT + BFMatcher ratio 0.8 + findHomography, no mirror handling) and pHash,
each with µAP, recall@P90 and the per-edit-family breakdown. Throughput: pairs/s verifying N queries x k
candidates with cached features (engine vs naive loop with the same cached features vs the naive loop that
extracts per pair), feature extraction images/s and feature-store bytes per image; with ``--previous`` also the
engine on its previous hot path (numpy RANSAC, two full GEMMs for plain + mirrored, default BLAS threads) on the
same cached features. Writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import NaiveSift, naive_sift_rows, phash_bits, phash_scores

from matcher.benchmark.builder import build_benchmark
from matcher.config import MatcherConfig
from matcher.io.folders import read_images
from matcher.isc.exhaustive import run_exhaustive_match
from matcher.isc.metrics import evaluate_with_breakdowns, load_manifest
from matcher.isc.submission import PredictedMatch, read_ground_truth, read_predictions
from matcher.local.engine import LocalEngine
from matcher.local.verify import ReferenceBank
from matcher.references.features import FeatureStore


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def load_all(folder: Path) -> dict[str, np.ndarray]:
    return {i: im for i, _, im in read_images(folder).iter_loaded()}


def phash_rows(queries, refs):
    r_ids = list(refs)
    rb = np.stack([phash_bits(refs[r]) for r in r_ids])
    rows = []
    for qid, im in queries.items():
        s = phash_scores(phash_bits(im)[None], rb)[0]
        for ri in np.argsort(-s, kind="stable")[:10]:
            rows.append(PredictedMatch(qid, r_ids[ri], float(s[ri])))
    return rows


def summarise(name, rows, gt, manifest):
    overall, fam, kind = evaluate_with_breakdowns(rows, gt, manifest)
    return {"name": name, "overall": overall.to_dict(),
            "by_family": {f: m.to_dict() for f, m in fam.items()},
            "by_kind": {k: m.to_dict() for k, m in kind.items()}}


# ------------------------------------------------------------------------------------------------ throughput
PREVIOUS = {"ransac_impl": "numpy", "mirror_split": False, "blas_threads": 0}  # the hot path before the speed-up


def time_engine(engine, q_ids, q_feats, banks) -> float:
    """Pairs per second of ``engine.match_query`` over the queries' banks (after one warm-up query)."""
    engine.match_query(q_feats[q_ids[0]], banks[q_ids[0]])  # warm-up (numba)
    t = time.perf_counter()
    for qid in q_ids:
        engine.match_query(q_feats[qid], banks[qid])
    return sum(len(banks[q]) for q in q_ids) / (time.perf_counter() - t)


def throughput(engine, queries, refs, gt_map, n_queries, k, budget, working_size, seed=0, previous=None):
    rng = np.random.default_rng(seed)
    r_ids = list(refs)
    q_ids = [q for q in queries if gt_map.get(q)][:n_queries]
    ref_feats = {rid: engine.reference_features(refs[rid]) for rid in r_ids}
    q_feats = {qid: engine.query_features(queries[qid]) for qid in q_ids}
    cands = {}
    for qid in q_ids:
        c = list(rng.choice(len(r_ids), size=k - 1, replace=False))
        true = r_ids.index(gt_map[qid]) if gt_map[qid] in r_ids else c[0]
        cands[qid] = [true] + [i for i in c if i != true][: k - 1]
    banks = {qid: ReferenceBank.build([r_ids[i] for i in cands[qid]], [ref_feats[r_ids[i]] for i in cands[qid]])
             for qid in q_ids}
    eng = time_engine(engine, q_ids, q_feats, banks)
    prev = None if previous is None else time_engine(previous, q_ids, q_feats, banks)

    ns = NaiveSift(working_size, budget)
    nref = {rid: ns.features(refs[rid]) for rid in r_ids}
    nq = {qid: ns.features(queries[qid]) for qid in q_ids}
    t = time.perf_counter()
    for qid in q_ids:
        for i in cands[qid]:
            ns.pair_score(nq[qid], nref[r_ids[i]])
    naive_cached = len(q_ids) * k / (time.perf_counter() - t)

    sub = q_ids[: max(2, n_queries // 10)]
    t = time.perf_counter()
    for qid in sub:
        for i in cands[qid]:
            ns.pair_score(ns.features(queries[qid]), ns.features(refs[r_ids[i]]))
    naive_extract = len(sub) * k / (time.perf_counter() - t)

    imgs = [refs[r] for r in r_ids[:100]]
    t = time.perf_counter()
    feats = [engine.reference_features(im) for im in imgs]
    ext = len(imgs) / (time.perf_counter() - t)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        store = FeatureStore(d, engine.extractor.signature())
        store.add({f"r{i}": f for i, f in enumerate(feats)})
        nbytes = sum(p.stat().st_size for p in Path(d).iterdir())
    return {"queries": len(q_ids), "candidates_per_query": k, "load_average": os.getloadavg(),
            "engine_pairs_per_s": eng, "engine_previous_pairs_per_s": prev, "naive_cached_pairs_per_s": naive_cached,
            "naive_extract_per_pair_pairs_per_s": naive_extract,
            "speedup_vs_naive_cached": eng / naive_cached, "speedup_vs_naive_extract": eng / naive_extract,
            "extraction_images_per_s": ext, "store_bytes_per_image": nbytes / len(feats),
            "mean_keypoints": float(np.mean([f.n for f in feats]))}


def fmt(x):
    return "n/a" if x is None else f"{x:.4f}"


def _accuracy_markdown(res) -> list[str]:
    lines = ["| method | µAP | recall@P90 | threshold@P90 | R@1 | R@10 | wall s |", "|---|---|---|---|---|---|---|"]
    for m in res["methods"]:
        o = m["overall"]
        lines.append(f"| {m['name']} | {fmt(o['micro_ap'])} | {fmt(o['recall_at_p90'])} | "
                     f"{fmt(o['threshold_at_p90'])} | {fmt(o['recall_at_rank1'])} | {fmt(o['recall_at_rank10'])} | "
                     f"{m.get('seconds', 0):.0f} |")
    fams = sorted(res["methods"][0]["by_family"])
    lines += ["", "µAP by edit family (queries whose chain contains the family, copies and negatives alike):", "",
              "| family | " + " | ".join(m["name"] for m in res["methods"]) + " |",
              "|---|" + "---|" * len(res["methods"])]
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(fmt(m["by_family"].get(f, {}).get("micro_ap"))
                                              for m in res["methods"]) + " |")
    if "subset" in res:
        sub = {"machine": "", "benchmark": "", "methods": res["subset"]["methods"]}
        body = to_markdown(sub).split("\n", 3)[3]
        lines += ["", (f"Same methods on a seeded random subset of {res['subset']['queries']} queries (all "
                       "references; the naive baseline is exhaustive only here):"), "", body.rstrip("\n")]
    return lines


def to_markdown(res) -> str:
    lines = [f"machine: {res['machine']}", f"benchmark: {res['benchmark']}", ""]
    if res["methods"]:
        lines += _accuracy_markdown(res)
    if "throughput" in res:
        t = res["throughput"]
        lines += ["", f"throughput ({t['queries']} queries x {t['candidates_per_query']} candidates, cached features):",
                  "", "| path | pairs/s |", "|---|---|",
                  (f"| engine (packed bank, Numba MNN+ratio, mirror split, Numba RANSAC) | "
                   f"{t['engine_pairs_per_s']:.1f} |"),
                  *([(f"| engine, previous hot path (numpy RANSAC, 2 GEMMs, default BLAS threads) | "
                      f"{t['engine_previous_pairs_per_s']:.1f} |")] if t.get("engine_previous_pairs_per_s") else []),
                  f"| naive loop, same cached features | {t['naive_cached_pairs_per_s']:.1f} |",
                  f"| naive loop extracting per pair | {t['naive_extract_per_pair_pairs_per_s']:.1f} |", "",
                  (f"speed-up: {t['speedup_vs_naive_cached']:.1f}x vs naive cached, "
                  f"{t['speedup_vs_naive_extract']:.1f}x vs naive extracting per pair; feature extraction "
                  f"{t['extraction_images_per_s']:.1f} images/s; feature store {t['store_bytes_per_image'] / 1024:.1f} "
                  f"KiB/image (mean {t['mean_keypoints']:.0f} keypoints); load average (1, 5, 15 min) at the end "
                  f"{', '.join(f'{v:.1f}' for v in t.get('load_average', ()))}")]
    return "\n".join(lines) + "\n"


def write_results(res: dict, out: Path) -> None:
    """results.json + results.md into ``out``; the markdown is printed too."""
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (out / "results.md").write_text(md)
    print(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", default="../shared/data/photos/bench")
    ap.add_argument("--out", default="/tmp/bench_local")
    ap.add_argument("--references", type=int, default=300)
    ap.add_argument("--queries", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--naive-queries", type=int, default=150,
                    help="the naive baseline costs ~20 ms of CPU per pair, so it runs exhaustively on a seeded "
                         "random subset of this many queries; every method is also scored on that subset")
    ap.add_argument("--query-regions", default="full")
    ap.add_argument("--throughput-queries", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--benchmark", default=None, help="an existing benchmark folder (default: OUT/benchmark, built "
                                                        "from --photos when missing)")
    ap.add_argument("--local", default="{}", help="JSON overrides of the engine's LocalConfig")
    ap.add_argument("--previous", action="store_true", help="also time the previous hot path (throughput)")
    ap.add_argument("--throughput-only", action="store_true", help="skip the accuracy part")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Path(args.benchmark) if args.benchmark else out / "benchmark"
    if not (bench / "manifest.json").exists():
        print(build_benchmark(args.photos, bench, n_references=args.references, n_queries=args.queries,
                              n_holistic=50, n_same_scene=25, n_background=20, seed=args.seed,
                              workers=args.workers))
    gt = read_ground_truth(bench / "ground_truth.csv")
    manifest = load_manifest(bench / "manifest.json")
    regions = tuple(r for r in args.query_regions.split(",") if r)
    config = MatcherConfig.make(local={"query_regions": regions, **json.loads(args.local)})
    engine = LocalEngine(config)
    previous = None
    if args.previous:
        previous = LocalEngine(MatcherConfig.make(local={"query_regions": regions, **json.loads(args.local),
                                                         **PREVIOUS}))
    res = {"machine": machine(), "command": " ".join(sys.argv),
           "benchmark": (f"{bench}" if args.benchmark else
                         f"{args.references} references (+ hard-negative crops), {args.queries} queries "
                         f"(+ hard negatives), seed {args.seed}, built from {args.photos}"),
           "config": config.to_dict(), "methods": []}

    gt_map = {g.query_id: g.reference_id for g in gt if g.reference_id}
    if args.throughput_only:
        queries, refs = load_all(bench / "queries"), load_all(bench / "references")
        res["throughput"] = throughput(engine, queries, refs, gt_map, args.throughput_queries, args.candidates,
                                       config.local.max_keypoints, config.local.working_size, previous=previous)
        write_results(res, out)
        return 0
    t = time.perf_counter()
    summary = run_exhaustive_match(bench / "queries", bench / "references", out / "engine.csv", engine=engine)
    m = summarise(f"engine ({config.local.extractor}, {config.local.working_size}px, "
                  f"{config.local.max_keypoints} kp, regions {'+'.join(regions)})",
                  read_predictions(out / "engine.csv"), gt, manifest)
    m["seconds"] = time.perf_counter() - t
    m["stage_seconds"] = summary.seconds
    res["methods"].append(m)
    print(json.dumps(m["overall"], indent=1))

    queries = load_all(bench / "queries")
    refs = load_all(bench / "references")
    engine_rows = read_predictions(out / "engine.csv")
    t = time.perf_counter()
    ph_rows = phash_rows(queries, refs)
    m = summarise("pHash (imagehash)", ph_rows, gt, manifest)
    m["seconds"] = time.perf_counter() - t
    res["methods"].append(m)

    # the common subset on which the naive per-pair baseline is affordable
    rng = np.random.default_rng(args.seed)
    q_all = sorted(queries)
    subset = set(rng.choice(q_all, size=min(args.naive_queries, len(q_all)), replace=False).tolist())
    sub_gt = [g for g in gt if g.query_id in subset]
    res["subset"] = {"queries": len(subset), "methods": []}
    for name, rows in ((res["methods"][0]["name"], engine_rows), ("pHash (imagehash)", ph_rows)):
        res["subset"]["methods"].append(summarise(name, [r for r in rows if r.query_id in subset], sub_gt, manifest))
    if not args.skip_naive:
        t = time.perf_counter()
        rows = naive_sift_rows({q: queries[q] for q in sorted(subset)}, refs, config.local.working_size,
                          config.local.max_keypoints, args.workers)
        m = summarise("naive SIFT + BFMatcher 0.8 + findHomography", rows, sub_gt, manifest)
        m["seconds"] = time.perf_counter() - t
        res["subset"]["methods"].insert(1, m)
        print(json.dumps(m["overall"], indent=1))

    if args.throughput_queries > 0:
        res["throughput"] = throughput(engine, queries, refs, gt_map, args.throughput_queries, args.candidates,
                                       config.local.max_keypoints, config.local.working_size, previous=previous)
    write_results(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
