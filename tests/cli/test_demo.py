"""End to end: `icd demo` builds a benchmark from scikit-image photos, matches it and reports the metrics."""
from __future__ import annotations

import pytest

from matcher.cli import main
from matcher.isc.metrics import evaluate
from matcher.isc.submission import read_ground_truth, read_predictions


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "micro-AP" in out and "baseline (NOT the engine)" in out
    for name in ("submission.csv", "submission.csv.skipped.csv", "submission_local.csv.skipped.csv", "pr_curve.png",
                 "benchmark/manifest.json"):
        assert (tmp_path / name).exists(), name
    m = evaluate(read_predictions(tmp_path / "submission.csv"),
                 read_ground_truth(tmp_path / "benchmark" / "ground_truth.csv"))
    assert m.micro_ap > 0.5  # the engine finds most copies of the small demo benchmark
