"""Synthetic detector data: determinism, YOLO label format, boxes on the pasted content, split by source."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from detectors import synth
from detectors.synth import SynthConfig, SynthError, make_detector_data, make_example, split_sources

SMALL = SynthConfig(min_side=96, max_side=128, canvas_side=(160, 224))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 small photos: crops of scikit-image's bundled pictures."""
    folder = tmp_path_factory.mktemp("photos")
    sources = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    k = 0
    for img in sources:
        h, w = img.shape[:2]
        for (y, x) in ((0, 0), (h // 3, w // 3), (h // 2, 0)):
            crop = img[y:y + h // 2, x:x + w // 2]
            Image.fromarray(crop).resize((120, 90)).save(folder / f"p{k:02d}.jpg", quality=90)
            k += 1
    return folder


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix in (".jpg", ".txt")}


def test_same_seed_same_bytes_other_seed_differs(photos: Path, tmp_path: Path) -> None:
    a = make_detector_data(photos, tmp_path / "a", n_train=6, n_val=3, seed=3, config=SMALL)
    make_detector_data(photos, tmp_path / "b", n_train=6, n_val=3, seed=3, config=SMALL)
    make_detector_data(photos, tmp_path / "c", n_train=6, n_val=3, seed=4, config=SMALL)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a.counts == {"train": 6, "val": 3}
    assert len(fa) == 18 and fa == fb
    assert fa != fc


def test_labels_are_valid_yolo_and_match_manifest(photos: Path, tmp_path: Path) -> None:
    make_detector_data(photos, tmp_path, n_train=12, n_val=4, seed=1, config=SMALL)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "nc: 1" in (tmp_path / "data.yaml").read_text()
    n_boxes = 0
    for rec in manifest["examples"]:
        img = Image.open(tmp_path / "images" / rec["split"] / f"{rec['name']}.jpg")
        assert list(img.size) == rec["size"] and 96 <= max(img.size) <= 128
        lines = (tmp_path / "labels" / rec["split"] / f"{rec['name']}.txt").read_text().splitlines()
        assert len(lines) == len(rec["boxes"])
        if rec["layout"] == "none":
            assert lines == []
        w, _h = img.size
        for line, box in zip(lines, rec["boxes"]):
            c, cx, cy, bw, bh = line.split()
            vals = np.array([cx, cy, bw, bh], float)
            assert c == "0" and np.all(vals >= 0) and np.all(vals <= 1) and vals[2] > 0 and vals[3] > 0
            assert abs(float(cx) * w - (box[0] + box[2]) / 2) < 0.02 and abs(float(bw) * w - (box[2] - box[0])) < 0.02
            n_boxes += 1
    assert n_boxes > 0


def _black_white_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """First photo of an example (the background) black, every later one (the pastes) white."""
    state = {"n": 0}

    def draw(self: synth._Pool) -> np.ndarray:
        state["n"] += 1
        self.used.append(f"x{state['n']}")
        return np.full((90, 120, 3), 0 if len(self.used) == 1 else 255, np.uint8)

    monkeypatch.setattr(synth._Pool, "draw", draw)


def test_paste_boxes_are_exactly_the_pasted_content(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _black_white_pool(monkeypatch)
    cfg = SynthConfig(min_side=200, max_side=200, canvas_side=(400, 400), card_prob=0.0, rotate_prob=0.0,
                      border_prob=0.0, shadow_prob=0.0, opacity_prob=0.0, edit_pictures=False, distractor_prob=0.0)
    paths = sorted(photos.glob("*.jpg"))
    seen = 0
    for i in range(8):
        ex = make_example(paths, np.random.default_rng(i), cfg, layout="paste")
        white = ex.image.mean(axis=2) > 128
        covered = np.zeros_like(white)
        for x0, y0, x1, y1 in ex.boxes:
            inner = white[int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
            assert inner.mean() > 0.98  # the box holds pasted (white) content ...
            covered[max(0, int(y0) - 1):int(np.ceil(y1)) + 1, max(0, int(x0) - 1):int(np.ceil(x1)) + 1] = True
            seen += 1
        assert not white[~covered].any()  # ... and every pasted pixel lies in a box
    assert seen >= 8


def test_rotated_pastes_boxes_hold_the_content(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _black_white_pool(monkeypatch)
    cfg = SynthConfig(min_side=200, max_side=200, canvas_side=(400, 400), card_prob=0.0, rotate_prob=1.0,
                      border_prob=0.0, shadow_prob=0.0, opacity_prob=0.0, edit_pictures=False, distractor_prob=0.0)
    ex = make_example(sorted(photos.glob("*.jpg")), np.random.default_rng(5), cfg, layout="paste")
    white = ex.image.mean(axis=2) > 128
    covered = np.zeros_like(white)
    for x0, y0, x1, y1 in ex.boxes:
        assert white[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].mean() > 0.7  # rotated rectangle's bbox
        covered[max(0, int(y0) - 1):int(np.ceil(y1)) + 1, max(0, int(x0) - 1):int(np.ceil(x1)) + 1] = True
    assert len(ex.boxes) >= 1 and not white[~covered].any()


def test_mosaic_and_meme_boxes(photos: Path) -> None:
    paths = sorted(photos.glob("*.jpg"))
    cfg = SynthConfig(min_side=200, max_side=200, distractor_prob=0.0)
    ex = make_example(paths, np.random.default_rng(2), cfg, layout="mosaic")
    h, w = ex.image.shape[:2]
    areas = (ex.boxes[:, 2] - ex.boxes[:, 0]) * (ex.boxes[:, 3] - ex.boxes[:, 1])
    assert len(ex.boxes) >= 2 and areas.sum() <= w * h + 1 and areas.sum() > 0.85 * w * h
    ex = make_example(paths, np.random.default_rng(2), cfg, layout="meme")
    assert len(ex.boxes) == 1 and ex.boxes[0][0] == 0 and abs(ex.boxes[0][2] - ex.image.shape[1]) < 1e-6
    ex = make_example(paths, np.random.default_rng(2), cfg, layout="none")
    assert len(ex.boxes) == 0


def test_split_by_source_photo(photos: Path, tmp_path: Path) -> None:
    pools = split_sources(sorted(photos.glob("*.jpg")), seed=0, val_fraction=0.25)
    assert len(pools["val"]) == 3 and len(pools["train"]) == 9
    assert not set(pools["val"]) & set(pools["train"])
    make_detector_data(photos, tmp_path, n_train=10, n_val=6, seed=0, val_fraction=0.25, config=SMALL)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    used = {"train": set(), "val": set()}
    for rec in manifest["examples"]:
        used[rec["split"]].update(rec["sources"])
    assert used["val"] <= set(manifest["sources"]["val"]) and used["train"] <= set(manifest["sources"]["train"])
    assert not used["val"] & used["train"] and used["val"]


def test_overlay_class_labels_text_and_emoji(photos: Path) -> None:
    cfg = SynthConfig(min_side=160, max_side=160, distractor_prob=1.0, overlay_class=True)
    classes = np.concatenate([make_example(sorted(photos.glob("*.jpg")), np.random.default_rng(i), cfg).classes
                              for i in range(6)])
    assert set(classes.tolist()) == {0, 1}


def test_too_few_photos_is_a_clear_error(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "one.jpg")
    with pytest.raises(SynthError, match="at least 10 photos"):
        make_detector_data(tmp_path, tmp_path / "out", n_train=2, n_val=1)
