"""Training data of the descriptor: a folder of photos split into train / held-out, each turned into a cached
:class:`~matcher.training.views.ViewPool` (``<cache>/train`` and ``<cache>/holdout``).

The held-out photos are never trained on; their pool feeds the periodic evaluation (references = the
unedited photos of the first part, queries = edited views of all of them, so the rest are distractors).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from matcher.io.folders import list_images
from matcher.io.images import ImageLoadError, load_image
from matcher.training.views import ViewPool, load_view_pool, make_view_pool, save_view_pool

__all__ = ["load_photos", "prepare_cache", "split_holdout"]


def split_holdout(n: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout) of ``n`` items, ``n_holdout`` held out at random (seeded), each sorted."""
    if not 0 <= n_holdout < n:
        raise ValueError(f"cannot hold out {n_holdout} of {n} photos")
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def load_photos(paths: list[Path], max_side: int = 320) -> tuple[list[np.ndarray], list[str]]:
    """Load and shrink (longer side <= ``max_side``) photos; unreadable files are reported and skipped."""
    from matcher.io.images import resize_image

    images, ids = [], []
    for p in paths:
        try:
            im = load_image(p)
        except ImageLoadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        h, w = im.shape[:2]
        s = min(1.0, max_side / max(h, w))
        images.append(resize_image(im, max(32, round(w * s)), max(32, round(h * s))) if s < 1 else im)
        ids.append(p.stem)
    return images, ids


def prepare_cache(
    photos: str | os.PathLike[str], cache: str | os.PathLike[str], *, n_holdout: int = 200, n_edited: int = 2,
    size: int = 192, seed: int = 0, limit: int = 0, degrade: float = 0.0, rebuild: bool = False,
) -> tuple[ViewPool, ViewPool]:
    """Build (or reuse, when ``cache`` holds pools made with the same settings) the train and held-out pools;
    ``degrade``: share of edited views that also get a heavy degradation (:func:`~matcher.training.views.
    degrade_view`). A cache made with other settings is refused (ValueError naming them) unless ``rebuild``:
    rebuilding it would silently invalidate what was computed from its views (a teacher's embeddings)."""
    cache = Path(cache)
    settings = {"photos": str(Path(photos).resolve()), "n_holdout": n_holdout, "n_edited": n_edited,
                "size": size, "seed": seed, "limit": limit}
    if degrade:
        settings["degrade"] = degrade
    stamp = cache / "settings.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old == settings:
            return load_view_pool(cache / "train"), load_view_pool(cache / "holdout")
        if not rebuild:
            diff = ", ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} asked" for k in sorted(set(old) | set(settings))
                             if old.get(k) != settings.get(k))
            raise ValueError(f"{cache}: view-pool cache made with other settings ({diff}); pass the same settings, "
                             "another cache folder, or rebuild it (its teacher embeddings then no longer match)")
    paths = list_images(photos)
    if limit:
        paths = paths[:limit]
    tr, ho = split_holdout(len(paths), n_holdout, seed)
    pools = []
    for name, idx, n_ed in (("train", tr, n_edited), ("holdout", ho, 1)):
        images, ids = load_photos([paths[i] for i in idx])
        pool = make_view_pool(images, ids, n_edited=n_ed, size=size, seed=seed + (0 if name == "train" else 1),
                              degrade=degrade)
        save_view_pool(pool, cache / name)
        pools.append(pool)
        print(f"{name}: {len(ids)} photos x {pool.views.shape[1]} views", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))
    return pools[0], pools[1]
