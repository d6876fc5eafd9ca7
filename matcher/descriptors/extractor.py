"""The global descriptor as one object the engine holds: model + spec + weights hash, built from the config."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from matcher.config import DescriptorConfig, MatcherConfig
from matcher.descriptors.fuse import fold_batchnorm
from matcher.descriptors.infer import describe_images
from matcher.descriptors.registry import load_descriptor

__all__ = ["GlobalDescriptor"]


class GlobalDescriptor:
    """``describe(images)`` -> (N, D) float32 unnormalised descriptors; ``name`` and ``sha256`` (of the weights
    file) stamp whatever is built from them; ``gate_margin``: the configured margin, else the one stored with the
    weights (None if neither). Built from a MatcherConfig, shipped weights are found through its ``weights_dir``."""

    def __init__(self, cfg: DescriptorConfig | MatcherConfig | None = None, device: str = "cpu") -> None:
        full: MatcherConfig | None = None
        if isinstance(cfg, MatcherConfig):
            full = cfg
            device = cfg.resolved_device()
            cfg = cfg.descriptor
        self.cfg = cfg or DescriptorConfig()
        over: dict[str, object] = {"scales": tuple(self.cfg.scales)}
        if not self.cfg.weights:
            over.update(dim=self.cfg.dim, image_size=self.cfg.image_size)
        self.model, self.spec, self.sha256 = load_descriptor(
            self.cfg.model, self.cfg.weights or None, device=device, config=full, **over)
        self.model = fold_batchnorm(self.model.eval(), self.spec.image_size)  # inference only: BN folded into convs
        from matcher.descriptors.weights import read_weights

        path = self.cfg.weights or self.spec.weights_path(full)
        meta = read_weights(path)[1] if path else {}
        self.gate_margin = self.cfg.gate_margin if self.cfg.gate_margin is not None else meta.get("gate_margin")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    def describe(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """RGB uint8 (H, W, 3) pictures -> (N, D) float32, unnormalised (norm = content amount)."""
        return describe_images(self.model, images, self.spec.image_size, self.spec.mean, self.spec.std,
                               batch_size=self.cfg.batch_size, scales=self.spec.scales)
