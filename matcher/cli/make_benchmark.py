"""``icd make-benchmark PHOTOS OUT``: a DISC-like copy-detection benchmark from a folder of photos
(:mod:`matcher.benchmark.builder`)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_make_benchmark_arguments", "run_make_benchmark"]


def add_make_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``icd make-benchmark PHOTOS OUT`` (and ``bench/make_dataset.py``)."""
    parser.add_argument("photos", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("out", type=Path, help="output folder (image folders, CSVs, manifest)")
    parser.add_argument("--references", type=int, default=1000, help="references (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=2000, help="copies + negatives (default: %(default)s)")
    parser.add_argument("--copy-fraction", type=float, default=0.4, help="copy share (default: %(default)s)")
    parser.add_argument("--distractors", type=int, default=0, help="uncopied refs (default: %(default)s)")
    parser.add_argument("--background", type=int, default=100, help="background (default: %(default)s)")
    parser.add_argument("--holistic", type=int, default=100, help="holistic negatives (default: %(default)s)")
    parser.add_argument("--same-scene", type=int, default=50, help="same-scene pairs (default: %(default)s)")
    parser.add_argument("--shared-overlay", type=int, default=0,
                        help="hard negatives: pairs of different pictures with the same caption, sign or symbol "
                             "(default: %(default)s)")
    parser.add_argument("--symbols", type=Path, default=None,
                        help="folder of pictures used as the shared symbols (e.g. clip art); default: drawn signs "
                             "and captions only")
    parser.add_argument("--reshoot-pairs", type=Path, default=None,
                        help="JSON file of photo pairs showing one subject in two different photos ([{\"a\": name, "
                             "\"b\": name}]): hard negatives, one the reference, the other the query")
    parser.add_argument("--recipe", choices=("augly", "independent"), default="augly",
                        help="edit recipe of the queries: augly (the training generator) or independent (a second "
                             "generator, PIL/OpenCV only, wider ranges; evaluation only) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    # -q/--quiet is icd's own (matcher.cli.main): warnings only, no progress bar
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_make_benchmark(args: argparse.Namespace) -> int:
    """Run the builder from parsed arguments; prints the summary. Returns 0, or 2 on bad settings."""
    from matcher.benchmark.builder import BenchmarkError, build_benchmark
    from matcher.cli.common import show_progress

    t0 = time.perf_counter()
    try:
        summary = build_benchmark(
            args.photos, args.out, n_references=args.references, n_queries=args.queries,
            copy_fraction=args.copy_fraction, n_distractors=args.distractors, n_background=args.background,
            n_holistic=args.holistic, n_same_scene=args.same_scene, n_shared_overlay=args.shared_overlay,
            recipe=args.recipe, symbols=args.symbols, reshoot_pairs=args.reshoot_pairs, seed=args.seed,
            workers=args.workers,
            progress=show_progress(args),
        )
    except (BenchmarkError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    print(f"  wall time: {time.perf_counter() - t0:.1f} s")
    return 0
