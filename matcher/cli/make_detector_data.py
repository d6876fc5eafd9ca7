"""``icd make-detector-data PHOTOS OUT``: a synthetic YOLO dataset of pictures pasted into photos
(:mod:`detectors.synth`)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_make_detector_data_arguments", "run_make_detector_data"]


def add_make_detector_data_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``icd make-detector-data``."""
    p.add_argument("photos", help="folder of source photos (never the benchmark's photos)")
    p.add_argument("out", help="output folder (YOLO layout, data.yaml, manifest.json)")
    p.add_argument("--train", type=int, default=1500, help="training examples (default 1500)")
    p.add_argument("--val", type=int, default=300, help="validation examples (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of source photos reserved for val")
    p.add_argument("--min-side", type=int, default=320, help="smallest longer side of an example, px")
    p.add_argument("--max-side", type=int, default=416, help="largest longer side of an example, px")
    p.add_argument("--overlay-class", action="store_true", help="label text/emoji overlays as class 1")
    p.add_argument("--workers", type=int, default=1)


def run_make_detector_data(args: argparse.Namespace) -> int:
    """Run ``icd make-detector-data``; 0 on success, 2 on bad input."""
    from detectors.synth import SynthConfig, SynthError, make_detector_data

    cfg = SynthConfig(min_side=args.min_side, max_side=args.max_side, overlay_class=args.overlay_class)
    try:
        summary = make_detector_data(args.photos, args.out, n_train=args.train, n_val=args.val, seed=args.seed,
                                     val_fraction=args.val_fraction, workers=args.workers, config=cfg,
                                     progress=True)
    except (SynthError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    return 0
