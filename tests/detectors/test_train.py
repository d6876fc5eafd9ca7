"""Detector training: clear errors (the training loop itself is exercised by the benchmark run, too slow for a
unit test on 2 cores; the command-line entry points are tested in tests/cli/test_train_detector.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from detectors.train import TrainConfig, train_detector


def test_resume_without_run_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train_detector(TrainConfig(data="x"), tmp_path / "empty", resume=True)
