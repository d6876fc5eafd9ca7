"""``icd train-detector`` and ``icd make-detector-data``: argument defaults and clear errors (exit status 2)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from matcher.cli.make_detector_data import add_make_detector_data_arguments, run_make_detector_data
from matcher.cli.train_detector import add_train_detector_arguments, run_train_detector


def _parse(add, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def test_train_arguments_defaults() -> None:
    a = _parse(add_train_detector_arguments, ["data.yaml", "out"])
    assert (a.yaml, a.epochs, a.imgsz, a.device, a.resume) == ("yolov8n.yaml", 30, 320, "cpu", False)


def test_missing_data_yaml_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _parse(add_train_detector_arguments, [str(tmp_path / "nope.yaml"), str(tmp_path / "out")])
    assert run_train_detector(a) == 2
    assert "make-detector-data" in capsys.readouterr().err


def test_make_data_cli_reports_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _parse(add_make_detector_data_arguments, [str(tmp_path / "missing"), str(tmp_path / "out")])
    assert run_make_detector_data(a) == 2
    assert "not found" in capsys.readouterr().err
