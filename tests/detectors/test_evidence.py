"""Detector agreement between the matched query area and detected boxes."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from detectors.detect import Detection
from detectors.evidence import box_iou, detector_agreement, pair_detector_agreement


def test_box_iou_known_values() -> None:
    ious = box_iou((0, 0, 10, 10), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]]))
    assert ious == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_agreement_picks_best_box_and_clips_quad() -> None:
    dets = [Detection((0, 0, 20, 20), 0.9), Detection((50, 40, 100, 80), 0.4)]
    quad = np.array([[48, 38], [110, 38], [110, 82], [48, 82]], float)  # sticks out of a 100 x 80 image
    ag = detector_agreement(quad, dets, image_size=(100, 80))
    assert ag.index == 1 and ag.score == pytest.approx(0.4)
    assert ag.iou == pytest.approx((50 * 40) / (52 * 42))
    assert ag.to_dict()["detector_box"] == [50, 40, 100, 80]


def test_no_detections_or_empty_area() -> None:
    assert detector_agreement((0, 0, 10, 10), []).iou == 0.0
    assert detector_agreement((0, 0, 10, 10), [(0, 0, 10, 10)]).iou == 1.0  # plain boxes work too
    assert detector_agreement((200, 200, 300, 300), [(0, 0, 10, 10)], image_size=(100, 100)).index == -1
    with pytest.raises(ValueError, match="box"):
        detector_agreement(np.zeros((2, 3)), [(0, 0, 1, 1)])


def test_pair_evidence_prefers_reference_quad() -> None:
    dets = [Detection((10, 10, 60, 60), 0.8)]
    ev = SimpleNamespace(reference_quad_in_query=[[10, 10], [60, 10], [60, 60], [10, 60]], query_box=[20, 20, 30, 30])
    assert pair_detector_agreement(ev, dets, (100, 100)).iou == pytest.approx(1.0)
    ev = SimpleNamespace(reference_quad_in_query=None, query_box=[20, 20, 30, 30])
    assert pair_detector_agreement(ev, dets).iou == pytest.approx(100 / 2500)
    assert pair_detector_agreement(SimpleNamespace(reference_quad_in_query=None, query_box=None), dets).iou == 0.0
