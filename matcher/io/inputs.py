"""Pictures given in memory, with ids: what :meth:`Matcher.match`, ``.index`` and ``.dedup`` accept besides paths.

An in-memory source is a mapping ``{id: picture}`` or a sequence of ``(id, picture)`` pairs, where a picture is
the bytes of an encoded file (``bytes``, ``bytearray``, ``memoryview``), an RGB/grey/RGBA numpy array (uint8, or
uint16 / float in [0, 1], as :func:`~matcher.io.images.load_image` takes), a PIL image, or a path. Ids are checked
here (non-empty strings, at most :data:`MAX_ID_LENGTH` characters, no control characters, unique); pictures are
decoded later, by whoever reads them, with the loader's limits, so that one bad picture is skipped and reported
instead of failing the job.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import LoadConfig, MatcherConfig
from matcher.io.folders import ImageSet, SkippedFile, read_images
from matcher.io.images import ImageLoadError, load_image

__all__ = ["MAX_ID_LENGTH", "MemoryPicture", "PictureSet", "check_id", "is_in_memory", "memory_pictures",
           "read_pictures"]

MAX_ID_LENGTH = 512


def check_id(image_id: object) -> str:
    """``image_id`` when it is an acceptable picture id, else :class:`ValueError` (:class:`TypeError` for a
    non-string) saying why."""
    if not isinstance(image_id, str):
        raise TypeError(f"picture ids must be strings, got {type(image_id).__name__} {image_id!r}")
    if not image_id or image_id.strip() != image_id:
        raise ValueError(f"picture id {image_id!r} is empty or has leading/trailing spaces")
    if len(image_id) > MAX_ID_LENGTH:
        raise ValueError(f"picture id {image_id[:40]!r}... is longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in image_id):
        raise ValueError(f"picture id {image_id!r} holds control characters")
    return image_id


def _is_picture(obj: object) -> bool:
    from PIL import Image

    return isinstance(obj, (bytes, bytearray, memoryview, np.ndarray, Image.Image, str, os.PathLike))


@dataclass(frozen=True)
class MemoryPicture:
    """One picture given in memory (or by an explicit path) under ``id``."""

    id: str
    data: Any  # bytes | bytearray | memoryview | np.ndarray | PIL.Image.Image | str | os.PathLike

    @property
    def path(self) -> Path | None:
        """The file, when the picture was given as a path."""
        return Path(self.data) if isinstance(self.data, (str, os.PathLike)) else None

    @property
    def label(self) -> str:
        """How messages and records name it: the path, else ``<memory:ID>``."""
        p = self.path
        return str(p) if p is not None else f"<memory:{self.id}>"

    def content(self) -> tuple[str, int, Any]:
        """(hex sha256 of the content, its size in bytes, what :func:`~matcher.io.images.load_image` decodes).

        Encoded bytes hash as the file they came from would (so a file and its bytes are the same content); an
        array hashes its shape, dtype and values; a PIL image its mode, size and pixels. A path is not read here
        (``load_image`` and the index writer read files themselves)."""
        from PIL import Image

        d = self.data
        if isinstance(d, (bytes, bytearray, memoryview)):
            b = bytes(d)
            return hashlib.sha256(b).hexdigest(), len(b), b
        if isinstance(d, np.ndarray):
            a = np.ascontiguousarray(d)
            h = hashlib.sha256(f"ndarray {a.shape} {a.dtype.str}\n".encode())
            h.update(a.tobytes())
            return h.hexdigest(), int(a.nbytes), a
        if isinstance(d, Image.Image):
            h = hashlib.sha256(f"PIL {d.mode} {d.size}\n".encode())
            h.update(d.tobytes())
            return h.hexdigest(), len(d.tobytes()), d
        raise TypeError(f"{self.label}: content() is for in-memory pictures, not paths")


def is_in_memory(source: object) -> bool:
    """True when ``source`` is a mapping of pictures or a sequence of ``(id, picture)`` pairs (not a path or a
    list of paths)."""
    if isinstance(source, Mapping):
        return True
    if isinstance(source, (str, bytes, os.PathLike)) or not isinstance(source, Sequence) or not source:
        return False
    first = source[0]
    return isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], str) and _is_picture(first[1])


def memory_pictures(source: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> list[MemoryPicture]:
    """The pictures of an in-memory source in order; :class:`ValueError` naming the id for a bad or repeated id,
    :class:`TypeError` for an entry that is not a picture."""
    pairs = list(source.items()) if isinstance(source, Mapping) else list(source)
    out: list[MemoryPicture] = []
    seen: set[str] = set()
    for n, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"in-memory pictures: entry {n} is not an (id, picture) pair: {type(pair).__name__}")
        image_id, data = check_id(pair[0]), pair[1]
        if image_id in seen:
            raise ValueError(f"in-memory pictures: id {image_id!r} is given twice (ids must be unique)")
        if not _is_picture(data):
            raise TypeError(f"in-memory picture {image_id!r}: expected bytes, a numpy array, a PIL image or a path, "
                            f"got {type(data).__name__}")
        seen.add(image_id)
        out.append(MemoryPicture(image_id, data))
    return out


@dataclass
class PictureSet:
    """In-memory pictures to load one at a time, like :class:`~matcher.io.folders.ImageSet`: ``skipped`` grows as
    pictures fail to decode."""

    pictures: list[MemoryPicture]
    skipped: list[SkippedFile] = field(default_factory=list)
    config: LoadConfig = field(default_factory=LoadConfig)

    def __len__(self) -> int:
        return len(self.pictures)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.pictures]

    def iter_loaded(self) -> Iterator[tuple[str, Path | None, np.ndarray]]:
        """Yield (id, path or None, RGB uint8 (H, W, 3)); a picture that cannot be decoded goes to ``skipped``
        (named by its path or ``<memory:ID>``) and the rest carry on."""
        for p in self.pictures:
            src = p.path if p.path is not None else p.data
            try:
                image = load_image(src, config=self.config)
            except ImageLoadError as e:
                self.skipped.append(SkippedFile(p.label, e.reason, f"cannot load '{p.label}': {e.detail}"))
                continue
            yield p.id, p.path, image


def read_pictures(source: Any, *, config: LoadConfig | MatcherConfig | None = None) -> ImageSet | PictureSet:
    """The pictures of ``source`` to load lazily: an in-memory source (:func:`is_in_memory`) as a
    :class:`PictureSet`; a folder, a list of files/folders or one file path as an
    :class:`~matcher.io.folders.ImageSet` (ids = file stems)."""
    if isinstance(config, MatcherConfig):
        config = config.load
    if is_in_memory(source):
        return PictureSet(memory_pictures(source), config=config or LoadConfig())
    if isinstance(source, (str, os.PathLike)):
        src: Any = [Path(source)] if Path(source).is_file() else source
    elif isinstance(source, Iterable):
        src = [Path(s) for s in source]
    else:
        raise TypeError(f"pictures: expected a folder, a file, a list of paths, {{id: picture}} or [(id, picture)], "
                        f"got {type(source).__name__}")
    return read_images(src, config=config)
