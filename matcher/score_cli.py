"""``icd score QUERY REFERENCE [--json] [--show OUT.png]``."""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_score_arguments", "run_score"]


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="query image file")
    p.add_argument("reference", help="reference image file")
    p.add_argument("--json", action="store_true", help="print the result and evidence as JSON")
    p.add_argument("--show", metavar="OUT.png", help="draw both images with inlier lines and matched quads")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: config's 0.5)")


def run_score(args: argparse.Namespace) -> int:
    from matcher.config import MatcherConfig
    from matcher.io import ImageLoadError
    from matcher.local.engine import LocalEngine

    config = MatcherConfig() if args.threshold is None else MatcherConfig.make(threshold=args.threshold)
    engine = LocalEngine(config)
    try:
        q_img, r_img = engine.load(args.query), engine.load(args.reference)
    except ImageLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = engine.score_pair(q_img, r_img)
    ev = result.evidence
    if args.json:
        print(json.dumps({"query": args.query, "reference": args.reference, **result.to_dict()}, indent=2))
    else:
        verdict = "COPY" if result.is_copy else "not a copy"
        print(f"score {result.score:.4f} (threshold {result.threshold}): {verdict}")
        if ev.reason:
            print(f"reason: {ev.reason}")
        print(f"matches {ev.n_matches}, inliers {ev.n_inliers} (ratio {ev.inlier_ratio:.2f}), "
              f"mirrored {ev.mirrored}, containment {ev.containment}")
        print(f"coverage: query {ev.query_coverage:.2f}, reference {ev.reference_coverage:.2f}; "
              f"query region {ev.query_region}")
    if args.show:
        from matcher.draw import draw_pair, save_png

        caption = f"score {result.score:.3f}  inliers {ev.n_inliers}  {ev.containment}" + (
            "  mirrored" if ev.mirrored else "")
        save_png(draw_pair(q_img, r_img, ev, caption=caption), args.show)
        if not args.json:
            print(f"wrote {args.show}")
    return 0
