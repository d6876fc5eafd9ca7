"""icd-matcher: image copy detection (ISC2021 matching-track style).

Public API: :class:`Matcher` (``from_pretrained``, ``score``, ``index``, ``match``: the full pipeline),
:func:`score_pair` (local verification of one pair -> :class:`PairResult`), :func:`load_image`, :class:`MatcherConfig`.
Heavy modules (torch, OpenCV, Numba) are imported on first use, not at package import.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ImageLoadError", "Matcher", "MatcherConfig", "PairResult", "load_image", "score_pair"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from matcher.api import Matcher
    from matcher.config import MatcherConfig
    from matcher.io.images import ImageLoadError, load_image
    from matcher.local.engine import PairResult, score_pair

_LAZY = {
    "Matcher": "matcher.api",
    "MatcherConfig": "matcher.config",
    "ImageLoadError": "matcher.io.images",
    "load_image": "matcher.io.images",
    "PairResult": "matcher.local.engine",
    "score_pair": "matcher.local.engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matcher' has no attribute {name!r}")
