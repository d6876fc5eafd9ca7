"""Choose the fusion recipe by cross-validation on the training pool alone (never on the evaluation benchmarks).

    python bench/fusion_grid.py --bench /tmp/domains/tp1 --index /tmp/domains/tp1_index --table /tmp/domains/tp1.npz \\
        [--bench ... (one --index and --table per --bench)] --out /tmp/fusion_grid.json

Candidates: tree depth 3 or 4 x hard-negative weight 5 or 10 x holistic-vs-crop pairs at that weight or at 20.
Each is scored by 5-fold cross-validation (2 splits) on the pooled train benchmarks, with the pairs between
variants of one picture left out (``bench/graphics_variants.json``) and queries from the score-normalisation
background set left out, as ``bench/fit_fusion.py`` does.

Selection rule (fixed before the grid was run): the best mean over the training domains of the out-of-fold µAP;
among the candidates within 0.005 of it, the one with the fewest pooled out-of-fold holistic-vs-crop pairs above
the P90 threshold (the issue's measure); a remaining tie goes to the shallower, less weighted recipe. Fit the
chosen one with ``bench/fit_fusion.py --depth D --holistic-weight W [--kind-weight hard_negative_holistic=H]``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fit_fusion as ff
from matcher.config import MatcherConfig
from matcher.pipeline.pipeline import Pipeline

DEPTHS = (3, 4)
HARD_WEIGHTS = (5.0, 10.0)
HOLISTIC_WEIGHTS = (None, 20.0)  # None: the hard-negative weight
TOLERANCE = 0.005  # µAP within which the holistic measure decides


def choose(rows: list[dict]) -> dict:
    """The selection rule of the module docstring over rows with ``mean_domain_uap`` and ``holistic_above_p90``
    (and ``depth``, ``hard_weight``, ``holistic_weight``)."""
    best = max(r["mean_domain_uap"] for r in rows)
    near = [r for r in rows if r["mean_domain_uap"] >= best - TOLERANCE]
    return min(near, key=lambda r: (r["holistic_above_p90"], r["depth"], r["hard_weight"],
                                    r["holistic_weight"] or r["hard_weight"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, action="append", required=True)
    ap.add_argument("--index", type=Path, action="append", required=True)
    ap.add_argument("--table", type=Path, action="append", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cv-repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if not len(args.bench) == len(args.index) == len(args.table):
        print("error: give one --index and one --table per --bench", file=sys.stderr)
        return 2
    pipe = Pipeline(MatcherConfig(), fusion=False)
    try:
        t, gt, holistic, _ = ff.load_pool(args.bench, args.index, args.table, pipe, None,
                                          ff.background_photos(pipe.config), ff.VARIANTS)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for depth, hard, hol in itertools.product(DEPTHS, HARD_WEIGHTS, HOLISTIC_WEIGHTS):
        t0 = time.perf_counter()
        ff.TREES["depth"] = depth
        w = ff.sample_weights(t["kind"], hard, {"hard_negative_holistic": hol} if hol else None)
        cv = ff.cross_validate("trees", t, gt, holistic, w, pipe.gate_margin, args.folds, args.cv_repeats)
        per = cv["per_domain"]
        row = {"depth": depth, "hard_weight": hard, "holistic_weight": hol,
               "mean_domain_uap": float(np.mean([m["uap"] for m in per.values()])),
               "pooled_uap": cv["uap"], "holistic_above_p90": cv["holistic_pairs_above_p90"],
               "domains": {d: {k: m[k] for k in ("uap", "recall_at_p90", "precision_at_threshold",
                                                 "recall_at_threshold") if k in m} for d, m in per.items()},
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"depth {depth} hard {hard:g} holistic {hol or hard:g}: mean domain µAP {row['mean_domain_uap']:.4f} "
              f"pooled {row['pooled_uap']:.4f} holistic>P90 {row['holistic_above_p90']:.3f}  "
              + " ".join(f"{d} {m['uap']:.3f}/{m.get('precision_at_threshold', float('nan')):.3f}"
                         for d, m in row["domains"].items()), flush=True)
    chosen = choose(rows)
    print(f"chosen: depth {chosen['depth']} hard {chosen['hard_weight']:g} holistic "
          f"{chosen['holistic_weight'] or chosen['hard_weight']:g}")
    args.out.write_text(json.dumps({"rule": __doc__.split("Selection rule")[1].split("Fit the")[0].strip(),
                                    "candidates": rows, "chosen": chosen}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
