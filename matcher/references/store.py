"""The one interface to a reference collection, whether it is held in memory (:class:`~matcher.references.memory.
MemoryStore`) or on disk (:class:`~matcher.references.disk.store.IndexStore`, built by ``icd index``).

The pipeline reads references only through :class:`ReferenceStore`, so matching against references in memory and
against an index takes one code path, and both stores hold the same data at the same precision (float32 global
descriptors, float16 crop descriptors and local descriptors), so they give the same scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from matcher.retrieval.candidates import CandidateSource

if TYPE_CHECKING:  # pragma: no cover
    from matcher.config import MatcherConfig
    from matcher.local.types import LocalFeatures

__all__ = ["ReferenceStore"]


@runtime_checkable
class ReferenceStore(CandidateSource, Protocol):
    """A reference collection: rows 0..len-1, row i = reference ``ids[i]``.

    Besides what candidate search reads (:class:`~matcher.retrieval.candidates.CandidateSource`: the faiss index of
    global descriptors, the reference crops, the keypoint voter), verification reads the references' local
    features and thumbnails (the dense alignment check), and score normalisation may read the store's background
    set."""

    config: MatcherConfig

    @property
    def ids(self) -> list[str]: ...  # reference ids in row order

    def local_features(self, rows: Sequence[int]) -> list[LocalFeatures]: ...  # full-picture features of rows

    def thumbnails(self, rows: Sequence[int]) -> list[np.ndarray | None]: ...  # grey thumbnails (None: not kept)

    def background_descriptors(self) -> np.ndarray: ...  # (B, D) float32 unnormalised; (0, D) when none
