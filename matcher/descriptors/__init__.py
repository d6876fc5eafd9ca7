"""Global descriptors (ASL: direction for similarity, norm for content amount), their training recipe and
registry. Modules: model, registry, imagenet, weights, preprocess, infer, views, data, losses, train,
extractor; normalisation, the gate and the reference index live in :mod:`matcher.retrieval`, training in
:mod:`matcher.training`."""
from __future__ import annotations

from matcher.descriptors.registry import DESCRIPTORS, DescriptorSpec, get_spec, load_descriptor

__all__ = ["DESCRIPTORS", "DescriptorSpec", "get_spec", "load_descriptor"]
