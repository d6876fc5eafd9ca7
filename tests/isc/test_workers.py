"""Matching in worker processes (``icd match --workers N``): the rows, scores and skipped list of one process; a
worker killed mid-job costs a retry of its slice; a failing worker fails the job naming its queries; bad
arguments exit 2."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from matcher.cli import main
from matcher.config import MatcherConfig
from matcher.io.folders import read_images
from matcher.isc.track import run_pipeline_match
from matcher.isc.workers import WorkerError, guided_slices, match_in_workers


@pytest.fixture(scope="module")
def job(small_index, small_collection) -> tuple[Path, Path, Path]:
    """(index folder, queries folder, references folder) of the small collection (tests/conftest.py)."""
    refs, qs = small_collection
    return small_index, qs, refs


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_rows(a: list[dict], b: list[dict]) -> None:
    a, b = (sorted(x, key=lambda r: (r["query_id"], r["reference_id"])) for x in (a, b))
    assert [(r["query_id"], r["reference_id"]) for r in a] == [(r["query_id"], r["reference_id"]) for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    assert [r["is_copy"] for r in a] == [r["is_copy"] for r in b]


@pytest.mark.parametrize(("n", "workers", "largest", "sizes"), [
    (300, 2, 32, [32, 32, 32, 32, 32, 32, 27, 21, 15, 12, 9, 6, 5, 4, 4, 4, 1]),
    (5, 1, 32, [4, 1]), (3, 2, 1, [1, 1, 1]), (0, 2, 32, []), (40, 4, 8, [5, 5, 4, 4, 4, 4, 4, 4, 4, 2])])
def test_guided_slices_cover_the_queries_in_order_large_first(n, workers, largest, sizes):
    got = guided_slices(n, workers, largest, min(4, largest))
    assert [b - a for a, b in got] == sizes
    assert all(a == (got[i - 1][1] if i else 0) for i, (a, _) in enumerate(got)) and (not got or got[-1][1] == n)


def test_workers_give_the_one_process_rows(job, tmp_path, capsys):
    index, qs, _ = job
    one = run_pipeline_match(qs, tmp_path / "one.jsonl", index_dir=index, progress=False)
    assert main(["match", "--queries", str(qs), "--index", str(index), "--output", str(tmp_path / "two.jsonl"),
                 "--no-progress", "--json", "--workers", "2"]) == 3  # 3: a query was skipped
    two = json.loads(capsys.readouterr().out)
    rows = _rows(tmp_path / "one.jsonl")
    assert rows and any(r["is_copy"] and r["reference_id"] == "coffee" for r in rows)
    _same_rows(rows, _rows(tmp_path / "two.jsonl"))
    assert (tmp_path / "one.jsonl.skipped.csv").read_text() == (tmp_path / "two.jsonl.skipped.csv").read_text()
    assert [s["path"] for s in two["skipped"]] == [str(qs / "q_broken.jpg")]
    assert (two["workers"], two["worker_retries"], one.workers) == (2, 0, 1)
    assert (two["n_queries"], two["n_candidates"], two["n_copies"]) == (3, one.n_candidates, one.n_copies)
    assert two["seconds"]["verify"] > 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "one.jsonl", "one.jsonl.skipped.csv", "two.jsonl", "two.jsonl.skipped.csv"]


def test_a_killed_worker_costs_a_retry(small_config, job, tmp_path):
    index, qs, _ = job
    config = MatcherConfig.make(**json.loads(json.dumps(small_config.to_dict())))
    qset = read_images(qs, config=config.load)
    killed = []

    def kill_once(done: int) -> None:  # after the first of its three loadable queries: it cannot have finished
        if done >= 1 and not killed:
            (worker,) = mp.active_children()
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    got = match_in_workers(index, config, qset, workers=1, evidence=True, on_progress=kill_once)
    assert killed and got.retries == 1 and got.n_queries == 3
    run_pipeline_match(qs, tmp_path / "one.jsonl", index_dir=index, progress=False)
    _same_rows(_rows(tmp_path / "one.jsonl"), got.rows)
    assert [s[0] for s in got.skipped] == [str(qs / "q_broken.jpg")]


def test_slices_go_to_the_next_free_worker_and_come_back_in_query_order(small_config, job, tmp_path):
    index, qs, _ = job
    qset = read_images(qs, config=small_config.load)
    seen = []
    got = match_in_workers(index, small_config, qset, workers=2, evidence=True, slice_size=1, on_progress=seen.append)
    assert got.n_queries == 3 and got.retries == 0 and seen[-1] == 3 and seen == sorted(seen)
    run_pipeline_match(qs, tmp_path / "one.jsonl", index_dir=index, config=small_config, progress=False)
    one = _rows(tmp_path / "one.jsonl")
    assert [r["query_id"] for r in got.rows] == sorted((r["query_id"] for r in one), key=qset.ids.index)
    _same_rows(one, got.rows)
    assert [s[0] for s in got.skipped] == [str(qs / "q_broken.jpg")]
    with pytest.raises(ValueError, match="at least 1"):
        match_in_workers(index, small_config, qset, workers=2, slice_size=0)


def test_a_failing_worker_fails_the_job_naming_its_queries(small_config, job, tmp_path):
    _, qs, _ = job
    qset = read_images(qs, config=small_config.load)
    with pytest.raises(WorkerError, match="queries q_broken..q_coffee_crop failed"):
        match_in_workers(tmp_path / "no_index", small_config, qset, workers=1)


def test_bad_worker_arguments_exit_2(job, tmp_path, capsys):
    index, qs, _ = job
    base = ["match", "--queries", str(qs), "--output", str(tmp_path / "o.csv"), "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--index", str(index), "--workers", "0"])
    assert exc.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert main([*base, "--references", str(qs), "--exhaustive", "--workers", "2"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main([*base, "--index", str(index), "--workers", "2", "--ray", "local"]) == 2
    assert "--workers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 1"):
        run_pipeline_match(qs, tmp_path / "o.csv", index_dir=index, workers=0)
    assert not (tmp_path / "o.csv").exists()


def test_workers_on_a_reference_folder_indexed_for_the_run(small_config, job, tmp_path):
    """--references without --cache: the driver indexes into a temporary folder, the workers open it."""
    _, qs, refs = job
    one = run_pipeline_match(qs, tmp_path / "one.csv", references=refs, config=small_config, progress=False)
    two = run_pipeline_match(qs, tmp_path / "two.csv", references=refs, config=small_config, progress=False, workers=2)
    assert two.workers == 2 and two.n_queries == one.n_queries == 3 and two.n_references == 3

    def rows(path: Path) -> list[tuple[str, str, float]]:
        lines = path.read_text().splitlines()[1:]
        return sorted((q, r, float(s)) for q, r, s in (line.split(",") for line in lines))

    a, b = rows(tmp_path / "one.csv"), rows(tmp_path / "two.csv")
    assert [x[:2] for x in a] == [x[:2] for x in b] and np.allclose([x[2] for x in a], [x[2] for x in b], atol=1e-4)
