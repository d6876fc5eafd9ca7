"""Collect the pipeline's candidate pairs with all fusion features on a benchmark (for fitting and ablations).

A table (dict of equal-length numpy arrays, saved as .npz without pickles) with one row per candidate pair:
query_id, reference_id, label (1 = ground-truth copy pair), kind and family of the query, the fusion feature
vector (:data:`matcher.fusion.features.FEATURE_NAMES`), the local score, and which candidate generators proposed it.
Timing per stage is returned as well.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.fusion.features import FEATURE_NAMES
from matcher.io.folders import read_images
from matcher.isc.metrics import load_manifest
from matcher.isc.submission import read_ground_truth
from matcher.pipeline.batch import match_queries
from matcher.pipeline.pipeline import Pipeline
from matcher.pipeline.timer import StageTimer

SOURCES = ("global", "regions", "global_to_local", "voting")


def open_or_build_index(pipeline: Pipeline, references: Path, index_dir: Path, progress: bool = True):
    """The index store at ``index_dir`` holding ``references`` (built or resumed)."""
    from matcher.references.disk.store import IndexStore

    store = IndexStore.open(index_dir, pipeline.config, create=True, descriptor=pipeline.descriptor)
    t0 = time.perf_counter()
    job = store.add_references(references, progress=progress)
    print(f"index: {job} ({time.perf_counter() - t0:.1f}s)")
    return store


def collect(pipeline: Pipeline, store, bench: Path, *, max_queries: int | None = None, chunk: int = 32,
            progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """Run candidates + verification (no fusion needed) for the benchmark's queries; returns (table, seconds per
    stage, number of queries)."""
    manifest = load_manifest(bench / "manifest.json")
    gt = {(g.query_id, g.reference_id) for g in read_ground_truth(bench / "ground_truth.csv") if g.reference_id}
    qset = read_images(bench / "queries")
    ids = sorted(qset.ids)[:max_queries] if max_queries else sorted(qset.ids)
    timer = StageTimer()
    cols: dict[str, list] = {k: [] for k in ("query_id", "reference_id", "label", "kind", "family", "features",
                                             "local_score", "sources", "region", "cosine")}
    bar = tqdm(total=len(ids), desc="queries", disable=not progress)
    t0 = time.perf_counter()
    items = ((qid, qset.load(qid)) for qid in ids)
    for qid, matches in zip(ids, match_queries(pipeline, store, items, chunk=chunk, timer=timer)):
        meta = manifest["queries"][qid]
        for m in sorted(matches, key=lambda m: m.reference_row):
            cols["query_id"].append(qid)
            cols["reference_id"].append(m.reference_id)
            cols["label"].append(int((qid, m.reference_id) in gt))
            cols["kind"].append(meta.get("kind", ""))
            cols["family"].append(meta.get("primary_family") or "")
            cols["features"].append(m.features)
            ev = m.evidence
            cols["local_score"].append(pipeline.engine.score_model.score(ev) if ev is not None else 0.0)
            cols["sources"].append(sum(1 << SOURCES.index(s) for s in m.global_evidence.sources))
            cols["region"].append(m.global_evidence.region)
            cols["cosine"].append(m.global_evidence.cosine)
        bar.update(1)
    bar.close()
    seconds = dict(timer.seconds)
    seconds["total"] = time.perf_counter() - t0
    table = {
        "query_id": np.array(cols["query_id"], dtype=str), "reference_id": np.array(cols["reference_id"], dtype=str),
        "label": np.array(cols["label"], np.int8), "kind": np.array(cols["kind"], dtype=str),
        "family": np.array(cols["family"], dtype=str),
        "features": np.stack(cols["features"]) if cols["features"] else np.zeros((0, len(FEATURE_NAMES))),
        "local_score": np.array(cols["local_score"], np.float64), "sources": np.array(cols["sources"], np.int16),
        "region": np.array(cols["region"], dtype=str), "cosine": np.array(cols["cosine"], np.float64),
        "feature_names": np.array(FEATURE_NAMES, dtype=str),
    }
    return table, seconds, len(ids)


def save_table(table: dict[str, np.ndarray], path: Path) -> None:
    np.savez_compressed(path, **table)


def load_table(path: Path) -> dict[str, np.ndarray]:
    """A table saved by :func:`save_table`; ``ValueError`` when it holds other features than
    :data:`FEATURE_NAMES` (collected by another version: delete it to collect again)."""
    with np.load(path, allow_pickle=False) as z:
        table = {k: z[k] for k in z.files}
    if tuple(table["feature_names"]) != FEATURE_NAMES:
        raise ValueError(f"{path} holds other features ({', '.join(table['feature_names'])}); delete it to collect "
                         "again")
    return table
