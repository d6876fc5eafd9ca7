"""Queries per second of the ``icd match`` path (``Matcher.match``) on one index, with config overrides, for A/B
runs of one setting on a quiet machine.

    python bench/match_throughput.py --queries /tmp/q300 --index /tmp/domains/home_index --set local.invert=false

Prints one JSON line: the overrides, seconds, queries/s, rows and peak RSS (GB).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.api import Matcher
from matcher.config import MatcherConfig


def overrides(items: list[str]) -> dict[str, dict]:
    """``["local.invert=false", ...]`` -> ``{"local": {"invert": False}}`` (values parsed as JSON, else str)."""
    out: dict[str, dict] = {}
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if not name or not raw:
            raise ValueError(f"--set takes SECTION.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        config = MatcherConfig.make(**overrides(args.set))
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    matcher = Matcher.from_pretrained(config)
    n = sum(1 for p in args.queries.iterdir() if p.is_file())
    t0 = time.perf_counter()
    rows = matcher.match(args.queries, index=args.index)
    seconds = time.perf_counter() - t0
    print(json.dumps({"set": args.set, "queries": n, "seconds": round(seconds, 1), "queries_per_s": round(n / seconds, 3),
                      "rows": len(rows), "skipped": len(rows.skipped),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
