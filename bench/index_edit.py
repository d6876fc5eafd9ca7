"""Editing an index (issue 16, part 3): remove references from a built index and add them back, timing each step
and checking on the benchmark's own queries that a removed reference is never returned and comes back when re-added.

    python bench/index_edit.py --bench /tmp/domains/home --index /tmp/domains/home_index --remove 50

Works on a copy of ``--index`` (the original is not touched). ``--remove N``: N references that are the true match
of at least one query (seeded choice). Steps: match those queries (before), remove the N references in one call,
match again (after removal: no removed id may appear, and the copies' recall@1 drops to 0), add the same files
back, match again (after re-adding). Prints one JSON object (seconds per step, recall@1 of the affected queries at
each step, rows naming a removed reference) and, with ``--out``, writes it there.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.api import Matcher
from matcher.references.disk.store import IndexStore


def _truth(bench: Path) -> dict[str, str]:
    with open(bench / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        return {r["query_id"]: r["reference_id"] for r in csv.DictReader(fh) if r["reference_id"]}


def _recall_at_1(rows: list[dict], truth: dict[str, str], queries: list[str], threshold: float) -> float:
    best: dict[str, dict] = {}
    for r in rows:
        if r["query_id"] not in best or r["score"] > best[r["query_id"]]["score"]:
            best[r["query_id"]] = r
    hit = sum(1 for q in queries if q in best and best[q]["reference_id"] == truth[q] and best[q]["score"] >= threshold)
    return hit / max(1, len(queries))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, required=True, help="benchmark folder (queries/, references/, ground_truth.csv)")
    ap.add_argument("--index", type=Path, required=True, help="its index (copied; the original is not touched)")
    ap.add_argument("--remove", type=int, default=50, help="references to remove (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    truth = _truth(args.bench)
    by_ref: dict[str, list[str]] = {}
    for q, r in sorted(truth.items()):
        by_ref.setdefault(r, []).append(q)
    chosen = sorted(random.Random(args.seed).sample(sorted(by_ref), min(args.remove, len(by_ref))))
    queries = sorted(q for r in chosen for q in by_ref[r])
    qfiles = {p.stem: p for p in (args.bench / "queries").iterdir()}
    rfiles = {p.stem: p for p in (args.bench / "references").iterdir()}
    matcher = Matcher.from_pretrained()
    thr = matcher.config.threshold
    out: dict = {"bench": str(args.bench), "index": str(args.index), "removed": len(chosen),
                 "affected_queries": len(queries), "seconds": {}, "recall_at_1": {}, "rows_naming_removed": {}}
    with tempfile.TemporaryDirectory(prefix="icd-edit-") as tmp:
        idx = Path(tmp) / "index"
        shutil.copytree(args.index, idx)
        with IndexStore.open(idx) as store:
            out["references"] = store.info["count"]

        def match(step: str) -> None:
            t = time.perf_counter()
            rows = matcher.match([qfiles[q] for q in queries], index=idx)
            out["seconds"][f"match_{step}"] = round(time.perf_counter() - t, 2)
            out["recall_at_1"][step] = round(_recall_at_1(rows, truth, queries, thr), 4)
            out["rows_naming_removed"][step] = sum(1 for r in rows if r["reference_id"] in set(chosen))

        match("before")
        t = time.perf_counter()
        summary = matcher.remove(chosen, index=idx)
        out["seconds"]["remove"] = round(time.perf_counter() - t, 3)
        assert summary.removed == chosen and not summary.missing, summary
        with IndexStore.open(idx) as store:
            out["references_after_remove"] = store.info["count"]
        match("after_remove")
        t = time.perf_counter()
        added = matcher.index([rfiles[r] for r in chosen], idx)
        out["seconds"]["re_add"] = round(time.perf_counter() - t, 2)
        out["re_added"] = added.added
        match("after_re_add")
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
