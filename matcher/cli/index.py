"""``icd index REFERENCES_DIR --index DIR``: build, resume or extend the on-disk reference index."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from matcher.cli.cluster import add_ray_arguments
from matcher.cli.common import add_model_arguments

if TYPE_CHECKING:  # pragma: no cover
    from matcher.references.disk.store import IndexJobSummary, IndexStore

__all__ = ["add_index_arguments", "run_index"]

EXIT_SKIPPED = 3  # the job completed but some input files were skipped (listed in skipped.csv)
EXIT_ERROR = 2
_SHOWN_SKIPS = 20  # skipped files logged on stderr (all of them are in skipped.csv)
_LOG = logging.getLogger(__name__)


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("references", nargs="?", metavar="REFERENCES_DIR",
                   help="folder (or file) of reference pictures; ids are file stems")
    p.add_argument("--index", required=True, metavar="DIR",
                   help="index folder: created if new, resumed if it exists (re-running skips what is indexed)")
    p.add_argument("--add", action="store_true", help="add to an existing index (refused if DIR holds none)")
    p.add_argument("--remove", nargs="+", metavar="ID",
                   help="remove these reference ids from an existing index (no rebuild; a removed reference is "
                        "never returned again, and its id may be indexed again)")
    p.add_argument("--background", metavar="DIR",
                   help="also index these pictures as the background set (score normalisation)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="pictures described and committed together (default: config index.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary on stdout (added, already indexed, skipped files with reasons, "
                        "seconds per stage, paths) instead of the summary lines")
    add_model_arguments(p)  # --device, --config (an existing index refuses settings that change what it stores)
    add_ray_arguments(p)  # the references described on a cluster; this process alone writes the index


def run_index(args: argparse.Namespace) -> int:
    from matcher.cli.common import config_from_args, print_json, show_progress
    from matcher.io.folders import DuplicateIdError, write_skipped_csv
    from matcher.references.disk.store import DB_NAME, SKIPPED_NAME, IndexStore, IndexStoreError
    from matcher.references.features import FeatureStoreError
    from matcher.retrieval.index import ReferenceIndexError

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    if args.remove:
        return _run_remove(args, fail)
    if args.references is None and args.background is None:
        return fail("give a REFERENCES_DIR and/or --background DIR to index")
    if args.batch_size is not None and args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    folder = Path(args.index)
    exists = (folder / DB_NAME).is_file()
    if args.add and not exists:
        return fail(f"--add needs an existing index, but {folder} holds none; run without --add to create one")
    progress = show_progress(args)
    try:
        config = None
        if args.config or args.device:  # laid onto the settings an existing index was built with
            base = None
            if exists:
                with IndexStore.open(folder) as stored:
                    base = stored.config.to_dict()
            config = config_from_args(args, base)
        if args.ray is not None:
            from matcher.cluster.connect import connect

            connect(args.ray, num_cpus=args.ray_cpus)  # a missing extra or a bad address fails before any work
        store = IndexStore.open(folder, config, create=not args.add)
        with store:
            summaries = []
            if args.references is not None:
                summaries.append(_add_references(store, args, progress))
            if args.background is not None:
                summaries.append(store.add_references(args.background, progress=progress,
                                                      background=True, batch_size=args.batch_size))
    except (IndexStoreError, ReferenceIndexError, FeatureStoreError, DuplicateIdError, FileNotFoundError,
            NotADirectoryError, ValueError) as exc:
        return fail(str(exc))
    skipped = [s for summary in summaries for s in summary.skipped]
    write_skipped_csv(skipped, folder / SKIPPED_NAME)
    for s in skipped[:_SHOWN_SKIPS]:
        _LOG.warning("skipped %s: %s", s.path, s.message)
    if len(skipped) > _SHOWN_SKIPS:
        _LOG.warning("... and %d more", len(skipped) - _SHOWN_SKIPS)
    if skipped:
        _LOG.warning("skipped files are listed in %s", folder / SKIPPED_NAME)
    if args.json:
        print_json({"command": "index", "index": str(folder), "skipped_output": str(folder / SKIPPED_NAME),
                    "jobs": [dataclasses.asdict(summary) for summary in summaries],
                    "skipped": [dataclasses.asdict(s) for s in skipped]})
    else:
        for summary in summaries:
            print(summary)
    return EXIT_SKIPPED if skipped else 0


def _add_references(store: IndexStore, args: argparse.Namespace, progress: bool) -> IndexJobSummary:
    """Index REFERENCES_DIR into ``store``, described here or on the ``--ray`` cluster."""
    if args.ray is None:
        return store.add_references(args.references, progress=progress, batch_size=args.batch_size)
    from matcher.cluster.jobs import add_on_cluster

    return add_on_cluster(store, args.references, address=args.ray, num_cpus=args.ray_cpus,
                          batch_size=args.batch_size, progress=progress)


def _run_remove(args: argparse.Namespace, fail: Callable[[str], int]) -> int:
    """``icd index --index DIR --remove ID...`` (alone: no pictures to add in the same run)."""
    from matcher.references.disk.store import DB_NAME, IndexStore, IndexStoreError

    if args.references is not None or args.background is not None or args.add:
        return fail("--remove runs alone: give no REFERENCES_DIR, --background or --add with it")
    if not (Path(args.index) / DB_NAME).is_file():
        return fail(f"--remove needs an existing index, but {args.index} holds none")
    try:
        with IndexStore.open(args.index) as store:
            summary = store.remove(args.remove)
    except (IndexStoreError, OSError) as exc:
        return fail(str(exc))
    for ref_id in summary.missing:
        print(f"not in the index: {ref_id}", file=sys.stderr)
    print(summary)
    return 0
