"""Whether an index and a configuration fit together: the settings that shape stored data must be the ones the
index was built with (others, e.g. matching thresholds, may differ freely between runs), and so must the
descriptor's weights. A mismatch raises :class:`~matcher.references.disk.schema.IndexMismatchError` listing every
difference as "key stored vs requested".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.config import MatcherConfig
from matcher.references.disk.schema import IndexMismatchError, IndexStoreError

if TYPE_CHECKING:  # pragma: no cover
    from matcher.descriptors.extractor import GlobalDescriptor

__all__ = ["canonical", "check_config", "check_descriptor", "check_signature", "shaping", "short", "stored_config",
           "weights_sha256"]

# Config keys that change what is stored.
_DESCRIPTOR_KEYS = ("model", "dim", "image_size", "scales")
_LOCAL_KEYS = ("extractor", "working_size", "max_keypoints", "max_upscale", "sift_contrast_threshold",
               "sift_edge_threshold", "sift_octave_layers", "sift_sigma", "sift_fallback_below",
               "sift_fallback_contrast_threshold", "sift_fallback_edge_threshold")
_DETECTOR_KEYS = ("weights", "conf", "iou", "max_boxes", "imgsz")


def canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def short(v: Any) -> str:
    """A value for a message (sha256 hex digests shortened)."""
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:16] + "..." if isinstance(v, str) and len(v) == 64 else s


def shaping(config: MatcherConfig) -> dict[str, Any]:
    """The config values that shape stored data, "section.key" -> JSON value."""
    out: dict[str, Any] = {f"descriptor.{k}": getattr(config.descriptor, k) for k in _DESCRIPTOR_KEYS}
    out["pipeline.reference_regions"] = config.pipeline.reference_regions
    out["index.local_features"] = config.index.local_features
    if config.index.local_features:
        out.update({f"local.{k}": getattr(config.local, k) for k in _LOCAL_KEYS})
    if "yolo" in config.pipeline.reference_regions:
        out.update({f"detector.{k}": getattr(config.detector, k) for k in _DETECTOR_KEYS})
    return canonical(out)


def weights_sha256(config: MatcherConfig) -> str | None:
    """sha256 of the descriptor weights file ``config`` names (None for a weight-less model)."""
    from matcher.descriptors.registry import get_spec
    from matcher.descriptors.weights import file_sha256

    path = config.descriptor.weights or get_spec(config.descriptor.model).weights_path(config)
    return file_sha256(path) if path else None


# Settings added after indexes were first written, with the value that reproduces what an index built before them
# holds (a stored configuration without the key was built that way).
_ADDED_SINCE: dict[str, dict[str, Any]] = {"local": {"sift_fallback_below": 0},
                                           "pipeline": {"voting_codes": "flat"}}  # keeps its saved flat voter


def stored_config(db: Path, info: dict[str, Any]) -> MatcherConfig:
    """The configuration an index was built with (settings added since it was built take the value that reproduces
    what it holds); :class:`IndexStoreError` when it does not fit this build."""
    try:
        stored = {k: dict(v) if isinstance(v, dict) else v for k, v in info["config"].items()}
        for section, keys in _ADDED_SINCE.items():
            if isinstance(stored.get(section), dict):
                for key, value in keys.items():
                    stored[section].setdefault(key, value)
        return MatcherConfig.make(**stored)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise IndexStoreError(f"{db}: the stored configuration does not fit this build ({e})") from None


def check_config(path: Path, info: dict[str, Any], stored: MatcherConfig, config: MatcherConfig,
                 descriptor: GlobalDescriptor | None) -> None:
    """Refuse ``config`` (and ``descriptor``, when given) for the index at ``path`` built with ``stored``."""
    diffs: list[str] = []
    a, b = shaping(stored), shaping(config)
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            diffs.append(f"{k} {short(a.get(k))} vs {short(b.get(k))}")
    try:
        sha = descriptor.sha256 if descriptor is not None else weights_sha256(config)
    except (OSError, KeyError, ValueError) as e:
        raise IndexStoreError(f"{path}: cannot read the descriptor weights of the requested config ({e})") from None
    if sha != info.get("descriptor_sha256"):
        diffs.append(f"descriptor weights sha256 {short(info.get('descriptor_sha256'))} vs {short(sha)}")
    if descriptor is not None:
        if descriptor.name != info.get("descriptor_model"):
            diffs.append(f"descriptor model {info.get('descriptor_model')} vs {descriptor.name}")
        if int(descriptor.dim) != info.get("descriptor_dim"):
            diffs.append(f"descriptor dim {info.get('descriptor_dim')} vs {descriptor.dim}")
    if diffs:
        raise IndexMismatchError(path, diffs)


def check_descriptor(path: Path, info: dict[str, Any], descriptor: GlobalDescriptor) -> None:
    """Refuse a descriptor model other than the index's (name, weights sha256, dim)."""
    model, sha, dim = info["descriptor_model"], info.get("descriptor_sha256"), int(info["descriptor_dim"])
    diffs = [f"descriptor {k} {short(a)} vs {short(b)}" for k, a, b in
             (("model", model, descriptor.name), ("weights sha256", sha, descriptor.sha256),
              ("dim", dim, int(descriptor.dim))) if a != b]
    if diffs:
        raise IndexMismatchError(path, diffs)


def check_signature(path: Path, info: dict[str, Any], signature: dict[str, Any]) -> None:
    """Refuse a local feature extractor other than the index's (its signature)."""
    sig, stored = canonical(signature), canonical(info.get("local_signature"))
    if sig != stored:
        diffs = [f"local extractor {k} {short(stored.get(k))} vs {short(sig.get(k))}"
                 for k in sorted(set(stored) | set(sig)) if stored.get(k) != sig.get(k)]
        raise IndexMismatchError(path, diffs)
