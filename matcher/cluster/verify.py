"""Verification on CPU workers: Ray Data actors that open the reference index read-only from its path (which every
node must reach: a shared filesystem, or a copy synced to the same path on each node) and run candidates, local
verification and fusion for each described query, as the single-process job does."""
from __future__ import annotations

from typing import Any

import numpy as np

from matcher.cluster.describe import pack, set_threads, unpack
from matcher.config import MatcherConfig
from matcher.isc.formats import pair_row
from matcher.pipeline.timer import StageTimer

__all__ = ["QueryVerifier", "VerifiedQuery"]

Batch = dict[str, Any]
# rows (at most top_k, best first), scored candidates, rows that are copies, seconds per stage
VerifiedQuery = tuple[list[dict[str, Any]], int, int, dict[str, float]]


class QueryVerifier:
    """Ray Data actor: rows (order, payload = (QueryDescription, its index searches, seconds)) -> (order, payload =
    :data:`VerifiedQuery`, the describe seconds added). The index at ``index`` is opened once, with ``config``."""

    def __init__(self, index: str, config: MatcherConfig, threads: int, top_k: int, evidence: bool) -> None:
        from matcher.pipeline.pipeline import Pipeline
        from matcher.references.disk.store import IndexStore

        set_threads(threads)
        self.store = IndexStore.open(index, config)
        self.pipeline = Pipeline(self.store.config)
        self.top_k, self.evidence = int(top_k), bool(evidence)

    def __call__(self, batch: Batch) -> Batch:
        out = []
        for payload in batch["payload"]:
            q, hits, seconds = unpack(payload)
            timer = StageTimer()
            matches = self.pipeline.match(q, self.store, timer, hits=hits)
            top = matches[: self.top_k]
            rows = [pair_row(m, evidence=self.evidence) for m in top]
            for k, v in timer.seconds.items():
                seconds[k] = seconds.get(k, 0.0) + v
            out.append(pack((rows, len(matches), sum(int(m.is_copy) for m in top), seconds)))
        return {"order": np.asarray(batch["order"], np.int64), "payload": out}
