#!/usr/bin/env python
"""Build a DISC-like copy-detection benchmark from a folder of photos (same as ``icd make-benchmark``).

Example: ``python bench/make_dataset.py /path/to/photos /tmp/bench --seed 0 --workers 2``
"""
from __future__ import annotations

import argparse
import sys

from matcher.benchmark.builder import add_make_benchmark_arguments, run_make_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_make_benchmark_arguments(parser)
    return run_make_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
