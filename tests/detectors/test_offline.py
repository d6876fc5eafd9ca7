"""ultralytics stays offline and writes only under the chosen folder (checked in a fresh interpreter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, socket, sys
calls = []
def _blocked(*a, **k):
    calls.append(repr(a[:2]))
    raise OSError("network disabled in test")
socket.getaddrinfo = _blocked
socket.create_connection = _blocked
from detectors.offline import prepare_ultralytics
cfg = prepare_ultralytics(sys.argv[1])
from detectors.train import build_training_model
build_training_model("yolov8n.yaml", nc=1)
from ultralytics.utils import ONLINE, SETTINGS, checks
print(json.dumps({"cfg": str(cfg), "online": ONLINE, "sync": SETTINGS["sync"], "runs": SETTINGS["runs_dir"],
                  "font": checks.check_font("Arial.ttf"), "calls": calls}))
"""


def test_offline_quiet_and_contained(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_", "MPLCONFIGDIR"))}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["online"] is False and info["sync"] is False and info["font"] is None
    assert info["calls"] == []  # nothing tried to reach the network
    assert Path(info["cfg"]).is_relative_to(out) and Path(info["runs"]).is_relative_to(out)
    assert (out / "ultralytics-config" / "Ultralytics" / "settings.json").is_file()
    assert list(home.rglob("*")) == []  # nothing written to ~/.config or anywhere else in HOME
    assert "Ultralytics" not in res.stdout and res.stderr.strip() == ""  # quiet
