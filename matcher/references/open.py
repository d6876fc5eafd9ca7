"""Opening the references of a job: an existing on-disk index, or a folder of pictures indexed for the job (into a
given folder, created or resumed, or into a temporary one removed afterwards). Matching from the API and from the
command line open references here, so a folder of references is matched the same way by both."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from matcher.config import MatcherConfig
from matcher.io.folders import SkippedFile
from matcher.io.inputs import is_in_memory
from matcher.io.progress import Progress
from matcher.references.disk.store import IndexStore

if TYPE_CHECKING:  # pragma: no cover
    from matcher.descriptors.extractor import GlobalDescriptor
    from matcher.local.engine import LocalEngine

__all__ = ["open_references"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def open_references(*, references: PathLike | Sequence[PathLike] | Any = None, index: PathLike | None = None,
                    config: MatcherConfig | None = None, descriptor: GlobalDescriptor | None = None,
                    engine: LocalEngine | None = None, progress: bool | Progress = False) -> Iterator[tuple[IndexStore, list[SkippedFile]]]:
    """Yield (store, reference files skipped while indexing).

    ``references`` (a folder, a list of files/folders, or pictures in memory with ids: ``{id: picture}`` or
    ``[(id, picture)]``, :mod:`matcher.io.inputs`): indexed into ``index`` when given (created, or resumed
    when it exists), else into a temporary folder removed on exit; ``descriptor`` and ``engine`` (the caller's
    loaded models, loaded here when None) describe them. Without ``references``, ``index`` must hold an index: opened with ``config`` (None: the
    configuration stored with the index). The store is closed on exit.
    """
    if references is None and index is None:
        raise ValueError("give references (a folder of pictures) or index (a folder made by `icd index`)")
    tmp = None
    try:
        skipped: list[SkippedFile] = []
        if references is not None:
            if index is None:
                tmp = tempfile.mkdtemp(prefix="icd-index-")
                index = tmp
            store = IndexStore.open(index, config, create=True, descriptor=descriptor, engine=engine)
            try:
                if is_in_memory(references):
                    skipped.extend(store.add_images(references, progress=progress).skipped)
                else:
                    skipped.extend(store.add_references(references, progress=progress).skipped)
            except BaseException:
                store.close()
                raise
        else:
            store = IndexStore.open(index, config)  # type: ignore[arg-type]
        with store:
            yield store, skipped
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
