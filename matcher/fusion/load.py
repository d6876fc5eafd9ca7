"""Which fusion model scores a pair: the :class:`Fusion` protocol both kinds satisfy, and :func:`load_fusion`, which
reads either kind from plain JSON (never a pickle):

- boosted trees (:class:`~matcher.fusion.trees.TreeFusionModel`, the shipped default ``weights/fusion.json``):
  p(copy) = sigmoid(base + sum_t tree_t(x)), monotone in the evidence that may only raise or lower it;
- logistic regression (:class:`~matcher.fusion.logistic.FusionModel`, ``weights/fusion_logistic.json``).

Both are fitted on candidate pairs of benchmarks built from the ``train`` photos (``bench/fit_fusion.py``; never on
``bench``). Each score carries its per-feature contributions to the logit (``explain``), the evidence that decided
it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from matcher.fusion.logistic import FORMAT, FusionModel
from matcher.fusion.trees import TREES_FORMAT, TreeFusionModel
from matcher.resources import FUSION_MODEL, shipped_path

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig

__all__ = ["Fusion", "default_fusion_path", "load_fusion"]


def default_fusion_path(config: MatcherConfig | None = None) -> Path:
    """The shipped fusion model (``weights/fusion.json``, through :mod:`matcher.resources`)."""
    return shipped_path(FUSION_MODEL, config)


class Fusion(Protocol):
    """What the pipeline needs of a fusion model (:class:`FusionModel`, :class:`TreeFusionModel`)."""

    threshold: float
    gate_margin: float
    features: tuple[str, ...]
    source: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...  # (N, len(FEATURE_NAMES)) -> (N,) in [0, 1]

    def score(self, features: np.ndarray) -> float: ...

    def explain(self, features: np.ndarray) -> dict[str, float]: ...

    def save(self, path: str | Path, **card: object) -> None: ...


def load_fusion(path: str | Path | None = None, config: MatcherConfig | None = None) -> Fusion:
    """Read any fusion model JSON (default ``weights/fusion.json``): logistic (``icd-fusion/1``) or boosted
    trees (``icd-fusion-trees/1``), told apart by its ``format``; a clear error naming the file when it is
    missing, unreadable or malformed. Plain JSON, never a pickle. The default file is found through ``config``
    (:mod:`matcher.resources`)."""
    p = Path(path) if path else default_fusion_path(config)
    if not p.exists():
        raise FileNotFoundError(f"fusion weights not found: {p} (fit them with `python bench/fit_fusion.py`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read fusion weights {p}: {exc}") from exc
    kinds: dict[str, Any] = {FORMAT: FusionModel, TREES_FORMAT: TreeFusionModel}
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in kinds:
        raise ValueError(f"{p}: not an icd-fusion file (format {fmt!r}; expected one of {sorted(kinds)})")
    return kinds[fmt].from_dict(data, p.name)
