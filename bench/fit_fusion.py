"""Fit the fusion model (``weights/fusion.json``) on candidate pairs from benchmarks built from ``train`` photos.

    icd make-benchmark ../shared/data/photos/train /tmp/train_bench --references 500 --queries 1000 \
        --holistic 150 --same-scene 60 --seed 7
    python bench/fit_fusion.py --bench /tmp/train_bench --index /tmp/train_index --table /tmp/fusion_train.npz \
        [--bench B2 --index I2 --table T2 ...] [--model trees|logistic]

Steps: for each benchmark, index its references and run the pipeline's candidates + verification for every query
(features only; the table is cached in ``--table``); pool the benchmarks; report k-fold cross-validated µAP /
recall@P90 / precision and recall at the default threshold / hard negatives above the P90 threshold (folds by a
hash of the query id, ``--cv-repeats`` different splits); with ``--leave-out``, also fit without one benchmark
(domain) at a time and score it, and without one edit family at a time and score that family's queries; then
refit on all pairs and write the JSON with its model card. Refuses a benchmark built from the ``bench`` photos.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pipeline import hard_negatives, holistic_crops, summarise, top_rows
from bench.pipeline_features import collect, load_table, open_or_build_index, save_table
from matcher.benchmark.variants import load_variant_groups, outside_pairs, variant_pairs
from matcher.config import MatcherConfig
from matcher.fusion.features import FEATURE_NAMES
from matcher.fusion.load import Fusion, default_fusion_path
from matcher.isc.submission import GroundTruthMatch, read_ground_truth
from matcher.pipeline.pipeline import Pipeline
from matcher.retrieval.normalise import background_path
from matcher.training.fusion import fit_fusion, fit_trees

# The score may only rise with these (+1) / fall with these (-1), whatever the other features say: more geometric
# and descriptor evidence never makes a pair less of a copy, an unexplained seamless "reference inside the query"
# never makes it more of one.
MONOTONE = {"verified": 1, "log1p_inliers": 1, "inlier_ratio": 1, "global_full": 1, "global_regions": 1,
            "global_to_local": 1, "inside_with_detector": 1, "inside_without_seam": -1,
            "dense_agree": 1, "dense_agree_outside": 1, "dense_disagree_blob": -1}
THRESHOLD = 0.5  # the documented default decision threshold
VARIANTS = Path(__file__).resolve().parent / "graphics_variants.json"  # variant groups of the corpora
WITHOUT: set[str] = set()  # features left out of the fit (--without, for ablations)
TREES = {"rounds": 200, "depth": 3, "learning_rate": 0.1, "lam": 1.0, "min_child_hessian": 5.0, "n_bins": 64}


def fold_of(qid: str, k: int, salt: str = "") -> int:
    return int(hashlib.sha256((salt + qid).encode()).hexdigest()[:8], 16) % k


HARD: dict[str, dict[str, set[str]]] = {}  # hard-negative kind -> query -> related references (set by load_pool)


def evaluate_scores(t: dict[str, np.ndarray], score: np.ndarray, gt: list[GroundTruthMatch],
                    holistic: dict[str, set[str]], mask: np.ndarray | None = None) -> dict:
    """The benchmark summary (:func:`bench.bench_pipeline.summarise`, with the hard-negative kinds and the default
    threshold) of the table's best 10 rows per query under ``score``; ``mask``: only those rows' queries."""
    if mask is not None:
        keep = set(t["query_id"][mask])
        gt = [g for g in gt if g.query_id in keep]
    return summarise(top_rows(t["query_id"], t["reference_id"], score, mask), gt, holistic, HARD, THRESHOLD)


def _rows(t: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """A candidate table with only the rows ``keep`` ((N,) bool); ``feature_names`` is per table, kept whole."""
    return {k: (v[keep] if k != "feature_names" else v) for k, v in t.items()}


def load_pool(benches: list[Path], indexes: list[Path], tables: list[Path], pipe: Pipeline,
              max_queries: int | None = None, exclude_sources: frozenset[str] = frozenset(),
              variants: Path | None = None
              ) -> tuple[dict[str, np.ndarray], list[GroundTruthMatch], dict[str, set[str]], list[dict]]:
    """All benchmarks' tables pooled (ids prefixed "<benchmark folder>/"), their ground truth, holistic query ->
    its crop references, and a summary of each benchmark. Queries whose source photo is in ``exclude_sources``
    (the score-normalisation background set) are left out, and so are the pairs between variants of one picture
    (``variants``: a groups file, :mod:`matcher.benchmark.variants`), which are neither copies nor negatives."""
    parts, gts, manifests = [], [], []
    holistic: dict[str, set[str]] = {}
    for bench, index, table in zip(benches, indexes, tables, strict=True):
        manifest = json.loads((bench / "manifest.json").read_text())
        if Path(str(manifest.get("photos", ""))).name == "bench":
            raise ValueError(f"{bench} was built from the bench photos; fit on train photos only")
        if table.exists():
            t = load_table(table)
            print(f"features from {table}: {len(t['label'])} pairs")
        else:
            store = open_or_build_index(pipe, bench / "references", index)
            t, seconds, n = collect(pipe, store, bench, max_queries=max_queries)
            save_table(t, table)
            print(f"collected {len(t['label'])} candidate pairs of {n} queries; seconds: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
        prefix = f"{bench.name}/"
        t = {k: v for k, v in t.items() if k not in ("timing",)}
        # queries made from a background photo: a case that inference on unseen pictures never meets
        queries = {q: v for q, v in manifest["queries"].items() if v.get("source") not in exclude_sources}
        if len(queries) < len(manifest["queries"]):
            keep = np.isin(t["query_id"], sorted(queries))
            t = _rows(t, keep)
            print(f"{bench.name}: left out {len(manifest['queries']) - len(queries)} queries made from "
                  "background-set photos")
        n_variant = 0
        if variants is not None:
            ambiguous = variant_pairs(manifest, load_variant_groups(variants, str(manifest.get("photos", ""))))
            keep = outside_pairs(t["query_id"], t["reference_id"], ambiguous)
            n_variant = int((~keep).sum())
            if n_variant:
                t = _rows(t, keep)
                print(f"{bench.name}: left out {n_variant} pairs between variants of one picture")
        t["query_id"] = np.char.add(prefix, t["query_id"])
        t["reference_id"] = np.char.add(prefix, t["reference_id"])
        parts.append(t)
        holistic.update(holistic_crops(queries, prefix))
        for kind, pairs in hard_negatives(queries, prefix).items():
            HARD.setdefault(kind, {}).update(pairs)
        gts += [GroundTruthMatch(prefix + g.query_id, prefix + g.reference_id if g.reference_id else g.reference_id)
                for g in read_ground_truth(bench / "ground_truth.csv") if g.query_id in queries]  # copies or not
        manifests.append({"benchmark": str(bench), "photos": manifest.get("photos"), "params": manifest.get("params"),
                          "pairs": len(t["label"]), "positives": int(t["label"].sum()), "variant_pairs_left_out": n_variant,
                          "queries": len(set(t["query_id"]))})
    pooled = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "feature_names"}
    return pooled, gts, holistic, manifests


def background_photos(config: MatcherConfig) -> frozenset[str]:
    """File names of the photos in the shipped score-normalisation background set (empty when none)."""
    path = background_path(config.descriptor.model, config)
    if not path.exists():
        return frozenset()
    with np.load(path, allow_pickle=False) as z:
        return frozenset(z["photos"].tolist()) if "photos" in z.files else frozenset()


def sample_weights(kind: np.ndarray, hard_weight: float, kind_weights: dict[str, float] | None = None
                   ) -> np.ndarray:
    """(N,) sample weights: ``hard_weight`` for hard-negative pairs, ``kind_weights[kind]`` where given, else 1."""
    w = np.where(np.char.startswith(kind.astype(str), "hard_negative"), hard_weight, 1.0)
    for k, v in (kind_weights or {}).items():
        w = np.where(kind == k, v, w)
    return w


def fit(model: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, gate_margin: float, source: str = "") -> Fusion:
    features = tuple(f for f in FEATURE_NAMES if f not in WITHOUT)
    if model == "trees":
        return fit_trees(x, y, features=features, sample_weight=w, gate_margin=gate_margin, source=source,
                         monotone={k: v for k, v in MONOTONE.items() if k in features}, **TREES)
    return fit_fusion(x, y, features=features, sample_weight=w, gate_margin=gate_margin, source=source)


def _domains(t: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) the benchmark (domain) of each pooled row: its query id's "<benchmark folder>/" prefix."""
    return np.array([q.split("/", 1)[0] for q in t["query_id"]])


def _line(m: dict) -> str:
    """One metrics dict as a printed line."""
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())


def cross_validate(model: str, t: dict[str, np.ndarray], gt: list[GroundTruthMatch], holistic: dict[str, set[str]],
                   w: np.ndarray, gate_margin: float, folds: int, repeats: int) -> dict[str, float]:
    """Mean over ``repeats`` splits of the pooled k-fold out-of-fold metrics (and their spread)."""
    x, y = t["features"], t["label"].astype(np.float64)
    runs = []
    for r in range(repeats):
        fold = np.array([fold_of(q, folds, salt=f"cv{r}:" if r else "") for q in t["query_id"]])
        score = np.zeros(len(y))
        for k in range(folds):
            te = fold == k
            score[te] = fit(model, x[~te], y[~te], w[~te], gate_margin).predict(x[te])
        runs.append(evaluate_scores(t, score, gt, holistic))
        if r == 0:
            first = score  # per-domain figures come from the first split
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    domain = _domains(t)
    out["per_domain"] = {d: evaluate_scores(t, first, gt, holistic, domain == d)  # type: ignore[arg-type]
                         for d in sorted(set(domain))}
    out["holistic_pairs_above_p90_runs"] = [round(r["holistic_pairs_above_p90"], 4) for r in runs]
    out["holistic_above_p90_runs"] = [round(r["holistic_above_p90"], 4) for r in runs]
    out["uap_runs"] = [round(r["uap"], 4) for r in runs]
    return out


def leave_out(model: str, t: dict[str, np.ndarray], gt: list[GroundTruthMatch], holistic: dict[str, set[str]],
              w: np.ndarray, gate_margin: float) -> dict[str, dict]:
    """Fit without one benchmark (domain) and score it; fit without one edit family's copies and score that
    family's queries (the same negatives stay in training; they are scored with the family's queries)."""
    x, y = t["features"], t["label"].astype(np.float64)
    domain = _domains(t)
    out: dict[str, dict] = {"domain": {}, "family": {}}
    for d in sorted(set(domain)):
        held = domain == d
        score = fit(model, x[~held], y[~held], w[~held], gate_margin).predict(x[held])
        full = np.zeros(len(y))
        full[held] = score
        out["domain"][d] = evaluate_scores(t, full, gt, holistic, held)
    negatives = t["kind"] != "copy"
    for fam in sorted(set(t["family"]) - {""}):
        held = (t["family"] == fam) & ~negatives
        if held.sum() < 20:
            continue
        score = fit(model, x[~held], y[~held], w[~held], gate_margin).predict(x)
        out["family"][fam] = evaluate_scores(t, score, gt, holistic, held | negatives)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, action="append", help="train benchmark folder (repeatable)")
    ap.add_argument("--index", type=Path, action="append", help="its index folder (one per --bench)")
    ap.add_argument("--table", type=Path, action="append", help="its feature table .npz (one per --bench)")
    ap.add_argument("--model", choices=("trees", "logistic"), default="trees")
    ap.add_argument("--out", type=Path, default=default_fusion_path())
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--holistic-weight", type=float, default=3.0, help="sample weight of hard negatives' pairs")
    ap.add_argument("--kind-weight", nargs="+", default=[], metavar="KIND=W",
                    help="sample weight of one pair kind (e.g. hard_negative_holistic=20), over --holistic-weight")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cv-repeats", type=int, default=2)
    ap.add_argument("--depth", type=int, default=TREES["depth"], help="tree depth (trees)")
    ap.add_argument("--rounds", type=int, default=TREES["rounds"], help="boosting rounds (trees)")
    ap.add_argument("--min-child-hessian", type=float, default=TREES["min_child_hessian"],
                    help="least hessian weight per child (trees)")
    ap.add_argument("--without", nargs="+", default=[], choices=FEATURE_NAMES, metavar="FEATURE",
                    help="fit without these features (ablation)")
    ap.add_argument("--keep-background-queries", action="store_true",
                    help="keep queries whose source photo is in the shipped score-normalisation background set")
    ap.add_argument("--variants", type=Path, default=VARIANTS,
                    help="variant-groups file: pairs between variants of one picture are left out (default: %(default)s)")
    ap.add_argument("--keep-variant-pairs", action="store_true", help="keep them (labelled as built: negatives)")
    ap.add_argument("--leave-out", action="store_true",
                    help="also validate leaving one benchmark (domain) out and one edit family out")
    args = ap.parse_args(argv)
    WITHOUT.update(args.without)
    TREES.update(depth=args.depth, rounds=args.rounds, min_child_hessian=args.min_child_hessian)
    benches = args.bench or [Path("/tmp/train_bench")]
    indexes = args.index or [Path("/tmp/train_index")]
    tables = args.table or [Path("/tmp/fusion_train.npz")]
    if not len(benches) == len(indexes) == len(tables):
        print("error: give one --index and one --table per --bench", file=sys.stderr)
        return 2
    pipe = Pipeline(MatcherConfig(), fusion=False)
    try:
        exclude = frozenset() if args.keep_background_queries else background_photos(pipe.config)
        t, gt, holistic, manifests = load_pool(benches, indexes, tables, pipe, args.max_queries, exclude,
                                               None if args.keep_variant_pairs else args.variants)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    x, y = t["features"], t["label"].astype(np.float64)
    try:
        kind_weights = {k: float(v) for k, v in (kw.split("=", 1) for kw in args.kind_weight)}
    except ValueError:
        print(f"error: --kind-weight takes KIND=WEIGHT, got {args.kind_weight}", file=sys.stderr)
        return 2
    w = sample_weights(t["kind"], args.holistic_weight, kind_weights)
    report = {
        args.model: cross_validate(args.model, t, gt, holistic, w, pipe.gate_margin, args.folds, args.cv_repeats),
        "local_score_only": evaluate_scores(t, t["local_score"], gt, holistic),
        "global_regions_only": evaluate_scores(t, x[:, FEATURE_NAMES.index("global_regions")], gt, holistic),
    }
    if args.leave_out:
        report["leave_out"] = leave_out(args.model, t, gt, holistic, w, pipe.gate_margin)
    for name, r in report.items():
        if name == "leave_out":
            for part, rows in r.items():
                for held, m in rows.items():
                    print(f"leave one {part} out: {held:16s} " + _line(m))
            continue
        print(f"{args.folds}-fold CV {name:18s} " + _line({k: v for k, v in r.items() if k != "per_domain"}))
        for d, m in r.get("per_domain", {}).items():
            print(f"    out-of-fold, domain {d:10s} " + _line(m))
    final = fit(args.model, x, y, w, pipe.gate_margin,
                source=f"bench/fit_fusion.py --model {args.model} on {', '.join(b.name for b in benches)} "
                       "(train photos)")
    recipe = (f"boosted trees {TREES}, monotone {MONOTONE}" if args.model == "trees" else
              "Newton logistic regression, L2 1e-4 x total weight on standardised features")
    if WITHOUT:
        recipe += f"; without the features {sorted(WITHOUT)}"
    card = {
        "data": manifests,
        "recipe": "; ".join([
            recipe,
            f"hard-negative pairs weighted {args.holistic_weight}"
            + "".join(f", {k} {v}" for k, v in kind_weights.items()),
            "pairs between variants of one picture kept as negatives" if args.keep_variant_pairs else
            f"pairs between variants of one picture ({args.variants.name}) left out",
            (f"metrics: {args.folds}-fold cross-validation by sha256(query id), {args.cv_repeats} splits, pooled "
            "over the benchmarks")]),
        "cv_metrics": report,
        "licence": "AGPL-3.0 (trained here by icd-matcher's own code on the project's train photos)",
    }
    final.save(args.out, **card)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
