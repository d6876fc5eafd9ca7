"""Descriptor input preprocessing: RGB uint8 pictures -> a float batch the network takes.

Every picture is squashed (aspect not kept) to a square of ``size`` px with antialiased resampling, scaled to
[0, 1] and normalised with the model's mean/std. Squashing keeps the whole picture (no centre crop loses the
edges a copy may share) and batches pictures of any shape.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from matcher.io.images import resize_image

__all__ = ["normalise_batch", "to_batch", "uint8_to_float"]


def uint8_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalise_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> normalised with per-channel ``mean``/``std``."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def to_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) pictures -> float32 (B, 3, size, size), squashed and normalised."""
    if len(images) == 0:
        return torch.zeros((0, 3, size, size))
    arr = np.stack([im if im.shape[:2] == (size, size) else resize_image(im, size, size) for im in images])
    return normalise_batch(uint8_to_float(torch.from_numpy(arr)), mean, std)
