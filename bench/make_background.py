"""Describe a background set of ``train`` photos for score normalisation and ship it in ``weights/``.

    python bench/make_background.py --photos ../shared/data/photos/train --exclude /tmp/train_bench/manifest.json \
        --count 512 --seed 0

Photos named anywhere in the ``--exclude`` manifests (a benchmark used to fit the fusion model) are left out, so
a query's own source never sits in the background set. Output: ``weights/background_<model>.npz`` with
``descriptors`` (B, D) float16, ``model_hash`` and ``photos`` (the file names used).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.config import MatcherConfig
from matcher.descriptors.extractor import GlobalDescriptor
from matcher.io.atomic import atomic_write
from matcher.io.images import ImageLoadError, load_image
from matcher.retrieval.normalise import background_path


def _names(obj: object, out: set[str]) -> None:
    if isinstance(obj, str):
        out.add(Path(obj).name)
    elif isinstance(obj, dict):
        for v in obj.values():
            _names(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _names(v, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--exclude", nargs="*", default=[], help="benchmark manifests whose photos are left out")
    ap.add_argument("--count", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    used: set[str] = set()
    for m in args.exclude:
        _names(json.loads(Path(m).read_text()), used)
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                    and p.name not in used)
    rng = np.random.default_rng(args.seed)
    pick = [photos[i] for i in sorted(rng.choice(len(photos), size=min(args.count, len(photos)), replace=False))]
    desc = GlobalDescriptor(MatcherConfig())
    images, names = [], []
    for p in pick:
        try:
            images.append(load_image(p))
            names.append(p.name)
        except ImageLoadError as exc:
            print(f"skipped {exc}", file=sys.stderr)
    d = desc.describe(images)
    out = background_path(desc.name)
    with atomic_write(out, "wb") as fh:
        np.savez(fh, descriptors=d.astype(np.float16), model_hash=np.array(desc.sha256), photos=np.array(names))
    print(f"{len(names)} of {len(photos)} unused photos -> {out} ({out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
