"""Keypoint starvation on low-contrast and flat pictures, and what the fallback detection buys (issue 14).

    python bench/keypoint_starvation.py --photos ../shared/data/photos/bench --graphics ../shared/data/graphics/bench \
        --n 120 --out bench/results_starvation.json

For a seeded sample of photos and of graphics (clip art, wallpapers), every picture is edited in fixed ways that
starve SIFT (dark, low contrast, desaturated and dark, pixelised, blurred, heavily downscaled, low JPEG quality;
for graphics also a crop and a rotation with a coloured fill). Each local-feature setting then gives:

- the share of pictures (originals, edited copies) with fewer than 50 keypoints;
- per edit, the share of (edited copy, its original) pairs the local engine verifies (calibrated score >= 0.5) and
  their median inliers; and the share of mismatched pairs (a copy against another picture's original) it
  verifies, which must stay near 0;
- the extraction time per picture (process CPU time, one core).

Settings: today's default (contrastThreshold 0.04, edgeThreshold 10) and the fallback detection (a picture with
fewer than T keypoints is detected again at contrastThreshold 0.005, edgeThreshold 40) for T in ``--fallback``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.config import MatcherConfig
from matcher.io.folders import list_images
from matcher.io.images import load_image
from matcher.local.engine import LocalEngine
from matcher.local.verify import QueryFeatures

_GREY = np.array([0.299, 0.587, 0.114], np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _jpeg(im: np.ndarray, q: int) -> np.ndarray:
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _rotate(im: np.ndarray, deg: float, fill: tuple[int, int, int]) -> np.ndarray:
    h, w = im.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(im, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


EDITS = {
    "dark": lambda im: _u8(im.astype(np.float32) * 0.25),
    "low_contrast": lambda im: _u8(im.mean() + (im.astype(np.float32) - im.mean()) * 0.3),
    "grey_dark": lambda im: _u8(np.repeat((im.astype(np.float32) @ _GREY)[..., None], 3, 2) * 0.4),
    "pixelised": lambda im: cv2.resize(cv2.resize(im, (max(1, im.shape[1] // 10), max(1, im.shape[0] // 10)),
                                                  interpolation=cv2.INTER_AREA), (im.shape[1], im.shape[0]),
                                       interpolation=cv2.INTER_NEAREST),
    "blurred": lambda im: cv2.GaussianBlur(im, (0, 0), 3.5),
    "downscaled": lambda im: cv2.resize(im, (max(32, int(im.shape[1] * 0.18)), max(32, int(im.shape[0] * 0.18))),
                                        interpolation=cv2.INTER_AREA),
    "jpeg_q8": lambda im: _jpeg(im, 8),
}
GRAPHICS_EXTRA = {
    "crop": lambda im: im[im.shape[0] // 5: im.shape[0] * 4 // 5, im.shape[1] // 5: im.shape[1] * 4 // 5].copy(),
    "rotated": lambda im: _rotate(im, 12.0, (40, 160, 90)),
}


def measure(images: list[np.ndarray], edits: dict, config: MatcherConfig, rng: np.random.Generator) -> dict:
    engine = LocalEngine(config)
    t = time.process_time()
    refs = [engine.reference_features(im) for im in images]
    copies = {e: [engine.query_features(fn(im)) for im in images] for e, fn in edits.items()}
    n_extracted = len(images) * (1 + len(edits))
    ms = 1000 * (time.process_time() - t) / n_extracted
    out: dict = {"ms_per_picture": round(ms, 1),
                 "originals_under_50": round(float(np.mean([f.n < 50 for f in refs])), 3)}
    all_q: list[QueryFeatures] = [q for qs in copies.values() for q in qs]
    out["copies_under_50"] = round(float(np.mean([q.features[0].n < 50 for q in all_q])), 3)
    per_edit = {}
    for e, qs in copies.items():
        scores, inl = [], []
        for q, r in zip(qs, refs):
            s, ev = engine.verify_features(q, r)
            scores.append(s)
            inl.append(ev.n_inliers if ev.verified else 0)
        others = rng.permutation(len(refs))
        wrong = [engine.verify_features(q, refs[j])[0] for i, (q, j) in enumerate(zip(qs, others)) if j != i]
        per_edit[e] = {"under_50": round(float(np.mean([q.features[0].n < 50 for q in qs])), 3),
                       "verified": round(float(np.mean(np.array(scores) >= 0.5)), 3),
                       "median_inliers": float(np.median(inl)),
                       "mismatched_verified": round(float(np.mean(np.array(wrong) >= 0.5)), 3)}
    out["per_edit"] = per_edit
    out["verified_all"] = round(float(np.mean([v["verified"] for v in per_edit.values()])), 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--graphics", type=Path, required=True)
    ap.add_argument("--n", type=int, default=120, help="pictures sampled from each folder (seeded)")
    ap.add_argument("--fallback", type=int, nargs="*", default=[100, 200], help="fallback thresholds T")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    results: dict = {"n": args.n, "seed": args.seed, "domains": {}}
    settings = {"default (0.04 / edge 10)": MatcherConfig()}
    for t in args.fallback:
        settings[f"fallback below {t} (0.005 / edge 40)"] = MatcherConfig.make(local={"sift_fallback_below": t})
    for domain, folder, edits in (("photos", args.photos, EDITS), ("graphics", args.graphics,
                                                                   {**EDITS, **GRAPHICS_EXTRA})):
        paths = list_images(folder)
        pick = np.random.default_rng(args.seed).choice(len(paths), size=min(args.n, len(paths)), replace=False)
        images = [load_image(paths[i]) for i in sorted(pick)]
        results["domains"][domain] = {}
        for name, cfg in settings.items():
            r = measure(images, edits, cfg, np.random.default_rng(args.seed))
            results["domains"][domain][name] = r
            print(f"{domain:8s} {name:36s} copies<50 {r['copies_under_50']:.3f} originals<50 "
                  f"{r['originals_under_50']:.3f} verified {r['verified_all']:.3f} {r['ms_per_picture']:.1f} ms",
                  flush=True)
            for e, v in r["per_edit"].items():
                print(f"    {e:14s} <50 {v['under_50']:.3f} verified {v['verified']:.3f} inliers "
                      f"{v['median_inliers']:5.0f} mismatched {v['mismatched_verified']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
