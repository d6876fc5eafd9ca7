"""The photos that ship with scikit-image (public domain / CC0), exported to a folder for the demo and tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DEMO_PHOTO_NAMES", "demo_photo", "export_demo_photos"]

# Distinct natural photos bundled in scikit-image's wheel (no download). `cat` is the same photo as `chelsea` and
# the two stereo_motorcycle views show one scene, so only one of each is used.
DEMO_PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "stereo_motorcycle", "retina", "camera", "moon", "coins", "clock", "page", "brick", "gravel", "cell",
)


def demo_photo(name: str) -> np.ndarray:
    """One bundled photo as RGB uint8 (H, W, 3)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: keep the left view
        img = img[0]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def export_demo_photos(folder: str | Path, names: tuple[str, ...] = DEMO_PHOTO_NAMES) -> list[Path]:
    """Write the bundled photos as PNG files into ``folder``; returns their paths (sorted)."""
    from PIL import Image

    from matcher.io.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            with atomic_write(path, mode="wb") as fh:
                Image.fromarray(demo_photo(name)).save(fh, format="PNG")
        paths.append(path)
    return sorted(paths)
