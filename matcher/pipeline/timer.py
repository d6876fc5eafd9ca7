"""Seconds per named stage of a job (``with timer("stage"): ...``), for the end-of-job summary."""
from __future__ import annotations

import time
from collections import defaultdict

__all__ = ["StageTimer"]


class StageTimer:
    """Seconds spent per named stage; ``timer(name)`` is a context manager adding its wall time to ``name``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds[self.name] += time.perf_counter() - self.t0
