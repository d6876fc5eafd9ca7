"""The first stage of the pipeline: everything computed once about a query picture.

:func:`describe_queries` proposes each query's global variants (``config.pipeline.query_regions``: the whole
picture, grids, centre, rotations, flips, and the pasted pictures the detector finds), describes all variants of a
batch of queries in one descriptor pass, and extracts the query's local features and the grey levels the seam check
reads (:class:`QueryDescription`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from matcher.config import MatcherConfig
from matcher.local.alignment import QueryPyramid
from matcher.local.seam import to_gray
from matcher.local.verify import QueryFeatures
from matcher.regions.detected import detect_picture_regions
from matcher.regions.proposers import propose_regions
from matcher.regions.region import Region

if TYPE_CHECKING:  # pragma: no cover
    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine

__all__ = ["QueryDescription", "describe_queries"]

Timer = Callable[[str], AbstractContextManager[object]]


@dataclass
class QueryDescription:
    """Everything computed about one query image (once).

    regions: the global variants (regions[0] is the full image); descriptors: (V, D) float32 unnormalised ASL
    descriptors of those variants; local: local features (keypoints in original query px); detected: the
    detector's pasted-picture boxes (subset of ``regions``); size: (width, height) px; gray: (h, w) float32 grey
    levels for the seam check (:mod:`matcher.local.seam`), ``gray_scale`` = h / height; pyramid: the same grey
    levels and their halvings for the dense alignment check (:mod:`matcher.local.alignment`)."""

    query_id: str
    regions: list[Region]
    descriptors: np.ndarray
    local: QueryFeatures | None
    detected: list[Region]
    size: tuple[int, int]
    gray: np.ndarray | None = None
    gray_scale: float = 1.0
    pyramid: QueryPyramid | None = None


def describe_queries(items: Sequence[tuple[str, np.ndarray]], config: MatcherConfig, descriptor: GlobalDescriptor,
                     engine: LocalEngine, *, timer: Timer | None = None,
                     local: bool = True) -> list[QueryDescription]:
    """Describe (id, RGB uint8 (H, W, 3) image) queries: variants + one batched descriptor pass + local features
    (skipped when ``local`` is False)."""
    timer = timer or (lambda name: contextlib.nullcontext())
    names = [n for n in config.pipeline.query_regions if n != "yolo"]
    if "full" not in names:
        names = ["full", *names]
    images = [img for _, img in items]
    with timer("detect"):
        detected = (detect_picture_regions(images, config) if "yolo" in config.pipeline.query_regions
                    else [[] for _ in images])
    with timer("regions"):
        regions = [propose_regions(img, names, config=config) + det for img, det in zip(images, detected)]
        crops = [r.apply(img) for img, regs in zip(images, regions) for r in regs]
    with timer("describe"):
        desc = descriptor.describe(crops)
    out: list[QueryDescription] = []
    at = 0
    for (qid, img), regs, det in zip(items, regions, detected):
        d = desc[at: at + len(regs)]
        at += len(regs)
        qf, gray, gs = None, None, 1.0
        if local:
            with timer("local_features"):
                qf = engine.query_features(img)
                gray, gs = to_gray(img)
        pyramid = QueryPyramid(gray, gs) if gray is not None else None
        out.append(QueryDescription(qid, regs, d, qf, det, (img.shape[1], img.shape[0]), gray, gs, pyramid))
    return out
