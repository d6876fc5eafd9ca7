"""Folders and batches of images: scanning a folder, reading a batch lazily (bad files are recorded as
:class:`SkippedFile` and the batch carries on), and the ``skipped.csv`` every job writes.

Ids are file stems; two candidates with the same stem in one input set are an error (:class:`DuplicateIdError`).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcher.config import LoadConfig, MatcherConfig
from matcher.io.atomic import atomic_write
from matcher.io.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

__all__ = [
    "DuplicateIdError",
    "ImageSet",
    "SkippedFile",
    "image_ids",
    "list_images",
    "read_images",
    "scan_folder",
    "write_skipped_csv",
]


class DuplicateIdError(ValueError):
    """Two files of one input set share a stem (the image id)."""

    def __init__(self, image_id: str, first: Path, second: Path) -> None:
        super().__init__(
            f"duplicate image id '{image_id}': '{first}' and '{second}' (ids are file stems and must be unique)"
        )
        self.image_id = image_id
        self.paths = (first, second)


@dataclass(frozen=True)
class SkippedFile:
    """A file a batch job did not use; ``reason`` is an :data:`REASONS` code or "not_an_image_extension"."""

    path: str
    reason: str
    message: str


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(folder: Path, recursive: bool) -> list[Path]:
    """Non-hidden files under ``folder`` (hidden folders not entered), sorted by relative path parts."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not _is_hidden(d)] if recursive else []
        found.extend(Path(root) / f for f in files if not _is_hidden(f))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _not_image_ext(path: Path) -> SkippedFile:
    return SkippedFile(
        str(path),
        "not_an_image_extension",
        f"skipped '{path}': extension '{path.suffix}' is not one of {', '.join(sorted(IMAGE_EXTENSIONS))}",
    )


def scan_folder(
    folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> tuple[list[Path], list[SkippedFile]]:
    """Candidate image files and the other files that were passed over.

    ``folder``: a directory (its files with an :data:`IMAGE_EXTENSIONS` suffix, case-insensitive, sorted;
    hidden files and folders ignored; other regular files reported with reason "not_an_image_extension"),
    a single file, or a list of files and/or directories. Files named explicitly are candidates whatever
    their extension (loading reports them if they are not images). Raises FileNotFoundError for a missing
    directory given as ``folder`` itself.
    """
    if isinstance(folder, (str, os.PathLike)):
        entries: list[Path] = [Path(folder)]
        if not entries[0].exists() and not entries[0].is_symlink():
            raise FileNotFoundError(f"image folder or file not found: '{entries[0]}'")
    else:
        entries = [Path(p) for p in folder]
    images: list[Path] = []
    skipped: list[SkippedFile] = []
    seen: set[Path] = set()
    for entry in entries:
        if entry.is_dir():
            for p in _walk(entry, recursive):
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    if p not in seen:
                        seen.add(p)
                        images.append(p)
                elif p.is_file():
                    skipped.append(_not_image_ext(p))
        elif entry not in seen:
            seen.add(entry)
            images.append(entry)
    return images, skipped


def list_images(
    folder_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> list[Path]:
    """Image files of a folder (image extensions only, sorted, hidden ignored) or an explicit list of paths."""
    return scan_folder(folder_or_paths, recursive=recursive)[0]


def image_ids(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """Map image id (file stem) -> path, in input order. Raises :class:`DuplicateIdError` on a repeated stem."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in out:
            raise DuplicateIdError(p.stem, out[p.stem], p)
        out[p.stem] = p
    return out


@dataclass
class ImageSet:
    """Candidate images of a batch, loaded lazily. ``skipped`` grows as files fail to load."""

    ids: list[str]
    paths: list[Path]
    skipped: list[SkippedFile] = field(default_factory=list)
    config: LoadConfig = field(default_factory=LoadConfig)
    on_skip: Callable[[SkippedFile], None] | None = None
    _failed: set[Path] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def _skip(self, item: SkippedFile) -> None:
        self.skipped.append(item)
        if self.on_skip is not None:
            self.on_skip(item)

    def iter_loaded(self) -> Iterator[tuple[str, Path, np.ndarray]]:
        """Yield (id, path, RGB uint8 (H, W, 3)) one image at a time; failures go to ``skipped`` (once per file)."""
        for image_id, path in zip(self.ids, self.paths):
            try:
                image = load_image(path, config=self.config)
            except ImageLoadError as e:
                if path not in self._failed:
                    self._failed.add(path)
                    self._skip(SkippedFile(str(path), e.reason, str(e)))
                continue
            yield image_id, path, image

    def load(self, image_id: str) -> np.ndarray:
        """Load one image by id (KeyError if unknown; ImageLoadError if it cannot be loaded)."""
        try:
            path = self.paths[self.ids.index(image_id)]
        except ValueError:
            raise KeyError(f"unknown image id {image_id!r}") from None
        return load_image(path, config=self.config)

    def load_all(self) -> dict[str, np.ndarray]:
        """Every loadable image, id -> RGB uint8 (H, W, 3), in order. Holds them all in memory: small sets only."""
        return {image_id: image for image_id, _, image in self.iter_loaded()}


def read_images(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    config: LoadConfig | MatcherConfig | None = None,
    on_skip: Callable[[SkippedFile], None] | None = None,
    recursive: bool = True,
) -> ImageSet:
    """Scan ``source`` (see :func:`scan_folder`) into an :class:`ImageSet`; nothing is decoded yet.

    Non-image-extension files are in ``skipped`` at once (``on_skip`` is called for them too). Raises
    :class:`DuplicateIdError` if two candidates share a stem.
    """
    if isinstance(config, MatcherConfig):
        config = config.load
    paths, skipped = scan_folder(source, recursive=recursive)
    ids = image_ids(paths)
    image_set = ImageSet(list(ids), list(ids.values()), config=config or LoadConfig(), on_skip=on_skip)
    for item in skipped:
        image_set._skip(item)
    return image_set


def write_skipped_csv(skipped: Iterable[SkippedFile], path: str | os.PathLike[str]) -> None:
    """Write ``skipped`` as UTF-8 CSV with header ``path,reason,message``, atomically."""
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason", "message"])
        for item in skipped:
            writer.writerow([item.path, item.reason, item.message])
