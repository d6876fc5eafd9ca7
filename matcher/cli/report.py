"""``icd report SUBMISSION --queries DIR --references DIR [--ground-truth GT.csv] --output report.html``."""
from __future__ import annotations

import argparse
import logging
import sys

from matcher.cli.common import add_model_arguments, positive_int

__all__ = ["EXIT_PROBLEMS", "add_report_arguments", "run_report"]

EXIT_PROBLEMS = 3  # the report was written but some images could not be shown (listed on stderr)
_LOG = logging.getLogger(__name__)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submission", metavar="SUBMISSION", help="predictions CSV: query_id,reference_id,score")
    p.add_argument("--queries", required=True, help="folder of query images (ids are file stems)")
    p.add_argument("--references", required=True, help="folder of reference images (ids are file stems)")
    p.add_argument("--ground-truth", metavar="GT.csv", default=None,
                   help="ground-truth CSV query_id,reference_id: adds µAP, the PR curve and right/wrong "
                        "marks")
    p.add_argument("--top", type=positive_int, default=3, help="matches shown per query (default 3)")
    p.add_argument("--max-queries", type=positive_int, default=200,
                   help="queries shown, best score first; with ground truth, queries with a false positive "
                        "or a missed pair are taken first (default 200)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="verdict threshold: score >= T is a copy (default 0.5)")
    p.add_argument("--output", required=True, help="HTML file to write (self-contained)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)  # the pairs are drawn from a local verification run with this configuration


def run_report(args: argparse.Namespace) -> int:
    """Write the report. Returns 0; 3 when some images could not be shown (listed on stderr); 2 on bad input
    (the message, naming the file and line, on stderr)."""
    from matcher.cli.common import config_from_args, show_progress
    from matcher.io.folders import DuplicateIdError
    from matcher.isc.submission import SubmissionFormatError
    from matcher.report.html import build_report

    try:
        config = config_from_args(args)
        summary = build_report(args.submission, args.queries, args.references, args.output,
                               ground_truth=args.ground_truth, top=args.top, max_queries=args.max_queries,
                               threshold=args.threshold, config=config, progress=show_progress(args))
    except (SubmissionFormatError, DuplicateIdError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in summary.problems:
        _LOG.warning("image problem: %s", problem.message)
    print(summary)
    return EXIT_PROBLEMS if summary.problems else 0
