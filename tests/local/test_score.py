"""The local score model: monotone, 0 for unverified evidence, JSON round trip, non-negative logistic fit."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from matcher.local.evidence import PairEvidence
from matcher.local.score import LocalScoreModel, default_local_score_path
from matcher.training.local_score import fit_logistic


def _ev(n_inliers: int, ratio: float, cov: float = 0.5) -> PairEvidence:
    return PairEvidence(n_matches=max(n_inliers, 1), n_inliers=n_inliers, inlier_ratio=ratio,
                        query_coverage=cov, reference_coverage=cov)


def test_unverified_scores_zero_and_scores_are_monotone():
    model = LocalScoreModel.load()
    assert model.score(PairEvidence(reason="no matches")) == 0.0
    s = [model.score(_ev(n, 0.5)) for n in (6, 10, 20, 50, 200)]
    assert all(0 < a <= b < 1 for a, b in itertools.pairwise(s))
    s = [model.score(_ev(20, r)) for r in (0.1, 0.3, 0.6, 0.9)]
    assert all(a <= b for a, b in itertools.pairwise(s))


def test_shipped_weights_are_a_fitted_model():
    data = json.loads(default_local_score_path().read_text())
    assert data["format"] == "icd-local-score/1" and data["n_pairs"] > 0 and "train" in data["data"]
    model = LocalScoreModel.load()
    assert model.source.startswith("fitted")
    assert model.score(_ev(100, 0.9)) > 0.95 and model.score(_ev(6, 0.1)) < 0.5


def test_round_trip_and_bad_files(tmp_path):
    m = LocalScoreModel((1.0, 2.0, 0.5), -3.0, source="test")
    p = tmp_path / "m.json"
    m.save(p, note="x")
    assert LocalScoreModel.load(p) == LocalScoreModel((1.0, 2.0, 0.5), -3.0, source="test")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        LocalScoreModel.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        LocalScoreModel.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="non-negative"):
        LocalScoreModel((-1.0, 0.0, 0.0), 0.0)


def test_fit_logistic_separates_and_keeps_weights_non_negative():
    rng = np.random.default_rng(0)
    x_pos = np.c_[rng.normal(4, 0.5, 200), rng.uniform(0.4, 1, 200), rng.uniform(0, 1, 200)]
    x_neg = np.c_[rng.normal(2, 0.5, 200), rng.uniform(0, 0.5, 200), rng.uniform(0, 1, 200)]
    x = np.r_[x_pos, x_neg]
    y = np.r_[np.ones(200), np.zeros(200)]
    w, b = fit_logistic(x, y)
    assert (w >= 0).all() and w[0] > 0 and w[1] > 0
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert ((p >= 0.5) == y).mean() > 0.95
