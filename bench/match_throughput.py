"""Queries per second of the ``icd match`` path (``Matcher.match``) on one index, with config overrides, for A/B
runs of one setting on a quiet machine.

    echo '{"local": {"invert": false}}' > /tmp/invert_off.json
    python bench/match_throughput.py --queries /tmp/q300 --index /tmp/domains/home_index --config /tmp/invert_off.json

``--config``: a JSON file of MatcherConfig overrides, as ``icd index --config`` takes. Prints one JSON line: the
config file, seconds, queries/s, rows and peak RSS (GB).
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--config", type=Path, metavar="JSON", help="JSON file of MatcherConfig overrides")
    args = ap.parse_args(argv)
    try:
        overrides = json.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
        config = MatcherConfig.make(**overrides)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {args.config}: unusable config file ({exc})", file=sys.stderr)
        return 2
    matcher = Matcher.from_pretrained(config)
    n = sum(1 for p in args.queries.iterdir() if p.is_file())
    t0 = time.perf_counter()
    rows = matcher.match(args.queries, index=args.index)
    seconds = time.perf_counter() - t0
    print(json.dumps({"config": overrides, "queries": n, "seconds": round(seconds, 1),
                      "queries_per_s": round(n / seconds, 3), "rows": len(rows), "skipped": len(rows.skipped),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
