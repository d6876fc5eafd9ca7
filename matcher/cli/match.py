"""``icd match --queries DIR (--references DIR | --index DIR) --output submission.csv``.

Default: the full pipeline (global candidates over query regions and reference crops, local verification,
detector, fused asymmetric score). ``--exhaustive``: the local engine alone, every query against every
reference (small collections, no descriptor model needed).
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_match_arguments", "run_match"]

EXIT_SKIPPED = 3  # the job completed but some input files were skipped (listed in skipped.csv)


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(r.strip() for r in text.split(",") if r.strip())


def add_match_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", required=True, help="folder (or file) of query images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--references", help="folder of reference images (indexed for this run)")
    src.add_argument("--index", help="reference index folder built by `icd index`")
    p.add_argument("--output", required=True, help="submission CSV to write (skipped.csv is written beside it)")
    p.add_argument("--top-k", type=int, default=10, help="pairs written per query (default 10)")
    p.add_argument("--max-rows", type=int, default=500_000, help="rows in total (default 500,000)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_match(args: argparse.Namespace) -> int:
    from matcher.config import MatcherConfig
    from matcher.io.folders import DuplicateIdError
    from matcher.references.features import FeatureStoreError

    qr, rr = _names(args.query_regions), _names(args.reference_regions)
    try:
        if args.exhaustive:
            from matcher.isc.exhaustive import run_exhaustive_match

            if args.references is None:
                raise ValueError("--exhaustive needs --references DIR")
            config = MatcherConfig.make(top_k=args.top_k, max_rows=args.max_rows,
                                        local={"query_regions": qr or ("full",), "reference_regions": rr or ("full",)})
            summary = run_exhaustive_match(args.queries, args.references, args.output, config=config,
                                           cache_dir=args.cache, progress=not args.no_progress)
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
            merged = {**base, "top_k": args.top_k, "max_rows": args.max_rows,
                      "pipeline": {**base.get("pipeline", {}), **pipe}}
            config = MatcherConfig.make(**merged)
            try:
                summary = run_pipeline_match(args.queries, args.output, references=args.references,
                                             index_dir=args.index or args.cache, config=config,
                                             progress=not args.no_progress)
            except IndexStoreError as exc:
                raise ValueError(str(exc)) from exc
    except (FileNotFoundError, NotADirectoryError, ValueError, DuplicateIdError, FeatureStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in summary.skipped:
        print(f"skipped {s.path}: {s.message}", file=sys.stderr)
    print(summary)
    return EXIT_SKIPPED if summary.skipped else 0
