"""Local feature extractors: image (RGB uint8) -> :class:`LocalFeatures` (RootSIFT).

Registered in :data:`EXTRACTORS`:

- ``sift``: OpenCV SIFT on the CPU.
- ``sift-kornia``: kornia's scale-space SIFT (``SIFTFeatureScaleSpace``, pyramid backend) on torch tensors,
  CUDA when available. Close to, but not the same as, the OpenCV path
  (see ``bench/local_features_measure.py``).

Both resize the greyscale image so that its longer side is ``working_size`` (INTER_AREA when shrinking, never
upscaling by more than ``max_upscale``), keep the ``max_keypoints`` strongest keypoints by detector response
and map keypoints back to original image pixels. Descriptors are RootSIFT (L1 normalise, sqrt, L2 normalise)
in OpenCV's bin layout, so :func:`mirror_sift_descriptors` applies to both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from matcher.config import LocalConfig
from matcher.local.types import LocalFeatures
from matcher.registry import Registry

__all__ = [
    "EXTRACTORS",
    "INVERT_PERMUTATION",
    "MIRROR_PERMUTATION",
    "KorniaSiftExtractor",
    "LocalFeatureExtractor",
    "SiftExtractor",
    "create_extractor",
    "invert_sift_descriptors",
    "mirror_sift_descriptors",
    "prepare_gray",
    "rootsift",
    "to_gray",
    "with_mirrored",
]


@runtime_checkable
class LocalFeatureExtractor(Protocol):
    """Anything that turns an RGB uint8 (H, W, 3) image into :class:`LocalFeatures`."""

    name: str

    def extract(self, image: np.ndarray) -> LocalFeatures: ...

    def extract_many(self, images: Iterable[np.ndarray]) -> list[LocalFeatures]: ...

    def signature(self) -> dict[str, Any]: ...


EXTRACTORS: Registry[LocalFeatureExtractor] = Registry("local feature extractor")


# ------------------------------------------------------------------------------------------ image preparation
def to_gray(image: np.ndarray) -> np.ndarray:
    """Greyscale (H, W) uint8 from RGB (H, W, 3), RGBA (H, W, 4), (H, W, 1) or (H, W) uint8 input.

    Raises ``ValueError`` naming the problem for other dtypes or shapes.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    if image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    if image.shape[0] == 0 or image.shape[1] == 0:
        return np.zeros(image.shape[:2], np.uint8)
    rgb = np.ascontiguousarray(image[:, :, :3])
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def prepare_gray(image: np.ndarray, working_size: int, max_upscale: float) -> tuple[np.ndarray, float, float]:
    """Greyscale image resized so its longer side is ``working_size`` px (at most ``max_upscale`` x larger).

    Returns ``(gray (h, w) uint8, sx, sy)`` where ``sx = W / w`` and ``sy = H / h`` map working pixels back to
    original pixels: ``x_orig = (x + 0.5) * sx - 0.5``. INTER_AREA when shrinking, INTER_LINEAR when
    enlarging.
    An empty (0-sized) image is returned unchanged with ``sx = sy = 1``.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    if width == 0 or height == 0:
        return np.zeros((height, width), np.uint8), 1.0, 1.0
    scale = min(working_size / max(width, height), max_upscale)
    w = max(1, round(width * scale))
    h = max(1, round(height * scale))
    if scale < 1.0:
        # shrink the 1-channel image, not the 3-channel one: a third of the work on huge images
        gray = cv2.resize(to_gray(image), (w, h), interpolation=cv2.INTER_AREA)
    elif (w, h) != (width, height):
        gray = cv2.resize(to_gray(image), (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        gray = to_gray(image)
    return np.ascontiguousarray(gray), width / w, height / h


# ------------------------------------------------------------------------------------------ descriptors
def rootsift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT of SIFT descriptors (N, D) (non-negative): L1 normalise, sqrt, L2 normalise. (N, D) float32.

    All-zero rows stay zero.
    """
    desc = np.maximum(np.asarray(desc, np.float32), 0.0)
    desc = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + eps))
    norm = np.linalg.norm(desc, axis=1, keepdims=True)
    return (desc / np.maximum(norm, eps)).astype(np.float32, copy=False)


def _mirror_permutation(n_spatial: int = 4, n_orient: int = 8) -> np.ndarray:
    """Index permutation taking a SIFT descriptor (OpenCV layout) to that of the horizontally mirrored patch.

    OpenCV's layout is ``index = (row * n_spatial + col) * n_orient + o``; rows and columns are cells of the
    keypoint frame (rotated by the keypoint angle). Mirroring the image maps the dominant orientation theta to
    180 - theta, so in the keypoint frame the mirror is a reflection across the frame's x axis: cell rows are
    reversed and gradient angles are negated, o -> (n_orient - o) % n_orient. Verified against extracting
    from the mirrored image in tests/test_local_features.py.
    """
    perm = np.empty(n_spatial * n_spatial * n_orient, np.intp)
    for r in range(n_spatial):
        for c in range(n_spatial):
            for o in range(n_orient):
                dst = (r * n_spatial + c) * n_orient + o
                src = ((n_spatial - 1 - r) * n_spatial + c) * n_orient + (n_orient - o) % n_orient
                perm[dst] = src
    return perm


MIRROR_PERMUTATION: np.ndarray = _mirror_permutation()  # (128,) intp


def _invert_permutation(n_spatial: int = 4, n_orient: int = 8) -> np.ndarray:
    """Index permutation taking a SIFT descriptor (OpenCV layout) to that of the same keypoint in the
    intensity-inverted picture (255 - gray).

    Inverting negates every gradient: the keypoints stay (a DoG maximum becomes a minimum of the same strength),
    the dominant orientation turns by 180 degrees, and so does the keypoint frame. Relative to the turned frame the
    gradient angles are unchanged, while the patch is seen turned by 180 degrees: the 4 x 4 cell grid is reversed
    in both directions, orientation bins stay. Checked against extracting from the inverted picture in
    tests/local/test_invert.py.
    """
    perm = np.empty(n_spatial * n_spatial * n_orient, np.intp)
    for r in range(n_spatial):
        for c in range(n_spatial):
            for o in range(n_orient):
                perm[(r * n_spatial + c) * n_orient + o] = ((n_spatial - 1 - r) * n_spatial
                                                            + (n_spatial - 1 - c)) * n_orient + o
    return perm


INVERT_PERMUTATION: np.ndarray = _invert_permutation()  # (128,) intp


def invert_sift_descriptors(desc: np.ndarray) -> np.ndarray:
    """Descriptors (N, 128) of the same keypoints in the intensity-inverted picture, by permuting bins. (N, 128)
    float32; norms unchanged. Keypoint positions and scales are those of ``desc``'s keypoints."""
    return _permute_bins(desc, INVERT_PERMUTATION)


def mirror_sift_descriptors(desc: np.ndarray) -> np.ndarray:
    """Descriptors (N, 128) of the horizontally mirrored patches, by permuting bins. (N, 128) float32.

    Norms are unchanged (a permutation), so RootSIFT rows stay L2-normalised. The keypoint of the mirrored
    patch in a mirrored image of width W is at (W - 1 - x, y) with angle (180 - angle) mod 360.
    """
    return _permute_bins(desc, MIRROR_PERMUTATION)


def _permute_bins(desc: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(N, D) float32 C-contiguous ``desc[:, perm]``; ValueError unless ``desc`` is (N, D = perm.size)."""
    desc = np.asarray(desc, np.float32)
    if desc.ndim != 2 or desc.shape[1] != perm.size:
        raise ValueError(f"expected SIFT descriptors of shape (N, {perm.size}), got {desc.shape}")
    return np.ascontiguousarray(desc[:, perm])


def with_mirrored(features: LocalFeatures) -> LocalFeatures:
    """``features`` with ``mirrored`` filled by :func:`mirror_sift_descriptors` (same object, updated)."""
    if features.mirrored is None:
        features.mirrored = mirror_sift_descriptors(features.descriptors)
    return features


# ------------------------------------------------------------------------------------------ shared helpers
def _strongest(
    responses: np.ndarray, xy: np.ndarray, sizes: np.ndarray, angles: np.ndarray, k: int
) -> np.ndarray:
    """Indices of the ``k`` strongest keypoints by response, deterministic (ties by x, y, size, angle)."""
    order = np.lexsort((angles, sizes, xy[:, 1], xy[:, 0], -responses))
    return order[:k]


def _to_original(
    xy: np.ndarray, sizes: np.ndarray, angles: np.ndarray, sx: float, sy: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map working-image keypoints back to the original image: (N,2) px, (N,) px, (N,) degrees in [0, 360)."""
    pts = np.empty((xy.shape[0], 2), np.float32)
    pts[:, 0] = np.clip((xy[:, 0] + 0.5) * sx - 0.5, 0.0, max(width - 1, 0))
    pts[:, 1] = np.clip((xy[:, 1] + 0.5) * sy - 0.5, 0.0, max(height - 1, 0))
    scales = (sizes * np.sqrt(sx * sy)).astype(np.float32)
    ori = np.mod(angles, 360.0).astype(np.float32)
    ori[ori >= 360.0] = 0.0
    return pts, scales, ori


def _image_size(image: np.ndarray) -> tuple[int, int]:
    shape = np.shape(image)
    if len(shape) < 2:
        raise ValueError(f"image must have at least 2 dimensions, got shape {shape}")
    return int(shape[1]), int(shape[0])


# ------------------------------------------------------------------------------------------ OpenCV SIFT
class SiftExtractor:
    """OpenCV SIFT + RootSIFT. Holds the ``cv2.SIFT`` object (state); see :func:`create_sift` for params."""

    name = "sift"

    def __init__(
        self,
        working_size: int = 512,
        max_keypoints: int = 1024,
        contrast_threshold: float = 0.04,
        edge_threshold: float = 10.0,
        n_octave_layers: int = 3,
        sigma: float = 1.6,
        max_upscale: float = 2.0,
        compute_mirrored: bool = False,
        fallback_below: int = 0,
        fallback_contrast_threshold: float = 0.005,
        fallback_edge_threshold: float = 40.0,
    ) -> None:
        if working_size < 16 or max_keypoints < 1 or max_upscale < 1.0:
            raise ValueError(
                f"need working_size >= 16, max_keypoints >= 1, max_upscale >= 1; got {working_size}, "
                f"{max_keypoints}, {max_upscale}"
            )
        self.working_size = int(working_size)
        self.max_keypoints = int(max_keypoints)
        self.contrast_threshold = float(contrast_threshold)
        self.edge_threshold = float(edge_threshold)
        self.n_octave_layers = int(n_octave_layers)
        self.sigma = float(sigma)
        self.max_upscale = float(max_upscale)
        self.compute_mirrored = bool(compute_mirrored)
        self.fallback_below = max(0, int(fallback_below))
        self.fallback_contrast_threshold = float(fallback_contrast_threshold)
        self.fallback_edge_threshold = float(fallback_edge_threshold)
        # nfeatures lets OpenCV drop weak keypoints before describing them; it may keep a few more on ties,
        # which _strongest trims deterministically.
        self._sift = cv2.SIFT_create(
            nfeatures=self.max_keypoints,
            nOctaveLayers=self.n_octave_layers,
            contrastThreshold=self.contrast_threshold,
            edgeThreshold=self.edge_threshold,
            sigma=self.sigma,
        )
        self._fallback = cv2.SIFT_create(
            nfeatures=self.max_keypoints,
            nOctaveLayers=self.n_octave_layers,
            contrastThreshold=self.fallback_contrast_threshold,
            edgeThreshold=self.fallback_edge_threshold,
            sigma=self.sigma,
        ) if self.fallback_below else None

    def signature(self) -> dict[str, Any]:
        """Name and every parameter that changes the stored features."""
        return {
            "name": self.name,
            "descriptor": "rootsift-opencv-layout",
            "working_size": self.working_size,
            "max_keypoints": self.max_keypoints,
            "contrast_threshold": self.contrast_threshold,
            "edge_threshold": self.edge_threshold,
            "n_octave_layers": self.n_octave_layers,
            "sigma": self.sigma,
            "max_upscale": self.max_upscale,
            **({"fallback_below": self.fallback_below,
                "fallback_contrast_threshold": self.fallback_contrast_threshold,
                "fallback_edge_threshold": self.fallback_edge_threshold} if self.fallback_below else {}),
        }

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Features of an RGB uint8 (H, W, 3) image; N = 0 when nothing is detected (flat or tiny images).

        With ``fallback_below`` set, a picture with fewer keypoints than that is detected again with the fallback
        thresholds (low contrast, lenient edge test), and the strongest keypoints of that pass fill the budget."""
        width, height = _image_size(image)
        gray, sx, sy = prepare_gray(image, self.working_size, self.max_upscale)
        if min(gray.shape[:2]) < 8:
            return self._finish(LocalFeatures.empty(width, height))
        kps, desc = self._sift.detectAndCompute(gray, None)
        if self._fallback is not None and len(kps) < self.fallback_below:
            kps, desc = self._fallback.detectAndCompute(gray, None)
        if not kps or desc is None:
            return self._finish(LocalFeatures.empty(width, height))
        xy = np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2)
        sizes = np.array([kp.size for kp in kps], np.float32)
        angles = np.array([kp.angle for kp in kps], np.float32)
        responses = np.array([kp.response for kp in kps], np.float32)
        keep = _strongest(responses, xy, sizes, angles, self.max_keypoints)
        pts, scales, ori = _to_original(xy[keep], sizes[keep], angles[keep], sx, sy, width, height)
        feats = LocalFeatures(pts, scales, ori, rootsift(desc[keep]), (width, height))
        return self._finish(feats)

    def extract_many(self, images: Iterable[np.ndarray]) -> list[LocalFeatures]:
        """:meth:`extract` over ``images`` (OpenCV parallelises inside one image)."""
        return [self.extract(im) for im in images]

    def _finish(self, feats: LocalFeatures) -> LocalFeatures:
        return with_mirrored(feats) if self.compute_mirrored else feats


# ------------------------------------------------------------------------------------------ kornia SIFT
class KorniaSiftExtractor:
    """kornia ``SIFTFeatureScaleSpace`` (pyramid backend, RootSIFT, OpenCV layout) on ``device``.

    kornia applies no contrast or edge rejection; keypoints whose absolute DoG response (image in [0, 1]) is
    below ``contrast_threshold / n_octave_layers`` are dropped, OpenCV's final contrast test, so flat images
    give N = 0. One orientation per keypoint (OpenCV may give several).
    """

    name = "sift-kornia"

    def __init__(
        self,
        working_size: int = 512,
        max_keypoints: int = 1024,
        contrast_threshold: float = 0.04,
        n_octave_layers: int = 3,
        max_upscale: float = 2.0,
        device: str = "auto",
        compute_mirrored: bool = False,
    ) -> None:
        import torch
        from kornia.feature import SIFTFeatureScaleSpace

        if working_size < 16 or max_keypoints < 1 or max_upscale < 1.0:
            raise ValueError(
                f"need working_size >= 16, max_keypoints >= 1, max_upscale >= 1; got {working_size}, "
                f"{max_keypoints}, {max_upscale}"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.working_size = int(working_size)
        self.max_keypoints = int(max_keypoints)
        self.contrast_threshold = float(contrast_threshold)
        self.n_octave_layers = int(n_octave_layers)
        self.max_upscale = float(max_upscale)
        self.device = torch.device(device)
        self.compute_mirrored = bool(compute_mirrored)
        self._model = SIFTFeatureScaleSpace(
            num_features=self.max_keypoints,
            upright=False,
            rootsift=True,
            device=self.device,
            descriptor_backend="pyramid",
            descriptor_layout="opencv",
        ).eval()

    def signature(self) -> dict[str, Any]:
        """Name and every parameter that changes the stored features (the device does not)."""
        return {
            "name": self.name,
            "descriptor": "rootsift-opencv-layout",
            "working_size": self.working_size,
            "max_keypoints": self.max_keypoints,
            "contrast_threshold": self.contrast_threshold,
            "n_octave_layers": self.n_octave_layers,
            "max_upscale": self.max_upscale,
        }

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Features of an RGB uint8 (H, W, 3) image; N = 0 when nothing is detected (flat or tiny images)."""
        import torch
        from kornia.feature import get_laf_center, get_laf_orientation, get_laf_scale, laf_is_filled

        width, height = _image_size(image)
        gray, sx, sy = prepare_gray(image, self.working_size, self.max_upscale)
        if min(gray.shape[:2]) < 16:
            return self._finish(LocalFeatures.empty(width, height))
        with torch.inference_mode():
            t = torch.from_numpy(gray).to(self.device, torch.float32).div_(255.0)[None, None]
            lafs, responses, desc = self._model(t)
            keep = laf_is_filled(lafs)[0] & (
                responses[0].abs() >= self.contrast_threshold / self.n_octave_layers
            )
            lafs = lafs[:, keep]
            xy = get_laf_center(lafs)[0].float().cpu().numpy()
            # kornia's LAF scale is 6 sigma; OpenCV's keypoint size is 2 sigma (both in working px)
            sizes = (get_laf_scale(lafs)[0, :, 0, 0].float() / 3.0).cpu().numpy()
            # kornia measures angles from +x towards +y (image rows down), OpenCV from +x towards -y
            angles = (-get_laf_orientation(lafs)[0, :, 0].float()).cpu().numpy()
            resp = responses[0, keep].abs().float().cpu().numpy()
            desc = desc[0, keep].float().cpu().numpy()
        if xy.shape[0] == 0:
            return self._finish(LocalFeatures.empty(width, height))
        order = _strongest(resp, xy, sizes, angles, self.max_keypoints)
        pts, scales, ori = _to_original(xy[order], sizes[order], angles[order], sx, sy, width, height)
        # kornia returns RootSIFT already; renormalise in float32 for exact unit rows
        d = desc[order]
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        feats = LocalFeatures(pts, scales, ori, d.astype(np.float32), (width, height))
        return self._finish(feats)

    def extract_many(self, images: Iterable[np.ndarray]) -> list[LocalFeatures]:
        """:meth:`extract` over ``images`` (sizes differ, so no batching)."""
        return [self.extract(im) for im in images]

    def _finish(self, feats: LocalFeatures) -> LocalFeatures:
        return with_mirrored(feats) if self.compute_mirrored else feats


# ------------------------------------------------------------------------------------------ registry
@EXTRACTORS.register("sift")
def create_sift(
    working_size: int = 512,
    max_keypoints: int = 1024,
    contrast_threshold: float = 0.04,
    edge_threshold: float = 10.0,
    n_octave_layers: int = 3,
    sigma: float = 1.6,
    max_upscale: float = 2.0,
    compute_mirrored: bool = False,
    device: str = "cpu",
    fallback_below: int = 0,
    fallback_contrast_threshold: float = 0.005,
    fallback_edge_threshold: float = 40.0,
) -> SiftExtractor:
    """OpenCV SIFT extractor; runs on the CPU whatever ``device`` says (accepted for a uniform interface)."""
    del device
    return SiftExtractor(
        working_size,
        max_keypoints,
        contrast_threshold,
        edge_threshold,
        n_octave_layers,
        sigma,
        max_upscale,
        compute_mirrored,
        fallback_below,
        fallback_contrast_threshold,
        fallback_edge_threshold,
    )


@EXTRACTORS.register("sift-kornia")
def create_sift_kornia(
    working_size: int = 512,
    max_keypoints: int = 1024,
    contrast_threshold: float = 0.04,
    edge_threshold: float = 10.0,
    n_octave_layers: int = 3,
    sigma: float = 1.6,
    max_upscale: float = 2.0,
    compute_mirrored: bool = False,
    device: str = "auto",
    fallback_below: int = 0,
    fallback_contrast_threshold: float = 0.005,
    fallback_edge_threshold: float = 40.0,
) -> KorniaSiftExtractor:
    """kornia SIFT extractor on ``device`` ("auto": CUDA when available). ``edge_threshold`` and ``sigma`` are
    accepted for a uniform interface; kornia's pipeline has no edge test and a fixed sigma of 1.6. The fallback
    detection is not implemented for kornia: ``fallback_below`` must be 0."""
    del edge_threshold, sigma, fallback_contrast_threshold, fallback_edge_threshold
    if fallback_below:
        raise ValueError("sift-kornia has no fallback detection: set local.sift_fallback_below to 0")
    return KorniaSiftExtractor(
        working_size,
        max_keypoints,
        contrast_threshold,
        n_octave_layers,
        max_upscale,
        device,
        compute_mirrored,
    )


def create_extractor(config: LocalConfig, device: str = "auto") -> LocalFeatureExtractor:
    """The extractor named by ``config.extractor``, built from ``config``; ``device`` as in ``MatcherConfig``.

    Mirrored descriptors are computed when ``config.mirror`` is set.
    """
    return EXTRACTORS.create(
        config.extractor,
        working_size=config.working_size,
        max_keypoints=config.max_keypoints,
        contrast_threshold=config.sift_contrast_threshold,
        edge_threshold=config.sift_edge_threshold,
        n_octave_layers=config.sift_octave_layers,
        sigma=config.sift_sigma,
        max_upscale=config.max_upscale,
        compute_mirrored=config.mirror,
        device=device,
        fallback_below=config.sift_fallback_below,
        fallback_contrast_threshold=config.sift_fallback_contrast_threshold,
        fallback_edge_threshold=config.sift_fallback_edge_threshold,
    )
