"""detect_regions on a tiny random model and the letterbox mapping (boxes as regions: tests/regions)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.detect import Detection, Detector, detect_regions, letterbox
from detectors.model import DetectorMeta, build_model, default_weights, save_detector
from matcher.config import DetectorConfig, MatcherConfig


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = build_model("yolov8n.yaml", nc=1)
    return save_detector(model, tmp_path_factory.mktemp("w") / "tiny.pt", DetectorMeta(imgsz=96))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (80, 120, 3), dtype=np.uint8), rng.integers(0, 256, (150, 60, 3), dtype=np.uint8),
            rng.integers(0, 256, (64, 64), dtype=np.uint8)]


def test_letterbox_maps_points() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[10, 20] = 255
    canvas, r, (px, py) = letterbox(img, 64)
    assert canvas.shape == (64, 64, 3) and r == pytest.approx(0.64) and px == 0 and py == 16
    assert canvas[0, 0, 0] == 114 and canvas[16, 0, 0] == 0


def test_detect_regions_types_conf_and_max_boxes(weights: Path, images: list[np.ndarray]) -> None:
    cfg = DetectorConfig(weights=str(weights), conf=0.0, max_boxes=7, batch_size=2, device="cpu")
    dets = detect_regions(images, cfg)
    assert len(dets) == 3
    for im, ds in zip(images, dets):
        assert 0 < len(ds) <= 7
        assert all(isinstance(d, Detection) and d.cls == 0 for d in ds)
        scores = [d.score for d in ds]
        assert scores == sorted(scores, reverse=True)
        h, w = im.shape[:2]
        for x0, y0, x1, y1 in (d.box for d in ds):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # a confidence above every score keeps nothing; max_boxes=0 keeps nothing
    top = max(d.score for ds in dets for d in ds)
    assert detect_regions(images, DetectorConfig(weights=str(weights), conf=top + 1e-3)) == [[], [], []]
    assert detect_regions(images[0], DetectorConfig(weights=str(weights), max_boxes=0, conf=0.0)) == [[]]


def test_batching_does_not_change_results(weights: Path, images: list[np.ndarray]) -> None:
    one = detect_regions(images, DetectorConfig(weights=str(weights), conf=0.0, batch_size=1))
    three = detect_regions(images, MatcherConfig.make(detector={"weights": str(weights), "conf": 0.0}))
    for a, b in zip(one, three):  # a random model has near-equal scores: compare as sets, not in order
        assert len(a) == len(b)
        assert np.allclose([d.score for d in a], [d.score for d in b], atol=1e-3)
        bb = np.array([d.box for d in b])
        found = [np.abs(bb - np.array(d.box)).max(axis=1).min() < 0.5 for d in a]
        assert np.mean(found) >= 0.8


def test_bad_input_is_refused(weights: Path) -> None:
    det = Detector.load(DetectorConfig(weights=str(weights)))
    with pytest.raises(ValueError, match="uint8"):
        det([np.zeros((32, 32, 3), np.float32)])
    assert detect_regions([], DetectorConfig(weights=str(weights))) == []


def test_shipped_weights_find_a_pasted_picture() -> None:
    from detectors.evidence import box_iou

    if not default_weights().is_file():
        pytest.skip("shipped detector weights not present")
    from skimage import data as skdata

    from detectors.synth import _cover

    for bg, fg, (x0, y0, x1, y1) in ((skdata.chelsea(), skdata.coffee(), (200, 100, 380, 260)),
                                     (skdata.rocket(), skdata.chelsea(), (40, 40, 240, 190))):
        canvas = _cover(bg, 400, 300).copy()
        canvas[y0:y1, x0:x1] = _cover(fg, x1 - x0, y1 - y0)  # a photo pasted into another photo
        dets = detect_regions(canvas, DetectorConfig())[0]
        assert dets and box_iou((x0, y0, x1, y1), np.array([d.box for d in dets])).max() >= 0.5
