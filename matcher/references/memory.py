"""References held in memory: a :class:`~matcher.references.store.ReferenceStore` for scoring a few pairs or
matching against a small collection without an index on disk (``Matcher.score``, in-memory references).

It keeps exactly what an on-disk index keeps, at the same precision (crop descriptors through float16, local
descriptors through the feature store's uint8 codes), so a pair scores the same wherever its reference is held.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faiss
import numpy as np

from matcher.config import MatcherConfig
from matcher.local.types import LocalFeatures
from matcher.references.features import as_stored
from matcher.references.records import describe_references
from matcher.retrieval.index import ReferenceIndex
from matcher.retrieval.normalise import split_norm
from matcher.retrieval.voting import KeypointVoter

if TYPE_CHECKING:  # pragma: no cover
    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine

__all__ = ["MemoryStore"]


class MemoryStore:
    """References described in memory: ids, global descriptors + index, reference crops, local features."""

    def __init__(self, config: MatcherConfig, descriptor: GlobalDescriptor) -> None:
        self.config = config
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._desc: list[np.ndarray] = []
        self._regions: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self._local: list[LocalFeatures | None] = []
        self._thumbs: list[np.ndarray | None] = []
        self._global_index = ReferenceIndex.create(descriptor.dim, descriptor.name, descriptor.sha256,
                                                   config.descriptor)
        self._dim = int(descriptor.dim)
        self._voter: tuple[int, int, KeypointVoter] | None = None  # (seed, rows covered, voter)

    def add(self, reference_id: str, image: np.ndarray, descriptor: GlobalDescriptor,
            engine: LocalEngine | None) -> None:
        """Describe one RGB uint8 (H, W, 3) reference picture and keep it as row ``len(self)``; ValueError when
        ``reference_id`` is already held."""
        if reference_id in self._rows:
            raise ValueError(f"reference id {reference_id!r} is already in this store (ids must be unique)")
        (d,) = describe_references([image], descriptor, engine, self.config)
        self._rows[reference_id] = len(self._ids)
        self._ids.append(reference_id)
        self._desc.append(np.asarray(d.descriptor, np.float32).reshape(-1))
        boxes = np.array([r.box for r in d.regions], np.int32).reshape(-1, 4)
        crops = np.asarray(d.region_descriptors, np.float32).astype("<f2").astype(np.float32)  # as the index has
        self._regions.append(([r.tag for r in d.regions], boxes, crops))
        self._local.append(None if d.local is None else as_stored(d.local))
        self._thumbs.append(d.thumbnail)
        self._global_index.add([reference_id], self._desc[-1][None])

    # ------------------------------------------------------------------------------------------- read side
    @property
    def ids(self) -> list[str]:
        """Reference ids in row order (do not modify)."""
        return self._ids

    @property
    def global_index(self) -> ReferenceIndex:
        """faiss index of the global descriptors; row i = reference ``ids[i]``."""
        return self._global_index

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ref_id: object) -> bool:
        return ref_id in self._rows

    def global_descriptors(self) -> np.ndarray:
        """(N, D) float32 unnormalised."""
        return np.stack(self._desc) if self._desc else np.zeros((0, self._dim), np.float32)

    def region_descriptors(self, row: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(tags, boxes (n, 4) int32, descriptors (n, D) float32) of reference ``row``'s crops."""
        return self._regions[row]

    def search_regions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k reference crops per query by cosine: (ref rows, region idx, cosine), each (M, k), -1 padded."""
        owners = [(r, i) for r, (_, _, d) in enumerate(self._regions) for i in range(len(d))]
        m = len(queries)
        rows = np.full((m, k), -1, np.int64)
        idx = np.full((m, k), -1, np.int64)
        cos = np.full((m, k), -np.inf, np.float32)
        if not owners or m == 0:
            return rows, idx, cos
        allr = split_norm(np.concatenate([d for _, _, d in self._regions]))[0]
        index = faiss.IndexFlatIP(allr.shape[1])
        index.add(allr)
        s, j = index.search(split_norm(np.asarray(queries, np.float32))[0], min(k, len(owners)))
        for a in range(m):
            for b in range(j.shape[1]):
                if j[a, b] >= 0:
                    rows[a, b], idx[a, b] = owners[j[a, b]]
                    cos[a, b] = s[a, b]
        return rows, idx, cos

    def local_features(self, rows: Sequence[int]) -> list[LocalFeatures]:
        """Full-picture local features of ``rows`` (shared objects: do not modify)."""
        out = []
        for r in rows:
            f = self._local[int(r)]
            if f is None:
                raise ValueError(f"reference {self._ids[int(r)]} has no local features")
            out.append(f)
        return out

    def thumbnails(self, rows: Sequence[int]) -> list[np.ndarray | None]:
        """Grey uint8 thumbnails of ``rows`` (the dense alignment check; shared objects: do not modify)."""
        return [self._thumbs[int(r)] for r in rows]

    def keypoint_voter(self, *, seed: int | None = None) -> KeypointVoter:
        """The keypoint voter over every reference's local features (built once per seed and size)."""
        seed = int(self.config.seed if seed is None else seed)
        if self._voter is None or self._voter[:2] != (seed, len(self)):
            self._voter = (seed, len(self), KeypointVoter.from_features(self.local_features(range(len(self))),
                                                                        seed=seed))
        return self._voter[2]

    def background_descriptors(self) -> np.ndarray:
        """(0, D): a memory store holds no background set."""
        return np.zeros((0, self._dim), np.float32)
