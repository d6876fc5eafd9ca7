"""Data types shared by the local verification engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DESCRIPTOR_DIM", "LocalFeatures"]

DESCRIPTOR_DIM = 128  # RootSIFT descriptor length


@dataclass
class LocalFeatures:
    """Local features of one image.

    keypoints:    (N, 2) float32, x, y in ORIGINAL image pixel coordinates (after EXIF; before any resize)
    scales:       (N,) float32, keypoint size (diameter) in original pixels
    orientations: (N,) float32, degrees in [0, 360)
    descriptors:  (N, D) float32, RootSIFT, L2-normalised rows (D = 128)
    image_size:   (width, height) of the original image, px
    mirrored:     (N, D) float32 descriptors of the horizontally mirrored patch at the same keypoint (bin
                  permutation), L2-normalised; None when not computed
    """

    keypoints: np.ndarray
    scales: np.ndarray
    orientations: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    mirrored: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of keypoints N."""
        return int(self.keypoints.shape[0])

    def __len__(self) -> int:
        return self.n

    @classmethod
    def empty(cls, width: int, height: int, dim: int = DESCRIPTOR_DIM) -> LocalFeatures:
        """Features with N = 0 for an image of ``width`` x ``height`` px (shapes (0,2), (0,), (0,dim))."""
        return cls(
            keypoints=np.zeros((0, 2), np.float32),
            scales=np.zeros((0,), np.float32),
            orientations=np.zeros((0,), np.float32),
            descriptors=np.zeros((0, dim), np.float32),
            image_size=(int(width), int(height)),
            mirrored=None,
        )

    def subset(self, idx: np.ndarray) -> LocalFeatures:
        """Features at ``idx`` (int indices or a (N,) bool mask), same image size; keeps ``mirrored``."""
        idx = np.asarray(idx)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.intp, copy=False)
        return LocalFeatures(
            keypoints=self.keypoints[idx],
            scales=self.scales[idx],
            orientations=self.orientations[idx],
            descriptors=self.descriptors[idx],
            image_size=self.image_size,
            mirrored=None if self.mirrored is None else self.mirrored[idx],
        )
