"""The ``icd`` command line. Each subcommand lives in the module that owns its concern; this file only wires them."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from matcher.eval_cli import add_eval_arguments, run_eval_from_args

    p = sub.add_parser("eval", help="score a submission CSV against a ground-truth CSV (µAP, recall@P90, ...)")
    add_eval_arguments(p)
    p.set_defaults(func=run_eval_from_args)


def _add_make_benchmark(sub: argparse._SubParsersAction) -> None:
    from matcher.benchmark.builder import add_make_benchmark_arguments, run_make_benchmark

    p = sub.add_parser("make-benchmark", help="build a DISC-like copy-detection benchmark from a folder of photos")
    add_make_benchmark_arguments(p)
    p.set_defaults(func=run_make_benchmark)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from matcher.demo import add_demo_arguments, run_demo

    p = sub.add_parser("demo", help="build a small benchmark from scikit-image's photos and run the matcher on it")
    add_demo_arguments(p)
    p.set_defaults(func=run_demo)


def _add_score(sub: argparse._SubParsersAction) -> None:
    from matcher.score_cli import add_score_arguments, run_score

    p = sub.add_parser("score", help="score one query/reference pair and explain the decision")
    add_score_arguments(p)
    p.set_defaults(func=run_score)


def _add_match(sub: argparse._SubParsersAction) -> None:
    from matcher.match_cli import add_match_arguments, run_match

    p = sub.add_parser("match", help="match a folder of queries against a folder of references (ISC CSV out)")
    add_match_arguments(p)
    p.set_defaults(func=run_match)


_COMMANDS = (_add_eval, _add_make_benchmark, _add_demo, _add_score, _add_match)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icd", description="icd-matcher: image copy detection")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("icd-matcher"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
