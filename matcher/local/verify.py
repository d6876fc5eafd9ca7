"""Verification of one query against many references with cached features: matches -> fits -> best evidence.

Data flow: :class:`QueryFeatures` (one :class:`LocalFeatures` per query region, keypoints in original query px)
and a :class:`ReferenceBank` (all references' features, descriptors concatenated for one-to-many matching) ->
:func:`verify_query` -> the best :class:`PairEvidence` per reference (by calibrated score), over query regions and
plain/mirrored descriptors (and, for the whole query, its descriptors read as those of its negative). Features
are computed once per image by the caller; nothing here extracts.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from matcher.config import LocalConfig, MatcherConfig
from matcher.local.evidence import PairEvidence, evidence_from_matches
from matcher.local.features import (
    INVERT_PERMUTATION,
    MIRROR_PERMUTATION,
    LocalFeatureExtractor,
    invert_sift_descriptors,
    with_mirrored,
)
from matcher.local.matching import (
    MatchBatch,
    OneToMany,
    blas_threads,
    match_one_to_many,
    match_one_to_many_split,
    mirror_split,
)
from matcher.local.score import LocalScoreModel
from matcher.local.types import LocalFeatures
from matcher.regions.proposers import propose_regions
from matcher.regions.region import Region

__all__ = ["QueryFeatures", "ReferenceBank", "extract_query_features", "reference_region_features", "region_features", "verify_query"]

# Rotation and flip regions add nothing to SIFT (rotation invariant; mirrors are matched through the mirrored
# descriptors), so for local features only crop-type regions are extracted.


@dataclass
class QueryFeatures:
    """Local features of one query: ``features[i]`` belongs to ``regions[i]`` (the full image first).

    Keypoints of every region are in ORIGINAL query pixels and ``image_size`` is the original query size.
    """

    regions: list[Region]
    features: list[LocalFeatures]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.features[0].image_size if self.features else (0, 0)


@dataclass
class ReferenceBank:
    """Features of R references with their descriptors packed for :func:`match_one_to_many`.

    descriptors: (sumM, D) float32, reference r owns rows ``offsets[r]:offsets[r+1]``; offsets: (R+1,) int64.
    """

    ids: list[str]
    features: list[LocalFeatures]
    descriptors: np.ndarray
    offsets: np.ndarray
    regions: list[str] | None = None  # region tag of each entry when a reference has several (ids repeat)
    _split: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def mirror_split(self) -> tuple[np.ndarray, np.ndarray]:
        """``descriptors`` split for the SIFT mirror permutation (:func:`matcher.local.matching.mirror_split`):
        (sumM, 64) float32 sym and anti halves, computed on first use and kept."""
        if self._split is None:
            self._split = mirror_split(self.descriptors, MIRROR_PERMUTATION)
        return self._split

    @classmethod
    def build(cls, ids: Sequence[str], features: Sequence[LocalFeatures],
              regions: Sequence[str] | None = None) -> ReferenceBank:
        if len(ids) != len(features):
            raise ValueError(f"{len(ids)} ids but {len(features)} feature sets")
        dim = features[0].descriptors.shape[1] if features else 128
        sizes = np.array([f.n for f in features], np.int64)
        offsets = np.zeros(len(features) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        desc = np.empty((int(offsets[-1]), dim), np.float32)
        for f, a, b in zip(features, offsets[:-1], offsets[1:]):
            desc[a:b] = f.descriptors
        if regions is not None and len(regions) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(regions)} region tags")
        return cls(list(ids), list(features), desc, offsets, None if regions is None else list(regions))

    def subset(self, indices: Sequence[int]) -> ReferenceBank:
        """A bank of the references at ``indices`` (in that order), e.g. one query's candidates."""
        idx = [int(i) for i in indices]
        regions = None if self.regions is None else [self.regions[i] for i in idx]
        return ReferenceBank.build([self.ids[i] for i in idx], [self.features[i] for i in idx], regions)

    def __len__(self) -> int:
        return len(self.ids)


def region_features(image: np.ndarray, region: Region, extractor: LocalFeatureExtractor) -> LocalFeatures:
    """Features of ``region`` of ``image`` with keypoints mapped back to original image px.

    Only crop regions (no rotation/flip) are meaningful here; the mirrored descriptors (if the extractor makes
    them) stay valid because the keypoints keep their orientation in the original frame.
    """
    h, w = image.shape[:2]
    if region.rotation or region.flip:
        raise ValueError(f"region {region.tag!r}: local features use crop regions only (SIFT is rotation "
                         "invariant and mirrors are matched through mirrored descriptors)")
    feats = extractor.extract(region.apply(image))
    return LocalFeatures(
        keypoints=region.to_original(feats.keypoints).astype(np.float32),
        scales=feats.scales,
        orientations=feats.orientations,
        descriptors=feats.descriptors,
        image_size=(w, h),
        mirrored=feats.mirrored,
    )


def reference_region_features(image: np.ndarray, extractor: LocalFeatureExtractor, config: LocalConfig, *,
                              proposer_config: MatcherConfig | None = None) -> list[tuple[str, LocalFeatures]]:
    """(tag, features) of every crop region of ``config.reference_regions`` (the full image first when listed);
    keypoints in original reference px. ``"yolo"`` adds detected picture boxes as extra reference regions (with the
    detector settings of ``proposer_config``)."""
    regions = [r for r in propose_regions(image, config.reference_regions, config=proposer_config)
               if not (r.rotation or r.flip)]
    return [(r.tag, region_features(image, r, extractor)) for r in regions]


def extract_query_features(image: np.ndarray, extractor: LocalFeatureExtractor, config: LocalConfig, *,
                           proposer_config: MatcherConfig | None = None) -> QueryFeatures:
    """Features of every crop region of ``config.query_regions`` (rotation/flip regions are skipped).

    ``"yolo"`` (detected picture boxes, with the detector settings of ``proposer_config``) falls back to the 2x2
    grid without usable detector weights, and logs that once.
    """
    regions = [r for r in propose_regions(image, config.query_regions, config=proposer_config)
               if not (r.rotation or r.flip)]
    return QueryFeatures(regions, [region_features(image, r, extractor) for r in regions])


def _attach_detector_agreement(ev: PairEvidence, detected: list[Region]) -> None:
    """Set ``ev.detector_iou/score``: the best IoU between the inlier box in the query and a detected box."""
    if ev.query_box is None:
        return
    from detectors.evidence import detector_agreement  # detected regions only exist when detectors is in use

    agreement = detector_agreement(ev.query_box, detected)
    ev.detector_iou, ev.detector_score = agreement.iou, agreement.score


def _is_bin_mirror(feats: LocalFeatures) -> bool:
    """True when ``feats.mirrored`` is the SIFT bin permutation of ``feats.descriptors`` (what every extractor
    and the feature store produce), so the mirror-split matcher applies."""
    d, m = feats.descriptors, feats.mirrored
    return (m is not None and d.ndim == 2 and d.shape[1] == MIRROR_PERMUTATION.size and m.shape == d.shape
            and np.array_equal(m, d[:, MIRROR_PERMUTATION]))


def _match(feats: LocalFeatures, bank: ReferenceBank, config: LocalConfig) -> OneToMany:
    """Plain (and, with ``config.mirror``, mirrored) matches of one query region against the bank: through the
    mirror split (half the GEMM work) when ``config.mirror_split`` and the mirrored descriptors are the bin
    permutation, else with both query sets in one GEMM."""
    with blas_threads(config.blas_threads):
        split = config.mirror and config.mirror_split and _is_bin_mirror(feats)
        if split and bank.descriptors.shape[1] == feats.descriptors.shape[1]:
            q_sym, q_anti = mirror_split(feats.descriptors, MIRROR_PERMUTATION)
            ref_sym, ref_anti = bank.mirror_split()
            return match_one_to_many_split(q_sym, q_anti, ref_sym, ref_anti, bank.offsets, ratio=config.ratio,
                                           mutual=config.mutual)
        mirrored = feats.mirrored if config.mirror else None
        return match_one_to_many(feats.descriptors, bank.descriptors, bank.offsets, ratio=config.ratio,
                                 mutual=config.mutual, mirrored=mirrored)


def _match_inverted(feats: LocalFeatures, bank: ReferenceBank, config: LocalConfig) -> OneToMany | None:
    """:func:`_match` of the query region's strongest ``config.invert_max_keypoints`` keypoints with their
    descriptors read as those of its negative (:data:`INVERT_PERMUTATION`); None when ``config.invert`` is off or
    the descriptors are not 128-d SIFT. The keypoints are a prefix of ``feats`` (extractors keep them strongest
    first), so match indices stay valid for ``feats``."""
    d = feats.descriptors
    if (not config.invert or d.ndim != 2 or d.shape[1] != INVERT_PERMUTATION.size
            or bank.descriptors.shape[1] != d.shape[1]):
        return None
    k = max(1, int(config.invert_max_keypoints))
    negative = LocalFeatures(feats.keypoints[:k], feats.scales[:k], feats.orientations[:k],
                             invert_sift_descriptors(d[:k]), feats.image_size)
    return _match(with_mirrored(negative) if config.mirror else negative, bank, config)


def verify_query(
    query: QueryFeatures,
    bank: ReferenceBank,
    config: LocalConfig,
    model: LocalScoreModel,
    *,
    min_matches: int | None = None,
) -> dict[int, tuple[float, PairEvidence]]:
    """Best (score, evidence) per reference index of ``bank``, over query regions (per region, the plain or the
    mirrored matches, whichever are more numerous).

    Only references with at least ``min_matches`` (default ``config.min_inliers``) tentative matches in some
    region are fitted; the others are absent from the result (score 0: "too few matches").
    """
    need = config.min_inliers if min_matches is None else int(min_matches)
    best: dict[int, tuple[float, PairEvidence]] = {}
    if len(bank) == 0:
        return best
    detected = [r for r in query.regions if r.score is not None]  # detector boxes among the query regions
    need_inv = max(need, int(config.invert_min_inliers))  # an inverted reading's least matches and inliers
    inverted_config = replace(config, min_inliers=max(config.min_inliers, need_inv))
    for region, feats in zip(query.regions, query.features):
        if feats.n == 0:
            continue
        res = _match(feats, bank, config)
        # the readings of the region's matches: plain, mirrored and, for the whole query, the same two of its
        # negative; a copy is one of them, the others of a true copy hold only chance matches, so only the reading
        # with the most tentative matches is fitted (ties go to the earlier reading)
        readings: list[tuple[MatchBatch, bool, bool]] = [(res.plain, False, False)]
        if res.mirrored is not None:
            readings.append((res.mirrored, True, False))
        inverted = _match_inverted(feats, bank, config) if region is query.regions[0] else None
        if inverted is not None:
            readings.append((inverted.plain, False, True))
            if inverted.mirrored is not None:
                readings.append((inverted.mirrored, True, True))
        all_counts = np.stack([batch.counts() for batch, _, _ in readings])
        for k, (_, _, is_inv) in enumerate(readings):
            if is_inv:  # an inverted reading competes only with enough tentative matches
                all_counts[k] = np.where(all_counts[k] >= need_inv, all_counts[k], 0)
        pick = all_counts.argmax(0)
        counts = all_counts.max(0)
        for r in np.flatnonzero(counts >= need):
            r = int(r)
            batch, is_mirrored, is_inverted = readings[int(pick[r])]
            ev = evidence_from_matches(feats, bank.features[r], batch[r], is_mirrored,
                                       inverted_config if is_inverted else config, query_region=region,
                                       reference_region=None if bank.regions is None else bank.regions[r])
            ev.inverted = is_inverted
            if detected:
                _attach_detector_agreement(ev, detected)
            s = model.score(ev)
            if r not in best or s > best[r][0]:
                best[r] = (s, ev)
    return best
