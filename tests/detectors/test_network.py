"""detectors.network: the plain-PyTorch YOLOv8 matches ultralytics' DetectionModel (keys, shapes, outputs).

ultralytics runs only in a child process (offline, config in a temp folder), so this process stays clean."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detectors.network import SCALES, build_network, scale_from_yaml

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights" / "detector_yolov8n.pt"
SHAPES = ((2, 3, 320, 320), (2, 3, 256, 320))
BUILDS = (*((f"yolov8{s}.yaml", 1) for s in SCALES), ("yolov8n.yaml", 80))
PROB_TOL, BOX_TOL = 1e-4, 1e-2  # class probabilities, box coordinates (px)

_REFERENCE = textwrap.dedent("""
    import ast
    import sys

    import torch
    from ultralytics.nn.tasks import DetectionModel

    weights, out, shapes, builds = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3]), ast.literal_eval(sys.argv[4])
    res = {"shapes": {}, "outputs": {}}
    for yaml, nc in builds:
        sd = DetectionModel(yaml, ch=3, nc=nc, verbose=False).state_dict()
        res["shapes"][(yaml, nc)] = {k: tuple(v.shape) for k, v in sd.items()}
    torch.manual_seed(0)  # random yolov8n, nc=2, with non-trivial BN statistics (needs no shipped weights)
    model = DetectionModel("yolov8n.yaml", ch=3, nc=2, verbose=False).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        res["random"] = {"state": model.state_dict(), "x": x, "y": model(x)[0]}
        res["random"]["y_fused"] = model.fuse(verbose=False)(x)[0]
    if weights:
        model = DetectionModel("yolov8n.yaml", ch=3, nc=1, verbose=False).eval()
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
        torch.manual_seed(0)
        inputs = [torch.rand(s) for s in shapes]
        res["inputs"] = inputs
        with torch.no_grad():
            for fused in (False, True):
                if fused:
                    model.fuse(verbose=False)
                for x in inputs:
                    res["outputs"][(fused, tuple(x.shape))] = model(x)[0]
    torch.save(res, out)
""")


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp / "ultralytics-config"), YOLO_VERBOSE="False",
               MPLCONFIGDIR=str(tmp / "matplotlib"), PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """State dict shapes for BUILDS and, with the shipped weights, yolov8n outputs for SHAPES, from ultralytics."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    tmp = tmp_path_factory.mktemp("ultralytics-ref")
    out = tmp / "ref.pt"
    weights = str(WEIGHTS) if WEIGHTS.is_file() else ""
    cmd = [sys.executable, "-c", _REFERENCE, weights, str(out), repr(SHAPES), repr(BUILDS)]
    proc = subprocess.run(cmd, check=False, cwd=tmp, env=_clean_env(tmp), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"reference subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return torch.load(out, map_location="cpu", weights_only=False)


def _shipped_network() -> torch.nn.Module:
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    net = build_network("yolov8n.yaml", nc=1)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    return net


@pytest.mark.parametrize(("yaml", "nc"), BUILDS)
def test_state_dict_keys_and_shapes_match_ultralytics(reference: dict, yaml: str, nc: int) -> None:
    ours = {k: tuple(v.shape) for k, v in build_network(yaml, nc).state_dict().items()}
    theirs = reference["shapes"][(yaml, nc)]
    assert sorted(set(theirs) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(theirs)) == [], "unexpected keys"
    assert {k: s for k, s in ours.items() if s != theirs[k]} == {}, "shape mismatches (ours)"


def test_outputs_match_ultralytics_unfused_and_fused(reference: dict) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"shipped weights {WEIGHTS} not found")
    net = _shipped_network()
    report = []
    with torch.no_grad():
        for fused in (False, True):
            if fused:
                net.fuse()
            for x in reference["inputs"]:
                want = reference["outputs"][(fused, tuple(x.shape))]
                got = net(x)
                assert got.shape == want.shape == (x.shape[0], 5, x.shape[2] * x.shape[3] * 21 // 1024)
                box = (got[:, :4] - want[:, :4]).abs().max().item()
                prob = (got[:, 4:] - want[:, 4:]).abs().max().item()
                report.append(f"fused={fused} {tuple(x.shape)}: box {box:.2e} px, prob {prob:.2e}")
                assert box < BOX_TOL and prob < PROB_TOL, "max abs differences: " + "; ".join(report)
    print("\n".join(report))


def test_random_weights_match_ultralytics(reference: dict) -> None:
    ref = reference["random"]
    net = build_network("yolov8n.yaml", nc=2)
    net.load_state_dict(ref["state"], strict=True)
    with torch.no_grad():
        for fused, want in ((False, ref["y"]), (True, ref["y_fused"])):
            got = (net.fuse() if fused else net)(ref["x"])
            assert got.shape == want.shape == (1, 6, 128 * 160 * 21 // 1024)
            box = (got[:, :4] - want[:, :4]).abs().max().item()
            prob = (got[:, 4:] - want[:, 4:]).abs().max().item()
            assert box < BOX_TOL and prob < PROB_TOL, f"fused={fused}: max abs box {box:.2e} px, prob {prob:.2e}"


def test_fuse_keeps_outputs_and_drops_batchnorm() -> None:
    torch.manual_seed(1)
    net = build_network("yolov8n.yaml", nc=2)
    for m in net.modules():  # non-trivial BN statistics, so folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = net(x)
        after = net.fuse()(x)
    assert before.shape == (1, 6, 64 * 96 * 21 // 1024)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert (before - after).abs().max().item() < 1e-3


@pytest.mark.parametrize("yaml", ["yolov8.yaml", "yolov8q.yaml", "yolo11n.yaml", "yolov5n.yaml", ""])
def test_unknown_yaml_raises(yaml: str) -> None:
    with pytest.raises(ValueError, match=repr(yaml).replace(".", r"\.")):
        build_network(yaml)


def test_scale_from_yaml() -> None:
    assert [scale_from_yaml(f"yolov8{s}.yaml") for s in "nsmlx"] == list("nsmlx")
    assert scale_from_yaml("some/dir/yolov8s.yaml") == "s"


def test_input_size_must_be_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        build_network()(torch.rand(1, 3, 100, 96))


def test_import_and_use_do_not_import_ultralytics(tmp_path: Path) -> None:
    code = ("import sys, torch, detectors.network as n; "
            "net = n.build_network('yolov8n.yaml', 1); "
            "y = net.fuse()(torch.rand(1, 3, 64, 64)); assert y.shape == (1, 5, 84), y.shape; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ultralytics', 'matcher', 'cv2', 'PIL')); "
            "assert not bad, bad; print('clean')")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=_clean_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr
