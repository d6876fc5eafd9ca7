"""The one image loader: any supported input -> RGB uint8 (H, W, 3); and the one resampler of RGB pictures.

Every image the engine sees goes through :func:`load_image`. It refuses bad input with :class:`ImageLoadError`
(which names the file and carries a short ``reason`` code); batch readers (:mod:`matcher.io.folders`) record
such files as skipped and carry on.

PIL keeps two process-wide switches that decide safety: ``Image.MAX_IMAGE_PIXELS`` (decompression bombs) and
``ImageFile.LOAD_TRUNCATED_IMAGES``. While a file is opened and decoded here they are set to our values
(limit = ``max_pixels``, truncated = refused) under a lock and restored afterwards, so neither PIL's default
nor a library that flipped them decides what is accepted. The lock makes decoding one image at a time per
process (use processes, not threads, to load in parallel).
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from matcher.config import LoadConfig, MatcherConfig

__all__ = ["IMAGE_EXTENSIONS", "REASONS", "ImageLoadError", "load_image", "resize_image"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# PIL decoders we let near the bytes (content is sniffed, so a PNG named .jpg still loads); the JPEG
# decoder also returns multi-picture (MPO) phone JPEGs.
_PIL_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

# ImageLoadError.reason codes.
REASONS: tuple[str, ...] = (
    "missing",  # no such file
    "not_a_file",  # a directory or other non-regular file
    "unreadable",  # permission or I/O error while reading
    "empty",  # 0 bytes
    "not_an_image",  # not a JPEG/PNG/WebP/BMP/GIF/TIFF
    "truncated",  # the data stop before the image is complete
    "corrupt",  # the decoder failed for another reason
    "too_many_pixels",  # width*height > max_pixels (possible decompression bomb)
    "too_small",  # shorter side < min_side
    "unsupported_mode",  # pixel layout we cannot turn into RGB
    "bad_array",  # numpy input of a shape/dtype/range we do not accept
)

_PIL_LOCK = threading.RLock()


class ImageLoadError(Exception):
    """An image that cannot be used. ``path``: the file (or "<array>", "<bytes>", "<PIL image>");
    ``reason``: one of :data:`REASONS`; ``detail``: human-readable cause."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"cannot load '{path}': {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.path, self.reason, self.detail))


# ----------------------------------------------------------------------------------------------------------
# single image


def _limits(max_pixels: int, min_side: int, config: LoadConfig | MatcherConfig | None) -> tuple[int, int]:
    if isinstance(config, MatcherConfig):
        config = config.load
    if config is not None:
        max_pixels, min_side = config.max_pixels, config.min_side
    if max_pixels < 1 or min_side < 1:
        raise ValueError(f"max_pixels and min_side must be >= 1, got {max_pixels} and {min_side}")
    return int(max_pixels), int(min_side)


@contextlib.contextmanager
def _strict_pil(max_pixels: int) -> Iterator[None]:
    """PIL's bomb limit = ours, truncated data refused, bomb warnings raised; globals restored on exit."""
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _check_size(name: str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(
            name, "too_many_pixels", f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )
    if min(width, height) < min_side:
        raise ImageLoadError(name, "too_small", f"{width}x{height} has a side shorter than {min_side} px")


def _decode(name: str, im: Image.Image, max_pixels: int, min_side: int) -> Image.Image:
    """Check the header size, decode the pixels and apply the EXIF orientation. Call inside :func:`_strict_pil`."""
    _check_size(name, im.width, im.height, max_pixels, min_side)  # before any pixel is allocated
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, "too_many_pixels", f"exceeds the limit of {max_pixels} pixels ({e})") from e
    except EOFError as e:
        raise ImageLoadError(name, "truncated", f"truncated image file ({e or 'unexpected end of data'})") from e
    except MemoryError as e:
        raise ImageLoadError(name, "too_many_pixels", "out of memory while decoding") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        if "truncat" in str(e).lower():
            raise ImageLoadError(name, "truncated", f"truncated image file ({e})") from e
        raise ImageLoadError(name, "corrupt", f"corrupt image data ({type(e).__name__}: {e})") from e
    im = _exif_oriented(im)
    _check_size(name, im.width, im.height, max_pixels, min_side)
    return im


def _exif_oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; malformed EXIF must not cost the picture (stored orientation kept)."""
    try:
        return ImageOps.exif_transpose(im)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error, ZeroDivisionError):
        return im


def _pil_open() -> Callable[..., Image.Image]:
    """PIL's own ``Image.open``, also when another library has monkey-patched it.

    ultralytics replaces ``PIL.Image.open`` on import with a wrapper that, on an unidentified file, tries to pip
    install a HEIF plugin and raises ModuleNotFoundError offline. It keeps the original as ``_image_open`` in its
    module; any wrapper following that convention is bypassed here.
    """
    fn = Image.open
    module = getattr(fn, "__module__", "PIL.Image")
    if module != "PIL.Image":
        original = getattr(sys.modules.get(module), "_image_open", None)
        if original is not None and getattr(original, "__module__", "") == "PIL.Image":
            return original
    return fn


def _open_and_decode(name: str, fp: Any, max_pixels: int, min_side: int) -> Image.Image:
    with _strict_pil(max_pixels):
        try:
            im = _pil_open()(fp, formats=_PIL_FORMATS)
        except UnidentifiedImageError as e:
            raise ImageLoadError(
                name, "not_an_image", f"not a recognised image (supported: {', '.join(_PIL_FORMATS)})"
            ) from e
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(name, "too_many_pixels", f"exceeds the limit of {max_pixels} pixels ({e})") from e
        except EOFError as e:
            raise ImageLoadError(name, "truncated", f"truncated image file ({e or 'unexpected end of data'})") from e
        except Exception as e:
            raise ImageLoadError(name, "corrupt", f"unreadable image header ({type(e).__name__}: {e})") from e
        return _decode(name, im, max_pixels, min_side)


def _scale16(a: np.ndarray) -> np.ndarray:
    """uint16-range integers (any int dtype) -> uint8 by rounding v * 255 / 65535."""
    a = np.clip(a.astype(np.int64, copy=False), 0, 65535)
    return ((a + 128) // 257).astype(np.uint8)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 straight alpha -> (H, W, 3) uint8 composited on white."""
    rgb = rgba[..., :3].astype(np.uint16)
    a = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _grey_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _pil_to_rgb(name: str, im: Image.Image) -> np.ndarray:
    """Decoded PIL image of any mode -> (H, W, 3) uint8; alpha/transparency composited on white."""
    mode = im.mode
    trns = im.info.get("transparency")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (mode "I" is read as 16-bit too: values clipped to 0..65535)
        raw = np.asarray(im)
        grey = _grey_to_rgb(_scale16(raw))
        if isinstance(trns, int):
            alpha = np.where(raw == trns, 0, 255).astype(np.uint8)
            return _over_white(np.dstack([grey, alpha]))
        return grey
    if mode == "F":  # float greyscale: [0, 1] if it fits there, else read as 0..255
        f = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if f.size and f.min() >= 0.0 and f.max() <= 1.0 else 1.0
        return _grey_to_rgb(np.clip(np.rint(f * scale), 0, 255).astype(np.uint8))
    if mode in ("RGBa", "La"):  # premultiplied alpha: over white is c + (255 - a)
        arr = np.asarray(im).astype(np.uint16)
        c = arr[..., :3] if mode == "RGBa" else _grey_to_rgb(arr[..., 0])
        return np.minimum(c + (255 - arr[..., -1:]), 255).astype(np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and im.palette is not None and im.palette.mode == "RGBA")
    try:
        if has_alpha or (trns is not None and mode in ("P", "L", "RGB", "1")):
            return _over_white(np.asarray(im.convert("RGBA")))
        if mode == "RGB":
            return np.array(im)
        if mode == "L":
            return _grey_to_rgb(np.asarray(im))
        return np.array(im.convert("RGB"))  # 1, P, CMYK, YCbCr, HSV, RGBX, ...
    except (ValueError, OSError) as e:
        raise ImageLoadError(name, "unsupported_mode", f"cannot convert PIL mode {mode!r} to RGB ({e})") from e


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    """Numpy (H, W) / (H, W, 1|3|4) uint8, uint16, bool or float in [0, 1] -> (H, W, 3) uint8 (RGB order)."""
    name = "<array>"
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageLoadError(name, "bad_array", f"shape {a.shape} is not (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = _scale16(a)
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageLoadError(name, "bad_array", "float image holds NaN or infinite values")
        if a.size and (a.min() < -1e-6 or a.max() > 1 + 1e-6):
            raise ImageLoadError(
                name, "bad_array", f"float image must lie in [0, 1], got [{a.min():.4g}, {a.max():.4g}]"
            )
        u8 = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageLoadError(name, "bad_array", f"dtype {a.dtype} is not uint8, uint16, bool or float")
    if u8.ndim == 2:
        return _grey_to_rgb(u8)
    if u8.shape[2] == 4:
        return _over_white(u8)
    return u8


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray,
    *,
    max_pixels: int = 64_000_000,
    min_side: int = 32,
    config: LoadConfig | MatcherConfig | None = None,
) -> np.ndarray:
    """Load one image as RGB uint8 (H, W, 3), C-contiguous, never sharing memory with ``source``.

    ``source``: a file path; encoded file bytes; a PIL image; or a numpy array (H, W) / (H, W, 3) / (H, W, 4)
    in RGB(A) order, uint8, uint16 (scaled by 255/65535) or float in [0, 1]. The EXIF orientation is applied;
    alpha and transparency are composited on white; 16-bit samples are scaled to 8 bit. ``config`` (a
    LoadConfig, or a MatcherConfig whose ``.load`` is used) replaces ``max_pixels`` / ``min_side`` when given.
    Images with width*height > max_pixels are refused from the header, before decoding; images whose shorter
    side (px) is < min_side are refused. Raises :class:`ImageLoadError` for every unusable input.
    """
    max_pixels, min_side = _limits(max_pixels, min_side, config)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_size("<array>", source.shape[1], source.shape[0], max_pixels, min_side)
        rgb = _array_to_rgb(source)
    elif isinstance(source, Image.Image):
        with _strict_pil(max_pixels):
            im = _decode("<PIL image>", source, max_pixels, min_side)
        rgb = _pil_to_rgb("<PIL image>", im)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageLoadError("<bytes>", "empty", "no data (0 bytes)")
        im = _open_and_decode("<bytes>", io.BytesIO(data), max_pixels, min_side)
        rgb = _pil_to_rgb("<bytes>", im)
    elif isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        with _open_file(name) as fh:  # closed once the pixels are decoded
            im = _open_and_decode(name, fh, max_pixels, min_side)
        rgb = _pil_to_rgb(name, im)
    else:
        raise TypeError(f"load_image: unsupported source type {type(source).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:  # pragma: no cover - internal invariant
        raise AssertionError(f"loader produced {rgb.dtype} {rgb.shape}")
    if not rgb.flags.writeable or (isinstance(source, np.ndarray) and np.shares_memory(rgb, source)):
        return np.array(rgb, dtype=np.uint8, order="C", copy=True)
    return np.ascontiguousarray(rgb)


def _open_file(name: str) -> BinaryIO:
    """Open a file for reading, with file-level problems mapped to reasons (no blocking on FIFOs etc.)."""
    try:
        st = os.stat(name)
    except FileNotFoundError as e:
        raise ImageLoadError(name, "missing", "no such file") from e
    except OSError as e:
        raise ImageLoadError(name, "unreadable", f"cannot stat file ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(name, "not_a_file", "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(name, "not_a_file", "is not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(name, "empty", "empty file (0 bytes)")
    try:
        return open(name, "rb")  # the caller closes it
    except OSError as e:
        raise ImageLoadError(name, "unreadable", f"cannot open file ({e.strerror or e})") from e


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (height, width, 3), bicubic with antialiasing (PIL). Maps x -> x * width / W."""
    if (image.shape[1], image.shape[0]) == (width, height):
        return image.copy()
    pil = Image.fromarray(image).resize((int(width), int(height)), Image.Resampling.BICUBIC)
    return np.array(pil.convert("RGB"), dtype=np.uint8)  # a writable copy
