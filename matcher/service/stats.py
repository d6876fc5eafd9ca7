"""Request counters and latency percentiles of the service (``GET /stats``)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

__all__ = ["RequestStats"]


class RequestStats:
    """Counts requests per route and status, and keeps the latest ``window`` latencies per route. Thread-safe."""

    def __init__(self, window: int = 10_000) -> None:
        self.started = time.time()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._window = int(window)
        self._counts: dict[str, collections.Counter[int]] = {}
        self._latency: dict[str, collections.deque[float]] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        """One finished request: its route template (e.g. ``POST /match``), HTTP status and wall time."""
        with self._lock:
            self._counts.setdefault(route, collections.Counter())[int(status)] += 1
            self._latency.setdefault(route, collections.deque(maxlen=self._window)).append(float(seconds))

    @property
    def uptime(self) -> float:
        """Seconds since the service started."""
        return time.monotonic() - self._t0

    def snapshot(self) -> dict[str, Any]:
        """Per route: requests, errors (status >= 400), by status, and p50/p95/p99/max latency in ms over the
        latest ``window`` requests."""
        with self._lock:
            counts = {k: dict(v) for k, v in self._counts.items()}
            lat = {k: np.asarray(v, np.float64) for k, v in self._latency.items()}
        routes: dict[str, Any] = {}
        for route in sorted(counts):
            by_status = counts[route]
            ms = lat[route] * 1000.0
            p50, p95, p99 = (float(x) for x in np.percentile(ms, [50, 95, 99])) if len(ms) else (0.0, 0.0, 0.0)
            routes[route] = {
                "requests": sum(by_status.values()),
                "errors": sum(n for s, n in by_status.items() if s >= 400),
                "by_status": {str(s): n for s, n in sorted(by_status.items())},
                "latency_ms": {"p50": round(p50, 2), "p95": round(p95, 2), "p99": round(p99, 2),
                               "max": round(float(ms.max()), 2) if len(ms) else 0.0, "window": len(ms)},
            }
        return {"requests": sum(r["requests"] for r in routes.values()),
                "errors": sum(r["errors"] for r in routes.values()), "routes": routes}
