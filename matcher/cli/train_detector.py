"""``icd train-detector DATA_YAML OUT``: train the YOLO region detector offline (:mod:`detectors.train`)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_train_detector_arguments", "run_train_detector"]


def add_train_detector_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``icd train-detector``."""
    p.add_argument("data", help="data.yaml written by `icd make-detector-data` (ignored with --resume)")
    p.add_argument("out", help="output folder (runs, checkpoints, final detector_yolov8n.pt/.json)")
    p.add_argument("--yaml", default="yolov8n.yaml", help="ultralytics model yaml (yolov8n or smaller)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help='"cpu" or a CUDA index such as "0"')
    p.add_argument("--workers", type=int, default=0, help="dataloader workers (ultralytics uses 0 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fraction", type=float, default=1.0, help="share of training images to use")
    p.add_argument("--hours", type=float, default=0.0,
                   help="wall-time budget; > 0 re-fits the number of epochs to it after each epoch")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--init", default="", help="start from these detector weights (.pt with .json beside it)")


def run_train_detector(args: argparse.Namespace) -> int:
    """Run ``icd train-detector``; 0 on success, 2 on bad input."""
    from detectors.train import TrainConfig, train_detector

    cfg = TrainConfig(data=args.data, yaml=args.yaml, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                      device=str(args.device), workers=args.workers, seed=args.seed, fraction=args.fraction,
                      hours=args.hours, init=args.init)
    try:
        res = train_detector(cfg, args.out, resume=args.resume)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"trained {res.epochs_done} epochs in {res.wall_seconds / 60:.1f} min: val mAP50 {res.map50:.4f}, "
          f"mAP50-95 {res.map50_95:.4f}; weights {res.weights}")
    return 0
