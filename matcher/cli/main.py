"""The ``icd`` command line: one module per subcommand under :mod:`matcher.cli`; this file only wires them.

Only the chosen subcommand's module is imported (torch and friends load only when needed).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (help, module, function adding the arguments, function running the command)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("build a small benchmark from scikit-image's photos and run the matcher on it",
             "matcher.cli.demo", "add_demo_arguments", "run_demo"),
    "eval": ("score a submission CSV against a ground-truth CSV (µAP, recall@P90, ...)",
             "matcher.cli.eval", "add_eval_arguments", "run_eval_from_args"),
    "make-benchmark": ("build a DISC-like copy-detection benchmark from a folder of photos",
                       "matcher.cli.make_benchmark", "add_make_benchmark_arguments", "run_make_benchmark"),
    "score": ("score one query/reference pair and explain the decision",
              "matcher.cli.score", "add_score_arguments", "run_score"),
    "match": ("match a folder of queries against references or an index (ISC CSV, JSON lines or Parquet out)",
              "matcher.cli.match", "add_match_arguments", "run_match"),
    "index": ("build, resume or extend the on-disk reference index (global, region and local features)",
              "matcher.cli.index", "add_index_arguments", "run_index"),
    "report": ("write a self-contained HTML page to review a submission (drawn pairs, verdicts, PR curve)",
               "matcher.cli.report", "add_report_arguments", "run_report"),
    "dedup": ("group the copies within one collection of pictures (JSON and HTML out)",
              "matcher.cli.dedup", "add_dedup_arguments", "run_dedup"),
    "serve": ("serve one index over HTTP: /match, /score, /references add and remove, /health, /stats",
              "matcher.cli.serve", "add_serve_arguments", "run_serve"),
    "train-descriptor": ("train the ASL global descriptor on a folder of photos",
                         "matcher.cli.train_descriptor", "add_train_descriptor_arguments", "run_train_descriptor"),
    "make-detector-data": ("generate a synthetic YOLO dataset of pasted pictures from a folder of photos",
                           "matcher.cli.make_detector_data", "add_make_detector_data_arguments",
                           "run_make_detector_data"),
    "train-detector": ("train the YOLO region detector on a synthetic dataset",
                       "matcher.cli.train_detector", "add_train_detector_arguments", "run_train_detector"),
}


def _add_verbosity(p: argparse.ArgumentParser, default: object) -> None:
    """``-v`` / ``-q``, accepted before and after the subcommand (the subcommand's copies default to SUPPRESS so
    that they do not reset what was given before it)."""
    p.add_argument("-v", "--verbose", action="count", default=default,
                   help="more messages on stderr (debug level)")
    p.add_argument("-q", "--quiet", action="count", default=default,
                   help="only warnings and errors on stderr, no progress bars")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` set, just that subcommand's module is imported and its arguments added."""
    parser = argparse.ArgumentParser(prog="icd", description="icd-matcher: image copy detection")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _add_verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, module, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_verbosity(p, argparse.SUPPRESS)
        if only is None or only == name:
            mod = importlib.import_module(module)
            getattr(mod, add)(p)
            p.set_defaults(func=getattr(mod, run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(args_list)
    args.verbosity = args.verbose - args.quiet
    from matcher.cli.common import configure_logging

    configure_logging(args.verbosity)
    if args.version:
        from matcher import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

