"""The one resolver of shipped files (model weights, model cards, background descriptors).

The files live in the repository's top-level ``weights/`` folder; a wheel or sdist maps that folder into the
package as ``matcher/weights`` (see ``pyproject.toml``). :func:`weights_dir` finds it wherever the package is
installed, and ``MatcherConfig.weights_dir`` overrides it (a folder holding files with the shipped names).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig

__all__ = ["DETECTOR_WEIGHTS", "FUSION_LOGISTIC", "FUSION_MODEL", "LOCAL_SCORE", "shipped_path", "weights_dir"]

# The shipped files by role (each has a model card in the same folder).
DETECTOR_WEIGHTS = "detector_yolov8n.pt"  # pasted-picture detector (+ detector_yolov8n.json beside it)
FUSION_MODEL = "fusion.json"  # boosted-tree fusion (the default)
FUSION_LOGISTIC = "fusion_logistic.json"  # logistic fusion over the same features
LOCAL_SCORE = "local_score.json"  # calibrated score of the local engine alone
# descriptor weights are named by the descriptor registry (matcher.descriptors.registry), their background sets
# "background_<model>.npz" (matcher.retrieval.normalise.background_path)


def weights_dir(config: MatcherConfig | None = None) -> Path:
    """The folder of shipped weights: ``config.weights_dir`` when set; else the package's ``weights`` (installed
    from a wheel); else the repository's ``weights/`` (a source checkout or an editable install)."""
    if config is not None and config.weights_dir:
        return Path(config.weights_dir)
    packaged = resources.files("matcher") / "weights"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_path(name: str, config: MatcherConfig | None = None) -> Path:
    """Path of the shipped file ``name`` (e.g. ``"fusion.json"``) in :func:`weights_dir`; it may not exist."""
    if not name or Path(name).name != name:
        raise ValueError(f"shipped file names are bare file names, got {name!r}")
    return weights_dir(config) / name
