"""matcher.io: the one image loader, folder scanning and batch reading. All images are generated here."""
from __future__ import annotations

import csv
import io
import os
import pickle
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

import matcher.io.folders as mio
from matcher.config import LoadConfig, MatcherConfig
from matcher.io.folders import (
    DuplicateIdError,
    SkippedFile,
    image_ids,
    list_images,
    read_images,
    scan_folder,
    write_skipped_csv,
)
from matcher.io.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(w: int = 64, h: int = 48) -> np.ndarray:
    """(h, w, 3) uint8: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = RED
    a[: h // 2, w // 2 :] = GREEN
    a[h // 2 :, : w // 2] = BLUE
    a[h // 2 :, w // 2 :] = WHITE
    return a


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def assert_colour(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 0) -> None:
    assert np.abs(pixel.astype(int) - np.array(colour)).max() <= tol, (pixel, colour)


def assert_rgb8(a: np.ndarray, h: int, w: int) -> None:
    assert a.shape == (h, w, 3)
    assert a.dtype == np.uint8
    assert a.flags.c_contiguous and a.flags.writeable


def load_error(source, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kw)
    return info.value


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(("fmt", "suffix", "kw"), [
    ("PNG", ".png", {}),
    ("BMP", ".bmp", {}),
    ("WEBP", ".webp", {"lossless": True}),
    ("TIFF", ".tif", {}),
    ("TIFF", ".tiff", {"compression": "tiff_deflate"}),
])
def test_lossless_formats_exact(tmp_path, fmt, suffix, kw):
    a = quadrants()
    p = save(Image.fromarray(a), tmp_path / f"img{suffix}", fmt, **kw)
    out = load_image(p)
    assert_rgb8(out, 48, 64)
    np.testing.assert_array_equal(out, a)


def test_jpeg(tmp_path):
    p = save(Image.fromarray(quadrants()), tmp_path / "img.JPG", "JPEG", quality=95)
    out = load_image(str(p))
    assert_rgb8(out, 48, 64)
    for (y, x), c in {(5, 5): RED, (5, 58): GREEN, (42, 5): BLUE, (42, 58): WHITE}.items():
        assert_colour(out[y, x], c, tol=12)


def test_png_named_jpg_is_sniffed_by_content(tmp_path):
    p = save(Image.fromarray(quadrants()), tmp_path / "really_png.jpg", "PNG")
    np.testing.assert_array_equal(load_image(p), quadrants())


def test_png_16bit_grey_scaled(tmp_path):
    a = np.zeros((40, 40), np.uint16)
    a[0, :4] = [0, 257, 32896, 65535]
    a[1, :2] = [128, 129]  # 128/257 rounds to 0, 129/257 to 1
    p = save(Image.fromarray(a), tmp_path / "g16.png", "PNG")
    assert Image.open(p).mode.startswith("I")  # really stored as 16 bit
    out = load_image(p)
    assert_rgb8(out, 40, 40)
    np.testing.assert_array_equal(out[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[1, :2, 0], [0, 1])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_png_16bit_rgb_and_rgba(tmp_path):
    bgr = np.zeros((40, 40, 3), np.uint16)
    bgr[0, 0] = [0, 32896, 65535]  # cv2 writes BGR: this is R=65535, G=32896, B=0
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), bgr)
    out = load_image(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(out[0, 0], [255, 128, 0])

    bgra = np.zeros((40, 40, 4), np.uint16)
    bgra[0, 0] = [0, 0, 65535, 65535]  # opaque red
    bgra[0, 1] = [0, 0, 0, 0]  # fully transparent black
    assert cv2.imwrite(str(tmp_path / "rgba16.png"), bgra)
    out = load_image(tmp_path / "rgba16.png")
    np.testing.assert_array_equal(out[0, 0], RED)
    np.testing.assert_array_equal(out[0, 1], WHITE)


def test_palette_png_and_transparency_index(tmp_path):
    a = quadrants()
    pal = Image.fromarray(a).quantize(colors=4, dither=Image.Dither.NONE)
    p = save(pal, tmp_path / "pal.png", "PNG")
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(load_image(p), a)

    idx_red = int(np.asarray(pal)[0, 0])
    p2 = save(pal, tmp_path / "pal_trns.png", "PNG", transparency=idx_red)
    out = load_image(p2)
    np.testing.assert_array_equal(out[5, 5], WHITE)  # red was the transparent index
    np.testing.assert_array_equal(out[5, 58], GREEN)


def test_rgba_png_composited_on_white(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., :3] = 10
    a[..., 3] = 255
    a[0, 0] = [0, 0, 0, 0]  # transparent black -> white
    a[0, 1] = [0, 0, 0, 128]  # half black over white -> ~127
    a[0, 2] = [200, 0, 0, 0]  # transparent red -> white (colour under alpha 0 ignored)
    p = save(Image.fromarray(a, "RGBA"), tmp_path / "rgba.png", "PNG")
    out = load_image(p)
    assert_rgb8(out, 40, 40)
    np.testing.assert_array_equal(out[0, 0], WHITE)
    assert_colour(out[0, 1], (127, 127, 127), tol=1)
    np.testing.assert_array_equal(out[0, 2], WHITE)
    np.testing.assert_array_equal(out[5, 5], [10, 10, 10])


def test_rgb_png_with_transparent_colour(tmp_path):
    a = quadrants()
    p = save(Image.fromarray(a), tmp_path / "trns.png", "PNG", transparency=BLUE)
    out = load_image(p)
    np.testing.assert_array_equal(out[42, 5], WHITE)
    np.testing.assert_array_equal(out[5, 5], RED)


def test_la_png(tmp_path):
    grey = np.full((40, 40), 50, np.uint8)
    alpha = np.full((40, 40), 255, np.uint8)
    alpha[0, 0] = 0
    im = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])
    out = load_image(save(im, tmp_path / "la.png", "PNG"))
    np.testing.assert_array_equal(out[0, 0], WHITE)
    np.testing.assert_array_equal(out[5, 5], [50, 50, 50])


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 36), c) for c in (RED, BLUE, GREEN)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(p), "n_frames", 1) == 3
    out = load_image(p)
    assert_rgb8(out, 36, 40)
    assert (out == np.array(RED, np.uint8)).all()


def test_multi_picture_jpeg_first_frame():
    data = encoded(Image.new("RGB", (40, 40), RED), "MPO", save_all=True,
                   append_images=[Image.new("RGB", (40, 40), BLUE)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert_colour(load_image(data)[5, 5], RED, tol=4)


def test_greyscale_l_jpeg_and_png(tmp_path):
    g = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # (40, 64)
    out = load_image(save(Image.fromarray(g), tmp_path / "g.png", "PNG"))
    assert_rgb8(out, 40, 64)
    np.testing.assert_array_equal(out[..., 1], g)
    out = load_image(save(Image.fromarray(g), tmp_path / "g.jpg", "JPEG", quality=95))
    assert Image.open(tmp_path / "g.jpg").mode == "L"
    assert np.abs(out[..., 0].astype(int) - g).max() <= 8


def test_tiff_16bit_32bit_and_float_greyscale(tmp_path):
    a16 = np.full((40, 40), 65535, np.uint16)
    a16[0, 0] = 0
    out = load_image(save(Image.fromarray(a16), tmp_path / "g16.tif", "TIFF"))
    assert out[0, 0, 0] == 0 and out[5, 5, 0] == 255

    a32 = np.full((40, 40), 32896, np.int32)  # mode "I" is read as 16-bit data
    im = Image.fromarray(a32)
    assert im.mode == "I"
    out = load_image(save(im, tmp_path / "g32.tif", "TIFF"))
    assert out[5, 5, 0] == 128

    f = np.full((40, 40), 0.5, np.float32)
    f[0, 0] = 1.0
    im = Image.fromarray(f)
    assert im.mode == "F"
    out = load_image(save(im, tmp_path / "gf.tif", "TIFF"))
    assert out[5, 5, 0] == 128 and out[0, 0, 0] == 255


def test_cmyk_jpeg(tmp_path):
    im = Image.fromarray(quadrants()).convert("CMYK")
    p = save(im, tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert Image.open(p).mode == "CMYK"
    out = load_image(p)
    assert_rgb8(out, 48, 64)
    assert_colour(out[5, 5], RED, tol=16)
    assert_colour(out[42, 5], BLUE, tol=16)


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    # stored 80 wide x 40 high, red block in the stored top-left corner; orientation 6 = rotate 90 deg clockwise
    a = np.zeros((40, 80, 3), np.uint8)
    a[:] = BLUE
    a[:10, :20] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    p = save(Image.fromarray(a), tmp_path / "rot.jpg", "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(p)
    assert_rgb8(out, 80, 40)  # dims swapped
    assert_colour(out[2, 37], RED, tol=16)  # top-left went to the top-right corner
    assert_colour(out[2, 2], BLUE, tol=16)
    assert_colour(out[77, 37], BLUE, tol=16)


# ---------------------------------------------------------------------------------------------- refusals


def _png_with_header_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR (width, height and CRC) is patched to claim another size."""
    data = bytearray(encoded(Image.new("L", (32, 32)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _huge_1bit_png(width: int, height: int) -> bytes:
    """A genuine, fully valid 1-bit all-black PNG; compresses to a few tens of KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row * 500) for _ in range(height // 500)) + comp.compress(row * (height % 500))
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Records (and stops) every attempt to decode an image's pixel data."""
    calls: list[str] = []

    def forbidden(self, *a, **k):
        calls.append(self.format)
        raise RuntimeError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    return calls


@pytest.mark.parametrize("make", [
    lambda: _png_with_header_size(100_000, 100_000),  # 1e10 px: far past PIL's own error threshold too
    lambda: _png_with_header_size(9000, 8000),  # 72 Mpx: just over our default limit, under PIL's
    lambda: _huge_1bit_png(12_000, 12_000),  # a real 144 Mpx image (would need ~430 MB as RGB)
])
def test_decompression_bomb_refused_from_header(tmp_path, make, decode_calls):
    p = tmp_path / "bomb.png"
    p.write_bytes(make())
    assert p.stat().st_size < 200_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    err = load_error(p)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000
    assert err.reason == "too_many_pixels"
    assert decode_calls == []
    assert err.path == str(p) and str(p) in str(err)


def test_our_pixel_limit_decides_not_pils_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would refuse 64x64 outright
    data = encoded(Image.new("RGB", (64, 64), RED), "PNG")
    assert load_image(data).shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL alone would accept anything
    assert load_error(data, max_pixels=4095).reason == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS is None
    assert load_image(data, max_pixels=4096).shape == (64, 64, 3)


def test_pil_bomb_error_becomes_our_error(tmp_path):
    data = encoded(Image.new("RGB", (64, 48)), "PNG")
    err = load_error(data, max_pixels=1000)  # > 2 * limit: PIL itself raises inside open()
    assert err.reason == "too_many_pixels" and "1000" in str(err)
    err = load_error(data, max_pixels=2000)  # between limit and 2 * limit: PIL only warns
    assert err.reason == "too_many_pixels"


def _truncated(tmp_path: Path, fmt: str, name: str) -> Path:
    rng = np.random.default_rng(0)
    data = encoded(Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)), fmt)
    p = tmp_path / name
    p.write_bytes(data[: len(data) // 2])
    return p


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "cut.jpg"), ("PNG", "cut.png")])
@pytest.mark.parametrize("pil_flag", [False, True])
def test_truncated_refused(tmp_path, monkeypatch, fmt, name, pil_flag):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pil_flag)  # another library may have set it
    p = _truncated(tmp_path, fmt, name)
    err = load_error(p)
    assert err.reason == "truncated"
    assert str(err).startswith(f"cannot load '{p}': truncated image file")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is pil_flag  # restored


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    err = load_error(p)
    assert (err.reason, err.path) == ("empty", str(p))
    assert load_error(b"").reason == "empty"


def test_text_file_with_image_extension(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    err = load_error(p)
    assert err.reason == "not_an_image" and str(p) in str(err)


def test_unsupported_format_is_not_an_image(tmp_path):
    p = save(Image.new("RGB", (40, 40)), tmp_path / "a.pcx", "PCX")
    assert load_error(p).reason == "not_an_image"


def test_missing_and_directory(tmp_path):
    err = load_error(tmp_path / "nope.png")
    assert err.reason == "missing" and "nope.png" in str(err)
    (tmp_path / "dir.jpg").mkdir()
    assert load_error(tmp_path / "dir.jpg").reason == "not_a_file"
    os.mkfifo(tmp_path / "pipe.png")  # must be refused, not block on open
    assert load_error(tmp_path / "pipe.png").reason == "not_a_file"


def test_too_small_and_min_side_configurable(tmp_path):
    p = save(Image.new("RGB", (100, 20), GREEN), tmp_path / "thin.png", "PNG")
    err = load_error(p)
    assert err.reason == "too_small" and "100x20" in str(err)
    assert load_image(p, min_side=20).shape == (20, 100, 3)
    assert load_error(p, min_side=21).reason == "too_small"


def test_config_supplies_limits(tmp_path):
    p = save(Image.new("RGB", (100, 20)), tmp_path / "thin.png", "PNG")
    assert load_image(p, min_side=64, config=LoadConfig(min_side=8)).shape == (20, 100, 3)  # config wins
    assert load_error(p, config=LoadConfig(max_pixels=1999)).reason == "too_many_pixels"
    assert load_image(p, config=MatcherConfig.make(load={"min_side": 16})).shape == (20, 100, 3)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(p, max_pixels=0)


def test_corrupt_body(tmp_path):
    data = bytearray(encoded(Image.fromarray(quadrants()), "PNG"))
    data[60:90] = b"\xff" * 30  # smash the compressed pixel data, keep the length
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    assert load_error(p).reason in {"corrupt", "truncated"}


def test_error_is_picklable():
    err = ImageLoadError("/x/a.jpg", "truncated", "truncated image file (3 bytes not processed)")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))
    assert str(err) == "cannot load '/x/a.jpg': truncated image file (3 bytes not processed)"


# ---------------------------------------------------------------------------------------------- in-memory inputs


def test_array_inputs():
    a = quadrants()
    out = load_image(a)
    np.testing.assert_array_equal(out, a)
    assert not np.shares_memory(out, a)
    out[:] = 0
    assert a.max() == 255  # caller's array untouched

    flipped = a[:, ::-1]  # not contiguous
    out = load_image(flipped)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, flipped)

    g = np.full((40, 50), 77, np.uint8)
    np.testing.assert_array_equal(load_image(g), np.full((40, 50, 3), 77, np.uint8))
    np.testing.assert_array_equal(load_image(g[..., None]), np.full((40, 50, 3), 77, np.uint8))

    u16 = np.full((40, 40, 3), 65535, np.uint16)
    u16[0, 0] = [0, 257, 32896]
    out = load_image(u16)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 128])
    assert out[1, 1, 0] == 255

    f = np.full((40, 40, 3), 0.5)
    f[0, 0] = [0.0, 1.0, 0.2]
    out = load_image(f.astype(np.float32))
    np.testing.assert_array_equal(out[0, 0], [0, 255, 51])
    assert out[1, 1, 0] == 128

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[1:, :, 3] = 255
    out = load_image(rgba)
    np.testing.assert_array_equal(out[0, 0], WHITE)
    np.testing.assert_array_equal(out[1, 0], [0, 0, 0])


@pytest.mark.parametrize("bad", [
    np.zeros((40, 40, 2), np.uint8),
    np.zeros((40, 40, 3), np.int32),
    np.full((40, 40), 1.5),
    np.full((40, 40), np.nan),
])
def test_bad_arrays(bad):
    assert load_error(bad).reason == "bad_array"


def test_small_and_huge_arrays_refused():
    assert load_error(np.zeros((10, 100), np.uint8)).reason == "too_small"
    assert load_error(np.zeros((100, 100), np.uint8), max_pixels=9999).reason == "too_many_pixels"


def test_pil_image_input():
    im = Image.fromarray(np.dstack([quadrants(), np.full((48, 64), 255, np.uint8)]), "RGBA")
    im.putpixel((0, 0), (0, 0, 0, 0))
    out = load_image(im)
    assert_rgb8(out, 48, 64)
    np.testing.assert_array_equal(out[0, 0], WHITE)
    np.testing.assert_array_equal(out[5, 5], RED)
    assert im.mode == "RGBA" and im.getpixel((0, 0)) == (0, 0, 0, 0)  # caller's image unchanged

    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = Image.open(io.BytesIO(encoded(Image.new("RGB", (80, 40)), "JPEG", exif=exif.tobytes())))
    assert load_image(rotated).shape == (80, 40, 3)  # lazily opened file; orientation applied


def test_bytes_input():
    data = encoded(Image.fromarray(quadrants()), "WEBP", lossless=True)
    np.testing.assert_array_equal(load_image(data), quadrants())
    np.testing.assert_array_equal(load_image(bytearray(data)), quadrants())
    err = load_error(b"GIF89a garbage")
    assert err.path == "<bytes>" and err.reason in {"corrupt", "truncated", "not_an_image"}


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="list"):
        load_image([1, 2, 3])


# ---------------------------------------------------------------------------------------------- folders and batches


def _png(path: Path, colour=RED, size=(40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def test_image_extensions():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def test_list_images_sorted_filtered_hidden_recursive(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.tiff", "sub/deeper/d.webp", ".hidden.png", ".cache/e.png", "notes.txt"]:
        _png(tmp_path / name)
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a.JPG", "b.png", "sub/c.tiff", "sub/deeper/d.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    assert list_images(str(tmp_path)) == list_images(tmp_path)


def test_list_images_explicit_paths_keep_order(tmp_path):
    paths = [_png(tmp_path / "z.png"), tmp_path / "a.png", tmp_path / "odd.dat"]
    assert list_images([str(p) for p in paths]) == paths  # named explicitly: kept whatever the extension
    assert list_images(paths + [paths[0]]) == paths  # exact repeats dropped
    assert list_images(tmp_path / "z.png") == [tmp_path / "z.png"]


def test_scan_folder_reports_other_files(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / ".DS_Store").write_text("x")
    images, skipped = scan_folder(tmp_path)
    assert images == [tmp_path / "a.png"]
    assert skipped == [SkippedFile(str(tmp_path / "readme.txt"), "not_an_image_extension", skipped[0].message)]
    assert "readme.txt" in skipped[0].message and ".txt" in skipped[0].message
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_folder(tmp_path / "nowhere")


def test_image_ids_and_duplicates(tmp_path):
    a, b = tmp_path / "x" / "img1.jpg", tmp_path / "y" / "img1.png"
    assert image_ids([a, tmp_path / "img2.png"]) == {"img1": a, "img2": tmp_path / "img2.png"}
    with pytest.raises(DuplicateIdError) as info:
        image_ids([a, tmp_path / "other.png", b])
    msg = str(info.value)
    assert str(a) in msg and str(b) in msg and "img1" in msg
    assert isinstance(info.value, ValueError) and info.value.paths == (a, b)


def test_read_images_duplicate_stems_in_folder(tmp_path):
    _png(tmp_path / "q1.png")
    _png(tmp_path / "sub" / "q1.png")
    with pytest.raises(DuplicateIdError, match="q1"):
        read_images(tmp_path)


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    good = {
        "café_ü.png": RED,
        "日本語.jpg": GREEN,
        "plain.webp": BLUE,
        "nested/deep.bmp": WHITE,
    }
    for name, colour in good.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 40), colour).save(p)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "fake.png").write_text("not an image")
    _truncated(tmp_path, "JPEG", "half.jpg")
    _png(tmp_path / "tiny.png", size=(8, 8))
    (tmp_path / "notes.txt").write_text("ignored but reported")
    _png(tmp_path / ".hidden.png")
    return tmp_path


def test_read_images_good_and_bad(mixed_folder):
    seen: list[SkippedFile] = []
    images = read_images(mixed_folder, on_skip=seen.append)
    assert len(images) == 8  # every image-extension candidate; nothing decoded yet
    assert [s.reason for s in images.skipped] == ["not_an_image_extension"]

    loaded = {image_id: (path, img) for image_id, path, img in images.iter_loaded()}
    assert sorted(loaded) == sorted(["café_ü", "日本語", "plain", "deep"])
    assert loaded["café_ü"][0] == mixed_folder / "café_ü.png"
    assert_colour(loaded["日本語"][1][10, 10], GREEN, tol=12)
    assert loaded["deep"][1].shape == (40, 48, 3)

    reasons = {Path(s.path).name: s.reason for s in images.skipped}
    assert reasons == {
        "notes.txt": "not_an_image_extension",
        "empty.jpg": "empty",
        "fake.png": "not_an_image",
        "half.jpg": "truncated",
        "tiny.png": "too_small",
    }
    assert all(s.path in s.message for s in images.skipped)
    assert seen == images.skipped

    again = images.load_all()  # a second pass does not repeat the skips
    assert list(again) == list(loaded) and len(images.skipped) == 5
    np.testing.assert_array_equal(images.load("plain"), loaded["plain"][1])
    with pytest.raises(KeyError):
        images.load("nope")


def test_read_images_is_lazy(mixed_folder, monkeypatch):
    calls: list[Path] = []
    real = mio.load_image

    def counting(path, **kw):
        calls.append(path)
        return real(path, **kw)

    monkeypatch.setattr(mio, "load_image", counting)
    images = read_images(mixed_folder)
    assert calls == []
    it = images.iter_loaded()
    first = next(it)
    assert calls[-1] == first[1] and len(calls) <= 4  # only up to the first good file
    it.close()


def test_read_images_config_applies(mixed_folder):
    images = read_images(mixed_folder, config=MatcherConfig.make(load={"min_side": 4}))
    assert "tiny" in images.load_all()


def test_read_images_explicit_list_with_missing(tmp_path):
    a = _png(tmp_path / "a.png")
    images = read_images([a, tmp_path / "gone.png"])
    assert list(images.load_all()) == ["a"]
    assert [(Path(s.path).name, s.reason) for s in images.skipped] == [("gone.png", "missing")]


def test_write_skipped_csv(tmp_path):
    skipped = [
        SkippedFile("/d/ü, weird.jpg", "truncated", "cannot load '/d/ü, weird.jpg': truncated image file (x)"),
        SkippedFile("/d/n.txt", "not_an_image_extension", "line one\nline two"),
    ]
    out = tmp_path / "skipped.csv"
    out.write_text("old content")
    write_skipped_csv(skipped, out)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "reason", "message"]
    assert [SkippedFile(*r) for r in rows[1:]] == skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skipped.csv"]  # no temp file left behind

    write_skipped_csv([], out)
    assert out.read_text(encoding="utf-8").strip() == "path,reason,message"


def test_loader_survives_ultralytics_patching_pil(tmp_path):
    """ultralytics monkey-patches PIL.Image.open (HEIF auto-install on unidentified files); the loader bypasses it."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)
    from PIL import Image as PILImage

    assert PILImage.open.__module__ != "PIL.Image"
    p = tmp_path / "text.jpg"
    p.write_text("hello, not an image")
    with pytest.raises(ImageLoadError) as info:
        load_image(p)
    assert info.value.reason == "not_an_image"
