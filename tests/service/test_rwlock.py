"""The service's readers-writer lock: readers share it, a writer holds it alone, a waiting writer is not starved."""
from __future__ import annotations

import threading
import time

from matcher.service.rwlock import ReadWriteLock


def test_readers_share_and_writers_exclude():
    lock = ReadWriteLock()
    inside = {"readers": 0, "writers": 0, "max_readers": 0, "overlap": False}
    guard = threading.Lock()

    def reader() -> None:
        with lock.read():
            with guard:
                inside["readers"] += 1
                inside["max_readers"] = max(inside["max_readers"], inside["readers"])
                inside["overlap"] |= inside["writers"] > 0
            time.sleep(0.02)
            with guard:
                inside["readers"] -= 1

    def writer() -> None:
        with lock.write():
            with guard:
                inside["writers"] += 1
                inside["overlap"] |= inside["readers"] > 0 or inside["writers"] > 1
            time.sleep(0.01)
            with guard:
                inside["writers"] -= 1

    threads = [threading.Thread(target=reader if i % 4 else writer) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside["overlap"] and inside["max_readers"] > 1


def test_waiting_writer_is_not_starved_by_new_readers():
    lock = ReadWriteLock()
    stop = threading.Event()
    wrote = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                time.sleep(0.005)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    time.sleep(0.02)

    def writer() -> None:
        with lock.write():
            wrote.set()

    w = threading.Thread(target=writer)
    w.start()
    try:
        assert wrote.wait(2.0)  # readers keep coming, yet the writer gets in
    finally:
        stop.set()
        for t in (*readers, w):
            t.join(5)
