"""How many query keypoints must vote? Candidate recall and voting time per query for several voting budgets
(``pipeline.voting_keypoints``: the query's strongest N keypoints vote), on the copy queries of a benchmark.

    python bench/voting_budget.py --bench /tmp/domains/home --index /tmp/domains/home_index --queries 300 \\
        --budgets 0 768 512 384 256 [--nprobes 8 4]

Queries are a seeded sample of the benchmark's copy queries. Each is described once (variants + local features);
then, per budget, the pipeline's candidate stage runs (global search + region search + votes) and we record
whether the true reference is among the candidates ("candidate recall") and whether it was among the vote-only
extras, plus the voting stage's seconds. Budget 0 = every keypoint votes (the default before this study).
``--nprobes``: also vary ``pipeline.voting_nprobe`` (IVF lists visited per keypoint; every budget x nprobe pair is
run). Writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.config import MatcherConfig
from matcher.io.images import ImageLoadError, load_image
from matcher.pipeline.pipeline import Pipeline
from matcher.pipeline.timer import StageTimer
from matcher.references.open import open_references


def copy_queries(bench: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of (query id, true reference id) from ``bench/ground_truth.csv``."""
    with open(bench / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        pairs = [(r["query_id"], r["reference_id"]) for r in csv.DictReader(fh) if r["reference_id"]]
    pick = np.random.default_rng(seed).choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return [pairs[i] for i in sorted(pick)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--budgets", type=int, nargs="+", default=[0, 768, 512, 384, 256])
    ap.add_argument("--nprobes", type=int, nargs="+", default=None,
                    help="pipeline.voting_nprobe values to run (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, metavar="JSON", help="JSON file of MatcherConfig overrides")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results_voting_budget.json"))
    args = ap.parse_args(argv)
    pairs = copy_queries(args.bench, args.queries, args.seed)
    files = {p.stem: p for p in (args.bench / "queries").iterdir()}
    overrides = json.loads(args.config.read_text(encoding="utf-8")) if args.config else {}
    pipeline = Pipeline(MatcherConfig.make(**overrides))
    items, truth = [], {}
    for qid, rid in pairs:
        try:
            items.append((qid, load_image(files[qid])))
            truth[qid] = rid
        except (KeyError, ImageLoadError) as exc:
            print(f"skipped {qid}: {exc}", file=sys.stderr)
    t0 = time.perf_counter()
    described = [q for i in range(0, len(items), 32) for q in pipeline.describe_queries(items[i:i + 32])]
    print(f"described {len(described)} queries in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = []
    with open_references(index=args.index, config=pipeline.config) as (store, _):
        ids = store.ids
        store.keypoint_voter(seed=pipeline.config.seed)  # loaded before timing
        base = pipeline.config
        for budget, nprobe in [(b, p) for b in args.budgets for p in args.nprobes or [base.pipeline.voting_nprobe]]:
            pipeline.config = dataclasses.replace(base, pipeline=dataclasses.replace(
                base.pipeline, voting_keypoints=budget, voting_nprobe=nprobe))
            timer = StageTimer()
            found = by_votes = 0
            for q in described:
                cands = pipeline.candidates(q, store, timer)
                hit = [c for c in cands if ids[c.row] == truth[q.query_id]]
                found += bool(hit)
                by_votes += bool(hit) and hit[0].evidence.sources == ["voting"]
            n = len(described)
            row = {"budget": budget, "nprobe": nprobe, "queries": n, "candidate_recall": round(found / n, 4),
                   "found_by_votes_only": by_votes, "voting_s_per_query": round(timer.seconds["voting"] / n, 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"bench": str(args.bench), "index": str(args.index), "seed": args.seed, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
