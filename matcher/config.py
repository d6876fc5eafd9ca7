"""The one configuration object of the engine. Pass it down; do not thread flags through calls."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadConfig", "LocalConfig", "MatcherConfig"]


@dataclass(frozen=True)
class LoadConfig:
    """Image loading limits."""

    max_pixels: int = 64_000_000  # width*height above this is refused (decompression bomb)
    min_side: int = 32  # images whose shorter side is below this (px) are refused


@dataclass(frozen=True)
class LocalConfig:
    """Local-feature extraction, matching and geometric verification."""

    extractor: str = "sift"  # name in matcher.local.features.EXTRACTORS
    working_size: int = 512  # longer side (px) the image is resized to before extraction
    max_keypoints: int = 1024  # keypoint budget per image (strongest responses kept)
    max_upscale: float = 2.0  # small images are enlarged towards working_size by at most this factor
    sift_contrast_threshold: float = 0.04  # OpenCV SIFT contrastThreshold (kornia: min |DoG| = this / layers)
    sift_edge_threshold: float = 10.0  # OpenCV SIFT edgeThreshold (larger keeps more edge-like keypoints)
    sift_octave_layers: int = 3  # DoG layers per octave (OpenCV nOctaveLayers)
    sift_sigma: float = 1.6  # Gaussian sigma of octave 0 (OpenCV sigma)
    ratio: float = 0.85  # Lowe ratio test on L2 distances (best / second best)
    mutual: bool = True  # keep only mutual nearest neighbours
    mirror: bool = True  # also match mirrored descriptors (flip invariance)
    model: str = "homography"  # geometric model: similarity | affine | homography
    ransac_threshold: float = 0.02  # inlier threshold as a fraction of the reference's longer side
    ransac_iters: int = 2000
    min_inliers: int = 6  # below this a fit is not accepted
    max_scale_ratio: float = 12.0  # fits that scale the query by more than this (either way) are rejected
    ransac_confidence: float = 0.999  # RANSAC stops once an all-inlier sample was drawn with this probability
    max_perspective: float = 3.0  # max/min projective depth w over the query frame corners above this: rejected
    dedup_px: float = 1.0  # matched points within ~this many px count as one location (SIFT multi-orientation)
    query_regions: tuple[str, ...] = ("full",)  # region proposers run on the query
    reference_regions: tuple[str, ...] = ("full",)  # region proposers run on the reference


@dataclass(frozen=True)
class MatcherConfig:
    """Everything the engine needs; build with keyword overrides, e.g. ``MatcherConfig.make(local={"ratio": .8})``."""

    load: LoadConfig = field(default_factory=LoadConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    threshold: float = 0.5  # default decision threshold on the calibrated pair score
    top_k: int = 10  # pairs written per query
    max_rows: int = 500_000  # rows in a submission, all queries together
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    seed: int = 0

    @classmethod
    def make(cls, **overrides: Any) -> "MatcherConfig":
        """Build a config from nested dict overrides (the shape of :meth:`to_dict`)."""
        base = cls()
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in overrides:
                continue
            val = overrides[f.name]
            sub = getattr(base, f.name)
            if dataclasses.is_dataclass(sub) and isinstance(val, dict):
                sub_fields = {sf.name: sf for sf in dataclasses.fields(sub)}
                unknown = set(val) - set(sub_fields)
                if unknown:
                    raise ValueError(f"unknown {f.name} config keys: {sorted(unknown)}")
                val = {k: tuple(v) if isinstance(v, list) else v for k, v in val.items()}
                val = dataclasses.replace(sub, **val)
            kw[f.name] = val
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return dataclasses.replace(base, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def resolved_device(self) -> str:
        """"cuda" or "cpu" after resolving "auto"."""
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"
