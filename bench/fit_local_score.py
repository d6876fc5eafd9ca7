"""Fit the local pair-score model (``weights/local_score.json``) on pairs from the ``train`` photos.

    python bench/fit_local_score.py --photos ../shared/data/photos/train --out /tmp/fit_local

Builds a benchmark from the train photos (never bench), runs the engine exhaustively, collects the evidence of
every pair that reached a geometric fit, and fits a non-negative logistic regression (see matcher/local/score.py).
Holistic-vs-crop hard negatives are left out of the fit: the local score measures "same content under a plausible
transform"; telling a crop from its holistic picture is the asymmetric stage's job (ASL norms, detector, fusion).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from matcher.benchmark.builder import build_benchmark
from matcher.config import MatcherConfig
from matcher.io.folders import read_images
from matcher.isc.metrics import load_manifest
from matcher.isc.submission import read_ground_truth
from matcher.local.engine import LocalEngine
from matcher.local.score import LocalScoreModel, default_local_score_path, evidence_features
from matcher.local.verify import ReferenceBank, verify_query
from matcher.training.local_score import fit_logistic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", default="../shared/data/photos/train")
    ap.add_argument("--out", default="/tmp/fit_local")
    ap.add_argument("--references", type=int, default=200)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--weights", default=str(default_local_score_path()))
    ap.add_argument("--max-queries", type=int, default=None, help="use only the first N queries (by id)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    bench = out / "benchmark"
    t0 = time.time()
    if not (bench / "manifest.json").exists():
        print(build_benchmark(args.photos, bench, n_references=args.references, n_queries=args.queries,
                              n_holistic=40, n_same_scene=20, n_background=0, seed=args.seed, workers=2))
    manifest = load_manifest(bench / "manifest.json")
    gt = {(g.query_id, g.reference_id) for g in read_ground_truth(bench / "ground_truth.csv") if g.reference_id}
    engine = LocalEngine(MatcherConfig(), score_model=LocalScoreModel())
    refs = read_images(bench / "references")
    ids, feats = [], []
    for rid, _, im in refs.iter_loaded():
        ids.append(rid)
        feats.append(engine.reference_features(im))
    bank = ReferenceBank.build(ids, feats)
    xs, ys = [], []
    n_q = 0
    for qid, _, im in read_images(bench / "queries").iter_loaded():
        if manifest["queries"][qid]["kind"] == "hard_negative_holistic":
            continue
        if args.max_queries is not None and n_q >= args.max_queries:
            break
        n_q += 1
        if n_q % 20 == 0:
            print(f"{n_q} queries, {len(ys)} fitted pairs, {time.time() - t0:.0f}s", flush=True)
        for r, (_, ev) in verify_query(engine.query_features(im), bank, engine.config.local,
                                       engine.score_model).items():
            if ev.verified:
                xs.append(evidence_features(ev))
                ys.append(int((qid, bank.ids[r]) in gt))
    x, y = np.array(xs), np.array(ys)
    w, b = fit_logistic(x, y)
    model = LocalScoreModel(tuple(float(v) for v in w), b, source="fitted by bench/fit_local_score.py")
    p = 1 / (1 + np.exp(-(x @ w + b)))
    acc = float(((p >= 0.5) == y).mean())
    card = {
        "data": f"benchmark built from {args.photos} (train split): {args.references} references, "
                f"{args.queries} queries + hard negatives, seed {args.seed}; the first {n_q} non-holistic queries "
                "(by id) against all references; holistic hard negatives excluded",
        "command": "python " + " ".join(sys.argv),
        "n_pairs": len(y), "n_positive": int(y.sum()), "n_queries": n_q,
        "train_accuracy_at_0.5": round(acc, 4),
        "wall_seconds": round(time.time() - t0, 1),
        "licence": "AGPL-3.0 (project licence)",
    }
    model.save(args.weights, **card)
    print(json.dumps({"weights": list(model.weights), "bias": model.bias, **card}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
