"""Fusion model: feature vector, Newton logistic fit, JSON round trip, explanations, bad files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from matcher.fusion.features import FEATURE_NAMES, SEAM_CLEAR, SEAM_NONE, pair_features
from matcher.fusion.load import load_fusion
from matcher.fusion.logistic import FusionModel
from matcher.local.evidence import PairEvidence
from matcher.retrieval.candidates import GlobalEvidence
from matcher.training.fusion import fit_fusion


def _ev(**kw) -> PairEvidence:
    base = {"n_matches": 40, "n_inliers": 30, "inlier_ratio": 0.75, "query_coverage": 0.6, "reference_coverage": 0.3,
                "query_frame_in_reference": 0.4, "reference_frame_in_query": 1.0}
    base.update(kw)
    return PairEvidence(**base)


class TestPairFeatures:
    def test_shape_and_names(self):
        f = pair_features(_ev(), GlobalEvidence(full=0.3, regions=0.5, to_local=0.4, log_norm_ratio=-0.2), 0.1)
        assert f.shape == (len(FEATURE_NAMES),)
        d = dict(zip(FEATURE_NAMES, f))
        assert d["verified"] == 1 and d["log1p_inliers"] == pytest.approx(math.log1p(30))
        assert d["query_in_reference"] == pytest.approx(0.4) and d["reference_inside_query"] == pytest.approx(0.0)
        assert d["global_regions"] == pytest.approx(0.5) and d["gate_excess"] == 0.0

    def test_unverified_and_missing_globals(self):
        f = dict(zip(FEATURE_NAMES, pair_features(None, GlobalEvidence(), 0.0)))
        assert f["verified"] == 0 and f["log1p_inliers"] == 0 and f["detector_iou"] == 0
        assert f["global_full"] == pytest.approx(-0.2) and f["global_to_local"] == pytest.approx(-0.2)
        rejected = dict(zip(FEATURE_NAMES, pair_features(PairEvidence(reason="degenerate"), GlobalEvidence(), 0.0)))
        assert rejected["verified"] == 0 and rejected["inlier_ratio"] == 0

    def test_reference_inside_query_terms(self):
        ev = _ev(query_frame_in_reference=1.0, reference_frame_in_query=0.25, detector_iou=0.8)
        f = dict(zip(FEATURE_NAMES, pair_features(ev, GlobalEvidence(log_norm_ratio=0.5), 0.2)))
        assert f["reference_inside_query"] == pytest.approx(0.75)
        assert f["inside_with_detector"] == pytest.approx(0.6)
        assert f["inside_norm"] == pytest.approx(0.375) and f["gate_excess"] == pytest.approx(0.3)

    @pytest.mark.parametrize(("seam", "log_seam", "seamless"), [
        (1.0, 0.0, 0.75),  # no seam: the whole inside term is unexplained
        (SEAM_NONE, math.log(SEAM_NONE), 0.75),
        (SEAM_CLEAR, math.log(SEAM_CLEAR), 0.0),  # a clear seam explains it (a paste)
        (math.sqrt(SEAM_NONE * SEAM_CLEAR), 0.5 * math.log(SEAM_NONE * SEAM_CLEAR), 0.375),
        (1e-9, -2.0, 0.75),  # flat: clipped
        (1e9, 4.0, 0.0),
        (float("nan"), 0.0, 0.0),  # the frame never lies inside the query: nothing to check
        (None, 0.0, 0.0),  # not measured
    ])
    def test_seam_terms(self, seam, log_seam, seamless):
        ev = _ev(query_frame_in_reference=1.0, reference_frame_in_query=0.25, frame_seam=seam)
        f = dict(zip(FEATURE_NAMES, pair_features(ev, GlobalEvidence(), 0.0)))
        assert f["frame_seam"] == pytest.approx(log_seam)
        assert f["inside_without_seam"] == pytest.approx(seamless)

    def test_seam_ignored_without_a_fit(self):
        f = dict(zip(FEATURE_NAMES, pair_features(PairEvidence(reason="degenerate", frame_seam=1.0),
                                                  GlobalEvidence(), 0.0)))
        assert f["frame_seam"] == 0 and f["inside_without_seam"] == 0


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    logit = 2.0 * x[:, 1] - 1.5 * x[:, 12] + 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y


class TestFit:
    def test_recovers_signs_and_separates(self):
        x, y = _data()
        m = fit_fusion(x, y)
        w = dict(zip(m.features, m.weights))
        assert w["log1p_inliers"] > 1.0 and w["log_norm_ratio"] < -0.8
        assert abs(w["coverage"]) < 0.3
        p = m.predict(x)
        assert ((p > 0.5) == (y > 0.5)).mean() > 0.75
        assert np.all((p >= 0) & (p <= 1))

    def test_feature_subset(self):
        x, y = _data()
        m = fit_fusion(x, y, features=("log1p_inliers",))
        assert m.features == ("log1p_inliers",) and len(m.weights) == 1
        assert m.predict(x).shape == (len(x),)

    def test_needs_both_classes(self):
        x, _ = _data(50)
        with pytest.raises(ValueError, match="both positive and negative"):
            fit_fusion(x, np.ones(50))

    def test_deterministic(self):
        x, y = _data()
        assert fit_fusion(x, y) == fit_fusion(x, y)


class TestModelFile:
    def test_round_trip_and_explain(self, tmp_path):
        x, y = _data()
        m = fit_fusion(x, y, gate_margin=0.3, source="test")
        p = tmp_path / "fusion.json"
        m.save(p, data={"note": "synthetic"})
        back = load_fusion(p)
        assert isinstance(back, FusionModel) and back == m
        assert json.loads(p.read_text())["data"] == {"note": "synthetic"}
        contrib = back.explain(x[0])
        logit = sum(v for k, v in contrib.items())
        assert logit == pytest.approx(float(back.logits(x[:1])[0]), abs=1e-3)
        assert abs(next(iter(contrib.values()))) >= abs(list(contrib.values())[1])

    def test_missing_and_bad_files(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.json"):
            load_fusion(tmp_path / "nope.json")
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(ValueError, match="bad.json"):
            load_fusion(bad)
        other = tmp_path / "other.json"
        other.write_text(json.dumps({"format": "something-else"}))
        with pytest.raises(ValueError, match="not an icd-fusion"):
            load_fusion(other)
        x, y = _data()
        d = json.loads(json.dumps({"format": "icd-fusion/1", **{k: v for k, v in fit_fusion(x, y).__dict__.items()}}))
        d["weights"] = d["weights"][:-1]
        short = tmp_path / "short.json"
        short.write_text(json.dumps(d))
        with pytest.raises(ValueError, match="short.json"):
            load_fusion(short)
