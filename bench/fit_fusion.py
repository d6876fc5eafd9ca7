"""Fit the fusion model (``weights/fusion.json``) on candidate pairs from a benchmark built from ``train`` photos.

    icd make-benchmark ../shared/data/photos/train /tmp/train_bench --references 500 --queries 1000 \
        --holistic 150 --same-scene 60 --seed 7
    python bench/fit_fusion.py --bench /tmp/train_bench --index /tmp/train_index --table /tmp/fusion_train.npz

Steps: index the benchmark's references, run the pipeline's candidates + verification for every query (features
only), split queries 80/20 (by a hash of the id), fit on 80 % and report held-out µAP / recall@P90 / holistic
negatives above the P90 threshold, then refit on all pairs and write the JSON with its model card. Refuses a
benchmark built from the ``bench`` photos.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline_features import collect, load_table, open_or_build_index, save_table
from matcher.config import MatcherConfig
from matcher.fusion import DEFAULT_FUSION_PATH, FEATURE_NAMES, fit_fusion
from matcher.metrics import evaluate
from matcher.pipeline import Pipeline
from matcher.submission import GroundTruthMatch, PredictedMatch, read_ground_truth


def held_out(qid: str, fraction: float = 0.2) -> bool:
    return int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def evaluate_scores(t: dict[str, np.ndarray], score: np.ndarray, gt: list[GroundTruthMatch], mask: np.ndarray,
                    top_k: int = 10) -> dict[str, float]:
    """µAP, recall@P90, its threshold and the share of holistic negatives' pairs above it, for rows in ``mask``."""
    qids = set(t["query_id"][mask])
    rows: dict[str, list[PredictedMatch]] = {}
    for i in np.flatnonzero(mask):
        rows.setdefault(t["query_id"][i], []).append(PredictedMatch(t["query_id"][i], t["reference_id"][i],
                                                                    float(score[i])))
    preds = [p for ps in rows.values() for p in sorted(ps, key=lambda p: -p.score)[:top_k]]
    m = evaluate(preds, [g for g in gt if g.query_id in qids])
    thr = m.threshold_at_p90
    hol = mask & (t["kind"] == "hard_negative_holistic")
    top_hol = {}
    for i in np.flatnonzero(hol):
        top_hol[t["query_id"][i]] = max(top_hol.get(t["query_id"][i], -1.0), float(score[i]))
    above = float(np.mean([s >= thr for s in top_hol.values()])) if top_hol and thr is not None else float("nan")
    return {"uap": m.micro_ap, "recall_at_p90": m.recall_at_p90,
            "threshold_at_p90": thr if thr is not None else float("nan"), "holistic_above_p90": above}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, default=Path("/tmp/train_bench"))
    ap.add_argument("--index", type=Path, default=Path("/tmp/train_index"))
    ap.add_argument("--table", type=Path, default=Path("/tmp/fusion_train.npz"))
    ap.add_argument("--out", type=Path, default=DEFAULT_FUSION_PATH)
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--holistic-weight", type=float, default=3.0, help="sample weight of hard negatives' pairs")
    args = ap.parse_args(argv)
    manifest = json.loads((args.bench / "manifest.json").read_text())
    if Path(str(manifest.get("photos", ""))).name == "bench":
        print("error: this benchmark was built from the bench photos; fit on train photos only", file=sys.stderr)
        return 2
    pipe = Pipeline(MatcherConfig(), fusion=False)
    if args.table.exists():
        try:
            t = load_table(args.table)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"features from {args.table}: {len(t['label'])} pairs")
    else:
        store = open_or_build_index(pipe, args.bench / "references", args.index)
        t, seconds, n = collect(pipe, store, args.bench, max_queries=args.max_queries)
        save_table(t, args.table)
        print(f"collected {len(t['label'])} candidate pairs of {n} queries; seconds: "
              + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    gt = read_ground_truth(args.bench / "ground_truth.csv")
    gt = [g for g in gt if g.reference_id]
    x, y = t["features"], t["label"].astype(np.float64)
    hard = np.char.startswith(t["kind"], "hard_negative")
    w = np.where(hard, args.holistic_weight, 1.0)
    test = np.array([held_out(q) for q in t["query_id"]])
    model = fit_fusion(x[~test], y[~test], sample_weight=w[~test], gate_margin=pipe.gate_margin)
    report = {
        "fused": evaluate_scores(t, model.predict(x), gt, test),
        "local_score_only": evaluate_scores(t, t["local_score"], gt, test),
        "global_regions_only": evaluate_scores(t, x[:, FEATURE_NAMES.index("global_regions")], gt, test),
    }
    for name, r in report.items():
        print(f"held-out {name:22s} " + "  ".join(f"{k} {v:.4f}" for k, v in r.items()))
    final = fit_fusion(x, y, sample_weight=w, gate_margin=pipe.gate_margin,
                       source=f"bench/fit_fusion.py on {args.bench.name} (train photos)")
    card = {
        "data": {"benchmark": str(args.bench), "photos": str(manifest.get("photos")),
                 "params": manifest.get("params"), "pairs": len(y), "positives": int(y.sum()),
                 "queries": len(set(t["query_id"]))},
        "recipe": f"Newton logistic regression, L2 1e-4 x total weight on standardised features, hard-negative pairs weighted "
                  f"{args.holistic_weight}; held-out = 20 % of queries by sha256(query_id)",
        "held_out_metrics": report,
        "licence": "AGPL-3.0 (trained here by icd-matcher's own code on the project's train photos)",
    }
    final.save(args.out, **card)
    print(f"wrote {args.out}")
    print("weights: " + ", ".join(f"{f} {v:+.3f}" for f, v in zip(final.features, final.weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
