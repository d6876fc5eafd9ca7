"""Global descriptors (ASL: direction for similarity, norm for content amount), their training recipe and
registry. Modules: model, registry, imagenet, weights, preprocess, infer, views, data, losses, train,
normalise, gate, candidates, extractor; the reference index lives in :mod:`matcher.index`."""
from __future__ import annotations

from matcher.descriptors.registry import DESCRIPTORS, DescriptorSpec, get_spec, load_descriptor

__all__ = ["DESCRIPTORS", "DescriptorSpec", "get_spec", "load_descriptor"]
