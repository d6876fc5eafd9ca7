"""DISC21-like copy-detection benchmark: image edits (AugLy + own geometric/composite edits) and the builder.

Importing this package registers every edit in :data:`EDITS` (single-image edits from :mod:`.edits`, composite
edits from :mod:`.compose`).
"""
from __future__ import annotations

from matcher.benchmark import compose as _compose  # noqa: F401  (registers the composite edits)
from matcher.benchmark.chain import ChainResult, apply_chain, sample_families
from matcher.benchmark.edits import (
    CHAIN_FAMILIES,
    COMPOSITE_FAMILIES,
    EDITS,
    EditContext,
    EditResult,
    default_context,
    edits_in_family,
    family_of,
)

__all__ = [
    "CHAIN_FAMILIES",
    "COMPOSITE_FAMILIES",
    "EDITS",
    "BenchmarkError",
    "BenchmarkSummary",
    "ChainResult",
    "EditContext",
    "EditResult",
    "apply_chain",
    "build_benchmark",
    "default_context",
    "edits_in_family",
    "family_of",
    "sample_families",
]


def __getattr__(name: str):  # the builder (and its I/O imports) loads on first use
    if name in ("BenchmarkError", "BenchmarkSummary", "build_benchmark"):
        from matcher.benchmark import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'matcher.benchmark' has no attribute {name!r}")
