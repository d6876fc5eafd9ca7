"""``icd match --queries DIR --references DIR --output submission.csv``."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_match_arguments", "run_match"]

EXIT_SKIPPED = 3  # the job completed but some input files were skipped (listed in skipped.csv)


def add_match_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", required=True, help="folder (or file) of query images")
    p.add_argument("--references", required=True, help="folder of reference images")
    p.add_argument("--output", required=True, help="submission CSV to write (skipped.csv is written beside it)")
    p.add_argument("--top-k", type=int, default=10, help="pairs written per query (default 10)")
    p.add_argument("--max-rows", type=int, default=500_000, help="rows in total (default 500,000)")
    p.add_argument("--cache", metavar="DIR", help="on-disk feature store for reference features (reused on re-runs)")
    p.add_argument("--query-regions", default="full",
                   help="comma-separated query region proposers for local features (full, grid2, grid3, center)")
    p.add_argument("--reference-regions", default="full",
                   help="comma-separated reference region proposers (full, grid2, grid3, center, yolo); each region "
                        "is matched as an extra reference entry and a reference keeps its best region")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_match(args: argparse.Namespace) -> int:
    from matcher.config import MatcherConfig
    from matcher.io import DuplicateIdError
    from matcher.local.store import FeatureStoreError
    from matcher.match_job import run_exhaustive_match

    regions = tuple(r.strip() for r in args.query_regions.split(",") if r.strip())
    ref_regions = tuple(r.strip() for r in args.reference_regions.split(",") if r.strip())
    try:
        config = MatcherConfig.make(top_k=args.top_k, max_rows=args.max_rows, local={"query_regions": regions,
                                                                             "reference_regions": ref_regions})
        summary = run_exhaustive_match(args.queries, args.references, args.output, config=config,
                                       cache_dir=args.cache, progress=not args.no_progress)
    except (FileNotFoundError, NotADirectoryError, ValueError, DuplicateIdError, FeatureStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in summary.skipped:
        print(f"skipped {s.path}: {s.message}", file=sys.stderr)
    print(summary)
    return EXIT_SKIPPED if summary.skipped else 0
