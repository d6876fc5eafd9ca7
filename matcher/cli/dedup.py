"""``icd dedup DIR --output groups.json [--html groups.html]``: the copies within one collection, grouped.

Every picture is matched against the others (the full pipeline); pairs scoring at least the threshold are grouped
as connected components, each group naming its likely original. Exit code 0: all files used; 3: the job completed
but some files were skipped (listed on stderr and in the JSON); 2: bad arguments or an unusable index.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["add_dedup_arguments", "run_dedup"]

EXIT_SKIPPED = 3
EXIT_ERROR = 2
_SHOWN_SKIPS = 20  # skipped files printed to stderr (all of them are in the JSON)


def add_dedup_arguments(p: argparse.ArgumentParser) -> None:
    from matcher.cli.common import add_model_arguments

    p.add_argument("source", metavar="DIR", help="folder (or file) of pictures; ids are file stems")
    p.add_argument("--output", required=True, metavar="JSON", help="groups JSON to write")
    p.add_argument("--html", metavar="HTML", help="also write a self-contained HTML page of the groups")
    p.add_argument("--threshold", type=float, default=None,
                   help="pair score at or above which two pictures are copies (default: the fusion model's, 0.5)")
    p.add_argument("--top-k", type=int, default=None, help="best matches kept per picture (default 10)")
    p.add_argument("--index", metavar="DIR", help="keep the collection's index in DIR and reuse it on re-runs "
                                                  "(default: a temporary folder)")
    p.add_argument("--details", action="store_true",
                   help="write both directions' evidence (score, containment, norm ratio, seam) with each pair")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(p)


def run_dedup(args: argparse.Namespace) -> int:
    from matcher.api import Matcher
    from matcher.cli.common import ConfigError, config_from_args, show_progress
    from matcher.io.folders import DuplicateIdError
    from matcher.references.disk.store import DB_NAME, IndexStore, IndexStoreError
    from matcher.references.features import FeatureStoreError

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        return fail(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.top_k is not None and args.top_k < 1:
        return fail(f"--top-k must be >= 1, got {args.top_k}")
    if not Path(args.source).exists():
        return fail(f"{args.source}: no such folder or file")
    for out in (args.output, args.html):
        if out is not None and not Path(out).resolve().parent.is_dir():
            return fail(f"{out}: its folder does not exist")
    try:
        base: dict = {}
        if args.index is not None and (Path(args.index) / DB_NAME).is_file():  # reuse: the settings it was built with
            with IndexStore.open(args.index) as stored:
                base = stored.config.to_dict()
        config = config_from_args(args, base)
        result = Matcher.from_pretrained(config).dedup(args.source, threshold=args.threshold, top_k=args.top_k,
                                                       index=args.index, progress=show_progress(args))
    except (ConfigError, IndexStoreError, FeatureStoreError, DuplicateIdError, FileNotFoundError,
            NotADirectoryError, ValueError) as exc:
        return fail(str(exc))
    result.to_json(args.output, details=args.details)
    if args.html is not None:
        result.to_html(args.html)
    for s in result.skipped[:_SHOWN_SKIPS]:
        print(f"skipped {s.path}: {s.message}", file=sys.stderr)
    if len(result.skipped) > _SHOWN_SKIPS:
        print(f"... and {len(result.skipped) - _SHOWN_SKIPS} more (all in {args.output})", file=sys.stderr)
    print(f"{result} -> {args.output}" + (f", {args.html}" if args.html else ""))
    return EXIT_SKIPPED if result.skipped else 0
