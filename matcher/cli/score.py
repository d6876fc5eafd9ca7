"""``icd score QUERY REFERENCE [--json] [--show OUT.png] [--local-only]``.

Default: the full pipeline (global descriptors of the query's regions and the reference's crops, local
verification, detector agreement, ASL norm ratio, fused calibrated score with its per-feature contributions).
``--local-only``: the local-verification engine alone (no descriptor model).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys

from matcher.cli.common import add_model_arguments

__all__ = ["add_score_arguments", "run_score"]

_LOG = logging.getLogger(__name__)


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="query image file")
    p.add_argument("reference", help="reference image file")
    p.add_argument("--json", action="store_true", help="print the result and evidence as JSON")
    p.add_argument("--show", metavar="OUT.png", help="draw both images with inlier lines and matched quads")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: the fusion model's documented 0.5)")
    p.add_argument("--local-only", action="store_true", help="local verification only (no fusion, no descriptors)")
    add_model_arguments(p)


def _print_local(ev) -> None:
    if ev.reason:
        print(f"local: {ev.reason}")
        return
    print(f"local: matches {ev.n_matches}, inliers {ev.n_inliers} (ratio {ev.inlier_ratio:.2f}), "
          f"mirrored {ev.mirrored}, inverted {ev.inverted}, containment {ev.containment}, coverage query {ev.query_coverage:.2f} / "
          f"reference {ev.reference_coverage:.2f}"
          + ("" if ev.detector_iou is None else f", detector IoU {ev.detector_iou:.2f}")
          + ("" if ev.frame_seam is None else ", no reference border inside the query" if math.isnan(ev.frame_seam)
             else f", seam along the reference border {ev.frame_seam:.1f} (~1 = content runs on, >3 = pasted)"))
    d = ev.dense
    if d is not None:
        print("dense alignment: " + (f"{d.agree:.0%} of the overlap agrees"
                                     + ("" if math.isnan(d.agree_outside) else
                                        f" ({d.agree_outside:.0%} outside the inliers)")
                                     + f", largest disagreeing area {d.disagree_blob:.0%} of {d.cells} cells"
                                     if d.measured else f"not measured ({d.cells} textured overlap cells)"))


def run_score(args: argparse.Namespace) -> int:
    from matcher.cli.common import ConfigError, config_from_args, print_json
    from matcher.io.images import ImageLoadError, load_image
    from matcher.local.evidence import PairEvidence

    try:
        config = config_from_args(args, overrides=None if args.threshold is None else {"threshold": args.threshold})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        q_img, r_img = load_image(args.query, config=config.load), load_image(args.reference, config=config.load)
    except ImageLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.local_only:
        from matcher.local.engine import LocalEngine

        result = LocalEngine(config).score_pair(q_img, r_img)
        ev, score, is_copy, thr = result.evidence, result.score, result.is_copy, result.threshold
        payload = result.to_dict()
        extra = ""
    else:
        from matcher.api import Matcher

        try:
            m = Matcher.from_pretrained(config).score(q_img, r_img)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        thr = args.threshold if args.threshold is not None else m.threshold
        score, is_copy = m.score, m.score >= thr
        ev = m.evidence or PairEvidence(reason="no local evidence (no keypoints or too few matches)")
        payload = m.to_dict()
        payload.update(threshold=thr, is_copy=is_copy)
        g = m.global_evidence
        extra = (f"global: full {g.full:.3f}, best query region {g.region} {g.regions:.3f}, best reference crop "
                 f"{g.reference_crop or '-'} {g.to_local:.3f}, ASL log norm ratio {g.log_norm_ratio:+.3f}\n"
                 "decided by: " + ", ".join(f"{k} {v:+.2f}" for k, v in list(m.contributions.items())[:5]))
    if args.json:
        print_json({"query": args.query, "reference": args.reference, **payload})
    else:
        print(f"score {score:.4f} (threshold {thr}): {'COPY' if is_copy else 'not a copy'}")
        _print_local(ev)
        if extra:
            print(extra)
    if args.show:
        from matcher.report.draw import draw_pair, save_png

        caption = (f"score {score:.3f}  inliers {ev.n_inliers}  {ev.containment}"
                   + ("  mirrored" if ev.mirrored else "") + ("  inverted" if ev.inverted else ""))
        save_png(draw_pair(q_img, r_img, ev, caption=caption), args.show)
        _LOG.info("wrote %s", args.show)
    return 0
