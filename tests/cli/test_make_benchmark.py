"""``icd make-benchmark``: arguments, the summary printed, and bad settings reported with status 2."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.benchmark.edits import synthetic_photo
from matcher.cli.make_benchmark import add_make_benchmark_arguments, run_make_benchmark
from matcher.isc.submission import read_ground_truth


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 generated photos, ~240 px."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(6):
        Image.fromarray(synthetic_photo(np.random.default_rng(i), 240, 180)).save(folder / f"gen{i}.png")
    return folder


def test_cli(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_make_benchmark_arguments(parser)
    args = parser.parse_args([str(photos), str(tmp_path / "c"), "--references", "3", "--queries", "4",
                              "--background", "1", "--holistic", "0", "--same-scene", "0", "--no-progress"])
    assert run_make_benchmark(args) == 0
    assert "references: 3" in capsys.readouterr().out
    assert len(read_ground_truth(tmp_path / "c" / "ground_truth.csv")) == 4
    bad = parser.parse_args([str(photos), str(tmp_path / "d"), "--references", "99", "--no-progress"])
    assert run_make_benchmark(bad) == 2
    assert "error:" in capsys.readouterr().err
