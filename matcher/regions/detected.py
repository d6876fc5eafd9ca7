"""Detected pasted pictures as regions: the one place where the detector's boxes (:mod:`detectors.detect`) become
:class:`~matcher.regions.region.Region` objects, for the pipeline's query variants and for the "yolo" proposer.

A box becomes ``Region("yolo:<i>", box, score=<confidence>)`` (best first) when its class is "picture", both its
sides are at least :data:`~matcher.regions.region.MIN_REGION_SIDE` px and it covers less than
:data:`MAX_AREA_FRACTION` of the picture (a box that is the whole picture adds nothing). When the detector weights
are missing or broken, the reason is logged once per weights file and no boxes are returned (or the 2x2 grid,
for the "yolo" proposer), so matching carries on without the detector.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from matcher.config import DetectorConfig, MatcherConfig
from matcher.regions.region import MIN_REGION_SIDE, Region, grid_regions
from matcher.resources import DETECTOR_WEIGHTS, shipped_path

__all__ = ["MAX_AREA_FRACTION", "detect_picture_regions", "detector_config", "make_detected_proposer",
           "regions_from_detections"]

_LOG = logging.getLogger(__name__)
MAX_AREA_FRACTION = 0.9  # boxes covering this share of the picture or more are not regions
_WARNED: set[str] = set()  # weights files whose failure was logged (once per process each)


def detector_config(config: MatcherConfig) -> DetectorConfig:
    """``config.detector`` with its weights resolved to a path (the shipped file when ``weights`` is empty)."""
    d = config.detector
    return d if d.weights else dataclasses.replace(d, weights=str(shipped_path(DETECTOR_WEIGHTS, config)))


def regions_from_detections(detections: Sequence[Any], width: int, height: int,
                            picture_classes: set[int] | None = None) -> list[Region]:
    """Detections (objects with ``box`` (x0, y0, x1, y1) float px, ``score``, ``cls``, ``int_box(w, h)``), best
    first -> regions "yolo:0", "yolo:1", ... of a ``width`` x ``height`` picture; see the module docstring for
    which boxes are kept. ``picture_classes``: class ids that are pictures (None = every class)."""
    out: list[Region] = []
    for d in detections:
        if picture_classes is not None and d.cls not in picture_classes:
            continue
        x0, y0, x1, y1 = d.int_box(width, height)
        w, h = x1 - x0, y1 - y0
        if min(w, h) >= MIN_REGION_SIDE and w * h < MAX_AREA_FRACTION * width * height:
            out.append(Region(f"yolo:{len(out)}", (x0, y0, x1, y1), score=d.score))
    return out


def detect_picture_regions(images: Sequence[np.ndarray], config: MatcherConfig, *,
                           fallback_grid: bool = False) -> list[list[Region]]:
    """Detected pasted pictures of each RGB uint8 (H, W, 3) image as regions (one batched detector pass). When the
    detector cannot be loaded: [] per image, or the 2x2 grid with ``fallback_grid``."""
    if not images:
        return []
    from detectors.detect import detect_regions, get_detector  # torch loads only when detection runs
    from detectors.model import DetectorWeightsError

    cfg = detector_config(config)
    try:
        detector = get_detector(cfg)
        dets = detect_regions(list(images), cfg, detector=detector)
    except DetectorWeightsError as exc:
        key = f"{cfg.weights}|{exc.problem}"
        if key not in _WARNED:
            _WARNED.add(key)
            _LOG.warning("pasted-picture detector unavailable, %s: %s",
                         "'yolo' regions fall back to the 2x2 grid" if fallback_grid else "no detected regions", exc)
        return [grid_regions(im, 2) if fallback_grid else [] for im in images]
    pictures = {i for i, n in enumerate(detector.names) if n == "picture"} or None
    return [regions_from_detections(ds, im.shape[1], im.shape[0], pictures) for im, ds in zip(images, dets)]


def make_detected_proposer(config: MatcherConfig):  # -> Proposer
    """The "yolo" proposer: ``(image) -> detected pasted pictures``, the 2x2 grid when the detector is unusable."""

    def propose(image: np.ndarray) -> list[Region]:
        return detect_picture_regions([image], config, fallback_grid=True)[0]

    return propose
