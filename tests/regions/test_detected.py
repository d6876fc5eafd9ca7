"""Detected boxes as regions: one filter (class, size, area), the batched detector pass, the "yolo" proposer
configured through the MatcherConfig it is created with, and the fallback when the weights are unusable."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.detect import Detection
from detectors.model import DetectorMeta, build_model, save_detector
from matcher.config import MatcherConfig
from matcher.regions import detected
from matcher.regions.detected import detect_picture_regions, detector_config, regions_from_detections
from matcher.regions.proposers import PROPOSERS, propose_regions
from matcher.regions.region import Region
from matcher.resources import DETECTOR_WEIGHTS, shipped_path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    return save_detector(build_model("yolov8n.yaml", nc=1), tmp_path_factory.mktemp("w") / "tiny.pt",
                         DetectorMeta(imgsz=96))


def _config(weights: Path | str, **detector: object) -> MatcherConfig:
    return MatcherConfig.make(detector={"weights": str(weights), **detector})


class TestRegionsFromDetections:
    def test_keeps_pictures_of_usable_size_in_order(self) -> None:
        dets = [Detection((10, 10, 60, 50), 0.9, 0), Detection((0, 0, 200, 100), 0.8, 0),  # whole picture
                Detection((5, 5, 15, 90), 0.7, 0),  # 10 px wide: too thin
                Detection((100, 20, 180, 90), 0.6, 1),  # another class
                Detection((120.4, 30.6, 170.2, 80.1), 0.5, 0)]
        regs = regions_from_detections(dets, 200, 100, picture_classes={0})
        assert [r.tag for r in regs] == ["yolo:0", "yolo:1"]
        assert regs[0].box == (10, 10, 60, 50) and regs[0].score == 0.9
        assert regs[1].box == (120, 30, 171, 81)  # rounded outwards
        assert len(regions_from_detections(dets, 200, 100)) == 3  # every class

    def test_nothing_detected(self) -> None:
        assert regions_from_detections([], 64, 64) == []


def test_detector_config_resolves_the_shipped_weights() -> None:
    cfg = detector_config(MatcherConfig())
    assert Path(cfg.weights) == shipped_path(DETECTOR_WEIGHTS)
    assert detector_config(_config("/x/y.pt")).weights == "/x/y.pt"
    other = detector_config(MatcherConfig.make(weights_dir="/elsewhere"))
    assert Path(other.weights) == Path("/elsewhere") / DETECTOR_WEIGHTS


def test_batched_detection_gives_regions(weights: Path) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (90, 140, 3), dtype=np.uint8), rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)]
    regs = detect_picture_regions(images, _config(weights, conf=0.0, max_boxes=20))
    assert len(regs) == 2
    for im, rs in zip(images, regs):
        h, w = im.shape[:2]
        assert all(isinstance(r, Region) and r.score is not None for r in rs)
        assert [r.tag for r in rs] == [f"yolo:{i}" for i in range(len(rs))]
        assert all(min(r.crop_size) >= 16 and r.crop_size[0] * r.crop_size[1] < 0.9 * w * h for r in rs)
    assert detect_picture_regions([], _config(weights)) == []


def test_yolo_proposer_uses_the_config_it_is_given(weights: Path) -> None:
    assert "yolo" in PROPOSERS
    img = np.random.default_rng(4).integers(0, 256, (160, 200, 3), dtype=np.uint8)
    cfg = _config(weights, conf=0.0, max_boxes=20)
    regs = propose_regions(img, ["yolo", "full"], config=cfg)
    assert regs[-1].tag == "full" and len({r.key() for r in regs}) == len(regs)  # deduplicated
    direct = detect_picture_regions([img], cfg)[0]
    assert [r.box for r in regs if r.tag.startswith("yolo")] == [r.box for r in direct]
    # another config, another detector setting: a confidence above every score keeps nothing
    assert [r.tag for r in propose_regions(img, ["yolo", "full"], config=_config(weights, conf=1.01))] == ["full"]


def test_missing_weights_fall_back_and_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    img = np.zeros((64, 96, 3), np.uint8)
    detected._WARNED.clear()
    cfg = _config(tmp_path / "absent.pt")
    with caplog.at_level(logging.WARNING, logger="matcher.regions.detected"):
        first = propose_regions(img, ["yolo"], config=cfg)
        second = propose_regions(img, ["yolo"], config=cfg)
        none = detect_picture_regions([img], cfg)
    assert [r.tag for r in first] == ["grid2:r0c0", "grid2:r0c1", "grid2:r1c0", "grid2:r1c1"] and first == second
    assert none == [[]]
    msgs = [r.getMessage() for r in caplog.records if "detector unavailable" in r.getMessage()]
    assert len(msgs) == 1 and "icd train-detector" in msgs[0]
