"""Using the library leaves the host process as it was: its environment, ``PIL.Image.open``, OpenCV's and torch's
thread counts, numpy's print options, torch's and numpy's random generators, and ultralytics' settings file in the
user's HOME (checked in fresh interpreters, with a
temporary HOME, running detection through the API)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import hashlib, json, os, sys
host_first = sys.argv[1] == "ultralytics-first"
if host_first:
    import ultralytics  # the host program uses ultralytics itself, and imported it before us
    from ultralytics.utils import SETTINGS
    SETTINGS.update({"runs_dir": "/host/runs"})  # the user's own setting
import cv2, numpy as np, PIL.Image, torch
settings = os.path.join(os.environ["HOME"], ".config", "Ultralytics", "settings.json")
def digest():
    return hashlib.sha256(open(settings, "rb").read()).hexdigest() if os.path.exists(settings) else None
def rng_state():
    return (torch.get_rng_state().numpy().tobytes(), json.dumps(np.random.get_state()[1].tolist()))
before = {"env": dict(os.environ), "open": PIL.Image.open, "cv2": cv2.getNumThreads(),
          "np": np.get_printoptions(), "settings": digest(), "rng": rng_state(), "threads": torch.get_num_threads()}

from matcher import Matcher
rng = np.random.default_rng(0)
ref = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
query = np.full((300, 400, 3), 90, np.uint8)
query[40:280, 50:370] = ref  # the reference pasted into another picture
m = Matcher.from_pretrained()
state = m.pipeline.components()
pair = m.score(query, ref)  # describes the query's variants, the detector's among them

after = {"env": dict(os.environ), "open": PIL.Image.open, "cv2": cv2.getNumThreads(),
         "np": np.get_printoptions(), "settings": digest(), "rng": rng_state(), "threads": torch.get_num_threads()}
print(json.dumps({
    "env_changed": sorted(k for k in set(before["env"]) | set(after["env"])
                          if before["env"].get(k) != after["env"].get(k)),
    "open_same": before["open"] is after["open"], "cv2_same": before["cv2"] == after["cv2"],
    "np_same": before["np"] == after["np"], "rng_same": before["rng"] == after["rng"],
    "threads_same": before["threads"] == after["threads"], "settings_before": before["settings"],
    "settings_after": after["settings"], "ultralytics_loaded": "ultralytics" in sys.modules,
    "detector": state["detector"], "detector_ran": "detectors.network" in sys.modules,
    "score": pair.score,
}))
"""


def _run(tmp_path: Path, mode: str) -> tuple[dict, Path]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_", "MPLCONFIGDIR"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", _SCRIPT, mode], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), home


@pytest.mark.slow
def test_host_that_imported_ultralytics_first_keeps_its_settings(tmp_path: Path) -> None:
    out, home = _run(tmp_path, "ultralytics-first")
    settings = home / ".config" / "Ultralytics" / "settings.json"
    assert settings.is_file() and json.loads(settings.read_text())["runs_dir"] == "/host/runs"
    assert out["settings_before"] is not None and out["settings_after"] == out["settings_before"]
    assert out["env_changed"] == [] and out["open_same"] and out["cv2_same"] and out["np_same"]
    assert out["rng_same"] and out["threads_same"]
    assert not out["detector"].startswith("inactive") and out["detector_ran"]


@pytest.mark.slow
def test_without_ultralytics_nothing_global_changes(tmp_path: Path) -> None:
    out, home = _run(tmp_path, "plain")
    assert out["env_changed"] == [] and out["open_same"] and out["cv2_same"] and out["np_same"]
    assert out["rng_same"] and out["threads_same"]  # random generators and thread counts untouched
    assert out["ultralytics_loaded"] is False  # detection runs on our own network, not ultralytics'
    assert not out["detector"].startswith("inactive") and out["detector_ran"]
    assert list(home.rglob("*")) == []  # nothing written under HOME
    assert 0.0 <= out["score"] <= 1.0
