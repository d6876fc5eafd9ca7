"""The ASL global descriptor network: a timm backbone, GeM pooling and a linear projection.

The output f (B, D) float32 is *not* normalised: its direction (f / ||f||) is used for similarity and its
norm ||f|| stands for the "amount of content" of the picture (ASL, field guide section 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AslDescriptor", "GeM", "Whitening", "gem"]


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of feature maps (B, C, H, W) -> (B, C): (mean x^p)^(1/p), x clamped >= eps."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (initial 3, as in D2LV/SSCD)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x.float(), self.p.clamp(min=1.0), self.eps)


class Whitening(nn.Module):
    """Fixed post-hoc PCA whitening of the descriptor *direction* that keeps its *norm*:
    g = P (f - mean), output g / ||g|| * ||f||. Learned after training (:func:`fit_whitening`); off (identity)
    until ``enabled`` is set, so the ASL norm is unchanged either way."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("proj", torch.eye(dim))
        self.register_buffer("enabled", torch.zeros(()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if float(self.enabled) == 0.0:
            return f
        g = (f - self.mean.to(f.dtype)) @ self.proj.to(f.dtype).T
        return g / g.norm(dim=1, keepdim=True).clamp(min=1e-12) * f.norm(dim=1, keepdim=True)


def fit_whitening(f: torch.Tensor, shrink: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA whitening of descriptors f (N, D): (mean (D,), P (D, D)) with P = diag((l + shrink * mean(l))^-1/2) U^T
    for the eigen-decomposition U diag(l) U^T of the covariance; ``shrink`` = inf gives centring only."""
    f = f.double()
    mean = f.mean(0)
    if shrink == float("inf"):
        return mean.float(), torch.eye(f.shape[1])
    cov = (f - mean).T @ (f - mean) / max(1, f.shape[0] - 1)
    lam, u = torch.linalg.eigh(cov)
    lam = lam.clamp(min=0)
    p = torch.diag((lam + shrink * lam.mean() + 1e-12).rsqrt()) @ u.T
    return mean.float(), p.float()


class AslDescriptor(nn.Module):
    """``backbone`` (a timm model built with ``num_classes=0, global_pool=''``) -> GeM -> Linear(C, dim)
    -> optional direction whitening (:class:`Whitening`, norm kept).

    ``forward(x)``: x (B, 3, H, W) float, ImageNet-normalised -> f (B, dim) float32, unnormalised.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 256) -> None:
        super().__init__()
        if not 8 <= dim <= 2048:
            raise ValueError(f"descriptor dim must be in [8, 2048], got {dim}")
        self.backbone = backbone
        self.pool = GeM()
        self.proj = nn.Linear(feature_dim, dim)
        self.whiten = Whitening(dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(x)
        return self.whiten(self.proj(self.pool(feats)).float())


def normalise(f: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """L2-normalise rows of (B, D)."""
    return F.normalize(f, dim=-1, eps=eps)
