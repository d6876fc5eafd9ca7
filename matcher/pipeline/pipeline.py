"""The matching pipeline: query -> regions -> candidates -> verification -> fused score.

Data flows one way, per query:

1. :func:`~matcher.pipeline.describe.describe_queries`: the query's global variants are described by the ASL
   model in one batch, and its local features are extracted once (:class:`QueryDescription`).
2. :func:`~matcher.retrieval.candidates.find_candidates`: global search over whole references and reference
   crops, plus keypoint votes; each candidate with exact global evidence.
3. :func:`~matcher.pipeline.verify.verify_candidates`: local geometric verification against the candidates'
   stored features, detector agreement, seam check and the fusion model -> :class:`PairMatch`.

References come from a :class:`~matcher.references.store.ReferenceStore`: the on-disk index (``icd index``) or
references held in memory; both take the same path. Score normalisation uses the background descriptors shipped
with the model (computed from ``train`` photos; a fixed set keeps the fusion model's calibration); only when those
are missing or were made with other weights does it fall back to the store's own background set
(``icd index --background``).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.fusion.load import Fusion, load_fusion
from matcher.pipeline.describe import QueryDescription, describe_queries
from matcher.pipeline.timer import StageTimer
from matcher.pipeline.verify import PairMatch, verify_candidates
from matcher.retrieval.candidates import Candidate, SearchHits, find_candidates, search_queries
from matcher.retrieval.normalise import load_background, split_norm

if TYPE_CHECKING:  # pragma: no cover
    from matcher.references.store import ReferenceStore

__all__ = ["PairMatch", "Pipeline", "QueryDescription"]


def _same_store(key: tuple[Any, int] | None, store: Any) -> bool:
    """True when ``key`` (a weak reference and a size) still names this very store at this size (an ``id()`` could
    be reused by a new store after the old one is freed)."""
    return key is not None and key[0]() is store and key[1] == len(store)


class Pipeline:
    """The matching pipeline: models + config. Build once, then :meth:`match` queries against a reference store."""

    def __init__(self, config: MatcherConfig | None = None, *, fusion: Fusion | None | bool = True,
                 descriptor: Any = None, engine: Any = None) -> None:
        """``fusion``: a model, True for the shipped one (or ``config.pipeline.fusion_weights``), False/None for
        none (scores are nan; used to collect training features)."""
        from matcher.descriptors.extractor import GlobalDescriptor
        from matcher.local.engine import LocalEngine

        self.config = config or MatcherConfig()
        self.descriptor = descriptor or GlobalDescriptor(self.config)
        self.engine = engine or LocalEngine(self.config)
        if fusion is True:
            fusion = load_fusion(self.config.pipeline.fusion_weights or None, self.config)
        self.fusion: Fusion | None = fusion or None
        self.threshold = self.fusion.threshold if self.fusion is not None else self.config.threshold
        gm = self.descriptor.gate_margin
        self.gate_margin = float(self.fusion.gate_margin if self.fusion is not None else (gm if gm is not None
                                                                                        else 0.0))
        self.background = load_background(self.descriptor.name, self.descriptor.sha256, self.config)
        self._zb = split_norm(self.background)[0] if len(self.background) else self.background
        self._store_bg_key: tuple[Any, int] | None = None
        self._store_bg = np.zeros((0, 0), np.float32)

    def components(self) -> dict[str, str]:
        """Which learned parts are active, with a short description each: descriptor, detector, fusion and
        normalisation ("inactive: <why>" for a part that is switched off or could not be loaded)."""
        from matcher.regions.detected import detector_config

        out = {"descriptor": (f"{self.descriptor.name} ({self.descriptor.dim}-d, weights sha256 "
                              f"{str(self.descriptor.sha256)[:12]})" if self.descriptor.sha256
                              else f"inactive: {self.descriptor.name} has no trained weights")}
        if "yolo" not in self.config.pipeline.query_regions:
            out["detector"] = "inactive: 'yolo' is not among the query regions"
        else:
            from detectors.detect import get_detector
            from detectors.model import DetectorWeightsError

            cfg = detector_config(self.config)
            try:
                det = get_detector(cfg)
                out["detector"] = f"{cfg.weights} ({det.imgsz} px, classes {', '.join(det.names)})"
            except DetectorWeightsError as exc:
                out["detector"] = f"inactive: {exc}"
        out["fusion"] = (f"{type(self.fusion).__name__} ({self.fusion.source}), threshold {self.threshold}"
                         if self.fusion is not None else "inactive: no fusion model (scores are nan)")
        beta = self.config.descriptor.score_norm_beta
        out["normalisation"] = (f"{len(self.background)} background descriptors, beta {beta}, "
                                f"k {self.config.descriptor.score_norm_k}" if len(self.background) and beta > 0
                                else "inactive: beta is 0" if beta <= 0
                                else "inactive: no background set for these descriptor weights")
        return out

    # ----------------------------------------------------------------------------------------------- stages
    def describe_queries(self, items: Sequence[tuple[str, np.ndarray]], timer: StageTimer | None = None,
                         local: bool = True) -> list[QueryDescription]:
        """Describe (id, RGB uint8 image) queries: variants + one batched descriptor pass + local features."""
        return describe_queries(items, self.config, self.descriptor, self.engine, timer=timer, local=local)

    def search(self, queries: Sequence[QueryDescription], store: ReferenceStore,
               timer: StageTimer | None = None) -> list[SearchHits | None]:
        """The index searches of described queries, each index scanned once for the batch
        (:func:`~matcher.retrieval.candidates.search_queries`); None per query when the store is empty."""
        if len(store) == 0 or not queries:
            return [None] * len(queries)
        with timer("search") if timer is not None else contextlib.nullcontext():
            return list(search_queries([q.descriptors for q in queries], store,
                                       min(self.config.pipeline.global_k, len(store))))

    def candidates(self, q: QueryDescription, store: ReferenceStore, timer: StageTimer | None = None, *,
                   hits: SearchHits | None = None) -> list[Candidate]:
        """The query's candidate references (store rows), best first, each with exact global evidence; ``hits``:
        its index searches from :meth:`search` (made here when None)."""
        zb = self._zb if len(self._zb) else self._store_background(store)
        local = q.local.features[0] if q.local is not None and q.local.features else None
        return find_candidates(q.descriptors, [r.tag for r in q.regions], store, self.config, zb, local=local,
                               timer=timer, hits=hits)

    def _store_background(self, store: ReferenceStore) -> np.ndarray:
        """Unit background descriptors held by ``store`` (fallback when no shipped set matches the model)."""
        if not _same_store(self._store_bg_key, store):
            b = store.background_descriptors()
            self._store_bg = split_norm(b)[0] if len(b) else np.zeros((0, 0), np.float32)
            self._store_bg_key = (weakref.ref(store), len(store))
        return self._store_bg

    def verify(self, q: QueryDescription, cands: Sequence[Candidate], store: ReferenceStore,
               timer: StageTimer | None = None) -> list[PairMatch]:
        """Local verification + detector agreement + fusion for each candidate; best fused score first."""
        return verify_candidates(q, cands, store, self.config, self.engine.score_model, self.fusion,
                                 self.threshold, self.gate_margin, timer=timer)

    def match(self, q: QueryDescription, store: ReferenceStore, timer: StageTimer | None = None, *,
              hits: SearchHits | None = None) -> list[PairMatch]:
        """Candidates + verification + fusion for one described query: all its scored candidates, best first
        (``hits``: see :meth:`candidates`)."""
        return self.verify(q, self.candidates(q, store, timer, hits=hits), store, timer)
