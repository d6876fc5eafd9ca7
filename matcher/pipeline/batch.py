"""Matching a stream of query pictures against a reference store, a chunk at a time: each chunk is described in
one batch (detector, descriptors of every variant, local features) and searched in the indexes in one batch, then
each query goes through candidates, verification and fusion. The matching-track job, the API and the benchmarks
all match queries here."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from matcher.pipeline.pipeline import PairMatch, Pipeline
from matcher.pipeline.timer import StageTimer
from matcher.references.store import ReferenceStore

__all__ = ["match_queries"]


def match_queries(pipeline: Pipeline, store: ReferenceStore, queries: Iterable[tuple[str, np.ndarray]], *,
                  chunk: int = 64, timer: StageTimer | None = None,
                  on_described: Callable[[int], None] | None = None) -> Iterator[list[PairMatch]]:
    """For each (id, RGB uint8 (H, W, 3) image) of ``queries``, in order: all its scored candidates, best first.

    ``chunk`` queries are described together; ``timer`` gets the stages ("load" = pulling pictures from
    ``queries``, then those of the pipeline); ``on_described(n)`` is called after each chunk is described."""
    timer = timer or StageTimer()
    it = iter(queries)
    done = False
    while not done:
        items: list[tuple[str, np.ndarray]] = []
        with timer("load"):
            for qid, image in it:
                items.append((qid, image))
                if len(items) >= chunk:
                    break
            else:
                done = True
        if not items:
            continue
        described = pipeline.describe_queries(items, timer)
        if on_described is not None:
            on_described(len(items))
        hits = pipeline.search(described, store, timer)  # each index scanned once per chunk
        for q, h in zip(described, hits, strict=True):
            yield pipeline.match(q, store, timer, hits=h)
