"""Candidate references of a query: which references are worth verifying, and the global evidence about each.

- :func:`search_queries`: the index searches of a batch of queries, each index scanned once for the whole batch
  (an exact index is read from memory once per batch instead of once per query: at a million references the
  reference crops alone are ~14 GB of float32).
- :func:`find_candidates` (the pipeline's candidate stage): the union of (a) each query variant's top ``global_k``
  whole references ("local-to-global"), (b) the whole query's top ``global_k`` reference crops
  ("global-to-local"), ranked by the best score-normalised similarity, the best ``candidates`` kept, then (c) up to
  ``voting_candidates`` more references found by local-descriptor votes (:mod:`matcher.retrieval.voting`). Every
  candidate gets exact :class:`GlobalEvidence` from the stored descriptors.
- :func:`global_candidates`: global-only scoring in one plain function (index search, score normalisation, the
  ASL gate), for descriptor benchmarks.

The references are read through :class:`CandidateSource`, the part of
:class:`~matcher.references.store.ReferenceStore` this stage needs (memory and on-disk stores alike).
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from matcher.config import DescriptorConfig, MatcherConfig
from matcher.local.types import LocalFeatures
from matcher.retrieval.gate import apply_gate, gate_marks, log_norm_ratio
from matcher.retrieval.index import ReferenceIndex, exact_batches
from matcher.retrieval.normalise import background_mean, background_term, normalise_scores, split_norm

if TYPE_CHECKING:  # pragma: no cover
    from matcher.retrieval.voting import KeypointVoter

__all__ = ["Candidate", "CandidateSource", "Candidates", "GlobalEvidence", "SearchHits", "find_candidates",
           "global_candidates", "search_queries"]

Timer = Callable[[str], AbstractContextManager[object]]  # "with timer(stage): ..." (pipeline.timer.StageTimer)


@dataclass
class GlobalEvidence:
    """Global-descriptor evidence for one (query, reference) candidate; similarities are normalised (raw cosine
    minus beta * mean top-k background similarity), ``nan`` where not measured.

    full: whole query vs whole reference (cosine: the same before normalisation); regions: best over query regions
    (incl. full) vs whole reference, with ``region`` the winning query region tag; to_local: whole query vs best
    reference crop, with ``reference_crop`` its tag; log_norm_ratio: ASL norm ratio of the whole images; sources:
    which candidate generators proposed the pair ("global", "regions", "global_to_local", "voting")."""

    full: float = float("nan")
    cosine: float = float("nan")  # raw cosine of whole query vs whole reference (before normalisation)
    regions: float = float("nan")
    region: str = "full"
    to_local: float = float("nan")
    reference_crop: str = ""
    log_norm_ratio: float = 0.0
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        def f(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 6)

        return {"full": f(self.full), "cosine": f(self.cosine), "regions": f(self.regions), "region": self.region,
                "to_local": f(self.to_local), "reference_crop": self.reference_crop,
                "log_norm_ratio": f(self.log_norm_ratio), "sources": list(self.sources)}


@dataclass
class Candidate:
    """One candidate reference of a query: its store ``row`` and the :class:`GlobalEvidence` about the pair."""

    row: int
    evidence: GlobalEvidence


class CandidateSource(Protocol):
    """What :func:`find_candidates` reads of a reference store (rows 0..len-1)."""

    @property
    def global_index(self) -> ReferenceIndex: ...  # faiss over the whole references' descriptors

    def __len__(self) -> int: ...

    def global_descriptors(self) -> np.ndarray: ...  # (N, D) float32 unnormalised

    def region_descriptors(self, row: int) -> tuple[list[str], np.ndarray, np.ndarray]: ...  # tags, boxes, (n, D)

    def search_regions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def keypoint_voter(self, *, seed: int | None = None) -> KeypointVoter: ...


@dataclass
class SearchHits:
    """The index searches of one query: its V variants' top k whole references (``global_rows`` int64 (V, k), -1
    padded, ``global_scores`` float32 (V, k) cosines) and the whole query's top k reference crops (``crop_rows``
    int64 (k,) reference rows, ``crop_cos`` float32 (k,))."""

    global_rows: np.ndarray
    global_scores: np.ndarray
    crop_rows: np.ndarray
    crop_cos: np.ndarray


def search_queries(descriptors: Sequence[np.ndarray], store: CandidateSource, k: int) -> list[SearchHits]:
    """:class:`SearchHits` of each query, from its (V_i, D) float32 unnormalised variant descriptors (row 0 the
    whole query): every variant of every query in ONE search of the global index, every whole query in ONE search
    of the crop index, exact indexes through faiss' matrix-product path (:func:`~matcher.retrieval.index.
    exact_batches`): a chunk reads each index once instead of once per query vector. Each query gets the hits it
    would get alone, up to the last bits of the cosines (a product sums in another order than a scan)."""
    if not descriptors:
        return []
    k = max(1, int(k))
    # one query gains nothing from the product and leaves faiss' process-wide setting alone (a vote searched in
    # another thread meanwhile keeps its own path: the service matches one query per request)
    with exact_batches() if len(descriptors) > 1 else contextlib.nullcontext():
        res = store.global_index.search(np.concatenate(descriptors), k)
        crop_rows, _, crop_cos = store.search_regions(np.stack([d[0] for d in descriptors]), k)
    out, at = [], 0
    for i, d in enumerate(descriptors):
        out.append(SearchHits(res.rows[at:at + len(d)], res.scores[at:at + len(d)], crop_rows[i], crop_cos[i]))
        at += len(d)
    return out


def strongest_keypoints(features: LocalFeatures, k: int) -> LocalFeatures:
    """The ``k`` strongest keypoints of ``features`` (extractors keep them strongest first; k <= 0 or k >= N: all),
    mirrored descriptors included."""
    if k <= 0 or features.n <= k:
        return features
    mirrored = features.mirrored[:k] if features.mirrored is not None else None
    return LocalFeatures(features.keypoints[:k], features.scales[:k], features.orientations[:k],
                         features.descriptors[:k], features.image_size, mirrored)


def find_candidates(descriptors: np.ndarray, region_tags: Sequence[str], store: CandidateSource,
                    config: MatcherConfig, background: np.ndarray, *, local: LocalFeatures | None = None,
                    timer: Timer | None = None, hits: SearchHits | None = None) -> list[Candidate]:
    """The candidate references of one query, best first (see the module docstring).

    descriptors: (V, D) float32 unnormalised descriptors of the query's variants, row 0 the whole query, tagged
    ``region_tags``; background: (B, D) unit background descriptors for score normalisation ((0, 0) = none);
    local: the whole query's local features (keypoint votes; None = no votes); timer: per-stage timing; hits: the
    query's index searches when already made for a batch (:func:`search_queries` with k = ``min(global_k,
    len(store))``), else they are made here.
    """
    timer = timer or (lambda name: contextlib.nullcontext())
    cfg, dcfg = config.pipeline, config.descriptor
    if len(store) == 0:
        return []
    with timer("search"):
        z, norms = split_norm(descriptors)
        bg = background_term(z, background, dcfg.score_norm_k, dcfg.score_norm_beta)  # (V,)
        k = min(cfg.global_k, len(store))
        if hits is None:
            hits = search_queries([descriptors], store, k)[0]
        key: dict[int, float] = {}
        sources: dict[int, set[str]] = defaultdict(set)
        for v in range(len(region_tags)):
            for row, s in zip(hits.global_rows[v], hits.global_scores[v]):
                if row < 0:
                    continue
                s = float(s - bg[v])
                key[int(row)] = max(key.get(int(row), -9.0), s)
                sources[int(row)].add("global" if v == 0 else "regions")
        for row, s in zip(hits.crop_rows, hits.crop_cos):
            if row < 0:
                continue
            s = float(s - bg[0])
            key[int(row)] = max(key.get(int(row), -9.0), s)
            sources[int(row)].add("global_to_local")
        ranked = sorted(key, key=lambda r: (-key[r], r))[: max(1, cfg.candidates)]
    if cfg.keypoint_voting and local is not None and local.n:
        with timer("voting"):
            taken = set(ranked)
            voter = store.keypoint_voter(seed=config.seed)
            voters = strongest_keypoints(local, cfg.voting_keypoints)
            extra = [r for r, _ in voter.vote(voters, cfg.voting_candidates + len(ranked), nprobe=cfg.voting_nprobe)
                     if r not in taken]
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
                full=float(sims[0]), cosine=float(raw[0]), regions=float(sims[best_v]), region=region_tags[best_v],
                to_local=to_local, log_norm_ratio=float(np.log(max(norms[0], 1e-12)) - np.log(max(nr[0], 1e-12))),
                sources=sorted(sources[row]))
            if len(crop_sims):
                g.reference_crop = tags[int(np.argmax(crop_sims))]
            out.append(Candidate(row, g))
    return out


@dataclass(frozen=True)
class Candidates:
    """Per query (M rows), its k best references: ``rows`` int64 (M, k) (-1 = none), ``cosine`` float32 raw
    similarities, ``scores`` float32 after normalisation and the gate, ``marked`` bool (ASL gate: the query
    holds more content than the reference), ``log_norm_ratio`` float32 log||f(q)|| - log||f(r)||."""

    rows: np.ndarray
    cosine: np.ndarray
    scores: np.ndarray
    marked: np.ndarray
    log_norm_ratio: np.ndarray


def global_candidates(
    index: ReferenceIndex, queries: np.ndarray, k: int, cfg: DescriptorConfig, *,
    background: np.ndarray | None = None, gate_margin: float | None = None, model: str | None = None,
    model_hash: str | None = None,
) -> Candidates:
    """queries (M, D) unnormalised descriptors; background (B, D) descriptors of non-matching pictures or
    None. Score normalisation is applied when a background set is given and ``cfg.score_norm_beta`` > 0;
    the gate when a margin is known (marked pairs lose ``cfg.gate_penalty``)."""
    res = index.search(queries, k, model=model, model_hash=model_hash)
    scores = res.scores
    if background is not None and len(background) and cfg.score_norm_beta > 0:
        zq, _ = split_norm(queries)
        zb, _ = split_norm(background)
        scores = normalise_scores(scores, background_mean(zq, zb, cfg.score_norm_k), cfg.score_norm_beta)
    _, nq = split_norm(queries) if len(queries) else (None, np.zeros(0, np.float32))
    lr = log_norm_ratio(nq, res.ref_norms) if len(queries) else np.zeros((0, k), np.float32)
    margin = gate_margin if gate_margin is not None else cfg.gate_margin
    marked = gate_marks(lr, margin) & (res.rows >= 0) if margin is not None else np.zeros_like(lr, dtype=bool)
    if margin is not None:
        scores = apply_gate(scores, marked, cfg.gate_penalty)
    return Candidates(res.rows, res.scores, scores.astype(np.float32), marked, lr)
