"""One matching job spread over local worker processes (``icd match --workers N``).

On a machine of C cores, C processes of one thread each match more queries per second than one process of C threads
(bench/RESULTS.md, issue 15: 4.72 against 3.07 queries/s at 10,000 references on 2 cores): most stages (SIFT,
verification kernels, faiss list scans, small convolutions) do not scale with threads, and the index's large files
(voter, feature shards, global index) are memory-mapped, so the processes share those pages.

The driver has already opened (or built) the index and listed the queries. :func:`match_in_workers` cuts the
query list into contiguous slices of at most :data:`SLICE` queries, smaller towards the end
(:func:`guided_slices`), and starts ``workers`` processes (``spawn``;
``OMP_NUM_THREADS`` and friends set to ``threads`` before a child starts, so its libraries start that way). Each
worker opens the index read-only and loads the models once, then takes slices one at a time from the driver (the
next free worker gets the next slice, so a slice of hard queries does not leave the other workers idle), matches
each with :func:`~matcher.pipeline.batch.match_queries` and sends back its rows, skipped files, counts and seconds.
The driver puts the slices back in query order, as one process makes them; nothing is written by the workers.

A worker that dies (killed, out of memory) costs a retry of the slice it held, in a new worker; a slice whose
worker dies twice fails the job (:class:`WorkerError`, naming the slice's first and last query), as does an error
in a worker, and nothing is written. Results: the same rows as one process up to the last bits of descriptor floats
(one thread sums in another order than two, and queries are described in batches of a slice), so a score can differ
in its sixth decimal and, rarely, two equal-scoring rows swap.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from matcher.config import MatcherConfig
from matcher.io.folders import ImageSet, SkippedFile

__all__ = ["SliceResult", "WorkerError", "guided_slices", "match_in_workers", "skipped_files"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_POLL_S = 0.5  # how often the driver checks that its workers are alive
SLICE = 32  # queries per slice handed to a worker at most (also its describe batch); the last ones are smaller
_LOG = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A worker failed its slice (an exception in it, or it died twice)."""


@dataclass
class SliceResult:
    """What one worker sends back: ``rows`` (:func:`~matcher.isc.formats.pair_row` dicts, query order), files it
    ``skipped`` (as (path, reason, message)), counts and seconds per stage; gathered, ``retries``: slices started
    again after their worker died."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    retries: int = 0
    n_queries: int = 0
    n_candidates: int = 0
    n_copies: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def guided_slices(n: int, workers: int, largest: int = SLICE, smallest: int = 4) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering 0..n-1 in order, each a quarter of what is left per worker
    (``remaining / (2 workers)``, rounded up) between ``smallest`` and ``largest`` queries: large slices first
    (fewer, larger describe batches), small ones last, so the workers finish close together."""
    out, start = [], 0
    while start < n:
        size = max(smallest, min(largest, -(-(n - start) // (2 * max(1, workers)))))
        out.append((start, min(n, start + size)))
        start += size
    return out


def _serve(index_dir: str, config: dict[str, Any], evidence: bool, conn: Any) -> None:
    """Worker body: open the index and load the models, then for each (slice number, ids, paths) received on
    ``conn`` (None: stop) send ("progress", 1) per query matched and ("done", SliceResult); ("error", text) ends
    it. ``conn`` is this worker's own pipe: a worker killed while writing leaves no lock held that another worker
    would wait for, as a shared queue's would."""
    try:
        import cv2

        cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        from matcher.isc.formats import pair_row
        from matcher.pipeline.batch import match_queries
        from matcher.pipeline.pipeline import Pipeline
        from matcher.pipeline.timer import StageTimer
        from matcher.references.open import open_references

        cfg = MatcherConfig.make(**config)
        with open_references(index=index_dir, config=cfg) as (store, _):
            pipe = Pipeline(store.config)
            while (work := conn.recv()) is not None:
                ids, paths = work
                out = SliceResult()
                qset = ImageSet(list(ids), [Path(p) for p in paths], config=cfg.load)
                timer = StageTimer()
                loaded = ((qid, image) for qid, _path, image in qset.iter_loaded())
                for matches in match_queries(pipe, store, loaded, chunk=max(1, len(ids)), timer=timer):
                    out.n_candidates += len(matches)
                    for m in matches[: pipe.config.top_k]:
                        out.rows.append(pair_row(m, evidence=evidence))
                        out.n_copies += int(m.is_copy)
                    out.n_queries += 1
                    conn.send(("progress", 1))
                out.skipped = [(s.path, s.reason, s.message) for s in qset.skipped]
                out.seconds = dict(timer.seconds)
                conn.send(("done", out))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which fails the job with it
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"))
    finally:
        conn.close()


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """The thread-count variables set to ``threads`` while children start (they read them at import)."""
    before = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def match_in_workers(index_dir: str | os.PathLike[str], config: MatcherConfig, qset: ImageSet, *, workers: int,
                     threads: int = 1, evidence: bool = False, slice_size: int = SLICE,
                     on_progress: Callable[[int], None] | None = None) -> SliceResult:
    """Match ``qset`` against the index at ``index_dir`` in ``workers`` processes of ``threads`` threads each,
    ``slice_size`` queries at a time; the gathered :class:`SliceResult` (rows and skipped files in query order,
    counts summed, seconds per stage summed over the workers). ``on_progress(n)``: queries matched so far.
    :class:`WorkerError` when a slice fails."""
    if workers < 1 or threads < 1 or slice_size < 1:
        raise ValueError(f"workers, threads and slice_size must be at least 1; got {workers}, {threads} and "
                         f"{slice_size}")
    parts = guided_slices(len(qset), workers, slice_size, min(4, slice_size))
    ctx = mp.get_context("spawn")
    conf = config.to_dict()
    pending = deque(range(len(parts)))
    tries = dict.fromkeys(range(len(parts)), 0)
    results: dict[int, SliceResult] = {}
    progress: dict[int, int] = {}
    running: dict[Any, tuple[Any, int | None]] = {}  # connection -> (process, slice it holds)

    def name(part: int) -> str:
        a, b = parts[part]
        return f"the worker matching queries {qset.ids[a]}..{qset.ids[b - 1]}"

    def hand(conn: Any, proc: Any) -> None:
        """Give the worker the next slice, or tell it to stop."""
        if not pending:
            conn.send(None)
            running[conn] = (proc, None)
            return
        part = pending.popleft()
        tries[part] += 1
        progress[part] = 0
        a, b = parts[part]
        conn.send((qset.ids[a:b], [str(p) for p in qset.paths[a:b]]))
        running[conn] = (proc, part)

    def start() -> None:
        conn, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, name="icd-match-worker", daemon=True,
                           args=(str(index_dir), conf, evidence, child))
        with _thread_env(threads):
            proc.start()
        child.close()  # the worker's end: EOF here once it exits, however it ends
        hand(conn, proc)

    for _ in range(min(workers, len(parts))):
        start()
    try:
        while len(results) < len(parts):
            wait(list(running), timeout=_POLL_S)
            for conn, (proc, part) in list(running.items()):
                died = False
                try:
                    while conn.poll():
                        kind, payload = conn.recv()
                        if kind == "progress":
                            progress[part] += int(payload)
                        elif kind == "done":
                            results[part], progress[part] = payload, payload.n_queries
                            hand(conn, proc)
                            part = running[conn][1]
                        else:
                            raise WorkerError(f"{name(part)} failed: {payload}")
                except (EOFError, OSError):  # the worker exited: it died, or it stopped after its last slice
                    died = part is not None
                    conn.close()
                    proc.join(timeout=10)
                    del running[conn]
                if not died:
                    continue
                if tries[part] >= 2:
                    raise WorkerError(f"{name(part)} died twice (exit code {proc.exitcode}); nothing was written")
                _LOG.warning("%s died (exit code %s); matching them again", name(part), proc.exitcode)
                pending.appendleft(part)
                progress[part] = 0
                start()
            if on_progress is not None:
                on_progress(sum(progress.values()))
    finally:
        for conn, (proc, _) in running.items():
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            conn.close()
    out = SliceResult(retries=sum(tries.values()) - len(tries))
    for part in range(len(parts)):
        r = results[part]
        out.rows.extend(r.rows)
        out.skipped.extend(r.skipped)
        out.n_queries += r.n_queries
        out.n_candidates += r.n_candidates
        out.n_copies += r.n_copies
        for k, v in r.seconds.items():
            out.seconds[k] = out.seconds.get(k, 0.0) + v
    return out


def skipped_files(result: SliceResult) -> list[SkippedFile]:
    """The gathered skipped files as :class:`SkippedFile` objects."""
    return [SkippedFile(p, r, m) for p, r, m in result.skipped]
