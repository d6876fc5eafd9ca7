"""Training views for the descriptor: copy-style edited views of each photo (the benchmark builder's edit
chains, :func:`matcher.benchmark.chain.apply_chain`), squashed to a square, plus sub-crops with a known area
that hold *less* of the picture than the view they are cut from (the ASL "more"/"less" pairs).

A :class:`ViewPool` is precomputed once (edit chains run on CPU with PIL/AugLy) and cached as ``.npy`` files,
so a teacher (SSCD) can label exactly the same views offline. With ``degrade`` > 0, that share of the edited views
also gets one heavy degradation (:func:`degrade_view`: strong blur, coarse pixelisation, heavy downscaling, low
contrast, darkening, very low JPEG quality), the conditions under which local features starve and the global
descriptor has to carry the match.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from matcher.benchmark.chain import apply_chain
from matcher.benchmark.edits import COMPOSITE_FAMILIES, default_context
from matcher.io.atomic import atomic_write, atomic_write_text
from matcher.io.images import resize_image

__all__ = [
    "DEGRADATIONS",
    "ViewPool",
    "crop_resize",
    "degrade_view",
    "load_view_pool",
    "make_view_pool",
    "sample_sub_boxes",
    "save_view_pool",
    "squash",
]


@dataclass(frozen=True)
class ViewPool:
    """``views``: uint8 (N, V, S, S, 3), view 0 = the unedited photo, views 1.. = edit chains;
    ``visible``: float32 (N, V), fraction of the photo still visible in each view (1 for view 0);
    ``composite``: bool (N, V), the chain pasted the photo into or with other content; ``ids``: N photo ids."""

    views: np.ndarray
    visible: np.ndarray
    composite: np.ndarray
    ids: list[str]

    @property
    def size(self) -> int:
        return int(self.views.shape[2])


def squash(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (size, size, 3), aspect not kept (the descriptor's input geometry)."""
    return resize_image(image, size, size)


DEGRADATIONS = ("blur", "pixelise", "downscale", "low_contrast", "dark", "jpeg")


def degrade_view(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One heavy degradation of RGB uint8 ``image`` drawn from :data:`DEGRADATIONS`: blur sigma 1.5-4 px,
    pixelisation by 3-8, downscaling to 15-35 % (back to size with bilinear), contrast x0.3-0.6, values x0.25-0.5,
    JPEG quality 5-15. Returns (image, name)."""
    import cv2

    name = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    if name == "blur":
        out = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(1.5, 4.0)))
    elif name == "pixelise":
        f = int(rng.integers(3, 9))
        small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    elif name == "downscale":
        s = float(rng.uniform(0.15, 0.35))
        small = cv2.resize(image, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif name == "low_contrast":
        out = np.clip(x.mean() + (x - x.mean()) * rng.uniform(0.3, 0.6), 0, 255).astype(np.uint8)
    elif name == "dark":
        out = np.clip(x * rng.uniform(0.25, 0.5), 0, 255).astype(np.uint8)
    else:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(5, 16))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] if ok else image
    return np.ascontiguousarray(out), name


def make_view_pool(
    images: Sequence[np.ndarray], ids: Sequence[str], n_edited: int = 2, size: int = 192, seed: int = 0,
    max_side: int = 320, degrade: float = 0.0,
) -> ViewPool:
    """Build ``n_edited`` edit-chain views per image (other photos of ``images`` feed composites); images are
    first shrunk to ``max_side`` px to keep the edits cheap; a ``degrade`` share of the edited views also gets a
    heavy degradation (:func:`degrade_view`). Seeded: the same inputs give the same pool."""
    small = []
    for im in images:
        h, w = im.shape[:2]
        s = min(1.0, max_side / max(h, w))
        small.append(resize_image(im, max(32, round(w * s)), max(32, round(h * s))) if s < 1 else im)
    ctx = default_context(small)
    n, v = len(small), n_edited + 1
    views = np.zeros((n, v, size, size, 3), np.uint8)
    visible = np.ones((n, v), np.float32)
    composite = np.zeros((n, v), bool)
    for i, im in enumerate(small):
        rng = np.random.default_rng([seed, i])
        views[i, 0] = squash(im, size)
        for j in range(1, v):
            res = apply_chain(im, rng, ctx, max_side=max_side, min_side=64)
            edited = res.image
            if degrade > 0 and rng.random() < degrade:
                edited = degrade_view(edited, rng)[0]
            views[i, j] = squash(edited, size)
            visible[i, j] = 0.0 if res.visible_fraction is None else float(res.visible_fraction)
            composite[i, j] = any(f in COMPOSITE_FAMILIES for f in res.families)
    return ViewPool(views, visible, composite, list(ids))


def save_view_pool(pool: ViewPool, folder: str | os.PathLike[str]) -> None:
    """Write views.npy, visible.npy, composite.npy and ids.json into ``folder`` (atomically, file by file)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("views", pool.views), ("visible", pool.visible), ("composite", pool.composite)):
        with atomic_write(out / f"{name}.npy", "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
    atomic_write_text(out / "ids.json", json.dumps(pool.ids))


def load_view_pool(folder: str | os.PathLike[str], mmap: bool = True) -> ViewPool:
    """Read a pool written by :func:`save_view_pool` (views memory-mapped when ``mmap``)."""
    d = Path(folder)
    views = np.load(d / "views.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    visible = np.load(d / "visible.npy", allow_pickle=False)
    composite = np.load(d / "composite.npy", allow_pickle=False)
    ids = json.loads((d / "ids.json").read_text())
    if views.ndim != 5 or views.shape[:2] != visible.shape or len(ids) != views.shape[0]:
        raise ValueError(f"{d}: inconsistent view pool (views {views.shape}, visible {visible.shape}, {len(ids)} ids)")
    return ViewPool(views, visible, composite, ids)


def sample_sub_boxes(rng: np.random.Generator, n: int, area: tuple[float, float] = (0.2, 0.6)) -> np.ndarray:
    """``n`` random boxes (n, 4) float [x0, y0, x1, y1] in [0, 1] fractions, area uniform in ``area`` and aspect
    (relative to the view) in 1/1.5..1.5: sub-crops holding a known, smaller part of a view."""
    a = rng.uniform(area[0], area[1], n)
    r = np.exp(rng.uniform(-np.log(1.5), np.log(1.5), n))
    w = np.clip(np.sqrt(a * r), 0.05, 1.0)
    h = np.clip(a / w, 0.05, 1.0)
    x0 = rng.uniform(0, 1, n) * (1 - w)
    y0 = rng.uniform(0, 1, n) * (1 - h)
    return np.stack([x0, y0, x0 + w, y0 + h], 1)


def crop_resize(x: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Cut ``boxes`` (B, 4) fractions out of ``x`` (B, C, H, W) and resize each to (size, size) (bilinear,
    antialiased) -> (B, C, size, size)."""
    _, _, h, w = x.shape
    out = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        c0, r0 = round(x0 * w), round(y0 * h)
        c1, r1 = max(c0 + 2, round(x1 * w)), max(r0 + 2, round(y1 * h))
        patch = x[i:i + 1, :, r0:r1, c0:c1]
        out.append(F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out, 0)
