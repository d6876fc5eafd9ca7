"""The matching pipeline: query -> regions -> candidates -> verification -> fused score.

Data flows one way, per query:

1. :meth:`Pipeline.describe_queries`: the query's global variants (``config.pipeline.query_regions``: full image,
   grids, centre, rotations, flips, detected pasted pictures) are described by the ASL model in one batch, and its
   local features are extracted once (:class:`QueryDescription`).
2. :meth:`Pipeline.candidates`: the union of (a) each variant's top ``global_k`` whole references
   ("local-to-global") and (b) the whole query's top ``global_k`` reference crops ("global-to-local"), ranked by
   the best score-normalised similarity; the best ``candidates`` are kept. Every candidate then gets exact
   global evidence (:class:`~matcher.fusion.GlobalEvidence`) computed from the stored descriptors.
3. :meth:`Pipeline.verify`: local geometric verification of the query against the candidates' stored features
   (never re-extracted), detector agreement of the matched area, and the fusion model -> :class:`PairMatch`.

References come from an :class:`~matcher.index_store.IndexStore` (built once with ``icd index``, or on the fly
for one-shot matching). Score normalisation uses the background descriptors shipped with the model (computed
from ``train`` photos; a fixed set keeps the fusion model's calibration); only when those are missing or were made
with other weights does it fall back to the index's own background set (``icd index --background``).
"""
from __future__ import annotations

import logging
import math
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import MatcherConfig
from matcher.descriptors.infer import split_norm
from matcher.frame_edge import frame_edge_strength, to_gray
from matcher.fusion import Fusion, GlobalEvidence, load_fusion, pair_features, reference_inside_query
from matcher.local.evidence import PairEvidence
from matcher.local.regions import Region, propose_regions
from matcher.local.verify import QueryFeatures, ReferenceBank, verify_query

__all__ = ["PairMatch", "Pipeline", "QueryDescription", "StageTimer", "background_path"]

_LOG = logging.getLogger(__name__)
_MISSING = -0.2  # similarity used for a pair no generator scored
SEAM_MIN_INSIDE = 0.05  # the seam is looked for only when at least this much of the match is "reference inside the
# query" (fusion.reference_inside_query); below, frame_seam is nan


@dataclass
class QueryDescription:
    """Everything computed about one query image (once).

    regions: the global variants (regions[0] is the full image); descriptors: (V, D) float32 unnormalised ASL
    descriptors of those variants; local: local features (keypoints in original query px); detected: the
    detector's pasted-picture boxes (subset of ``regions``); size: (width, height) px; gray: (h, w) float32 grey
    levels for the seam check (:mod:`matcher.frame_edge`), ``gray_scale`` = h / height."""

    query_id: str
    regions: list[Region]
    descriptors: np.ndarray
    local: QueryFeatures | None
    detected: list[Region]
    size: tuple[int, int]
    gray: np.ndarray | None = None
    gray_scale: float = 1.0


@dataclass
class PairMatch:
    """One scored (query, reference) pair with the evidence that decided it.

    score: fused probability-like score in [0, 1] (nan when no fusion model is loaded); is_copy: score >=
    threshold; evidence: local geometric evidence (None when the pair was not verifiable, e.g. no keypoints);
    global_evidence: descriptor scores; features: (F,) fusion features; contributions: per-feature logit terms."""

    query_id: str
    reference_id: str
    score: float
    is_copy: bool
    threshold: float
    evidence: PairEvidence | None
    global_evidence: GlobalEvidence
    features: np.ndarray
    contributions: dict[str, float] = field(default_factory=dict)
    reference_row: int = -1

    def to_dict(self, points: bool = False) -> dict[str, Any]:
        """JSON-able summary (inlier points only when ``points``)."""
        return {
            "query_id": self.query_id, "reference_id": self.reference_id,
            "score": None if math.isnan(self.score) else round(self.score, 6), "is_copy": self.is_copy,
            "threshold": self.threshold,
            "local": None if self.evidence is None else self.evidence.to_dict(points=points),
            "global": self.global_evidence.to_dict(), "contributions": self.contributions,
        }


class StageTimer:
    """Seconds spent per named stage (``with timer("stage"): ...``), for the end-of-job summary."""

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


def background_path(model_name: str) -> Path:
    """The shipped background descriptors of a descriptor model (``weights/background_<model>.npz``)."""
    return Path(__file__).resolve().parents[1] / "weights" / f"background_{model_name}.npz"


def load_background(model_name: str, model_hash: str | None) -> np.ndarray:
    """(B, D) float32 background descriptors shipped for the model; (0, 0) when absent or made by other weights."""
    p = background_path(model_name)
    if not p.exists():
        return np.zeros((0, 0), np.float32)
    with np.load(p, allow_pickle=False) as z:
        if model_hash and str(z["model_hash"]) != model_hash:
            _LOG.warning("%s was computed with other %s weights; score normalisation is off", p, model_name)
            return np.zeros((0, 0), np.float32)
        return z["descriptors"].astype(np.float32)


def _bg_term(z: np.ndarray, zb: np.ndarray, k: int, beta: float) -> np.ndarray:
    """(M,) beta * mean of the top-k cosine similarities of unit rows ``z`` (M, D) to unit ``zb`` (B, D)."""
    if len(zb) == 0 or beta <= 0 or len(z) == 0:
        return np.zeros(len(z), np.float32)
    sims = z @ zb.T
    k = min(k, zb.shape[0])
    top = np.partition(sims, -k, axis=1)[:, -k:]
    return (beta * top.mean(1)).astype(np.float32)


def _same_store(key: tuple[Any, int] | None, store: Any) -> bool:
    """True when ``key`` (a weak reference and a size) still names this very store at this size (an ``id()`` could
    be reused by a new store after the old one is freed)."""
    return key is not None and key[0]() is store and key[1] == len(store)


class Pipeline:
    """The matching pipeline: models + config. Build once, then :meth:`match` queries against an index store."""

    def __init__(self, config: MatcherConfig | None = None, *, fusion: Fusion | None | bool = True,
                 descriptor: Any = None, engine: Any = None) -> None:
        """``fusion``: a model, True for the shipped one, False/None for none (scores are nan; used to collect
        training features)."""
        from matcher.descriptors.extractor import GlobalDescriptor
        from matcher.local.engine import LocalEngine

        self.config = config or MatcherConfig()
        self.descriptor = descriptor or GlobalDescriptor(self.config)
        self.engine = engine or LocalEngine(self.config)
        if fusion is True:
            fusion = load_fusion(self.config.pipeline.fusion_weights or None)
        self.fusion: Fusion | None = fusion or None
        self.threshold = self.fusion.threshold if self.fusion is not None else self.config.threshold
        gm = self.descriptor.gate_margin
        self.gate_margin = float(self.fusion.gate_margin if self.fusion is not None else (gm if gm is not None
                                                                                        else 0.0))
        self.background = load_background(self.descriptor.name, self.descriptor.sha256)
        self._zb = split_norm(self.background)[0] if len(self.background) else self.background
        self._warned_detector = False

    # ----------------------------------------------------------------------------------------------- queries
    def _detect(self, images: Sequence[np.ndarray]) -> list[list[Region]]:
        """Pasted-picture boxes per image as regions ("yolo:<i>"); [] each when the detector is unusable."""
        if "yolo" not in self.config.pipeline.query_regions or not images:
            return [[] for _ in images]
        from detectors.detect import detect_regions
        from detectors.model import DetectorWeightsError

        try:
            dets = detect_regions(list(images), self.config)
        except DetectorWeightsError as exc:
            if not self._warned_detector:
                self._warned_detector = True
                _LOG.warning("pasted-picture detector unavailable, no detected query regions: %s", exc)
            return [[] for _ in images]
        out = []
        for img, ds in zip(images, dets):
            h, w = img.shape[:2]
            regs = []
            for d in ds:
                x0, y0, x1, y1 = d.int_box(w, h)
                if min(x1 - x0, y1 - y0) >= 16 and (x1 - x0) * (y1 - y0) < 0.9 * w * h:
                    regs.append(Region(f"yolo:{len(regs)}", (x0, y0, x1, y1), score=d.score))
            out.append(regs)
        return out

    def describe_queries(self, items: Sequence[tuple[str, np.ndarray]], timer: StageTimer | None = None,
                         local: bool = True) -> list[QueryDescription]:
        """Describe (id, RGB uint8 image) queries: variants + one batched descriptor pass + local features."""
        timer = timer or StageTimer()
        names = [n for n in self.config.pipeline.query_regions if n != "yolo"]
        if "full" not in names:
            names = ["full", *names]
        images = [img for _, img in items]
        with timer("detect"):
            detected = self._detect(images)
        with timer("regions"):
            regions = [propose_regions(img, names) + det for img, det in zip(images, detected)]
            crops = [r.apply(img) for img, regs in zip(images, regions) for r in regs]
        with timer("describe"):
            desc = self.descriptor.describe(crops)
        out: list[QueryDescription] = []
        at = 0
        for (qid, img), regs, det in zip(items, regions, detected):
            d = desc[at: at + len(regs)]
            at += len(regs)
            qf, gray, gs = None, None, 1.0
            if local:
                with timer("local_features"):
                    qf = self.engine.query_features(img)
                    gray, gs = to_gray(img)
            out.append(QueryDescription(qid, regs, d, qf, det, (img.shape[1], img.shape[0]), gray, gs))
        return out

    # ----------------------------------------------------------------------------------------------- candidates
    def candidates(self, q: QueryDescription, store: Any, timer: StageTimer | None = None,
                   ) -> list[tuple[int, GlobalEvidence]]:
        """The query's candidate references (store rows), best first, each with exact global evidence."""
        timer = timer or StageTimer()
        cfg, dcfg = self.config.pipeline, self.config.descriptor
        if len(store) == 0:
            return []
        with timer("search"):
            z, norms = split_norm(q.descriptors)
            zb = self._zb if len(self._zb) else self._store_background(store)
            bg = _bg_term(z, zb, dcfg.score_norm_k, dcfg.score_norm_beta)  # (V,)
            k = min(cfg.global_k, len(store))
            res = store.global_index.search(q.descriptors, k)
            key: dict[int, float] = {}
            sources: dict[int, set[str]] = defaultdict(set)
            for v in range(len(q.regions)):
                for row, s in zip(res.rows[v], res.scores[v]):
                    if row < 0:
                        continue
                    s = float(s - bg[v])
                    key[int(row)] = max(key.get(int(row), -9.0), s)
                    sources[int(row)].add("global" if v == 0 else "regions")
            rrows, _, rcos = store.search_regions(q.descriptors[:1], k)
            for row, s in zip(rrows[0], rcos[0]):
                if row < 0:
                    continue
                s = float(s - bg[0])
                key[int(row)] = max(key.get(int(row), -9.0), s)
                sources[int(row)].add("global_to_local")
            ranked = sorted(key, key=lambda r: (-key[r], r))[: max(1, cfg.candidates)]
        if cfg.keypoint_voting and q.local is not None and q.local.features:
            with timer("voting"):
                taken = set(ranked)
                extra = [r for r, _ in self._voter(store).vote(q.local.features[0], cfg.voting_candidates
                                                                + len(ranked)) if r not in taken]
                for r in extra[: cfg.voting_candidates]:
                    ranked.append(r)
                    sources[r].add("voting")
        with timer("global_evidence"):
            out = []
            ref = store.global_descriptors()
            for row in ranked:
                zr, nr = split_norm(ref[row: row + 1])
                raw = z @ zr[0]
                sims = raw - bg  # (V,) normalised
                best_v = int(np.argmax(sims))
                tags, _, rdesc = store.region_descriptors(row)
                crop_sims = split_norm(rdesc)[0] @ z[0] if len(rdesc) else np.zeros(0, np.float32)
                to_local = float(crop_sims.max() - bg[0]) if len(crop_sims) else float("nan")
                g = GlobalEvidence(
                    full=float(sims[0]), cosine=float(raw[0]), regions=float(sims[best_v]), region=q.regions[best_v].tag,
                    to_local=to_local, log_norm_ratio=float(np.log(max(norms[0], 1e-12)) - np.log(max(nr[0], 1e-12))),
                    sources=sorted(sources[row]))
                if len(crop_sims):
                    g.reference_crop = tags[int(np.argmax(crop_sims))]
                out.append((row, g))
        return out

    def _store_background(self, store: Any) -> np.ndarray:
        """Unit background descriptors held by ``store`` (fallback when no shipped set matches the model)."""
        if not _same_store(getattr(self, "_store_bg_key", None), store):
            b = store.background_descriptors()
            self._store_bg = split_norm(b)[0] if len(b) else np.zeros((0, 0), np.float32)
            self._store_bg_key = (weakref.ref(store), len(store))
        return self._store_bg

    def _voter(self, store: Any) -> Any:
        """The keypoint voter over ``store``'s reference features (once per store and size; an index store keeps it
        on disk)."""
        from matcher.voting import KeypointVoter

        if not _same_store(getattr(self, "_voter_key", None), store):
            if hasattr(store, "keypoint_voter"):  # an index store: its saved voter, brought up to date
                self._voter_obj = store.keypoint_voter(seed=self.config.seed)
            else:
                self._voter_obj = KeypointVoter.from_features(store.local_features(range(len(store))),
                                                              seed=self.config.seed)
            self._voter_key = (weakref.ref(store), len(store))
        return self._voter_obj

    # ----------------------------------------------------------------------------------------------- verification
    def verify(self, q: QueryDescription, cands: Sequence[tuple[int, GlobalEvidence]], store: Any,
               timer: StageTimer | None = None) -> list[PairMatch]:
        """Local verification + detector agreement + fusion for each candidate; best fused score first."""
        timer = timer or StageTimer()
        if not cands:
            return []
        rows = [r for r, _ in cands]
        local: dict[int, tuple[float, PairEvidence]] = {}
        if q.local is not None and self.config.local is not None:
            with timer("load_features"):
                feats = store.local_features(rows)
            with timer("verify"):
                bank = ReferenceBank.build([str(r) for r in rows], feats)
                local = verify_query(q.local, bank, self.config.local, self.engine.score_model)
        out: list[PairMatch] = []
        with timer("fuse"):
            ids = store.ids
            feats_all = []
            evs = []
            for i, (row, g) in enumerate(cands):
                ev = local.get(i, (0.0, None))[1]
                if ev is not None and ev.verified and q.detected and ev.query_box is not None:
                    from detectors.evidence import detector_agreement

                    a = detector_agreement(ev.query_box, q.detected)
                    ev.detector_iou, ev.detector_score = a.iou, a.score
                elif ev is not None and ev.verified and "yolo" in self.config.pipeline.query_regions:
                    ev.detector_iou, ev.detector_score = 0.0, 0.0
                if ev is not None and ev.verified and ev.reference_quad_in_query is not None and q.gray is not None:
                    quad = np.asarray(ev.reference_quad_in_query, np.float64) * q.gray_scale
                    ev.frame_seam = (frame_edge_strength(q.gray, quad) if reference_inside_query(ev) >= SEAM_MIN_INSIDE
                                     else math.nan)
                evs.append(ev)
                feats_all.append(pair_features(ev, g, self.gate_margin))
            x = np.stack(feats_all)
            scores = self.fusion.predict(x) if self.fusion is not None else np.full(len(x), np.nan)
            for (row, g), ev, f, s in zip(cands, evs, x, scores):
                contrib = self.fusion.explain(f) if self.fusion is not None else {}
                out.append(PairMatch(q.query_id, ids[row], float(s), bool(s >= self.threshold), self.threshold,
                                     ev, g, f, contrib, row))
        out.sort(key=lambda m: (-(m.score if not math.isnan(m.score) else -1.0), m.reference_id))
        return out

    def match(self, q: QueryDescription, store: Any, timer: StageTimer | None = None) -> list[PairMatch]:
        """Candidates + verification + fusion for one described query: all its scored candidates, best first."""
        return self.verify(q, self.candidates(q, store, timer), store, timer)
