"""End-to-end benchmark of the matching pipeline, its ablation, and peers, in one run.

    icd make-benchmark ../shared/data/photos/bench /tmp/bench_default          # 1,000 refs / 2,000 queries
    /tmp/sscd312/bin/python bench/sscd_peer.py folder /tmp/bench_default/references /tmp/sscd_default/references
    (same for queries and background)
    python bench/bench_pipeline.py --bench /tmp/bench_default --index /tmp/bench_index \
        --table /tmp/pipeline_bench.npz --sscd /tmp/sscd_default --phash --naive-sift-queries 200 \
        --out bench/results_pipeline.json

1. Index the references (timed), 2. run candidates + verification for every query (timed by stage; the fused
score is computed afterwards from the stored features, so every ablation row uses the same candidate pairs),
3. score: the shipped fusion model and the ablation rows (global; + score normalisation; + regions; + local
verification; + detector; + seam check; + ASL gate; + logistic fusion; + shipped tree fusion), 4. peers: SSCD int8
(raw and score-normalised with the benchmark's background set, exhaustive), pHash (exhaustive), and naive SIFT
(exhaustive, on a seeded subset of queries, with the pipeline scored on the same subset). Per-family and per-kind
breakdowns for the fusion.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline_features import SOURCES, collect, load_table, open_or_build_index, save_table
from matcher.benchmark.variants import load_variant_groups, outside_pairs, variant_pairs
from matcher.config import MatcherConfig
from matcher.fusion.features import FEATURE_NAMES
from matcher.fusion.load import Fusion, load_fusion
from matcher.isc.metrics import (
    at_threshold,
    evaluate,
    evaluate_with_breakdowns,
    fraction_above,
    load_manifest,
)
from matcher.isc.submission import PredictedMatch, read_ground_truth
from matcher.pipeline.pipeline import Pipeline
from matcher.resources import FUSION_LOGISTIC, shipped_path

F = {n: i for i, n in enumerate(FEATURE_NAMES)}


def top_rows(qids: np.ndarray, rids: np.ndarray, score: np.ndarray, mask: np.ndarray | None = None,
             k: int = 10) -> list[PredictedMatch]:
    """The best ``k`` rows per query among ``mask``."""
    order = np.lexsort((rids, -score))
    seen: dict[str, int] = {}
    out = []
    for i in order:
        if mask is not None and not mask[i]:
            continue
        q = qids[i]
        if seen.get(q, 0) < k:
            seen[q] = seen.get(q, 0) + 1
            out.append(PredictedMatch(str(q), str(rids[i]), float(score[i])))
    return out


HARD_KINDS = {"holistic": "hard_negative_holistic", "reshoot": "hard_negative_reshoot",
              "shared_overlay": "hard_negative_shared_overlay"}
DEFAULT_THRESHOLD = 0.5  # the fusion model's documented decision threshold


def holistic_crops(queries: dict, prefix: str = "", kind: str = "hard_negative_holistic") -> dict[str, set[str]]:
    """Hard-negative query of ``kind`` (default holistic-vs-crop) -> its related reference ids (a manifest's
    ``queries`` and their ``related_references``), ids prefixed with ``prefix``."""
    return {prefix + q: {prefix + r for r in v.get("related_references") or ()} for q, v in queries.items()
            if v.get("kind") == kind}


def hard_negatives(queries: dict, prefix: str = "") -> dict[str, dict[str, set[str]]]:
    """Per hard-negative kind of :data:`HARD_KINDS` that the manifest holds: query -> its related references."""
    out = {name: holistic_crops(queries, prefix, kind) for name, kind in HARD_KINDS.items()}
    return {name: d for name, d in out.items() if d}


def summarise(preds: list[PredictedMatch], gt, holistic: dict[str, set[str]],
              hard: dict[str, dict[str, set[str]]] | None = None, threshold: float | None = None) -> dict:
    """µAP, recall@P90 and its threshold, R@1, and the holistic-vs-crop hard negatives (``holistic``, see
    :func:`holistic_crops`) above that threshold: per pair (the holistic picture vs its crop reference: the
    issue's measure) and per query (its best pair with any reference, stricter: ordinary false positives count
    too). ``hard``: more hard-negative kinds (:func:`hard_negatives`), their pairs above P90. ``threshold``: also
    precision and recall at that score (the default decision threshold), and each hard kind's pairs above it.
    Only the queries in ``gt`` are evaluated."""
    m = evaluate(preds, gt)
    thr = m.threshold_at_p90
    evaluated = {g.query_id for g in gt}  # the queries under evaluation (gt lists every query, copies or not)
    hol = {q: refs for q, refs in holistic.items() if q in evaluated}
    ok = bool(hol) and thr is not None
    out = {"uap": round(m.micro_ap, 4), "recall_at_p90": round(m.recall_at_p90, 4),
           "threshold_at_p90": None if thr is None else round(thr, 4),
           "holistic_pairs_above_p90": fraction_above(preds, hol, thr, per="pair", pairs=hol) if ok else None,
           "holistic_above_p90": fraction_above(preds, hol, thr) if ok else None,
           "recall_at_rank1": round(m.recall_at_rank1, 4)}
    if threshold is not None:
        precision, recall, n = at_threshold(preds, gt, threshold)
        out.update({"threshold": threshold, "precision_at_threshold": round(precision, 4),
                    "recall_at_threshold": round(recall, 4), "predictions_at_threshold": n})
    for name, pairs in (hard or {}).items():
        pairs = {q: r for q, r in pairs.items() if q in evaluated}
        if not pairs:
            continue
        out[f"{name}_pairs"] = len(pairs)
        if thr is not None:
            out[f"{name}_pairs_above_p90"] = round(fraction_above(preds, pairs, thr, per="pair", pairs=pairs), 4)
        if threshold is not None:
            out[f"{name}_pairs_above_threshold"] = round(
                fraction_above(preds, pairs, threshold, per="pair", pairs=pairs), 4)
    return out


LOGISTIC_PATH = shipped_path(FUSION_LOGISTIC)  # the linear model, kept for this comparison


def ablation_scores(t: dict[str, np.ndarray], fusions: dict[str, Fusion], gate_margin: float) -> dict[str, tuple]:
    """(score, mask) per ablation row; a mask limits the candidates to what that stage would have found.
    ``fusions``: the fusion models to compare, by row name."""
    x = t["features"]
    only_global = (t["sources"] & (1 << SOURCES.index("global"))) > 0
    g_regions = np.maximum(x[:, F["global_regions"]], x[:, F["global_to_local"]])
    local = t["local_score"]
    rule_local = np.maximum(local, g_regions)
    # detector rule: a verified "reference inside the query" without a detected pasted box is suspect
    inside = x[:, F["reference_inside_query"]] > 0.5
    undetected = inside & (x[:, F["detector_iou"]] < 0.5)
    rule_det = np.where(undetected, 0.5 * local, local)
    rule_det = np.maximum(rule_det, np.where(undetected, 0.5, 1.0) * g_regions)
    # seam check: a verified "reference inside the query" with no seam along the reference's frame -> halve
    seamless = x[:, F["inside_without_seam"]] > 0.25
    rule_seam = np.where(seamless, 0.5 * rule_det, rule_det)
    # ASL gate: the query holds more content than the reference -> halve
    marked = x[:, F["log_norm_ratio"]] > gate_margin
    rule_gate = np.where(marked, 0.5 * rule_seam, rule_seam)
    return {
        "global (cosine, whole images)": (t["cosine"], only_global),
        "+ score normalisation": (x[:, F["global_full"]], only_global),
        "+ regions (query regions, reference crops)": (g_regions, None),
        "+ local verification (max of local score, global)": (rule_local, None),
        "+ detector (undetected inside-query matches halved)": (rule_det, None),
        "+ seam check (seamless inside-query matches halved)": (rule_seam, None),
        "+ ASL gate (norm ratio above margin halved)": (rule_gate, None),
        **{f"+ fusion model ({name})": (m.predict(x), None) for name, m in fusions.items()},
    }


def exhaustive_rows(qids: list[str], rids: list[str], sims: np.ndarray, k: int = 10) -> list[PredictedMatch]:
    out = []
    top = np.argsort(-sims, axis=1)[:, :k]
    for a, q in enumerate(qids):
        for j in top[a]:
            out.append(PredictedMatch(q, rids[j], float(sims[a, j])))
    return out


def sscd_peer(folder: Path, bg_k: int = 5, beta: float = 1.0) -> dict[str, list[PredictedMatch]]:
    def load(name: str) -> tuple[list[str], np.ndarray]:
        meta = json.loads((folder / f"{name}.json").read_text())
        return list(meta["ids"]), np.load(folder / f"{name}.npy", allow_pickle=False).astype(np.float32)

    rid, r = load("references")
    qid, q = load("queries")
    out = {"SSCD int8 (raw cosine)": exhaustive_rows(qid, rid, q @ r.T)}
    if (folder / "background.npy").exists():
        _, b = load("background")
        bg = np.sort(q @ b.T, axis=1)[:, -bg_k:].mean(1)
        out["SSCD int8 + score normalisation"] = exhaustive_rows(qid, rid, q @ r.T - beta * bg[:, None])
    return out


def phash_peer(bench: Path) -> list[PredictedMatch]:
    from bench.peers import phash_bits, phash_scores
    from matcher.io.folders import read_images

    def bits(folder: Path) -> tuple[list[str], np.ndarray]:
        ids, out = [], []
        for i, _p, img in read_images(folder).iter_loaded():
            ids.append(i)
            out.append(phash_bits(img))
        return ids, np.stack(out)

    rid, rb = bits(bench / "references")
    qid, qb = bits(bench / "queries")
    return exhaustive_rows(qid, rid, phash_scores(qb, rb))


def naive_sift_peer(bench: Path, query_ids: list[str], workers: int) -> list[PredictedMatch]:
    """Naive SIFT (OpenCV SIFT, BFMatcher ratio 0.8, findHomography; :func:`bench.peers.naive_sift_rows`) for
    ``query_ids`` against every reference, at the local engine's working size and keypoint budget."""
    from bench.peers import naive_sift_rows
    from matcher.io.folders import read_images

    qset = read_images(bench / "queries")
    refs = {rid: img for rid, _p, img in read_images(bench / "references").iter_loaded()}
    local = MatcherConfig().local
    return naive_sift_rows({q: qset.load(q) for q in query_ids}, refs, local.working_size, local.max_keypoints,
                           workers)


def _rounded(breakdown: dict) -> dict[str, dict[str, float]]:
    """{group: {"uap", "recall_at_p90"}} rounded to 4 decimals, from a metrics breakdown by family or kind."""
    return {k: {"uap": round(v.micro_ap, 4), "recall_at_p90": round(v.recall_at_p90, 4)} for k, v in breakdown.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, default=Path("/tmp/bench_default"))
    ap.add_argument("--index", type=Path, default=Path("/tmp/bench_index"))
    ap.add_argument("--table", type=Path, default=Path("/tmp/pipeline_bench.npz"))
    ap.add_argument("--sscd", type=Path, default=None, help="folder of SSCD descriptors (bench/sscd_peer.py)")
    ap.add_argument("--phash", action="store_true", help="also run the pHash peer")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--naive-sift-queries", type=int, default=0, help="also run naive SIFT, exhaustively, on this "
                    "many seeded random queries (it checks every reference per query: ~1,200 pairs each)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the naive SIFT peer")
    ap.add_argument("--collect-only", action="store_true", help="only index + collect the feature table")
    ap.add_argument("--no-voting", action="store_true", help="without keypoint-voting candidates (measure whether "
                    "they pay)")
    ap.add_argument("--out", type=Path, default=Path("bench/results_pipeline.json"))
    ap.add_argument("--fusion", type=Path, action="append", default=[],
                    help="also score with this fusion model file (repeatable); the first one given is the headline "
                         "row instead of the shipped model")
    ap.add_argument("--variants", type=Path, default=Path(__file__).resolve().parent / "graphics_variants.json",
                    help="variant-groups file (matcher/benchmark/variants.py): also score with the pairs between "
                         "variants of one picture set aside (default: %(default)s)")
    args = ap.parse_args(argv)
    manifest = load_manifest(args.bench / "manifest.json")
    if Path(str(manifest.get("photos", ""))).name == "train":
        print("warning: this benchmark was built from train photos (the fusion model was fitted there)")
    results: dict = {"benchmark": str(args.bench), "params": manifest.get("params")}
    config = MatcherConfig.make(pipeline={"keypoint_voting": False}) if args.no_voting else MatcherConfig()
    pipe = Pipeline(config, fusion=False)  # features only; the fusion is applied to the stored table
    if args.table.exists():
        try:
            t = load_table(args.table)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        timing = json.loads(str(t.get("timing", np.array("{}"))))
    else:
        t0 = time.perf_counter()
        store = open_or_build_index(pipe, args.bench / "references", args.index)
        t_index = time.perf_counter() - t0
        t, seconds, n = collect(pipe, store, args.bench, max_queries=args.max_queries)
        timing = {"index_seconds": t_index, "references": len(store), "queries": n, "stages": seconds,
                  "queries_per_s": n / seconds["total"]}
        t["timing"] = np.array(json.dumps(timing))
        save_table(t, args.table)
    results["timing"] = timing
    if args.collect_only:
        print(json.dumps(timing, indent=2))
        return 0
    shipped = load_fusion()
    fusions = {"logistic on all evidence": load_fusion(LOGISTIC_PATH)} if LOGISTIC_PATH.exists() else {}
    fusions[f"shipped: {type(shipped).__name__}"] = shipped
    given = [load_fusion(path) for path in args.fusion]  # each file read once
    for path, model in zip(args.fusion, given, strict=True):
        fusions[f"{path.name}: {type(model).__name__}"] = model
    fusion = given[0] if given else shipped
    results["fusion"] = str(args.fusion[0]) if args.fusion else "shipped"
    gt_all = read_ground_truth(args.bench / "ground_truth.csv")
    qset = set(t["query_id"])
    gt = [g for g in gt_all if g.query_id in qset]
    holistic = holistic_crops(manifest["queries"])
    hard = hard_negatives(manifest["queries"])
    fused = fusion.predict(t["features"])
    preds = top_rows(t["query_id"], t["reference_id"], fused)
    results["pipeline"] = summarise(preds, gt, holistic, hard, DEFAULT_THRESHOLD)
    _, by_family, by_kind = evaluate_with_breakdowns(preds, gt, manifest)
    results["by_family"], results["by_kind"] = _rounded(by_family), _rounded(by_kind)
    results["ablation"] = {name: summarise(top_rows(t["query_id"], t["reference_id"], s, mask), gt, holistic)
                           for name, (s, mask) in ablation_scores(t, fusions, fusion.gate_margin).items()}
    gt_pairs = {(g.query_id, g.reference_id) for g in gt if g.reference_id}
    found = {(q, r) for q, r, y in zip(t["query_id"], t["reference_id"], t["label"]) if y}
    results["candidate_recall"] = round(len(found) / max(1, len(gt_pairs)), 4)
    peers: dict[str, dict] = {}
    sscd_rows = sscd_peer(args.sscd) if args.sscd is not None else {}
    for name, rows in sscd_rows.items():
        peers[name] = summarise([r for r in rows if r.query_id in qset], gt, holistic, hard)
    if args.phash:
        peers["pHash (exhaustive)"] = summarise([r for r in phash_peer(args.bench) if r.query_id in qset], gt,
                                                holistic)
    results["peers"] = peers
    try:
        groups = load_variant_groups(args.variants, str(manifest.get("photos", ""))) if args.variants.exists() else []
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if groups:  # the same scoring with the ambiguous pairs (neither copies nor negatives) left out
        ambiguous = variant_pairs(manifest, groups)
        keep = outside_pairs(t["query_id"], t["reference_id"], ambiguous)
        aside: dict = {"groups": len(groups), "pairs": len(ambiguous), "table_rows": int((~keep).sum())}
        scored = {"pipeline": fused, **{n: m.predict(t["features"]) for n, m in fusions.items() if m is not fusion}}
        for name, score in scored.items():
            rows = top_rows(t["query_id"], t["reference_id"], score, keep)
            aside[name] = summarise(rows, gt, holistic, hard, DEFAULT_THRESHOLD)
            if name == "pipeline":
                aside["by_family"] = _rounded(evaluate_with_breakdowns(rows, gt, manifest)[1])
        for name, rows in sscd_rows.items():
            aside[name] = summarise([r for r in rows if r.query_id in qset
                                     and (r.query_id, r.reference_id) not in ambiguous], gt, holistic, hard)
        results["variant_pairs_set_aside"] = aside
    if args.naive_sift_queries:  # exhaustive per-pair SIFT is too slow for every query: a seeded subset, with the
        # pipeline scored on the same queries beside it
        sub = sorted(np.random.default_rng(0).choice(sorted(qset), size=min(args.naive_sift_queries, len(qset)),
                                                      replace=False).tolist())
        t0 = time.perf_counter()
        naive = naive_sift_peer(args.bench, sub, args.workers)
        seconds = time.perf_counter() - t0
        sub_set = set(sub)
        gt_sub = [g for g in gt if g.query_id in sub_set]
        results["peers_subset"] = {
            "queries": len(sub), "seed": 0, "naive_sift_seconds": round(seconds, 1),
            "pipeline (same queries)": summarise([p for p in preds if p.query_id in sub_set], gt_sub, holistic,
                                                 hard, DEFAULT_THRESHOLD),
            "naive SIFT + BFMatcher 0.8 + findHomography (exhaustive)": summarise(naive, gt_sub, holistic, hard),
        }
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
