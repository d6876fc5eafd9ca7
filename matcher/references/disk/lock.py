"""The index folder's write lock: one writer at a time, released when its process dies.

A plain file lock on ``write.lock`` (``filelock``: ``flock`` on POSIX, ``msvcrt`` locking on Windows), taken
without waiting: a second writer is refused at once with :class:`~matcher.references.disk.schema.IndexStoreError`.
Readers never take it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import filelock

from matcher.references.disk.schema import LOCK_NAME, IndexStoreError

__all__ = ["write_lock"]


@contextlib.contextmanager
def write_lock(folder: Path, message: str) -> Iterator[None]:
    """Hold the exclusive lock of ``folder/write.lock`` for the block; :class:`IndexStoreError` with ``message``
    when another process (or another open store in this one) holds it. OSError when the lock file cannot be
    created (e.g. a read-only medium)."""
    lock = filelock.FileLock(str(folder / LOCK_NAME), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise IndexStoreError(message) from None
    try:
        yield
    finally:
        lock.release()
