"""The one configuration object of the engine. Pass it down; do not thread flags through calls."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DescriptorConfig", "DetectorConfig", "IndexConfig", "LoadConfig", "LocalConfig", "MatcherConfig", "PipelineConfig"]


@dataclass(frozen=True)
class LoadConfig:
    """Image loading limits."""

    max_pixels: int = 64_000_000  # width*height above this is refused (decompression bomb)
    min_side: int = 32  # images whose shorter side is below this (px) are refused


@dataclass(frozen=True)
class LocalConfig:
    """Local-feature extraction, matching and geometric verification."""

    extractor: str = "sift"  # name in matcher.local.features.EXTRACTORS
    working_size: int = 512  # longer side (px) the image is resized to before extraction (measured:
    # bench/local_features_measure.py; 384 is ~1.45x faster with similar inlier separation)
    max_keypoints: int = 1024  # keypoint budget per image (strongest responses kept; measured, see above)
    max_upscale: float = 2.0  # small images are enlarged towards working_size by at most this factor
    sift_contrast_threshold: float = 0.04  # OpenCV SIFT contrastThreshold (kornia: min |DoG| = this / layers)
    sift_edge_threshold: float = 10.0  # OpenCV SIFT edgeThreshold (larger keeps more edge-like keypoints)
    sift_octave_layers: int = 3  # DoG layers per octave (OpenCV nOctaveLayers)
    sift_sigma: float = 1.6  # Gaussian sigma of octave 0 (OpenCV sigma)
    sift_fallback_below: int = 100  # fewer keypoints than this at the thresholds above: detect again with the
    # fallback thresholds below and keep the strongest (low-contrast and flat pictures; bench/RESULTS.md,
    # keypoint starvation); 0 = off
    sift_fallback_contrast_threshold: float = 0.005  # contrastThreshold of the fallback detection
    sift_fallback_edge_threshold: float = 40.0  # edgeThreshold of the fallback detection (keeps corners of
    # smooth curves, which flat graphics are made of)
    ratio: float = 0.85  # Lowe ratio test on L2 distances (best / second best)
    mutual: bool = True  # keep only mutual nearest neighbours
    mirror: bool = True  # also match mirrored descriptors (flip invariance)
    invert: bool = True  # also match the whole query's descriptors as those of its negative (255 - gray: the same
    # keypoints, each descriptor's cell grid turned 180 degrees; matcher.local.features.INVERT_PERMUTATION), so that
    # an intensity-inverted copy verifies; query side only, one more GEMM per query
    invert_min_inliers: int = 12  # an inverted reading is fitted only with this many tentative matches and
    # accepted only with this many inliers (two more readings are two more chances of a chance fit)
    invert_max_keypoints: int = 256  # the inverted readings use only the query's strongest keypoints (extractors
    # keep them strongest first): the full 1,024 cost 19 % of the queries/s at 1,200 references (bench/RESULTS.md)
    mirror_split: bool = True  # plain + mirrored similarities from one GEMM's work via the mirror split of the
    # descriptors (matcher.local.matching.mirror_split; equal up to float32 rounding); False: two full GEMMs
    blas_threads: int = 1  # OpenBLAS threads for the matching GEMMs (0 = library default); on shared cores 2
    # threads were up to ~4x slower than 1 (bench/RESULTS.md); run several processes for more cores
    model: str = "homography"  # geometric model: similarity | affine | homography
    ransac_threshold: float = 0.02  # inlier threshold as a fraction of the reference's longer side
    ransac_iters: int = 2000
    min_inliers: int = 6  # below this a fit is not accepted
    max_scale_ratio: float = 12.0  # fits that scale the query by more than this (either way) are rejected
    ransac_confidence: float = 0.999  # RANSAC stops once an all-inlier sample was drawn with this probability
    ransac_impl: str = "numba"  # "numba" (matcher.local.kernels.ransac) or "numpy" (vectorised reference, ~7x slower)
    max_perspective: float = 3.0  # max/min projective depth w over the query frame corners above this: rejected
    dedup_px: float = 1.0  # matched points within ~this many px count as one location (SIFT multi-orientation)
    rejected_details: bool = False  # also fill boxes, points, coverages and frame projections of rejected fits
    # (for inspection; score 0 either way, and they cost about as much as the fit)
    query_regions: tuple[str, ...] = ("full",)  # region proposers run on the query
    reference_regions: tuple[str, ...] = ("full",)  # region proposers run on the reference


@dataclass(frozen=True)
class DetectorConfig:
    """The pasted-picture detector (YOLO, :mod:`detectors`) used by the "yolo" region proposer."""

    weights: str = ""  # weights file (.pt + .json beside it); "" = the shipped weights/detector_yolov8n.pt
    conf: float = 0.1  # minimum box confidence (D2LV kept boxes at 0.1)
    iou: float = 0.5  # NMS IoU threshold
    max_boxes: int = 20  # boxes kept per image, best first (D2LV: 20)
    imgsz: int = 0  # square input size, px; 0 = the size stored with the weights
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    batch_size: int = 16  # images per forward pass


@dataclass(frozen=True)
class DescriptorConfig:
    """Global descriptor (candidate list, ASL norm gate) and its reference index."""

    model: str = "asl_lite0"  # name in matcher.descriptors.registry.DESCRIPTORS
    weights: str = ""  # weights file; "" = the model's shipped file in weights/
    dim: int = 256  # descriptor size (64-512); taken from the weights file when it says otherwise
    image_size: int = 160  # square input side, px
    scales: tuple[int, ...] = ()  # extra input sides (px) averaged in (multi-scale); () = single scale
    batch_size: int = 32  # images per forward pass
    score_norm_beta: float = 1.0  # score - beta * mean top-k similarity to the background set (0 = off)
    score_norm_k: int = 5  # k of the background similarities
    gate_margin: float | None = None  # log||f(q)|| - log||f(r)|| above this marks a pair (ASL); None = from weights
    gate_penalty: float = 0.1  # global-only mode: marked pairs' scores are lowered by this
    index_type: str = "auto"  # "flat" (exact inner product), "ivfpq", or "auto" (flat up to index_threshold)
    index_threshold: int = 1_000_000  # "auto" switches to IVF-PQ above this many references
    nprobe: int = 16  # IVF lists visited per query


@dataclass(frozen=True)
class PipelineConfig:
    """The matching pipeline: candidates -> regions -> verification -> fused score (:mod:`matcher.pipeline`)."""

    query_regions: tuple[str, ...] = ("full", "grid2", "center", "rotations", "flips", "yolo")  # query variants
    # described globally and searched against whole references ("local-to-global"); names of region proposers
    reference_regions: tuple[str, ...] = ("grid2", "grid3", "center")  # reference crops described at index time
    # and compared with the whole query ("global-to-local")
    global_k: int = 20  # references retrieved per query variant
    candidates: int = 30  # candidate budget per query: the best this many references over all variants are verified
    keypoint_voting: bool = True  # also collect candidates by local-descriptor votes (faiss over reference keypoints;
    # measured on the 1,200/2,200 bench benchmark: µAP 0.889 -> 0.914, ~512 bytes of RAM per reference keypoint)
    voting_candidates: int = 10  # extra candidates per query from keypoint votes
    voting_codes: str = "pq32"  # how the voter's IVF lists hold reference keypoints: "flat" (float32, 512 bytes per
    # keypoint), "sq8" (128), "pq32" (32), "pq64" (64), or 4-bit fast-scan "pq32fs" (16) / "pq64fs" (32); plus 8
    # bytes of id each (matcher/retrieval/voting.py); pq32: candidate recall within 0.2 points of flat at 1/13 of
    # the bytes, and mapped (shared by the processes on an index); the fast-scan codes vote ~2x faster but faiss
    # reads them into each process's memory (bench/RESULTS.md, issue 15: a lean index; third pass)
    voting_keypoints: int = 768  # the query's strongest this many keypoints vote (0 = all). bench/voting_budget.py,
    # 300 home copy queries, flat voter at 1.2k: candidate recall 0.970 at 0 and 768, 0.967 at 512; voting -16 %
    voting_nprobe: int = 2  # IVF lists of the voter visited per voting keypoint (found through an HNSW graph over
    # the lists' centroids, matcher/retrieval/voting.py); the list scan is most of the voting time. 300 home copy
    # queries at 10k references: candidate recall 0.9433 at 8, 4 and 2; home benchmark µAP 0.962 at 8 and at 2
    fusion_weights: str = ""  # fusion model (JSON); "" = the shipped weights/fusion.json


@dataclass(frozen=True)
class IndexConfig:
    """The on-disk reference index (``icd index``)."""

    batch_size: int = 16  # references processed and committed together (a crash loses at most one batch)
    local_features: bool = True  # store local features (needed for verification)


@dataclass(frozen=True)
class MatcherConfig:
    """Everything the engine needs; build with keyword overrides, e.g. ``MatcherConfig.make(local={"ratio": .8})``."""

    load: LoadConfig = field(default_factory=LoadConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # pasted-picture detector
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)  # global descriptor + index
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # candidates, regions, fusion
    index: IndexConfig = field(default_factory=IndexConfig)  # on-disk reference index
    threshold: float = 0.5  # default decision threshold on the calibrated pair score
    top_k: int = 10  # pairs written per query
    max_rows: int = 500_000  # rows in a submission, all queries together
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    seed: int = 0
    weights_dir: str = ""  # folder of the shipped weights files; "" = the installed package's (matcher.resources)

    @classmethod
    def make(cls, **overrides: Any) -> MatcherConfig:
        """Build a config from nested dict overrides (the shape of :meth:`to_dict`)."""
        base = cls()
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in overrides:
                continue
            val = overrides[f.name]
            sub = getattr(base, f.name)
            if dataclasses.is_dataclass(sub) and isinstance(val, dict):
                sub_fields = {sf.name: sf for sf in dataclasses.fields(sub)}
                unknown = set(val) - set(sub_fields)
                if unknown:
                    raise ValueError(f"unknown {f.name} config keys: {sorted(unknown)}")
                val = {k: tuple(v) if isinstance(v, list) else v for k, v in val.items()}
                val = dataclasses.replace(sub, **val)
            kw[f.name] = val
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return dataclasses.replace(base, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def resolved_device(self) -> str:
        """"cuda" or "cpu" after resolving "auto"."""
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"
