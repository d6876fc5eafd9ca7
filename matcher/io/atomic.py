"""Atomic file writing: write to a temp file in the target's directory, fsync, then ``os.replace``.

Readers never see a half-written file: the target either keeps its old content or gets the complete new one.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _default_file_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give a new file (0o666 minus the umask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # no /proc: read the umask the only portable way, and put it back at once
    os.umask(umask)
    return 0o666 & ~umask


def _target_mode(target: Path) -> int:
    """Keep an existing file's permission bits; a new file gets the umask default (mkstemp makes 0o600)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return _default_file_mode()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; best effort (not every platform/file system allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced atomically when the ``with`` block ends without error.

    ``mode`` is "w"/"wt" (text, ``encoding``/``newline`` as for :func:`open`) or "wb" (binary). The data go to a
    temp file ``.<name>.<random>.tmp`` in the same directory, which is flushed, fsynced and moved over ``path``
    with ``os.replace``. If the block raises, the temp file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write mode must be 'w', 'wt' or 'wb', got {mode!r}")
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _target_mode(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (no newline translation)."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
