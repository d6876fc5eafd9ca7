"""Boosted-tree fusion: learns an interaction a linear model cannot, keeps monotone constraints, explanations add up
to the logit, vectorised prediction agrees with a plain walk, JSON round trip through load_fusion, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matcher.fusion.features import FEATURE_NAMES
from matcher.fusion.load import load_fusion
from matcher.fusion.logistic import FusionModel
from matcher.fusion.trees import TreeFusionModel
from matcher.training.fusion import fit_fusion, fit_trees

A, B, C = FEATURE_NAMES.index("inlier_ratio"), FEATURE_NAMES.index("inside_without_seam"), \
    FEATURE_NAMES.index("global_full")


def _xor(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Copy when a high inlier ratio comes WITHOUT the seamless-inside pattern, or with a high global score."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(FEATURE_NAMES)))
    logit = 6.0 * ((x[:, A] > 0.5) & (x[:, B] < 0.5)) + 4.0 * (x[:, C] > 0.8) - 3.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p > 0.5) == (y > 0.5)).mean())


def _walk(m: TreeFusionModel, row: np.ndarray) -> float:
    """Plain per-tree walk (the reference for the vectorised prediction)."""
    z = row[[FEATURE_NAMES.index(f) for f in m.features]]
    total = m.base
    for t in range(m.feature.shape[0]):
        node = 0
        while m.feature[t, node] >= 0:
            node = m.left[t, node] if z[m.feature[t, node]] < m.split[t, node] else m.right[t, node]
        total += m.value[t, node]
    return total


def test_learns_an_interaction_the_linear_model_cannot():
    x, y = _xor()
    xt, yt = _xor(2000, seed=1)
    trees = fit_trees(x, y, rounds=60, depth=2)
    assert _acc(trees.predict(xt), yt) > _acc(fit_fusion(x, y).predict(xt), yt) + 0.08
    assert trees.depth == 2 and trees.feature.shape == (60, 7)
    assert fit_trees(x, y, rounds=5).to_dict() == fit_trees(x, y, rounds=5).to_dict()  # deterministic


def test_prediction_matches_a_plain_walk_and_explain_adds_up():
    x, y = _xor(800)
    m = fit_trees(x, y, rounds=30, depth=3)
    logits = m.logits(x[:50])
    assert np.allclose(logits, [_walk(m, r) for r in x[:50]])
    contrib_all, bias = m.contributions(x[:50])
    assert np.allclose(bias + contrib_all.sum(1), logits)
    for r, lg in zip(x[:5], logits):
        contrib = m.explain(r)
        assert sum(contrib.values()) == pytest.approx(lg, abs=5e-3)
        mags = [abs(v) for k, v in contrib.items() if k != "bias"]
        assert mags == sorted(mags, reverse=True)
    assert np.all((m.predict(x) >= 0) & (m.predict(x) <= 1))


def test_monotone_constraints_hold_everywhere():
    rng = np.random.default_rng(3)
    x, y = _xor(1500)
    y = np.where(rng.random(len(y)) < 0.3, 1 - y, y)  # label noise tempts unconstrained trees into wiggles
    m = fit_trees(x, y, rounds=40, depth=3, monotone={"inlier_ratio": 1, "inside_without_seam": -1})
    grid = np.linspace(0, 1, 41)
    for row in x[:30]:
        for col, sign in ((A, 1), (B, -1)):
            rows = np.repeat(row[None], len(grid), 0)
            rows[:, col] = grid
            assert np.all(sign * np.diff(m.logits(rows)) >= -1e-12)
    with pytest.raises(ValueError, match="monotone"):
        fit_trees(x, y, rounds=2, monotone={"inlier_ratio": 2})


def test_feature_subset_and_bad_fits():
    x, y = _xor(500)
    m = fit_trees(x, y, rounds=10, features=("inlier_ratio", "global_full"))
    assert set(m.explain(x[0])) == {"inlier_ratio", "global_full", "bias"}
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_trees(x, np.zeros(len(x)))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_trees(bad, y)


def test_round_trip_through_load_fusion_and_bad_files(tmp_path):
    x, y = _xor(600)
    m = fit_trees(x, y, rounds=12, depth=3, gate_margin=0.2, source="test")
    p = tmp_path / "fusion.json"
    m.save(p, data={"note": "synthetic"})
    back = load_fusion(p)
    assert isinstance(back, TreeFusionModel) and back.gate_margin == 0.2 and back.source == "test"
    assert np.array_equal(back.predict(x), m.predict(x))
    assert json.loads(p.read_text())["data"] == {"note": "synthetic"}
    logistic = tmp_path / "logistic.json"
    fit_fusion(x, y).save(logistic)
    assert isinstance(load_fusion(logistic), FusionModel)
    d = json.loads(p.read_text())
    d["trees"][0]["left"][0] = 0  # a cycle
    cyc = tmp_path / "cycle.json"
    cyc.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="cycle.json.*child slot"):
        load_fusion(cyc)
    d = json.loads(p.read_text())
    d["trees"][3]["feature"][0] = 99
    far = tmp_path / "far.json"
    far.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="far.json.*does not list"):
        load_fusion(far)
    d["trees"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="empty.json.*no trees"):
        load_fusion(empty)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_fusion(tmp_path / "nope.json")


def test_shipped_model_is_trees_and_monotone():
    """weights/fusion.json loads as boosted trees and keeps its constraints: more inliers / a higher inlier ratio /
    a higher global score never lower the score, a seamless "reference inside the query" never raises it."""
    m = load_fusion()
    assert isinstance(m, TreeFusionModel) and 0 < m.threshold < 1
    rng = np.random.default_rng(0)
    rows = rng.random((40, len(FEATURE_NAMES)))
    rows[:, FEATURE_NAMES.index("log1p_inliers")] *= 6
    grid = np.linspace(0, 1, 21)
    for name, sign, scale in (("log1p_inliers", 1, 6), ("inlier_ratio", 1, 1), ("global_regions", 1, 1),
                              ("inside_without_seam", -1, 1)):
        col = FEATURE_NAMES.index(name)
        for row in rows:
            r = np.repeat(row[None], len(grid), 0)
            r[:, col] = grid * scale
            assert np.all(sign * np.diff(m.logits(r)) >= -1e-9), name
