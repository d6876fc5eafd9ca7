"""Write extra distractor references from ``train`` photos, to scale a reference index (e.g. to 10,000 entries).

    python bench/make_distractors.py --photos ../shared/data/photos/train --count 8800 --out /tmp/distractors

Each photo gives up to ``ceil(count / photos)`` distinct images: the photo itself, then seeded random crops
(60-85 % of each side, a third of them mirrored), so that a 2,841-photo split can fill a 10k index. They come
from ``train`` only, never from ``bench``, so they are unrelated to a ``bench`` benchmark's queries. JPEG
quality 88, written atomically; unreadable photos are reported and skipped.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.io.atomic import atomic_write_bytes
from matcher.io.images import ImageLoadError, load_image


def variant(img: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Variant ``k`` of an RGB (H, W, 3) uint8 photo: 0 = itself, else a 60-85 % crop, mirrored one time in 3."""
    if k == 0:
        return img
    h, w = img.shape[:2]
    cw, ch = round(w * rng.uniform(0.6, 0.85)), round(h * rng.uniform(0.6, 0.85))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img[y0:y0 + ch, x0:x0 + cw]
    return np.ascontiguousarray(out[:, ::-1] if k % 3 == 0 else out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/photos/train"))
    ap.add_argument("--count", type=int, default=8800)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.photos.resolve().name == "bench":
        print("error: distractors come from the train photos, not bench", file=sys.stderr)
        return 2
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    per = math.ceil(args.count / max(1, len(photos)))
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for k in range(per):
        for i, p in enumerate(photos):
            if written >= args.count:
                break
            try:
                img = load_image(p)
            except ImageLoadError as e:
                print(f"skipped {p}: {e}", file=sys.stderr)
                continue
            rng = np.random.default_rng([args.seed, i, k])
            buf = io.BytesIO()
            Image.fromarray(variant(img, k, rng)).save(buf, "JPEG", quality=88)
            atomic_write_bytes(args.out / f"D{k}_{p.stem}.jpg", buf.getvalue())
            written += 1
    print(f"wrote {written} distractors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
