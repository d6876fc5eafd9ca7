"""Ray Data UDFs that describe pictures: each actor loads the models once (on a GPU when it was given one) and
describes whole batches exactly as the single-process job forms them, so that every float comes out the same.

Descriptor floats depend on how pictures are batched and on the number of torch threads (measured: up to 1.4e-5
apart), so queries are described in the job's chunks of loaded queries (:class:`QueryDescriber`) and references in
the index writer's batches (:class:`ReferenceDescriber`), with the driver's thread count (:func:`set_threads`).
Rows travel as pickled ``payload`` bytes (:func:`pack`)."""
from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.io.folders import ImageSet
from matcher.io.images import ImageLoadError, load_image
from matcher.pipeline.timer import StageTimer
from matcher.references.records import DescribedReference, describe_references

__all__ = ["ClusterReferenceDescriber", "QueryDescriber", "ReferenceDescriber", "image_key", "pack", "probe_queries",
           "set_threads", "unpack"]

Batch = dict[str, Any]


def pack(obj: Any) -> bytes:
    """``obj`` as bytes for a Ray Data row."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: Any) -> Any:
    """The object :func:`pack` made."""
    return pickle.loads(bytes(data))


def set_threads(threads: int) -> None:
    """Run torch and faiss with ``threads`` threads (Ray gives workers one by default; floats depend on it)."""
    import faiss
    import torch

    torch.set_num_threads(int(threads))
    faiss.omp_set_num_threads(int(threads))


def image_key(image: np.ndarray) -> str:
    """A digest of a decoded picture's pixels and shape."""
    h = hashlib.sha1(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def probe_queries(batch: Batch, *, config: MatcherConfig) -> Batch:
    """Ray Data task: rows (order, id, path) -> (order, payload = the :class:`SkippedFile` of a query that cannot be
    loaded, else None), by the loader of the single-process job."""
    out = []
    for image_id, path in zip(batch["id"], batch["path"]):
        images = ImageSet([str(image_id)], [Path(str(path))], config=config.load)
        for _ in images.iter_loaded():
            pass
        out.append(pack(images.skipped[0] if images.skipped else None))
    return {"order": batch["order"], "payload": out}


class QueryDescriber:
    """Ray Data actor: rows of query chunks (payload = [(order, id, path or RGB array)]) -> one row per query
    (order, payload = (QueryDescription, its index searches, seconds per stage of its chunk, on its first query
    only)). The chunk is searched in the index at ``index`` in one batch, as the single-process job searches it
    (the hits of a batch can differ from a lone query's in the last bits of the cosines)."""

    def __init__(self, config: MatcherConfig, threads: int, index: str) -> None:
        from matcher.pipeline.pipeline import Pipeline
        from matcher.references.disk.store import IndexStore

        set_threads(threads)
        self.config = config
        self.pipeline = Pipeline(config, fusion=False)
        self.store = IndexStore.open(index, config)

    def __call__(self, batch: Batch) -> Batch:
        orders, payloads = [], []
        for payload in batch["payload"]:
            chunk = unpack(payload)
            timer = StageTimer()
            with timer("load"):
                items = [(qid, src if isinstance(src, np.ndarray) else load_image(src, config=self.config.load))
                         for _, qid, src in chunk]
            described = self.pipeline.describe_queries(items, timer)
            hits = self.pipeline.search(described, self.store, timer)
            for j, ((order, _, _), q, h) in enumerate(zip(chunk, described, hits, strict=True)):
                orders.append(order)
                payloads.append(pack((q, h, dict(timer.seconds) if j == 0 else {})))
        return {"order": np.asarray(orders, np.int64), "payload": payloads}


class ReferenceDescriber:
    """Ray Data actor: rows of the index writer's batches (slice, payload = [(id, path)]) -> (slice, payload =
    (image keys, described references)). It decodes what the writer will decode: readable, decodable pictures
    whose id is not indexed yet, the first of each content in the batch (``indexed``: the live ids)."""

    def __init__(self, config: MatcherConfig, threads: int, indexed: Sequence[str]) -> None:
        from matcher.descriptors.extractor import GlobalDescriptor
        from matcher.local.engine import LocalEngine

        set_threads(threads)
        self.config = config
        self.indexed = set(indexed)
        self.descriptor = GlobalDescriptor(config)
        self.engine = LocalEngine(config) if config.index.local_features else None

    def _decode(self, items: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        seen: set[str] = set()
        images = []
        for ref_id, path in items:
            if ref_id in self.indexed:
                continue
            try:
                data = Path(path).read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if sha in seen:
                    continue
                seen.add(sha)
                images.append(load_image(data, config=self.config.load))
            except (OSError, ImageLoadError):
                continue
        return images

    def __call__(self, batch: Batch) -> Batch:
        out = []
        for payload in batch["payload"]:
            images = self._decode(unpack(payload))
            described = describe_references(images, self.descriptor, self.engine, self.config) if images else []
            out.append(pack(([image_key(im) for im in images], described)))
        return {"slice": batch["slice"], "payload": out}


class ClusterReferenceDescriber:
    """What the index writer calls to describe a batch (:func:`describe_references`' signature): the batch's
    description made ahead by :class:`ReferenceDescriber` actors, taken from ``results`` (payloads in batch
    order) when it holds exactly these pictures, else described here (``fallbacks`` counts those batches)."""

    def __init__(self, results: Iterator[bytes]) -> None:
        self._results = results
        self.hits = 0
        self.fallbacks = 0

    def _next_holding(self, first: str) -> tuple[list[str], list[DescribedReference]] | None:
        for payload in self._results:
            keys, described = unpack(payload)
            if first in keys:
                return keys, described
        return None

    def __call__(self, images: Sequence[np.ndarray], descriptor: Any, engine: Any, config: MatcherConfig, *,
                 local_mask: Sequence[bool] | None = None,
                 seconds: dict[str, float] | None = None) -> list[DescribedReference]:
        t0 = time.perf_counter()
        keys = [image_key(im) for im in images]
        found = self._next_holding(keys[0]) if keys else None
        mask = [engine is not None and (local_mask is None or bool(m)) for m in (local_mask or [True] * len(keys))]
        if found is None or found[0] != keys or any(m and d.local is None for m, d in zip(mask, found[1])):
            self.fallbacks += 1
            return describe_references(images, descriptor, engine, config, local_mask=local_mask, seconds=seconds)
        self.hits += 1
        if seconds is not None:
            seconds["describe"] = seconds.get("describe", 0.0) + time.perf_counter() - t0
        return [d if m else d._replace(local=None) for m, d in zip(mask, found[1], strict=True)]
