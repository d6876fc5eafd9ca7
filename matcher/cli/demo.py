"""``icd demo``: build a small benchmark from scikit-image's bundled photos, run the matcher, print µAP/recall@P90.

It runs the full pipeline (ASL candidates over query regions and reference crops, local verification, detector,
fused asymmetric score), and for scale the local engine alone (exhaustive) and a trivial thumbnail baseline,
clearly labelled.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from matcher.cli.common import add_model_arguments

__all__ = ["DEMO_SIZES", "EXIT_INACTIVE", "add_demo_arguments", "run_demo"]

EXIT_INACTIVE = 4  # --check-components: a learned component is switched off or could not be loaded

# Small enough for a couple of minutes on 2 CPU cores.
DEMO_SIZES = {"n_references": 8, "n_queries": 24, "copy_fraction": 0.5, "n_distractors": 0, "n_background": 2,
              "n_holistic": 2, "n_same_scene": 1}
_LOG = logging.getLogger(__name__)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--seed", type=int, default=0, help="benchmark seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--check-components", action="store_true",
                   help=f"exit with status {EXIT_INACTIVE} unless descriptor, detector, fusion and normalisation "
                        "are all active (an install check)")
    add_model_arguments(p)


def _baseline_rows(bench: Path, top_k: int):
    import numpy as np

    from matcher.benchmark.baselines import thumbnail_descriptor, thumbnail_scores
    from matcher.io.folders import read_images
    from matcher.isc.submission import PredictedMatch

    refs = read_images(bench / "references")
    qs = read_images(bench / "queries")
    r_ids, r_desc = zip(*[(i, thumbnail_descriptor(im)) for i, _, im in refs.iter_loaded()])
    q_ids, q_desc = zip(*[(i, thumbnail_descriptor(im)) for i, _, im in qs.iter_loaded()])
    s = thumbnail_scores(np.stack(q_desc), np.stack(r_desc))
    rows = []
    for qi, qid in enumerate(q_ids):
        for ri in np.argsort(-s[qi], kind="stable")[:top_k]:
            rows.append(PredictedMatch(qid, r_ids[ri], float(s[qi, ri])))
    return rows


def run_demo(args: argparse.Namespace) -> int:
    from matcher.benchmark.builder import build_benchmark
    from matcher.benchmark.demo_photos import export_demo_photos
    from matcher.cli.common import ConfigError, config_from_args, show_progress
    from matcher.isc.exhaustive import run_exhaustive_match
    from matcher.isc.metrics import evaluate_with_breakdowns, format_metrics_table, load_manifest
    from matcher.isc.plots import plot_pr_curve
    from matcher.isc.submission import read_ground_truth, read_predictions
    from matcher.isc.track import run_pipeline_match
    from matcher.pipeline.pipeline import Pipeline

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = show_progress(args)
    tmp = None
    if args.out:
        out = Path(args.out)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="icd-demo-")
        out = Path(tmp.name)
    try:
        photos = out / "photos"
        export_demo_photos(photos)
        bench = out / "benchmark"
        _LOG.info("building a small benchmark from %d scikit-image photos in %s", len(list(photos.iterdir())), bench)
        _LOG.info("%s", build_benchmark(photos, bench, seed=args.seed, progress=progress, **DEMO_SIZES))

        _LOG.info("running the pipeline: index the references, then candidates -> verification -> fused score")
        pipeline = Pipeline(config)
        components = pipeline.components()
        print("components:")
        for name, state in components.items():
            print(f"  {name}: {'INACTIVE' if state.startswith('inactive') else 'active'} - {state}")
        inactive = sorted(k for k, v in components.items() if v.startswith("inactive"))
        sub = out / "submission.csv"
        summary = run_pipeline_match(bench / "queries", sub, references=bench / "references",
                                     index_dir=out / "index", pipeline=pipeline, progress=progress)
        _LOG.info("%s", summary)

        gt = read_ground_truth(bench / "ground_truth.csv")
        manifest = load_manifest(bench / "manifest.json")
        preds = read_predictions(sub)
        overall, by_family, _ = evaluate_with_breakdowns(preds, gt, manifest)
        print("\npipeline: ASL candidates + regions + local verification + detector + fusion")
        print(format_metrics_table(overall, by_family))
        print("\nfor comparison, the local engine alone (exhaustive: every query against every reference)")
        local_sub = out / "submission_local.csv"
        _LOG.info("%s", run_exhaustive_match(bench / "queries", bench / "references", local_sub, config=config,
                                             progress=progress))
        local = evaluate_with_breakdowns(read_predictions(local_sub), gt)[0]
        print(format_metrics_table(local))
        base = evaluate_with_breakdowns(_baseline_rows(bench, 10), gt)[0]
        print("\nbaseline (NOT the engine): 16x16 thumbnail cosine")
        print(format_metrics_table(base))
        plot_pr_curve(preds, gt, out / "pr_curve.png", title="icd demo: pipeline")
        print(f"\nmicro-AP {overall.micro_ap:.4f}  recall@P90 {overall.recall_at_p90:.4f}  "
              f"(local engine alone {local.micro_ap:.4f}; baseline micro-AP {base.micro_ap:.4f})")
        if args.out:
            _LOG.info("outputs in %s (submission.csv, submission_local.csv, their .skipped.csv lists, pr_curve.png, "
                      "index/, benchmark/); review them with `icd report`", out)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if overall.micro_ap != overall.micro_ap:  # nan -> failure
        return 1
    if inactive:
        _LOG.warning("inactive components: %s", ", ".join(inactive))
        if args.check_components:
            return EXIT_INACTIVE
    return 0
