"""The ``eval`` command: score a matching-track submission against ground truth.

Wiring::

    p = sub.add_parser("eval", help="...")
    add_eval_arguments(p)
    p.set_defaults(func=run_eval_from_args)
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from matcher.isc.metrics import (
    ManifestError,
    evaluate_with_breakdowns,
    format_metrics_table,
    fraction_above,
    load_manifest,
    queries_by_kind,
    split_by_family,
)
from matcher.isc.submission import MAX_ROWS, SubmissionFormatError, read_ground_truth, read_predictions

__all__ = ["add_eval_arguments", "run_eval", "run_eval_from_args"]

_LOG = logging.getLogger(__name__)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add SUBMISSION GROUND_TRUTH and --manifest, --json, --plot, --max-rows to ``parser``."""
    parser.add_argument("submission", metavar="SUBMISSION", help="predictions CSV: query_id,reference_id,score")
    parser.add_argument("ground_truth", metavar="GROUND_TRUTH",
                        help="ground-truth CSV: query_id,reference_id (empty reference_id: no copy)")
    parser.add_argument("--manifest", metavar="FILE", default=None,
                        help="benchmark manifest.json: adds per-edit-family and per-query-kind tables")
    parser.add_argument("--json", dest="json_out", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", metavar="FILE", default=None, help="write a precision-recall curve (PNG)")
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS,
                        help=f"refuse submissions with more rows (default {MAX_ROWS}, the ISC2021 cap)")


def run_eval(
    submission: str | os.PathLike[str],
    ground_truth: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    json_out: bool = False,
    plot: str | os.PathLike[str] | None = None,
    max_rows: int = MAX_ROWS,
) -> int:
    """Evaluate and print the metrics table (or JSON) on stdout. Returns 0, or 2 on unreadable or malformed
    input (the message goes to stderr)."""
    try:
        predictions = read_predictions(submission, max_rows=max_rows)
        gt = read_ground_truth(ground_truth)
        man = load_manifest(manifest) if manifest is not None else None
    except (SubmissionFormatError, ManifestError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overall, by_family, by_kind = evaluate_with_breakdowns(predictions, gt, man)
    flagged: dict[str, float] | None = None
    if man is not None and overall.threshold_at_p90 is not None:
        thr = overall.threshold_at_p90
        flagged = {k: fraction_above(predictions, ids, thr) for k, ids in queries_by_kind(man).items()}
    if plot is not None:
        from matcher.isc.plots import plot_pr_curve  # matplotlib only when asked for

        fam_split = split_by_family(predictions, gt, man) if man is not None else None
        try:
            plot_pr_curve(predictions, gt, plot, title=os.path.basename(os.fspath(submission)), by_family=fam_split)
        except OSError as e:
            print(f"error: cannot write plot {os.fspath(plot)}: {e}", file=sys.stderr)
            return 2
    if json_out:
        doc = {
            "overall": overall.to_dict(),
            "by_family": {k: m.to_dict() for k, m in by_family.items()},
            "by_kind": {k: m.to_dict() for k, m in by_kind.items()},
            "flagged_at_p90": None if flagged is None else {k: _none_if_nan(v) for k, v in flagged.items()},
        }
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print(format_metrics_table(overall, by_family or None, by_kind=by_kind or None, flagged=flagged), end="")
    if plot is not None:
        _LOG.info("wrote %s", os.fspath(plot))
    return 0


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def run_eval_from_args(args: argparse.Namespace) -> int:
    """``run_eval`` on a namespace filled by :func:`add_eval_arguments`."""
    return run_eval(args.submission, args.ground_truth, manifest=args.manifest, json_out=args.json_out,
                    plot=args.plot, max_rows=args.max_rows)
