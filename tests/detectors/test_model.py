"""Detector weights: pickle-free save/load round trip and clear errors for missing or broken files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detectors.model import (
    DetectorMeta,
    DetectorWeightsError,
    build_model,
    load_detector,
    meta_path,
    save_detector,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("yolov8n.yaml", nc=1)
    path = save_detector(model, tmp_path_factory.mktemp("w") / "det.pt", DetectorMeta(imgsz=96, extra={"note": 1}))
    return model, path


def test_round_trip_weights_only(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    sd = torch.load(path, weights_only=True)  # a plain state dict: loads without unpickling objects
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    meta = json.loads(meta_path(path).read_text())
    assert meta["nc"] == 1 and meta["names"] == ["picture"] and meta["imgsz"] == 96 and meta["note"] == 1
    loaded, lmeta = load_detector(path)
    assert lmeta.imgsz == 96 and lmeta.extra["note"] == 1
    x = torch.rand(1, 3, 96, 96)
    with torch.inference_mode():
        a, b = model.eval()(x), loaded(x)
    assert a.shape == b.shape == (1, 5, 189)
    assert torch.allclose(a[:, 4:], b[:, 4:], atol=2e-2) and torch.allclose(a[:, :4], b[:, :4], atol=1.0)


def test_missing_file_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(DetectorWeightsError, match="file not found.*icd train-detector"):
        load_detector(tmp_path / "none.pt")


def test_missing_metadata(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    p = tmp_path / "lonely.pt"
    p.write_bytes(saved[1].read_bytes())
    with pytest.raises(DetectorWeightsError, match="metadata file .* is missing"):
        load_detector(p)


def _copy_meta(src: Path, dst: Path) -> None:
    meta_path(dst).write_text(meta_path(src).read_text())


def test_corrupt_file(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    p = tmp_path / "bad.pt"
    p.write_bytes(saved[1].read_bytes()[:5000])  # truncated
    _copy_meta(saved[1], p)
    with pytest.raises(DetectorWeightsError, match="cannot be read as a weights-only state dict"):
        load_detector(p)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


def test_pickled_objects_are_refused(saved: tuple[torch.nn.Module, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, p)
    _copy_meta(saved[1], p)
    with pytest.raises(DetectorWeightsError, match="weights-only"):
        load_detector(p)
    assert "unpickled!" not in capsys.readouterr().out


def test_wrong_class_count(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    p = tmp_path / "two.pt"
    p.write_bytes(saved[1].read_bytes())
    meta = json.loads(meta_path(saved[1]).read_text())
    meta.update(nc=2, names=["picture", "overlay"])
    meta_path(p).write_text(json.dumps(meta))
    with pytest.raises(DetectorWeightsError, match="shapes do not fit yolov8n.yaml with nc=2"):
        load_detector(p)


def test_bad_metadata(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    p.write_bytes(saved[1].read_bytes())
    meta_path(p).write_text("{not json")
    with pytest.raises(DetectorWeightsError, match="not valid"):
        load_detector(p)
