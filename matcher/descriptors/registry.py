"""Registry of descriptor models: a name maps to architecture, dimension, input size, preprocessing and a
weights file, in the way timm registers models.

``DESCRIPTORS.create(name)`` returns the :class:`DescriptorSpec`; :func:`build_model` makes the network and
:func:`load_descriptor` makes it and loads its weights.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from matcher.descriptors.model import AslDescriptor
from matcher.registry import Registry
from matcher.resources import weights_dir

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig

__all__ = [
    "DESCRIPTORS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DescriptorSpec",
    "build_model",
    "get_spec",
    "load_descriptor",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DescriptorSpec:
    """What a descriptor name stands for.

    ``arch``: timm architecture; ``feature_dim``: backbone channels; ``dim``: descriptor size;
    ``image_size``: square input side (px) the image is resized to; ``scales``: extra input sides for
    multi-scale inference (descriptors averaged), () = single scale; ``weights``: file name among the shipped
    weights (:mod:`matcher.resources`) or an absolute path, None = ImageNet backbone + random projection.
    """

    name: str
    arch: str = "efficientnet_lite0"
    feature_dim: int = 1280
    dim: int = 256
    image_size: int = 160
    scales: tuple[int, ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = None

    def weights_path(self, config: MatcherConfig | None = None) -> Path | None:
        """The weights file (shipped files resolved through ``config.weights_dir`` when set); None for none."""
        if self.weights is None:
            return None
        p = Path(self.weights)
        return p if p.is_absolute() else weights_dir(config) / p


DESCRIPTORS: Registry[DescriptorSpec] = Registry("descriptor model")


@DESCRIPTORS.register("asl_lite0")
def asl_lite0(**kw: object) -> DescriptorSpec:
    """Our trained ASL descriptor: efficientnet_lite0, GeM, 256-d, 160 px (weights/asl_lite0_256.pt)."""
    return dataclasses.replace(DescriptorSpec("asl_lite0", weights="asl_lite0_256.pt"), **kw)  # type: ignore[arg-type]


@DESCRIPTORS.register("imagenet_lite0")
def imagenet_lite0(**kw: object) -> DescriptorSpec:
    """The untrained baseline: efficientnet_lite0 with ImageNet weights, GeM, a seeded random projection."""
    return dataclasses.replace(DescriptorSpec("imagenet_lite0", weights=None), **kw)  # type: ignore[arg-type]


def get_spec(name: str, **overrides: object) -> DescriptorSpec:
    """The spec registered as ``name`` (UnknownNameError listing the known names), with field overrides."""
    return DESCRIPTORS.create(name, **overrides)


def _timm():
    """The timm module, imported without leaving its import-time side effects on the host process: importing it
    sets ``TORCHINDUCTOR_CACHE_DIR`` in ``os.environ`` (torch's inductor cache), which is undone here."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    saved = dict(os.environ)
    try:
        import timm
    finally:
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        for k, v in saved.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
    return timm


def build_model(spec: DescriptorSpec, *, imagenet: bool = True, seed: int = 0) -> AslDescriptor:
    """A fresh network for ``spec``: ImageNet backbone weights when ``imagenet`` (only efficientnet_lite0 has
    offline weights; other archs start random), a projection initialised orthogonally from ``seed``."""
    timm = _timm()
    torch.manual_seed(seed)
    backbone = timm.create_model(spec.arch, pretrained=False, num_classes=0, global_pool="")
    if imagenet and spec.arch == "efficientnet_lite0":
        from matcher.descriptors.imagenet import load_lite0_imagenet

        load_lite0_imagenet(backbone)
    feature_dim = int(getattr(backbone, "num_features", spec.feature_dim))
    model = AslDescriptor(backbone, feature_dim, spec.dim)
    with torch.no_grad():
        torch.nn.init.orthogonal_(model.proj.weight, generator=torch.Generator().manual_seed(seed))
        model.proj.bias.zero_()
    return model


def load_descriptor(
    name: str, weights: str | os.PathLike[str] | None = None, *, device: str = "cpu",
    config: MatcherConfig | None = None, **overrides: object
) -> tuple[AslDescriptor, DescriptorSpec, str | None]:
    """Build ``name`` and load its weights (``weights`` overrides the spec's file). Returns (model in eval
    mode on ``device``, spec (dim from the file's metadata, image_size too unless given), sha256 of the weights file
    or None for the ImageNet baseline); shipped files are found through ``config`` (:mod:`matcher.resources`).
    Raises UnknownNameError, FileNotFoundError, WeightsError."""
    from matcher.descriptors.weights import file_sha256, read_weights

    spec = get_spec(name, **overrides)
    path = Path(weights) if weights is not None else spec.weights_path(config)
    if path is None:
        model: nn.Module = build_model(spec)
        return model.to(device).eval(), spec, None  # type: ignore[return-value]
    state, meta = read_weights(path)
    spec = dataclasses.replace(
        spec, dim=int(meta.get("dim", spec.dim)),
        image_size=int(overrides.get("image_size", meta.get("image_size", spec.image_size))),  # type: ignore[arg-type]
    )
    if meta.get("arch", spec.arch) != spec.arch:
        from matcher.descriptors.weights import WeightsError

        raise WeightsError(f"{path}: weights are for arch {meta.get('arch')!r}, model {name!r} is {spec.arch!r}")
    with torch.random.fork_rng(devices=[]):  # the random initialisation leaves the host's torch RNG as it was
        model = build_model(spec, imagenet=False)
    from matcher.descriptors.weights import load_state

    load_state(model, state, str(path))
    return model.to(device).eval(), spec, file_sha256(path)
