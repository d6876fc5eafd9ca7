"""matcher.io.atomic.atomic_write: all-or-nothing file replacement."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from matcher.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_text_and_binary(tmp_path):
    p = tmp_path / "out.txt"
    with atomic_write(p) as fh:
        fh.write("héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"

    q = tmp_path / "arr.npy"
    with atomic_write(q, "wb") as fh:
        np.save(fh, np.arange(5))
    np.testing.assert_array_equal(np.load(q, allow_pickle=False), np.arange(5))

    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "a\r\nb")
    assert (tmp_path / "t.txt").read_bytes() == b"a\r\nb"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["arr.npy", "b.bin", "out.txt", "t.txt"]


def test_error_leaves_old_file_intact_and_no_temp(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(p) as fh:
        fh.write("new partial data")
        fh.flush()
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["keep.txt"]


def test_error_on_new_file_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "new.bin", "wb") as fh:
        fh.write(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_replace_failure_cleans_up(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OSError), atomic_write(tmp_path / "adir") as fh:
        fh.write("x")
    assert [x.name for x in tmp_path.iterdir()] == ["adir"]


def test_permissions(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("plain open")  # what a normal write would give under the current umask
    new = tmp_path / "new.txt"
    atomic_write_text(new, "x")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(ref.stat().st_mode)

    os.chmod(ref, 0o640)
    atomic_write_text(ref, "replaced")
    assert stat.S_IMODE(ref.stat().st_mode) == 0o640 and ref.read_text() == "replaced"


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    assert list(tmp_path.iterdir()) == []
