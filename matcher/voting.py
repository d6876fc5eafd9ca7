"""Candidates by local-feature votes: every query keypoint votes for the reference owning its nearest reference
keypoint (as the ISC 3rd-place solution did). Catches heavy crops and mosaics that global descriptors miss.

The voter indexes all reference RootSIFT descriptors of a store in faiss (exact below ``exact_below`` vectors,
IVF-flat above it with 2 sqrt(n) lists, trained on a seeded sample when the pipeline first meets the store). A
reference is a candidate when it gets more than ``min_votes`` votes; the best ``top`` by votes are returned.
Mirrored query descriptors vote as well (mirrored copies).
Memory: 512 bytes per reference keypoint (float32), about 0.5 GB per 1,000 references at 1,024 keypoints.
"""
from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from matcher.local.types import LocalFeatures

__all__ = ["KeypointVoter", "count_votes"]


def count_votes(owner: np.ndarray, nn: np.ndarray, n_refs: int) -> np.ndarray:
    """(n_refs,) int64 votes: ``nn`` (K,) int64 nearest reference-keypoint rows (-1 = none) -> owner counts,
    each query keypoint voting at most once."""
    nn = nn[nn >= 0]
    if len(nn) == 0:
        return np.zeros(n_refs, np.int64)
    return np.bincount(owner[nn], minlength=n_refs).astype(np.int64)


class KeypointVoter:
    """A faiss index over every reference keypoint descriptor; ``vote(features)`` -> best (row, votes)."""

    def __init__(self, features: Sequence[LocalFeatures], *, exact_below: int = 200_000, nprobe: int = 8,
                 seed: int = 0) -> None:
        sizes = np.array([f.n for f in features], np.int64)
        self.n_refs = len(features)
        self.owner = np.repeat(np.arange(self.n_refs, dtype=np.int64), sizes)
        dim = next((f.descriptors.shape[1] for f in features if f.n), 128)
        desc = np.concatenate([np.asarray(f.descriptors, np.float32) for f in features if f.n]) if sizes.sum() \
            else np.zeros((0, dim), np.float32)
        if len(desc) < exact_below:
            self.index: faiss.Index = faiss.IndexFlatL2(dim)
        else:
            # 2 sqrt(n) lists, trained on 40 points per list for 10 k-means rounds: the training cost grows as
            # n (not n^1.5 x 25 rounds as with faiss' defaults), ~1 min at 10k references on 2 cores
            nlist = int(2 * np.sqrt(len(desc)))
            quantizer = faiss.IndexFlatL2(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, nlist)
            rng = np.random.default_rng(seed)
            sample = desc[rng.choice(len(desc), size=min(len(desc), 40 * nlist), replace=False)]
            self.index.cp.seed = seed
            self.index.cp.niter = 10
            self.index.cp.max_points_per_centroid = 40
            self.index.train(sample)
            self.index.nprobe = nprobe
            self._quantizer = quantizer  # keep it alive with the index
        if len(desc):
            self.index.add(desc)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def vote(self, query: LocalFeatures, top: int, min_votes: int = 3, mirrored: bool = True) -> list[tuple[int, int]]:
        """Best ``top`` (reference row, votes) with votes > ``min_votes``, most votes first."""
        if query.n == 0 or len(self) == 0 or top <= 0:
            return []
        votes = count_votes(self.owner, self.index.search(np.asarray(query.descriptors, np.float32), 1)[1][:, 0],
                            self.n_refs)
        if mirrored and query.mirrored is not None:
            mv = count_votes(self.owner, self.index.search(np.asarray(query.mirrored, np.float32), 1)[1][:, 0],
                             self.n_refs)
            votes = np.maximum(votes, mv)
        rows = np.flatnonzero(votes > min_votes)
        rows = rows[np.lexsort((rows, -votes[rows]))][:top]
        return [(int(r), int(votes[r])) for r in rows]
