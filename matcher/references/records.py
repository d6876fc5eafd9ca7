"""What the engine keeps about one reference picture, and the one function that computes it.

:func:`describe_references` is shared by the on-disk index (``icd index``) and one-shot matching: one batched
global-descriptor pass over the whole pictures and their reference crops (``config.pipeline.reference_regions``),
plus full-picture local features when a :class:`~matcher.local.engine.LocalEngine` is given.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from matcher.config import MatcherConfig
from matcher.local.alignment import reference_thumbnail
from matcher.local.types import LocalFeatures
from matcher.regions.proposers import propose_regions
from matcher.regions.region import Region

if TYPE_CHECKING:  # heavy imports (torch) only where the objects are made
    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine

__all__ = ["DescribedReference", "ReferenceRecord", "describe_references", "reference_regions"]


@dataclass
class ReferenceRecord:
    """One indexed reference.

    id:                 reference id (the file stem)
    path:               file it was read from
    width, height:      picture size, px (after EXIF orientation)
    sha256:             hex sha256 of the file bytes
    nbytes:             file size, bytes
    descriptor:         (D,) float32 unnormalised global descriptor of the whole picture
    region_tags:        n region tags ("grid2:r0c1", "center", ...), "full" excluded
    region_boxes:       (n, 4) int32 (x0, y0, x1, y1) half-open boxes in original px
    region_descriptors: (n, D) float32 unnormalised global descriptors of the crops
    local:              full-picture local features, or None when not computed
    thumbnail:          grey uint8 (h, w) thumbnail for the dense alignment check (matcher.local.alignment)
    """

    id: str
    path: str
    width: int
    height: int
    sha256: str
    nbytes: int
    descriptor: np.ndarray
    region_tags: list[str]
    region_boxes: np.ndarray
    region_descriptors: np.ndarray
    local: LocalFeatures | None = None
    thumbnail: np.ndarray | None = None


class DescribedReference(NamedTuple):
    """What :func:`describe_references` gives per picture.

    descriptor:         (D,) float32 unnormalised
    regions:            the n crop regions described (see :func:`reference_regions`)
    region_descriptors: (n, D) float32 unnormalised, in the order of ``regions``
    local:              full-picture local features, or None
    thumbnail:          grey uint8 (h, w), longer side THUMB_SIDE px (matcher.local.alignment)
    """

    descriptor: np.ndarray
    regions: list[Region]
    region_descriptors: np.ndarray
    local: LocalFeatures | None
    thumbnail: np.ndarray


def reference_regions(image: np.ndarray, config: MatcherConfig) -> list[Region]:
    """Crop regions of a reference picture RGB uint8 (H, W, 3) from ``config.pipeline.reference_regions``.

    The whole picture ("full") and rotated/flipped regions are left out (their boxes cannot say what was done);
    ``"yolo"`` runs the detector with ``config.detector``.
    """
    names = tuple(config.pipeline.reference_regions)
    return [r for r in propose_regions(image, names, config=config) if r.tag != "full" and not (r.rotation or r.flip)]


def describe_references(
    images: Sequence[np.ndarray],
    descriptor: GlobalDescriptor,
    engine: LocalEngine | None,
    config: MatcherConfig,
    *,
    local_mask: Sequence[bool] | None = None,
    seconds: dict[str, float] | None = None,
) -> list[DescribedReference]:
    """Global descriptors of each RGB uint8 (H, W, 3) picture and of its reference crops, in ONE batched
    ``descriptor.describe`` call over the whole batch, plus full-picture local features from ``engine``.

    ``local_mask[i]`` False skips the local features of picture i (already stored); ``seconds`` (if given)
    accumulates "describe" and "local" wall times, s (the thumbnail counts as local). Returns one
    :class:`DescribedReference` per picture.
    """
    t0 = time.perf_counter()
    regions = [reference_regions(im, config) for im in images]
    views: list[np.ndarray] = list(images)
    for im, regs in zip(images, regions, strict=True):
        views.extend(r.apply(im) for r in regs)
    desc = descriptor.describe(views) if views else np.zeros((0, descriptor.dim), np.float32)
    desc = np.asarray(desc, np.float32)
    t1 = time.perf_counter()
    out: list[DescribedReference] = []
    pos = len(images)
    for i, (im, regs) in enumerate(zip(images, regions, strict=True)):
        rdesc = desc[pos:pos + len(regs)]
        pos += len(regs)
        local = None
        if engine is not None and (local_mask is None or local_mask[i]):
            local = engine.reference_features(im)
        out.append(DescribedReference(desc[i].copy(), regs, rdesc.copy(), local, reference_thumbnail(im)))
    if seconds is not None:
        seconds["describe"] = seconds.get("describe", 0.0) + (t1 - t0)
        seconds["local"] = seconds.get("local", 0.0) + (time.perf_counter() - t1)
    return out
