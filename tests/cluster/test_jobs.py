"""Jobs on the session's local cluster give exactly the single-process results: the same rows and scores (compared
as file bytes), the same skipped list, the same index; a worker killed mid-job costs a retry; a job run twice gives
one set of rows, and indexing twice adds nothing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from matcher.cli import main
from matcher.cluster import jobs
from matcher.cluster.describe import QueryDescriber
from matcher.cluster.jobs import cluster_index, run_cluster_match
from matcher.cluster.verify import QueryVerifier
from matcher.isc.track import run_pipeline_match
from matcher.references.disk.store import IndexStore

ray = pytest.importorskip("ray")


def _outputs(out: Path) -> tuple[bytes, bytes]:
    return out.read_bytes(), Path(f"{out}.skipped.csv").read_bytes()


def test_match_gives_the_single_process_rows(cluster, collection, index, tmp_path, capsys):
    _, qs = collection
    args = ["match", "--queries", str(qs), "--index", str(index), "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "one.jsonl")]) == 3  # 3: a query was skipped
    assert main([*args, "--output", str(tmp_path / "ray.jsonl"), "--ray", cluster]) == 3
    one, ray_out = _outputs(tmp_path / "one.jsonl"), _outputs(tmp_path / "ray.jsonl")
    assert one[0] and one[0] == ray_out[0]  # every row, score and piece of evidence, in the same order
    assert b"q_broken.jpg" in one[1] and one[1] == ray_out[1]
    # the same job again: one set of rows, written whole (no shards or temporary files left beside it)
    assert main([*args, "--output", str(tmp_path / "ray.jsonl"), "--ray", cluster]) == 3
    assert _outputs(tmp_path / "ray.jsonl") == one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "one.jsonl.skipped.csv", "ray.jsonl",
                                                          "ray.jsonl.skipped.csv"]
    capsys.readouterr()


@pytest.mark.slow
def test_api_gives_the_single_process_rows(cluster, matcher, collection, index):
    refs, qs = collection
    rows = matcher.match(qs, index=index)
    on_cluster = matcher.match(qs, index=index, ray=cluster)
    assert list(on_cluster) == list(rows) and len(rows) > 0
    assert [(s.path, s.reason) for s in on_cluster.skipped] == [(s.path, s.reason) for s in rows.skipped]
    best = {r["query_id"]: r for r in reversed(on_cluster)}
    assert best["q_coffee_crop"]["reference_id"] == "coffee" and best["q_coffee_crop"]["is_copy"]
    # pictures in memory (decoded by the driver, a bad one skipped by its id), against references indexed for the
    # call on the cluster: the same rows and skipped list as in one process
    pictures = {p.stem: p.read_bytes() for p in sorted(qs.iterdir())}
    alone = matcher.match(pictures, references=refs)
    on_cluster = matcher.match(pictures, references=refs, ray=cluster)
    assert list(on_cluster) == list(alone) == list(rows)
    assert [s.path for s in on_cluster.skipped] == [s.path for s in alone.skipped] == ["<memory:q_broken>"]


def test_index_on_the_cluster_is_the_single_process_index(cluster, matcher, collection, tmp_path):
    refs, qs = collection
    (tmp_path / "refs").mkdir()
    for p in refs.iterdir():
        (tmp_path / "refs" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "refs" / "unreadable.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    folder = tmp_path / "idx"
    stats: dict[str, int] = {}
    job = cluster_index(tmp_path / "refs", folder, matcher.config, address=cluster, stats=stats, batch_size=2)
    alone = IndexStore.open(tmp_path / "alone", matcher.config, create=True).add_references(tmp_path / "refs",
                                                                                          batch_size=2)
    assert (job.added, job.already) == (alone.added, alone.already) == (3, 0)
    assert [(s.path, s.reason, s.message) for s in job.skipped] == [(s.path, s.reason, s.message)
                                                                    for s in alone.skipped]
    assert stats == {"cluster_batches": 2, "driver_batches": 0}  # every batch described on the cluster
    # (batches of 2, as the cluster's: descriptor floats depend on the batch, so `index` would differ slightly)
    single = run_pipeline_match(qs, tmp_path / "a.jsonl", index_dir=tmp_path / "alone", pipeline=matcher.pipeline,
                                progress=False)
    run_pipeline_match(qs, tmp_path / "b.jsonl", index_dir=folder, pipeline=matcher.pipeline, progress=False)
    assert single.n_rows > 0 and (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    # again, from the command line: nothing is added twice
    assert main(["index", str(tmp_path / "refs"), "--index", str(folder), "--ray", cluster, "--no-progress",
                 "--batch-size", "2"]) == 3
    with IndexStore.open(folder) as store:
        assert sorted(store.live_ids()) == ["chelsea", "coffee", "rocket"] and len(store) == 3


class _DyingDescriber(QueryDescriber):
    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):  # the first batch kills its worker process
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(batch)


class _DyingVerifier(QueryVerifier):
    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow
def test_a_worker_that_dies_costs_a_retry(cluster, matcher, collection, index, tmp_path, monkeypatch):
    _, qs = collection
    run_pipeline_match(qs, tmp_path / "before.csv", index_dir=index, pipeline=matcher.pipeline, progress=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    _DyingDescriber.marker, _DyingVerifier.marker = str(tmp_path / "describer.died"), str(tmp_path / "verifier.died")
    monkeypatch.setattr(jobs, "QueryDescriber", _DyingDescriber)
    monkeypatch.setattr(jobs, "QueryVerifier", _DyingVerifier)
    summary = run_cluster_match(qs, tmp_path / "after.csv", address=cluster, index_dir=index, progress=False)
    assert (tmp_path / "describer.died").exists() and (tmp_path / "verifier.died").exists()
    assert summary.n_queries == 3 and len(summary.skipped) == 1
    assert _outputs(tmp_path / "after.csv")[0] == _outputs(tmp_path / "before.csv")[0]
