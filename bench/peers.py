"""Peer methods the benchmarks compare against (not part of the engine).

- ``naive_sift``: OpenCV SIFT (plain descriptors, no RootSIFT, no mirror handling), BFMatcher k=2 with Lowe ratio 0.8,
  ``cv2.findHomography`` RANSAC (5 px), score = number of RANSAC inliers. The "naive per-pair loop".
- ``phash``: imagehash's 64-bit pHash, score = 1 - Hamming distance / 64.
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

import cv2
import numpy as np

from matcher.isc.submission import PredictedMatch, top_k_per_query

__all__ = ["NaiveSift", "naive_sift_features", "naive_sift_pair_score", "naive_sift_rows", "phash_bits",
           "phash_scores"]


@dataclass
class NaiveSift:
    """Plain OpenCV SIFT at a fixed working size and keypoint budget (same budget as the engine in comparisons)."""

    working_size: int = 512
    max_keypoints: int = 1024

    def __post_init__(self) -> None:
        self._sift = cv2.SIFT_create(nfeatures=self.max_keypoints)
        self._bf = cv2.BFMatcher(cv2.NORM_L2)

    def features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(keypoints (N, 2) float32 in working-size pixels, descriptors (N, 128) float32 or None)."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        s = self.working_size / max(h, w)
        if s < 1:
            gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        kps, desc = self._sift.detectAndCompute(gray, None)
        pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        return pts, desc

    def pair_score(self, fq: tuple[np.ndarray, np.ndarray | None], fr: tuple[np.ndarray, np.ndarray | None]) -> float:
        """Inlier count of a ratio-0.8 + findHomography RANSAC check; 0 when it cannot be fitted."""
        (pq, dq), (pr, dr) = fq, fr
        if dq is None or dr is None or len(dq) < 2 or len(dr) < 2:
            return 0.0
        knn = self._bf.knnMatch(dq, dr, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        if len(good) < 4:
            return float(len(good)) / 10.0  # below 4 no homography: rank by tentative matches only
        src = pq[[m.queryIdx for m in good]]
        dst = pr[[m.trainIdx for m in good]]
        h, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
        if h is None or mask is None:
            return float(len(good)) / 10.0
        return float(mask.sum())


def naive_sift_features(images: list[np.ndarray], working_size: int = 512, max_keypoints: int = 1024) -> list:
    """Features of every image with :class:`NaiveSift`."""
    ns = NaiveSift(working_size, max_keypoints)
    return [ns.features(im) for im in images]


def naive_sift_pair_score(ns: NaiveSift, q: np.ndarray, r: np.ndarray) -> float:
    """The naive loop that extracts per pair: features of both images, then the check."""
    return ns.pair_score(ns.features(q), ns.features(r))


_NS: dict = {}  # per worker process: the reference features and the checker


def _naive_init(ref_feats: dict, working_size: int, budget: int) -> None:
    _NS["refs"] = ref_feats
    _NS["ns"] = NaiveSift(working_size, budget)


def _naive_query(item: tuple) -> tuple[str, list[tuple[str, float]]]:
    qid, fq = item
    ns = _NS["ns"]
    return qid, [(rid, ns.pair_score(fq, fr)) for rid, fr in _NS["refs"].items()]


def naive_sift_rows(queries: dict[str, np.ndarray], refs: dict[str, np.ndarray], working_size: int, budget: int,
                    workers: int, top_k: int = 10) -> list[PredictedMatch]:
    """Every query against every reference with :class:`NaiveSift` (features extracted once per image, the check
    per pair in ``workers`` forked processes); the best ``top_k`` rows per query with a score > 0."""
    ns = NaiveSift(working_size, budget)
    ref_feats = {rid: ns.features(im) for rid, im in refs.items()}
    q_feats = [(qid, ns.features(im)) for qid, im in queries.items()]
    rows = []
    with mp.get_context("fork").Pool(workers, _naive_init, (ref_feats, working_size, budget)) as pool:
        for qid, scores in pool.imap_unordered(_naive_query, q_feats, chunksize=4):
            rows += [PredictedMatch(qid, rid, s) for rid, s in scores if s > 0]
    return top_k_per_query(rows, top_k)


def phash_bits(image: np.ndarray) -> np.ndarray:
    """64 pHash bits (bool) of an RGB uint8 image."""
    import imagehash
    from PIL import Image

    return np.asarray(imagehash.phash(Image.fromarray(image)).hash, bool).reshape(-1)


def phash_scores(query_bits: np.ndarray, ref_bits: np.ndarray) -> np.ndarray:
    """(Q, R) similarity 1 - hamming/64 for (Q, 64) and (R, 64) bool bit arrays."""
    q = query_bits.astype(np.float32)
    r = ref_bits.astype(np.float32)
    ham = q @ (1 - r).T + (1 - q) @ r.T
    return 1.0 - ham / query_bits.shape[1]
