"""Keep ultralytics offline, quiet and inside one folder, for training (:mod:`detectors.train`). Call
:func:`prepare_ultralytics` BEFORE importing ultralytics. Inference never imports ultralytics (it runs
:mod:`detectors.network`), so matching leaves the process alone; a training run does change it (environment
variables, ultralytics' own import-time settings), which is why training is a command of its own.

What it does (environment first, because ultralytics reads it at import time):

* ``YOLO_OFFLINE=1``: ultralytics' ``ONLINE`` is False, so no DNS probe, no hub events, no update checks;
* ``YOLO_CONFIG_DIR=<folder>/ultralytics-config``: its ``settings.json`` (and any font look-up) lives there,
  never in ``~/.config/Ultralytics``; ``MPLCONFIGDIR`` likewise for matplotlib's cache;
* ``YOLO_VERBOSE=False`` unless ``verbose``: no banner or per-image logging;
* after import: settings ``sync``/integrations off, ``runs_dir``/``datasets_dir``/``weights_dir`` pointed into
  the folder, and ``check_font`` replaced by a local no-op (it would try to download Arial.ttf).

Training additionally turns off AMP (its check downloads a model) and plots; see :mod:`detectors.train`.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["default_config_root", "prepare_ultralytics"]

_LOG = logging.getLogger(__name__)
_PREPARED: Path | None = None
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "hub")


def default_config_root() -> Path:
    """A per-user folder under the system temp dir, used when no output folder is given (inference)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"icd-matcher-ultralytics-{uid}"


def _no_font(font: str = "Arial.ttf") -> None:
    """Stand-in for ``ultralytics.utils.checks.check_font``: never downloads, returns no font."""


def prepare_ultralytics(root: str | Path | None = None, verbose: bool = False) -> Path:
    """Set the environment so that ultralytics stays offline and writes only under ``root``; import it.

    ``root``: the output folder (training) or None (inference: :func:`default_config_root`). Returns the
    config folder used. Idempotent; if ultralytics was imported before (by other code) its config folder cannot
    change any more, which is logged once, but the settings and patches are still applied.
    """
    global _PREPARED
    base = Path(root) if root is not None else default_config_root()
    cfg_dir = (base / "ultralytics-config").resolve()
    if _PREPARED is not None:
        if root is not None and cfg_dir != _PREPARED:
            _apply_settings(base)
        return _PREPARED
    already = "ultralytics" in sys.modules
    if already:
        _LOG.warning("ultralytics was imported before detectors.offline.prepare_ultralytics(); its config folder "
                     "is %s", os.environ.get("YOLO_CONFIG_DIR", "~/.config/Ultralytics"))
    cfg_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(cfg_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(cfg_dir / "matplotlib"))
    if not verbose:
        os.environ["YOLO_VERBOSE"] = "False"
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    _apply_settings(base)
    _PREPARED = cfg_dir
    return cfg_dir


def _apply_settings(base: Path) -> None:
    """Settings and monkey patches that can only be applied once ultralytics is imported."""
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import SETTINGS, checks

    updates = {k: False for k in _INTEGRATIONS if k in SETTINGS}
    updates.update(sync=False, runs_dir=str(base / "runs"), datasets_dir=str(base), weights_dir=str(base / "weights"))
    if any(SETTINGS.get(k) != v for k, v in updates.items()):
        SETTINGS.update(updates)
    checks.check_font = _no_font
    data_utils.check_font = _no_font
    try:
        from ultralytics.utils import plotting

        plotting.check_font = _no_font
    except ImportError:  # pragma: no cover - plotting needs matplotlib, which is installed
        pass
