"""The detector network and its pickle-free weights. For inference the network is our own plain-PyTorch YOLOv8
(:mod:`detectors.network`, the same state-dict layout and outputs as ultralytics' ``DetectionModel``), so loading
and running the detector never imports ultralytics; training (:mod:`detectors.train`) uses ultralytics.

Weights file format (never a pickle of Python objects, so it loads with ``torch.load(weights_only=True)``):

* ``<name>.pt``: ``torch.save`` of a plain ``dict[str, Tensor]`` state dict (floating tensors in fp16);
* ``<name>.json`` beside it: ``{"format": 1, "yaml": "yolov8n.yaml", "nc": 1, "names": ["picture"],
  "imgsz": 320, "sha256": <hex of the .pt file>, ...}`` (free-form extra keys: training recipe, metrics).

:func:`load_detector` rebuilds the network from the yaml and loads the state dict strictly; a missing,
corrupt or mismatched file raises :class:`DetectorWeightsError` saying how to train or where to put it.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from detectors.network import build_network
from matcher.io.atomic import atomic_write_bytes, atomic_write_text
from matcher.resources import DETECTOR_WEIGHTS, shipped_path

__all__ = [
    "DetectorMeta",
    "DetectorWeightsError",
    "build_model",
    "default_weights",
    "load_detector",
    "load_state_dict",
    "meta_path",
    "save_detector",
]

_FORMAT = 1
_HOW = ("train one with `icd make-detector-data <photos> <data>` then `icd train-detector <data> <out>` (it "
        "writes <out>/detector_yolov8n.pt and .json), or put the shipped weights/detector_yolov8n.pt and "
        "detector_yolov8n.json there; or run without the detector (query regions without 'yolo')")


class DetectorWeightsError(RuntimeError):
    """The detector weights (or their metadata) are missing, unreadable or do not fit the network."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"detector weights '{path}': {problem}. To fix: {_HOW}")
        self.path, self.problem = str(path), problem


@dataclass
class DetectorMeta:
    """Metadata stored beside the weights."""

    yaml: str = "yolov8n.yaml"  # ultralytics model yaml; the letter after "yolov8" picks the scale
    nc: int = 1
    names: list[str] = field(default_factory=lambda: ["picture"])
    imgsz: int = 320  # px, the square input size used in training
    extra: dict[str, Any] = field(default_factory=dict)  # recipe, metrics, ... (written as top-level keys)

    def to_dict(self, sha256: str) -> dict[str, Any]:
        return {**self.extra, "format": _FORMAT, "yaml": self.yaml, "nc": self.nc, "names": list(self.names),
                "imgsz": self.imgsz, "sha256": sha256}


def meta_path(weights: str | Path) -> Path:
    """The metadata JSON beside ``weights`` (same stem, ``.json``)."""
    return Path(weights).with_suffix(".json")


def default_weights() -> Path:
    """The shipped detector weights (``weights/detector_yolov8n.pt``, through :mod:`matcher.resources`)."""
    return shipped_path(DETECTOR_WEIGHTS)


def build_model(yaml: str = "yolov8n.yaml", nc: int = 1) -> torch.nn.Module:
    """A randomly initialised detection network for ``yaml`` (e.g. "yolov8n.yaml") with ``nc`` classes (CPU, eval
    mode; :func:`detectors.network.build_network`). Forward in eval mode on (B, 3, H, W) float in [0, 1] returns
    (B, 4 + nc, A): boxes (cx, cy, w, h) in input px and per-class probabilities for A anchor points."""
    return build_network(yaml, int(nc))


def _state_bytes(model: torch.nn.Module) -> bytes:
    sd = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
          for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def save_detector(model: torch.nn.Module, path: str | Path, meta: DetectorMeta) -> Path:
    """Write ``path`` (fp16 state dict) and its JSON metadata, both atomically. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _state_bytes(model)
    atomic_write_bytes(path, data)
    atomic_write_text(meta_path(path), json.dumps(meta.to_dict(hashlib.sha256(data).hexdigest()), indent=1) + "\n")
    return path


def read_meta(path: str | Path) -> DetectorMeta:
    """The :class:`DetectorMeta` of ``path``; raises :class:`DetectorWeightsError` if missing or bad."""
    mp = meta_path(path)
    if not mp.is_file():
        raise DetectorWeightsError(path, f"metadata file '{mp}' is missing")
    try:
        d = json.loads(mp.read_text(encoding="utf-8"))
        if d.get("format") != _FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {_FORMAT}")
        keys = ("yaml", "nc", "names", "imgsz")
        extra = {k: v for k, v in d.items() if k not in (*keys, "format", "sha256")}
        meta = DetectorMeta(str(d["yaml"]), int(d["nc"]), [str(n) for n in d["names"]], int(d["imgsz"]), extra)
    except (ValueError, KeyError, TypeError) as e:
        raise DetectorWeightsError(path, f"metadata file '{mp}' is not valid ({e})") from None
    if meta.nc < 1 or len(meta.names) != meta.nc:
        raise DetectorWeightsError(path, f"metadata has nc={meta.nc} but {len(meta.names)} names")
    return meta


def load_state_dict(path: str | Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``path`` checked against ``model`` and cast to its dtypes (ready for
    ``model.load_state_dict``); raises :class:`DetectorWeightsError` for a missing, corrupt or mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise DetectorWeightsError(path, "file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises Runtime/Unpickling/EOF/zipfile/... errors
        raise DetectorWeightsError(path, f"cannot be read as a weights-only state dict ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DetectorWeightsError(path, "does not hold a state dict of tensors")
    ref = model.state_dict()
    yaml, nc = f"yolov8{getattr(model, 'scale', '?')}.yaml", getattr(model, "nc", "?")
    missing, unexpected = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    if missing or unexpected:
        raise DetectorWeightsError(path, f"does not fit {yaml} with nc={nc}: {len(missing)} missing, "
                                         f"{len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:2]})")
    bad = [k for k, v in sd.items() if v.shape != ref[k].shape]
    if bad:
        raise DetectorWeightsError(path, f"tensor shapes do not fit {yaml} with nc={nc} (e.g. {bad[0]})")
    return {k: v.to(ref[k].dtype) for k, v in sd.items()}


def load_detector(path: str | Path | None = None) -> tuple[torch.nn.Module, DetectorMeta]:
    """Rebuild the network of ``path`` (default :func:`default_weights`) and load its weights (fp32, CPU,
    eval mode, conv+BN fused). Raises :class:`DetectorWeightsError` for a missing, corrupt or mismatched file."""
    path = Path(path) if path is not None else default_weights()
    if not path.is_file():
        raise DetectorWeightsError(path, "file not found")
    meta = read_meta(path)
    try:
        with torch.random.fork_rng(devices=[]):  # the random initialisation leaves the host's torch RNG alone
            model = build_model(meta.yaml, meta.nc)
    except Exception as e:  # noqa: BLE001 - any failure to build means the metadata is wrong
        raise DetectorWeightsError(path, f"cannot build network {meta.yaml!r} ({e})") from None
    model.load_state_dict(load_state_dict(path, model), strict=True)
    model.names = dict(enumerate(meta.names))
    return model.fuse().eval(), meta
