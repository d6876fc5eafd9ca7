"""``icd serve`` refuses what it cannot serve before starting (exit 2, a message naming the folder). The server
itself is tested through real HTTP in tests/service."""
from __future__ import annotations

import pytest

from matcher.cli import main


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "absent", "no such folder"),
    (lambda p: p, "no icd-matcher index here"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "not a folder"),
])
def test_serve_refuses_a_folder_without_an_index(tmp_path, capsys, make, expected):
    folder = make(tmp_path)
    assert main(["serve", "--index", str(folder), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(folder) in err


def test_serve_refuses_bad_limits(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path), "--inference-slots", "0"]) == 2
    assert "--inference-slots" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path), "--max-connections", "0"]) == 2
    assert "--max-connections" in capsys.readouterr().err
