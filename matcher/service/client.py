"""A small client of the HTTP service (standard library only), and a bounded load generator.

    from matcher.service.client import ServiceClient
    c = ServiceClient("http://127.0.0.1:8000", token="...")
    c.match(open("query.jpg", "rb").read(), "query.jpg").body["matches"]
    c.add("poster-17", open("poster.jpg", "rb").read())
    c.remove("poster-17")
"""
from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import numpy as np

__all__ = ["LoadResult", "Reply", "ServiceClient", "encode_multipart", "run_load"]


@dataclass
class Reply:
    """An HTTP answer: status, JSON body (None when the body is not JSON: see ``text``), headers (lower-case)."""

    status: int
    body: Any
    headers: dict[str, str]
    text: str = ""


def encode_multipart(fields: dict[str, str] | None = None,
                     files: dict[str, tuple[str, bytes]] | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data form: text ``fields`` and ``files`` (field -> (file name,
    bytes))."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in (fields or {}).items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode()
        out += value.encode("utf-8") + b"\r\n"
    for name, (filename, data) in (files or {}).items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class ServiceClient:
    """Calls one ``icd serve`` at ``url`` (``http://host:port``), with the bearer ``token`` when given. A new
    connection per request, so one client may be used from many threads."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                headers: dict[str, str] | None = None, token: str | None | bool = True) -> Reply:
        """One request; ``token`` True sends the client's token, a string sends that one, None/False none."""
        h = dict(headers or {})
        tok = self.token if token is True else (token or None)
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        if content_type:
            h["Content-Type"] = content_type
        con = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            con.request(method, path, body=body, headers=h)
            resp = con.getresponse()
            raw = resp.read()
            headers_out = {k.lower(): v for k, v in resp.getheaders()}
            status = resp.status
        finally:
            con.close()
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, headers_out, text)

    def _form(self, path: str, fields: dict[str, str] | None, files: dict[str, tuple[str, bytes]],
              **kw: Any) -> Reply:
        body, ctype = encode_multipart(fields, files)
        return self.request("POST", path, body=body, content_type=ctype, **kw)

    def match(self, data: bytes, name: str = "query.jpg", *, top_k: int | None = None,
              min_score: float | None = None, **kw: Any) -> Reply:
        """``POST /match`` of one picture's file bytes."""
        params = {k: v for k, v in (("top_k", top_k), ("min_score", min_score)) if v is not None}
        path = "/match" + (f"?{urlencode(params)}" if params else "")
        return self._form(path, None, {"file": (name, data)}, **kw)

    def score(self, query: tuple[str, bytes], reference: tuple[str, bytes], **kw: Any) -> Reply:
        """``POST /score`` of two (name, bytes) pictures."""
        return self._form("/score", None, {"query": query, "reference": reference}, **kw)

    def add(self, ref_id: str, data: bytes, name: str | None = None, **kw: Any) -> Reply:
        """``POST /references``: add one picture as ``ref_id``."""
        return self._form("/references", {"id": ref_id}, {"file": (name or f"{ref_id}.jpg", data)}, **kw)

    def remove(self, ref_id: str, **kw: Any) -> Reply:
        """``DELETE /references/{ref_id}``."""
        return self.request("DELETE", f"/references/{quote(ref_id, safe='')}", **kw)

    def health(self, **kw: Any) -> Reply:
        return self.request("GET", "/health", **kw)

    def stats(self, **kw: Any) -> Reply:
        return self.request("GET", "/stats", **kw)


@dataclass
class LoadResult:
    """What :func:`run_load` saw: per-request latencies (s), statuses, transport errors, wall time (s)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Requests without a 2xx answer (HTTP errors and transport errors)."""
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300) + len(self.errors)

    def summary(self) -> dict[str, Any]:
        """Counts, requests/s and latency percentiles in ms."""
        ms = np.asarray(self.latencies, np.float64) * 1000.0
        pct = dict(zip(("p50", "p95", "p99"), np.percentile(ms, [50, 95, 99]).round(1).tolist())) if len(ms) else {}
        n = len(self.latencies) + len(self.errors)
        return {"requests": n, "failed": self.failed, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "transport_errors": len(self.errors), "seconds": round(self.seconds, 2),
                "requests_per_s": round(n / self.seconds, 2) if self.seconds else 0.0,
                "latency_ms": {**pct, "mean": round(float(ms.mean()), 1) if len(ms) else None,
                               "max": round(float(ms.max()), 1) if len(ms) else None}}


def run_load(client: ServiceClient, payloads: Sequence[tuple[str, bytes]], requests: int = 300,
             concurrency: int = 8) -> LoadResult:
    """Send ``requests`` ``POST /match`` requests, cycling through the (name, bytes) ``payloads``, with at most
    ``concurrency`` in flight; latencies are measured per request by the client."""
    if not payloads:
        raise ValueError("run_load needs at least one payload")
    out = LoadResult()
    lock = threading.Lock()

    def one(i: int) -> None:
        name, data = payloads[i % len(payloads)]
        t = time.perf_counter()
        try:
            reply = client.match(data, name)
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                out.errors.append(f"request {i}: {type(exc).__name__}: {exc}")
            return
        dt = time.perf_counter() - t
        with lock:
            out.latencies.append(dt)
            out.statuses[reply.status] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
        list(pool.map(one, range(int(requests))))
    out.seconds = time.perf_counter() - t0
    return out
