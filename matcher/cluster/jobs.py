"""The cluster jobs: ``icd index --ray`` and ``icd match --ray`` (and ``Matcher.index/match(ray=...)``).

Index: the driver slices the pictures as the index writer will batch them; :class:`~matcher.cluster.describe.
ReferenceDescriber` actors describe the slices ahead; the writer, in the driver alone, takes each batch's
description from them (:class:`~matcher.cluster.describe.ClusterReferenceDescriber`) and commits it.

Match: query files are probed for loading by Ray tasks (bad ones skipped and reported as the single-process job
does); the loadable ones are cut into the single-process job's chunks, described by
:class:`~matcher.cluster.describe.QueryDescriber` actors, and verified by :class:`~matcher.cluster.verify.
QueryVerifier` actors that open the index read-only. The driver gathers every query's rows, puts them in query
order (as the single-process job makes them) and writes ONE output file atomically (no shards on disk)."""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matcher.cluster.connect import ClusterError, connect
from matcher.cluster.describe import (
    ClusterReferenceDescriber,
    QueryDescriber,
    ReferenceDescriber,
    pack,
    probe_queries,
    unpack,
)
from matcher.cluster.verify import QueryVerifier
from matcher.config import MatcherConfig
from matcher.io.folders import SkippedFile
from matcher.io.inputs import PictureSet, is_in_memory, read_pictures
from matcher.isc.formats import resolve_format
from matcher.isc.track import PipelineSummary, run_pipeline_match
from matcher.references.disk.store import IndexJobSummary, IndexStore
from matcher.references.disk.writer import job_items

__all__ = ["CHUNK", "ClusterMatch", "add_on_cluster", "cluster_describer", "cluster_index", "cluster_match", "cluster_references",
           "run_cluster_match"]

CHUNK = inspect.signature(run_pipeline_match).parameters["chunk"].default  # queries described together
BLOCK_BYTES = 1 << 20  # Ray Data block size target while a job runs
_LOG = logging.getLogger(__name__)


@dataclass
class ClusterMatch:
    """What :func:`cluster_match` gathered: ``rows`` in query order (each query's best first, at most top_k),
    query files ``skipped`` (in the single-process job's order), counts and seconds per stage (summed over the
    workers)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_queries: int = 0
    n_candidates: int = 0
    n_copies: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _threads() -> int:
    """The driver's torch threads: what the single-process job would use, so the workers use it too."""
    import torch

    return int(torch.get_num_threads())


def _pools(ray: Any, config: MatcherConfig, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """map_batches arguments of the describe actors (GPU actors when the cluster has GPUs and the config allows
    them) and of the verify actors (CPU). A worker that dies costs a retry, not the job: Ray Data restarts a dead
    actor and retries its batch (its defaults: max_restarts=-1, max_task_retries=-1; tasks max_retries=-1), which
    tests/cluster checks by killing workers."""
    from ray.data import ActorPoolStrategy

    res = ray.cluster_resources()
    cpus, gpus = max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))
    gpu = gpus > 0 and config.device != "cpu"
    describe = {"compute": ActorPoolStrategy(min_size=1, max_size=gpus if gpu else max(1, cpus // threads)),
                "num_cpus": 1, "num_gpus": 1 if gpu else 0}
    verify = {"compute": ActorPoolStrategy(min_size=1, max_size=max(1, cpus - (0 if gpu else 1))), "num_cpus": 1}
    return describe, verify


@contextlib.contextmanager
def _data_context(progress: bool) -> Iterator[None]:
    """Ray Data progress bars (and its INFO lines) only when ``progress``; blocks of about one row (a described
    query is about a MB), so that the queries of one described chunk spread over the verifying actors instead of
    travelling as one block to one actor."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    log = logging.getLogger("ray.data")
    old = (ctx.enable_progress_bars, ctx.target_max_block_size, log.level)
    ctx.enable_progress_bars = bool(progress)
    ctx.target_max_block_size = BLOCK_BYTES
    if not progress:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.target_max_block_size = old[0], old[1]
        log.setLevel(old[2])


def _in_order(rows: Iterable[dict[str, Any]], key: str) -> Iterator[Any]:
    """Payloads of ``rows`` by increasing ``key`` (0, 1, 2, ...), whatever order they arrive in."""
    held: dict[int, Any] = {}
    want = 0
    for row in rows:
        held[int(row[key])] = row["payload"]
        while want in held:
            yield held.pop(want)
            want += 1


@contextlib.contextmanager
def cluster_describer(store: IndexStore, source: Any, *, address: str, num_cpus: int | None = None,
                      batch_size: int | None = None,
                      progress: bool = False) -> Iterator[ClusterReferenceDescriber]:
    """For ``store.add_references(source, batch_size=batch_size, describe=...)``: a describer whose batches are
    described ahead on the cluster at ``address`` (:func:`~matcher.cluster.connect.connect`). ``source``: a folder,
    a file or a list of them (pictures in memory are refused: index them without a cluster)."""
    if is_in_memory(source):
        raise ClusterError("a cluster index job takes folders or files (pictures in memory are indexed in this "
                           "process: call without ray=)")
    ray = connect(address, num_cpus=num_cpus)
    items = [(ref_id, str(path)) for ref_id, path in job_items(source)[0]]
    bs = max(1, int(batch_size or store.config.index.batch_size))
    threads = _threads()
    describe, _ = _pools(ray, store.config, threads)
    with _data_context(progress):
        ds = ray.data.from_items([{"slice": k, "payload": pack(items[s:s + bs])}
                                  for k, s in enumerate(range(0, len(items), bs))],
                                 override_num_blocks=max(1, min(len(items), 200)))
        ds = ds.map_batches(ReferenceDescriber, batch_size=1, fn_constructor_kwargs={
            "config": store.config, "threads": threads, "indexed": store.live_ids()}, **describe)
        describer = ClusterReferenceDescriber(_in_order(ds.iter_rows(), "slice"))
        yield describer
    if describer.fallbacks:
        _LOG.info("%d batches described on the driver (their pictures differed from the cluster's batch)",
                  describer.fallbacks)


def add_on_cluster(store: IndexStore, source: Any, *, address: str, num_cpus: int | None = None,
                   batch_size: int | None = None, progress: bool = False,
                   stats: dict[str, int] | None = None) -> IndexJobSummary:
    """``store.add_references(source)`` with the describing done on the cluster at ``address``
    (:func:`cluster_describer`): the same job summary and the same index as in one process. ``stats`` (if given)
    gets the batches described on the cluster (``cluster_batches``) and here (``driver_batches``: a batch whose
    pictures the writer chose differently, e.g. a content seen in an earlier batch)."""
    with cluster_describer(store, source, address=address, num_cpus=num_cpus, batch_size=batch_size,
                           progress=progress) as describer:
        summary = store.add_references(source, progress=progress, batch_size=batch_size, describe=describer)
    if stats is not None:
        stats.update(cluster_batches=describer.hits, driver_batches=describer.fallbacks)
    return summary


def cluster_index(source: Any, index: str | os.PathLike[str], config: MatcherConfig | None = None, *,
                  address: str, num_cpus: int | None = None, create: bool = True, batch_size: int | None = None,
                  progress: bool = False, descriptor: Any = None, engine: Any = None,
                  stats: dict[str, int] | None = None) -> IndexJobSummary:
    """Add the pictures of ``source`` to the index at ``index`` (opened or created here) with the describing done on
    the cluster: :func:`add_on_cluster`."""
    with IndexStore.open(index, config, create=create, descriptor=descriptor, engine=engine) as store:
        return add_on_cluster(store, source, address=address, num_cpus=num_cpus, batch_size=batch_size,
                              progress=progress, stats=stats)


def _loadable(ray: Any, qset: Any, config: MatcherConfig) -> tuple[list[tuple[int, str, Any]], list[SkippedFile]]:
    """(order, id, path or decoded picture) of the loadable queries, and the skipped ones (scan-time first, then
    load failures in query order, as :meth:`ImageSet.iter_loaded <matcher.io.folders.ImageSet.iter_loaded>`)."""
    if isinstance(qset, PictureSet):  # pictures in memory: decoded here, sent with the chunks
        loaded = [(i, qid, img) for i, (qid, _p, img) in enumerate(qset.iter_loaded())]
        return loaded, list(qset.skipped)
    skipped = list(qset.skipped)
    if not len(qset):
        return [], skipped
    rows = [{"order": i, "id": qid, "path": str(p)} for i, (qid, p) in enumerate(zip(qset.ids, qset.paths))]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map_batches(probe_queries, batch_size=16, fn_kwargs={"config": config}, num_cpus=1)
    probed = dict(enumerate(_in_order(ds.iter_rows(), "order")))
    loaded = []
    for i, (qid, p) in enumerate(zip(qset.ids, qset.paths)):
        bad = unpack(probed[i])
        if bad is None:
            loaded.append((i, qid, str(p)))
        else:
            skipped.append(bad)
    return loaded, skipped


def cluster_match(queries: Any, index: str | os.PathLike[str], config: MatcherConfig, *, address: str,
                  num_cpus: int | None = None, top_k: int | None = None, evidence: bool = True,
                  progress: bool = False) -> ClusterMatch:
    """Match ``queries`` (a folder, files, or pictures in memory with ids) against the index at ``index`` (a path
    every node reaches) on the cluster at ``address``: the rows of the single-process job, in its order."""
    ray = connect(address, num_cpus=num_cpus)
    t0 = time.perf_counter()
    out = ClusterMatch()
    k = config.top_k if top_k is None else int(top_k)
    qset = read_pictures(queries, config=config.load)
    threads = _threads()
    with _data_context(progress):
        loaded, out.skipped = _loadable(ray, qset, config)
        out.seconds["probe"] = time.perf_counter() - t0
        if not loaded:
            return out
        chunks = [loaded[s:s + CHUNK] for s in range(0, len(loaded), CHUNK)]
        describe, verify = _pools(ray, config, threads)
        ds = ray.data.from_items([{"chunk": i, "payload": pack(c)} for i, c in enumerate(chunks)],
                                 override_num_blocks=len(chunks))
        ds = ds.map_batches(QueryDescriber, batch_size=1, fn_constructor_kwargs={
            "config": config, "threads": threads, "index": str(index)}, **describe)
        ds = ds.map_batches(QueryVerifier, batch_size=1, fn_constructor_kwargs={
            "index": str(index), "config": config, "threads": threads, "top_k": k, "evidence": evidence}, **verify)
        done: dict[int, Any] = {int(r["order"]): unpack(r["payload"]) for r in ds.iter_rows()}
    for order in sorted(done):
        rows, n_cand, n_copies, seconds = done[order]
        out.rows.extend(rows)
        out.n_candidates += n_cand
        out.n_copies += n_copies
        for name, v in seconds.items():
            out.seconds[name] = out.seconds.get(name, 0.0) + v
    out.n_queries = len(done)
    out.seconds["queries_total"] = time.perf_counter() - t0
    return out


@contextlib.contextmanager
def cluster_references(*, references: Any = None, index: str | os.PathLike[str] | None = None,
                       config: MatcherConfig | None, address: str, num_cpus: int | None = None,
                       progress: bool = False) -> Iterator[tuple[Path, MatcherConfig, list[SkippedFile]]]:
    """Yield (index folder, its configuration, reference files skipped): ``references`` indexed on the cluster
    into ``index`` (or a temporary folder, removed on exit; it must be on a filesystem every node reaches), or the
    existing ``index``."""
    if references is None and index is None:
        raise ValueError("give references (a folder of pictures) or index (a folder made by `icd index`)")
    with contextlib.ExitStack() as temporary:
        if index is None:  # removed on exit
            index = temporary.enter_context(tempfile.TemporaryDirectory(prefix="icd-index-",
                                                                        ignore_cleanup_errors=True))
        skipped: list[SkippedFile] = []
        if is_in_memory(references):
            with IndexStore.open(index, config, create=True) as store:
                skipped.extend(store.add_images(references, progress=progress).skipped)
        elif references is not None:
            skipped.extend(cluster_index(references, index, config, address=address, num_cpus=num_cpus,
                                         progress=progress).skipped)
        with IndexStore.open(index, config) as store:
            stored = store.config
        yield Path(index), stored, skipped


def run_cluster_match(queries: str | Path, output: str | Path, *, address: str,
                      references: str | Path | Sequence[str | Path] | None = None,
                      index_dir: str | Path | None = None, config: MatcherConfig | None = None,
                      num_cpus: int | None = None, progress: bool = True, output_format: str | None = None,
                      min_score: float | None = None) -> PipelineSummary:
    """:func:`~matcher.isc.track.run_pipeline_match` on the cluster at ``address``: the same output file (written
    once, atomically, by this driver), the same ``OUT.skipped.csv`` and summary."""
    output = Path(output)
    fmt = resolve_format(output, output_format)
    summary = PipelineSummary(output=str(output), format=fmt, min_score=min_score)
    t0 = time.perf_counter()
    with cluster_references(references=references, index=index_dir, config=config, address=address,
                            num_cpus=num_cpus, progress=progress) as (index, cfg, skipped):
        summary.skipped.extend(skipped)
        with IndexStore.open(index, cfg) as store:
            summary.n_references = len(store)
        summary.seconds["references"] = time.perf_counter() - t0
        got = cluster_match(queries, index, cfg, address=address, num_cpus=num_cpus, evidence=fmt != "csv",
                            progress=progress)
    summary.skipped.extend(got.skipped)
    summary.n_queries, summary.n_candidates, summary.n_copies = got.n_queries, got.n_candidates, got.n_copies
    summary.seconds.update({k: round(v, 3) for k, v in got.seconds.items()})
    summary.write(got.rows, cfg.max_rows)
    return summary
