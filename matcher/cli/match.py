"""``icd match --queries DIR (--references DIR | --index DIR) --output submission.csv``.

Default: the full pipeline (global candidates over query regions and reference crops, local verification,
detector, fused asymmetric score). ``--exhaustive``: the local engine alone, every query against every
reference (small collections, no descriptor model needed).

``--format csv|jsonl|parquet`` (default: from the output's suffix, else csv): csv is the ISC submission, jsonl and
parquet carry every pair's evidence (:mod:`matcher.isc.formats`). Skipped inputs go to ``OUT.skipped.csv``.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys

from matcher.cli.cluster import add_ray_arguments
from matcher.cli.common import add_model_arguments, positive_int

__all__ = ["add_match_arguments", "run_match"]

EXIT_SKIPPED = 3  # the job completed but some input files were skipped (listed in OUT.skipped.csv)
_LOG = logging.getLogger(__name__)


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(r.strip() for r in text.split(",") if r.strip())


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def add_match_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", required=True, help="folder (or file) of query images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--references", help="folder of reference images (indexed for this run)")
    src.add_argument("--index", help="reference index folder built by `icd index`")
    p.add_argument("--output", required=True, metavar="OUT",
                   help="file to write (the skipped input files are listed in OUT.skipped.csv beside it)")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), default=None,
                   help="csv: the ISC submission (query_id,reference_id,score); jsonl / parquet: every pair with its "
                        "evidence (is_copy, inliers, containment, matched regions, top contributions); parquet needs "
                        "icd-matcher[parquet]. Default: from OUT's suffix (.jsonl, .parquet), else csv")
    p.add_argument("--min-score", type=_finite, default=None, metavar="S",
                   help="write only pairs scoring at least S (default: every pair of the top-k)")
    p.add_argument("--top-k", type=int, default=None, help="pairs written per query (default 10)")
    p.add_argument("--max-rows", type=int, default=None, help="rows in total (default 500,000)")
    p.add_argument("--candidates", type=int, default=None, help="candidate budget per query (default 30)")
    p.add_argument("--keypoint-voting", choices=("on", "off"), default=None,
                   help="also collect candidates by local-descriptor votes (default: on, or as the index was built)")
    p.add_argument("--cache", metavar="DIR", help="with --references: keep the reference index (pipeline) or "
                                                  "feature store (--exhaustive) in DIR and reuse it on re-runs")
    p.add_argument("--exhaustive", action="store_true",
                   help="local verification only, every query against every reference (small collections)")
    p.add_argument("--query-regions", default=None,
                   help="comma-separated query region proposers: pipeline default full,grid2,center,rotations,"
                        "flips,yolo (global variants); with --exhaustive default full (local features)")
    p.add_argument("--reference-regions", default=None,
                   help="comma-separated reference region proposers: pipeline default grid2,grid3,center (crops "
                        "described at index time); with --exhaustive default full")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="match in N one-thread processes sharing the index's mapped files (on C cores, N = C is "
                        "the fastest; default 1: this process, all its threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout (counts, rows written, skipped files with reasons, seconds "
                        "per stage, output paths) instead of the summary line")
    add_model_arguments(p)
    add_ray_arguments(p)


def run_match(args: argparse.Namespace) -> int:
    from matcher.cli.common import config_from_args, print_json, show_progress
    from matcher.io.folders import DuplicateIdError
    from matcher.isc.workers import WorkerError
    from matcher.references.features import FeatureStoreError

    qr, rr = _names(args.query_regions), _names(args.reference_regions)
    progress = show_progress(args)
    limits = {k: v for k, v in (("top_k", args.top_k), ("max_rows", args.max_rows)) if v is not None}
    try:
        if args.exhaustive:
            from matcher.isc.exhaustive import run_exhaustive_match

            if args.references is None:
                raise ValueError("--exhaustive needs --references DIR")
            if args.ray is not None or args.workers > 1:
                raise ValueError("--exhaustive runs in one process; --ray and --workers run the pipeline (drop one "
                                 "of them)")
            regions = {k: v for k, v in (("query_regions", qr), ("reference_regions", rr)) if v is not None}
            config = config_from_args(args, overrides={**limits, "local": regions})
            summary = run_exhaustive_match(args.queries, args.references, args.output, config=config,
                                           cache_dir=args.cache, progress=progress, output_format=args.format,
                                           min_score=args.min_score)
        else:
            from matcher.isc.track import run_pipeline_match
            from matcher.references.disk.store import IndexStoreError

            pipe: dict[str, object] = {}
            if qr is not None:
                pipe["query_regions"] = qr
            if rr is not None:
                pipe["reference_regions"] = rr
            if args.candidates is not None:
                pipe["candidates"] = args.candidates
            if args.keypoint_voting is not None:
                pipe["keypoint_voting"] = args.keypoint_voting == "on"
            base: dict = {}
            if args.index is not None:  # start from the settings the index was built with
                from matcher.references.disk.store import IndexStore

                with IndexStore.open(args.index) as stored:
                    base = stored.config.to_dict()
            config = config_from_args(args, base, overrides={**limits, "pipeline": pipe})
            try:
                if args.ray is not None and args.workers > 1:
                    raise ValueError("--ray spreads the job over the cluster's CPUs; --workers over this machine's "
                                     "(drop one of them)")
                if args.ray is not None:
                    from matcher.cluster.jobs import run_cluster_match

                    summary = run_cluster_match(args.queries, args.output, address=args.ray,
                                                references=args.references, index_dir=args.index or args.cache,
                                                config=config, num_cpus=args.ray_cpus, progress=progress,
                                                output_format=args.format, min_score=args.min_score)
                else:
                    summary = run_pipeline_match(args.queries, args.output, references=args.references,
                                                 index_dir=args.index or args.cache, config=config,
                                                 progress=progress, output_format=args.format,
                                                 min_score=args.min_score, workers=args.workers)
            except IndexStoreError as exc:
                raise ValueError(str(exc)) from exc
    except (FileNotFoundError, NotADirectoryError, ValueError, DuplicateIdError, FeatureStoreError,
            WorkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in summary.skipped:
        _LOG.warning("skipped %s: %s", s.path, s.message)
    if summary.skipped:
        _LOG.warning("skipped files are listed in %s", summary.skipped_output)
    _LOG.info("wrote %d rows to %s (%s)", summary.n_rows, summary.output, summary.format)
    if args.json:
        print_json({"command": "match", "mode": "exhaustive" if args.exhaustive else "pipeline",
                    **summary.to_dict()})
    else:
        print(summary)
    return EXIT_SKIPPED if summary.skipped else 0
