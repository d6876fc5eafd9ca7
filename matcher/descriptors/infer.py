"""Batched descriptor inference: pictures -> unnormalised descriptors (N, D) float32.

``torch.inference_mode``; channels-last; bf16 autocast on CUDA. Optional multi-scale: descriptors at several
square input sizes are averaged (directions and norms both come from the mean).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from matcher.descriptors.preprocess import normalise_batch, to_batch, uint8_to_float

__all__ = ["describe_images", "describe_tensor", "describe_uint8_squares"]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def describe_tensor(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) normalised float -> (B, D) float32 on CPU, without gradients."""
    device = next(model.parameters()).device
    with torch.inference_mode(), _autocast(device):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return model(x).float().cpu()


def describe_images(
    model: nn.Module, images: Iterable[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float],
    batch_size: int = 32, scales: Sequence[int] = (),
) -> np.ndarray:
    """RGB uint8 (H, W, 3) pictures -> float32 (N, D) unnormalised descriptors; ``scales``: extra input sizes
    (px) whose descriptors are averaged with the one at ``size``."""
    sizes = [size, *[s for s in scales if s != size]]
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        acc = None
        for s in sizes:
            f = describe_tensor(model, to_batch(batch, s, mean, std))
            acc = f if acc is None else acc + f
        out.append((acc / len(sizes)).numpy())
        batch.clear()

    for im in images:
        batch.append(im)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    dim = int(getattr(model, "dim", 0))
    return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, dim), np.float32)


def describe_uint8_squares(
    model: nn.Module, squares: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
    batch_size: int = 64,
) -> np.ndarray:
    """uint8 (N, S, S, 3) square views -> float32 (N, D), resized to ``size`` on the fly (training eval)."""
    out = []
    for s in range(0, squares.shape[0], batch_size):
        x = uint8_to_float(torch.from_numpy(np.ascontiguousarray(squares[s:s + batch_size])))
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(describe_tensor(model, normalise_batch(x, mean, std)).numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, int(getattr(model, "dim", 0))), np.float32)
