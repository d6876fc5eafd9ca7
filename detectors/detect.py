"""Detected pasted pictures as boxes with scores.

``detect_regions(images, config)`` runs the detector on RGB uint8 images in batches: each image is
letterboxed (aspect kept, centred, grey 114 padding, like ultralytics) to the square input size, the network
gives (cx, cy, w, h, class scores) per anchor, boxes under ``config.conf`` are dropped, class-wise NMS at
``config.iou`` runs, the best ``config.max_boxes`` are kept and mapped back to original image px.

The detector is loaded lazily on first use and cached per (weights, device, input size). Boxes become regions
in one place, :mod:`matcher.regions.detected` (also the "yolo" region proposer). Nothing here imports ultralytics.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from matcher.config import DetectorConfig, MatcherConfig

__all__ = [
    "Detection",
    "Detector",
    "detect_regions",
    "get_detector",
    "letterbox",
]

_PAD = 114  # grey of the letterbox padding (ultralytics' value)


@dataclass(frozen=True)
class Detection:
    """One detected box. box: (x0, y0, x1, y1) float px of the original image; score in [0, 1]; cls: class id."""

    box: tuple[float, float, float, float]
    score: float
    cls: int = 0

    def int_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box rounded outwards to whole px and clipped to a width x height image (half-open)."""
        x0, y0, x1, y1 = self.box
        return (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))), min(width, int(np.ceil(x1))),
                min(height, int(np.ceil(y1))))


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """RGB uint8 (H, W, 3) -> (size, size, 3) uint8 scaled by r = size / max(H, W) and centred on grey.

    Returns (canvas, r, (pad_x, pad_y)); an original point p maps to p * r + pad."""
    import cv2

    h, w = image.shape[:2]
    r = size / max(h, w)
    nw, nh = max(1, min(size, round(w * r))), max(1, min(size, round(h * r)))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    canvas = np.full((size, size, 3), _PAD, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = small
    return canvas, r, (px, py)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"detector input must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"detector input must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    return a[:, :, :3]


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Detector:
    """A loaded detector network (state: the model, its metadata, device). Call on a list of images."""

    def __init__(self, model: Any, names: Sequence[str], imgsz: int, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.names = list(names)
        self.imgsz = int(imgsz)
        self.device = device

    @classmethod
    def load(cls, config: DetectorConfig | None = None) -> Detector:
        """Load ``config.weights`` (default: the shipped weights); raises ``DetectorWeightsError``."""
        from detectors.model import load_detector

        config = config or DetectorConfig()
        model, meta = load_detector(config.weights or None)
        return cls(model, meta.names, config.imgsz or meta.imgsz, _resolve_device(config.device))

    def __call__(self, images: Sequence[np.ndarray], config: DetectorConfig | None = None) -> list[list[Detection]]:
        """Detections of each image ((H, W[, C]) uint8), best first; see the module docstring."""
        import torch

        config = config or DetectorConfig()
        out: list[list[Detection]] = []
        bs = max(1, int(config.batch_size))
        for start in range(0, len(images), bs):
            chunk = [_as_rgb(im) for im in images[start:start + bs]]
            boxed = [letterbox(im, self.imgsz) for im in chunk]
            x = torch.from_numpy(np.stack([b[0] for b in boxed])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode():
                pred = self.model(x)
            pred = pred[0] if isinstance(pred, (tuple, list)) else pred
            pred = pred.float().cpu()
            for k, im in enumerate(chunk):
                out.append(_postprocess(pred[k], boxed[k][1], boxed[k][2], im.shape[1], im.shape[0], config))
        return out


def _postprocess(p: Any, r: float, pad: tuple[int, int], width: int, height: int,
                 config: DetectorConfig) -> list[Detection]:
    """(4 + nc, A) raw predictions of one image -> detections in original px."""
    import torch
    from torchvision.ops import batched_nms

    p = p.T  # (A, 4 + nc)
    scores, cls = p[:, 4:].max(dim=1)
    keep = scores >= config.conf
    if not bool(keep.any()) or config.max_boxes <= 0:
        return []
    p, scores, cls = p[keep], scores[keep], cls[keep]
    cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    # to original px and clipped to the image BEFORE NMS, so boxes that only differ off-image count as one
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / r).clamp(0, width)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / r).clamp(0, height)
    idx = batched_nms(boxes, scores, cls, float(config.iou))[: int(config.max_boxes)]
    boxes = boxes[idx]
    dets = []
    for b, s, c in zip(boxes.tolist(), scores[idx].tolist(), cls[idx].tolist()):
        if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
            dets.append(Detection((round(b[0], 2), round(b[1], 2), round(b[2], 2), round(b[3], 2)),
                                  round(float(s), 5), int(c)))
    return dets


_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _cached(weights: str, device: str, imgsz: int) -> Detector:
    return Detector.load(DetectorConfig(weights=weights, device=device, imgsz=imgsz))


def get_detector(config: DetectorConfig | None = None) -> Detector:
    """The detector for ``config`` (loaded once per weights/device/size and cached)."""
    config = config or DetectorConfig()
    with _LOCK:
        return _cached(config.weights, _resolve_device(config.device), config.imgsz)


def detect_regions(images: Sequence[np.ndarray] | np.ndarray, config: DetectorConfig | MatcherConfig | None = None,
                   *, detector: Detector | None = None) -> list[list[Detection]]:
    """Pasted-picture boxes of each image, best first: a list (one per image) of :class:`Detection`.

    ``images``: RGB uint8 (H, W, 3) arrays (or one such array); ``config``: a DetectorConfig, or a
    MatcherConfig whose ``.detector`` is used (default settings when None); ``detector``: an already loaded
    :class:`Detector` (else the cached one for ``config``). Raises ``DetectorWeightsError`` when the weights
    are missing or broken.
    """
    cfg = config.detector if isinstance(config, MatcherConfig) else (config or DetectorConfig())
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8 and \
            (images.ndim == 2 or images.shape[2] in (3, 4)):
        images = [images]
    images = list(images)
    if not images:
        return []
    det = detector or get_detector(cfg)
    return det(images, cfg)
