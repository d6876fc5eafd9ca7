from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from matcher.isc.metrics import split_by_family
from matcher.isc.plots import plot_pr_curve
from matcher.isc.submission import GroundTruthMatch, PredictedMatch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data() -> tuple[list[PredictedMatch], list[GroundTruthMatch]]:
    rng = np.random.default_rng(1)
    gt = [GroundTruthMatch(f"q{i}", f"r{i}") for i in range(40)] + [GroundTruthMatch(f"n{i}", "") for i in range(40)]
    preds = [PredictedMatch(f"q{i}", f"r{i}", float(rng.random() + 0.5)) for i in range(35)]
    preds += [PredictedMatch(f"n{i}", f"r{i}", float(rng.random())) for i in range(40)]
    return preds, gt


def test_writes_valid_png(tmp_path: Path) -> None:
    preds, gt = _data()
    manifest = {"queries": {**{f"q{i}": {"families": ["crop" if i % 2 else "blur"]} for i in range(40)},
                            **{f"n{i}": {"families": ["crop"]} for i in range(40)}}}
    out = tmp_path / "pr.png"
    plot_pr_curve(preds, gt, out, title="test", by_family=split_by_family(preds, gt, manifest))
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    with Image.open(out) as im:
        assert im.size == (700, 550)
        assert np.asarray(im.convert("L")).std() > 5  # something was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pr.png"]  # no temp file left


def test_empty_predictions_do_not_crash(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    plot_pr_curve([], [GroundTruthMatch("q1", "r1")], out)
    assert out.read_bytes()[:8] == PNG_MAGIC
