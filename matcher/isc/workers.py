"""One matching job spread over local worker processes (``icd match --workers N``).

On a machine of C cores, C processes of one thread each match more queries per second than one process of C threads
(bench/RESULTS.md, issue 15: 3.03 against 2.11 queries/s at 10,000 references on 2 cores): most stages (SIFT,
verification kernels, faiss list scans, small convolutions) do not scale with threads, and the index's large files
(voter, feature shards, global index) are memory-mapped, so the processes share those pages.

The driver has already opened (or built) the index and listed the queries. :func:`match_in_workers` cuts the
query list into ``workers`` contiguous slices, starts one process per slice (``spawn``; ``OMP_NUM_THREADS`` and
friends set to ``threads`` before the child starts, so its libraries start that way), and each worker opens the
index read-only, matches its slice with :func:`~matcher.pipeline.batch.match_queries` and sends back its rows,
skipped files, counts and seconds. The driver puts them back in query order, as one process makes them; nothing
is written by the workers.

A worker that dies (killed, out of memory) costs a retry of its slice in a new process; a slice whose worker dies
twice fails the job (:class:`WorkerError`, naming the slice's first and last query), and nothing is written.
Results: the same rows as one process up to the last bits of descriptor floats (one thread sums in another
order than two), so a score can differ in its sixth decimal and, rarely, two equal-scoring rows swap.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from matcher.config import MatcherConfig
from matcher.io.folders import ImageSet, SkippedFile

__all__ = ["SliceResult", "WorkerError", "match_in_workers", "skipped_files", "slices"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_POLL_S = 0.5  # how often the driver checks that its workers are alive
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


def slices(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [start, stop) ranges covering 0..n-1, sizes differing by at most one (empty ones left
    out)."""
    parts = max(1, min(int(parts), n)) if n else 1
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _match_slice(index_dir: str, config: dict[str, Any], ids: list[str], paths: list[str], evidence: bool,
                 chunk: int, conn: Any) -> None:
    """Worker body: match ``ids`` / ``paths`` against the index; send ("progress", 1) per query, then ("done",
    SliceResult) or ("error", text) on ``conn`` (this worker's own pipe: a worker killed while writing leaves no
    lock held that another worker would wait for, as a shared queue's would)."""
    try:
        import cv2

        cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        from matcher.isc.formats import pair_row
        from matcher.pipeline.batch import match_queries
        from matcher.pipeline.pipeline import Pipeline
        from matcher.pipeline.timer import StageTimer
        from matcher.references.open import open_references

        cfg = MatcherConfig.make(**config)
        out = SliceResult()
        qset = ImageSet(list(ids), [Path(p) for p in paths], config=cfg.load)
        timer = StageTimer()
        with open_references(index=index_dir, config=cfg) as (store, _):
            pipe = Pipeline(store.config)
            loaded = ((qid, image) for qid, _path, image in qset.iter_loaded())
            for matches in match_queries(pipe, store, loaded, chunk=chunk, timer=timer):
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
                     threads: int = 1, evidence: bool = False, chunk: int = 64,
                     on_progress: Callable[[int], None] | None = None) -> SliceResult:
    """Match ``qset`` against the index at ``index_dir`` in ``workers`` processes of ``threads`` threads each;
    the gathered :class:`SliceResult` (rows and skipped files in query order, counts summed, seconds per stage summed
    over the workers). ``on_progress(n)``: queries matched so far. :class:`WorkerError` when a slice fails."""
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be at least 1; got {workers} and {threads}")
    parts = slices(len(qset), workers)
    ctx = mp.get_context("spawn")
    conf = config.to_dict()

    def start(part: int) -> tuple[Any, Any]:
        a, b = parts[part]
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_match_slice, name=f"icd-match-worker-{part}", daemon=True,
                           args=(str(index_dir), conf, qset.ids[a:b], [str(p) for p in qset.paths[a:b]], evidence,
                                 chunk, writer))
        with _thread_env(threads):
            proc.start()
        writer.close()  # the child's end: EOF here once the child exits, however it ends
        return proc, reader

    def name(part: int) -> str:
        a, b = parts[part]
        return f"the worker matching queries {qset.ids[a]}..{qset.ids[b - 1]}"

    running = {part: start(part) for part in range(len(parts))}
    tries = dict.fromkeys(running, 1)
    results: dict[int, SliceResult] = {}
    progress = dict.fromkeys(running, 0)
    try:
        while running:
            wait([reader for _, reader in running.values()], timeout=_POLL_S)
            for part, (proc, reader) in list(running.items()):
                ended = False
                try:
                    while reader.poll():
                        kind, payload = reader.recv()
                        if kind == "progress":
                            progress[part] += int(payload)
                        elif kind == "done":
                            results[part], progress[part] = payload, payload.n_queries
                            ended = True
                            break
                        else:
                            raise WorkerError(f"{name(part)} failed: {payload}")
                except (EOFError, OSError):  # the child exited without a result: it died
                    ended = True
                if not ended:
                    continue
                reader.close()
                proc.join(timeout=10)
                del running[part]
                if part in results:
                    continue
                if tries[part] >= 2:
                    raise WorkerError(f"{name(part)} died twice (exit code {proc.exitcode}); nothing was written")
                _LOG.warning("%s died (exit code %s); matching them again", name(part), proc.exitcode)
                tries[part] += 1
                progress[part] = 0
                running[part] = start(part)
            if on_progress is not None:
                on_progress(sum(progress.values()))
    finally:
        for proc, reader in running.values():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
            reader.close()
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
