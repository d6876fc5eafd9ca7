"""An in-memory reference store with the read API of :class:`~matcher.index_store.IndexStore`, for scoring a few
pairs without an index on disk (``Matcher.score``, ``icd score``)."""
from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from matcher.config import MatcherConfig
from matcher.descriptors.infer import split_norm
from matcher.index import ReferenceIndex
from matcher.local.types import LocalFeatures

__all__ = ["MemoryStore"]


class MemoryStore:
    """References described in memory: ids, global descriptors + index, reference crops, local features."""

    def __init__(self, config: MatcherConfig, descriptor: object) -> None:
        self.config = config
        self.ids: list[str] = []
        self._desc: list[np.ndarray] = []
        self._regions: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self._local: list[LocalFeatures | None] = []
        self.global_index: ReferenceIndex = descriptor.new_index()  # type: ignore[attr-defined]
        self._dim = int(descriptor.dim)  # type: ignore[attr-defined]

    def add(self, reference_id: str, image: np.ndarray, descriptor: object, engine: object) -> None:
        """Describe one RGB uint8 reference image and keep it."""
        from matcher.reference_records import describe_references

        (desc, regions, region_desc, local), = describe_references([image], descriptor, engine, self.config)
        self.ids.append(reference_id)
        self._desc.append(np.asarray(desc, np.float32).reshape(-1))
        boxes = np.array([r.box for r in regions], np.int32).reshape(-1, 4)
        self._regions.append(([r.tag for r in regions], boxes, np.asarray(region_desc, np.float32)))
        self._local.append(local)
        self.global_index.add([reference_id], self._desc[-1][None])

    def __len__(self) -> int:
        return len(self.ids)

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
        out = []
        for r in rows:
            f = self._local[int(r)]
            if f is None:
                raise ValueError(f"reference {self.ids[int(r)]} has no local features")
            out.append(f)
        return out

    def background_descriptors(self) -> np.ndarray:
        return np.zeros((0, self._dim), np.float32)
