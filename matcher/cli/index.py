"""``icd index REFERENCES_DIR --index DIR``: build, resume or extend the on-disk reference index."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_index_arguments", "run_index"]

EXIT_SKIPPED = 3  # the job completed but some input files were skipped (listed in skipped.csv)
EXIT_ERROR = 2
_SHOWN_SKIPS = 20  # skipped files printed to stderr (all of them are in skipped.csv)


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("references", nargs="?", metavar="REFERENCES_DIR",
                   help="folder (or file) of reference pictures; ids are file stems")
    p.add_argument("--index", required=True, metavar="DIR",
                   help="index folder: created if new, resumed if it exists (re-running skips what is indexed)")
    p.add_argument("--add", action="store_true", help="add to an existing index (refused if DIR holds none)")
    p.add_argument("--background", metavar="DIR",
                   help="also index these pictures as the background set (score normalisation)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="pictures described and committed together (default: config index.batch_size)")
    p.add_argument("--config", metavar="JSON",
                   help="JSON file of MatcherConfig overrides (nested, e.g. {\"pipeline\": {\"reference_regions\": "
                        "[\"grid2\"]}}); an existing index refuses settings that change what it stores")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_index(args: argparse.Namespace) -> int:
    from matcher.config import MatcherConfig
    from matcher.io.folders import DuplicateIdError, write_skipped_csv
    from matcher.references.disk.store import DB_NAME, SKIPPED_NAME, IndexStore, IndexStoreError
    from matcher.references.features import FeatureStoreError
    from matcher.retrieval.index import ReferenceIndexError

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR

    if args.references is None and args.background is None:
        return fail("give a REFERENCES_DIR and/or --background DIR to index")
    if args.batch_size is not None and args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    folder = Path(args.index)
    exists = (folder / DB_NAME).is_file()
    if args.add and not exists:
        return fail(f"--add needs an existing index, but {folder} holds none; run without --add to create one")
    try:
        config = None
        if args.config:
            try:
                config = MatcherConfig.make(**json.loads(Path(args.config).read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                return fail(f"{args.config}: unusable config file ({exc})")
        store = IndexStore.open(folder, config, create=not args.add)
        with store:
            summaries = []
            if args.references is not None:
                summaries.append(store.add_references(args.references, progress=not args.no_progress,
                                                      batch_size=args.batch_size))
            if args.background is not None:
                summaries.append(store.add_references(args.background, progress=not args.no_progress,
                                                      background=True, batch_size=args.batch_size))
    except (IndexStoreError, ReferenceIndexError, FeatureStoreError, DuplicateIdError, FileNotFoundError,
            NotADirectoryError, ValueError) as exc:
        return fail(str(exc))
    skipped = [s for summary in summaries for s in summary.skipped]
    write_skipped_csv(skipped, folder / SKIPPED_NAME)
    for s in skipped[:_SHOWN_SKIPS]:
        print(f"skipped {s.path}: {s.message}", file=sys.stderr)
    if len(skipped) > _SHOWN_SKIPS:
        print(f"... and {len(skipped) - _SHOWN_SKIPS} more", file=sys.stderr)
    for summary in summaries:
        print(summary)
    if skipped:
        print(f"skipped files are listed in {folder / SKIPPED_NAME}", file=sys.stderr)
    return EXIT_SKIPPED if skipped else 0
