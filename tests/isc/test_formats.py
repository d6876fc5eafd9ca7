"""Match rows and their files (matcher.isc.formats): the row builders, format choice, min-score selection, and the
csv / jsonl / parquet writers reading back the same rows."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from matcher.api import MatchRows
from matcher.isc.formats import (
    COLUMNS,
    TOP_CONTRIBUTIONS,
    OutputFormatError,
    local_row,
    pair_row,
    resolve_format,
    select_rows,
    skipped_path,
    write_rows,
)
from matcher.isc.submission import SubmissionFormatError, read_predictions
from matcher.local.engine import ScoredPair
from matcher.local.evidence import PairEvidence
from matcher.pipeline.pipeline import PairMatch
from matcher.retrieval.candidates import GlobalEvidence

pq = pytest.importorskip("pyarrow.parquet")


def _pair(qid: str, rid: str, score: float, verified: bool = True) -> PairMatch:
    ev = (PairEvidence(n_matches=40, n_inliers=31, inlier_ratio=0.7, query_box=[1.0, 2.0, 101.5, 80.0],
                       reference_box=[10.0, 12.0, 60.0, 50.0], query_coverage=0.8, reference_coverage=0.3,
                       mirrored=True, containment="query_in_reference", query_region="full",
                       reference_region="grid2:r0c1")
          if verified else PairEvidence(reason="too few tentative matches (< 6)"))
    g = GlobalEvidence(full=0.61, cosine=0.8, regions=0.7, region="hflip", to_local=float("nan"),
                       reference_crop="grid2:r0c1", log_norm_ratio=-0.05, sources=["global", "voting"])
    contributions = {"reference_in_query": 3.5, "bias": -9.0, "inlier_ratio": -2.0, "global_full": 0.5,
                     "coverage": 0.25, "dense_agree": -0.125, "seam": 0.0625}
    return PairMatch(qid, rid, score, score >= 0.5, 0.5, ev, g, np.zeros(4, np.float32), contributions)


@pytest.fixture
def rows() -> list[dict]:
    pairs = [_pair("q1", "r1", 0.97), _pair("q1", "r2", 0.2, verified=False), _pair("q2", "ü名", 0.6),
             _pair("q3", "r1", 0.01)]
    return [pair_row(p) for p in pairs]


def test_pair_row_carries_the_evidence(rows):
    r = rows[0]
    assert tuple(r) == tuple(sorted(r, key=COLUMNS.index)) and set(r) == set(COLUMNS)
    assert (r["score"], r["is_copy"], r["threshold"], r["n_inliers"], r["n_matches"]) == (0.97, True, 0.5, 31, 40)
    assert (r["containment"], r["mirrored"], r["inverted"]) == ("query_in_reference", True, False)
    assert r["query_region"] == "hflip" and r["query_box"] == [1.0, 2.0, 101.5, 80.0]
    assert r["reference_region"] == "grid2:r0c1" and r["reference_box"] == [10.0, 12.0, 60.0, 50.0]
    assert r["global"]["to_local"] is None and r["global"]["sources"] == ["global", "voting"]  # nan -> null
    assert r["global_full"] == 0.61 and r["reason"] is None
    # the largest logit terms, bias left out, at most TOP_CONTRIBUTIONS
    assert [c["feature"] for c in r["contributions"]] == ["reference_in_query", "inlier_ratio", "global_full",
                                                          "coverage", "dense_agree"][:TOP_CONTRIBUTIONS]
    unverified = rows[1]
    assert unverified["query_box"] is None and unverified["reason"].startswith("too few")
    assert pair_row(_pair("q", "r", 0.5), evidence=False) == {"query_id": "q", "reference_id": "r", "score": 0.5}


def test_local_row_has_no_global_evidence():
    ev = PairEvidence(n_matches=20, n_inliers=12, containment="same_extent", query_region="grid2:r1c1")
    r = local_row("q", ScoredPair("r", 0.7, ev), 0.5)
    assert set(r) == set(COLUMNS)
    assert (r["is_copy"], r["n_inliers"], r["query_region"], r["global"], r["contributions"]) == (
        True, 12, "grid2:r1c1", None, [])
    assert not local_row("q", ScoredPair("r", 0.4, ev), 0.5)["is_copy"]


def test_resolve_format_from_suffix_and_refuses_contradictions(tmp_path, monkeypatch):
    assert resolve_format(tmp_path / "sub.csv") == "csv"
    assert resolve_format(tmp_path / "sub.txt") == "csv"
    assert resolve_format(tmp_path / "rows.JSONL") == "jsonl"
    assert resolve_format(tmp_path / "rows.parquet") == "parquet"
    assert resolve_format(tmp_path / "rows.out", "jsonl") == "jsonl"
    with pytest.raises(OutputFormatError, match=r"rows.jsonl: the suffix says jsonl but the format asked for is csv"):
        resolve_format(tmp_path / "rows.jsonl", "csv")
    with pytest.raises(OutputFormatError, match="unknown output format 'xml'"):
        resolve_format(tmp_path / "rows.xml", "xml")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    with pytest.raises(OutputFormatError, match=r"needs pyarrow.*icd-matcher\[parquet\]"):
        resolve_format(tmp_path / "rows.parquet")


def test_skipped_path_is_named_after_the_output(tmp_path):
    assert skipped_path(tmp_path / "sub.csv") == tmp_path / "sub.csv.skipped.csv"
    assert skipped_path("rows.jsonl").name == "rows.jsonl.skipped.csv"


def test_select_rows_min_score_and_cap(rows):
    assert [r["score"] for r in select_rows(rows)] == [0.97, 0.6, 0.2, 0.01]
    assert [r["score"] for r in select_rows(rows, min_score=0.5)] == [0.97, 0.6]
    assert [r["score"] for r in select_rows(rows, min_score=0.6)] == [0.97, 0.6]  # at least S is kept
    assert [r["score"] for r in select_rows(rows, max_rows=1)] == [0.97]
    no_score = {**rows[0], "score": None}
    assert select_rows([no_score], min_score=0.0) == [] and select_rows([no_score, rows[3]])[-1] is no_score


def test_jsonl_and_parquet_read_back_the_same_rows(rows, tmp_path):
    rows = select_rows(rows)
    write_rows(tmp_path / "rows.jsonl", rows, "jsonl")
    lines = (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    back = [json.loads(line) for line in lines]
    assert back == rows and len(lines) == len(rows)
    write_rows(tmp_path / "rows.parquet", rows, "parquet")
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.column_names == list(COLUMNS)
    assert table.to_pylist() == rows
    write_rows(tmp_path / "sub.csv", rows, "csv")
    assert [(p.query_id, p.reference_id, p.score) for p in read_predictions(tmp_path / "sub.csv")] == [
        (r["query_id"], r["reference_id"], r["score"]) for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "rows.parquet", "sub.csv"]  # no temp files


def test_empty_rows_write_typed_files(tmp_path):
    write_rows(tmp_path / "e.parquet", [], "parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.column_names == list(COLUMNS)
    write_rows(tmp_path / "e.jsonl", [], "jsonl")
    assert (tmp_path / "e.jsonl").read_text() == ""


def test_bad_rows_leave_the_old_file(rows, tmp_path):
    out = tmp_path / "rows.jsonl"
    write_rows(out, rows, "jsonl")
    before = out.read_bytes()
    with pytest.raises(ValueError, match="rows.jsonl: jsonl carries the evidence"):
        write_rows(out, [{"query_id": "q", "reference_id": "r", "score": 0.5}], "jsonl")
    bad = [{**rows[0], "score": math.inf}]
    with pytest.raises(ValueError):
        write_rows(out, bad, "jsonl")  # not JSON: nothing replaced
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
    with pytest.raises(SubmissionFormatError, match="sub.csv line 2: score None is not a number"):
        write_rows(tmp_path / "sub.csv", [{**rows[0], "score": None}], "csv")


def test_match_rows_write_every_format(rows, tmp_path):
    mr = MatchRows(select_rows(rows))
    assert mr.columns == COLUMNS
    mr.to_jsonl(tmp_path / "a.jsonl")
    mr.to_parquet(tmp_path / "a.parquet")
    mr.to_csv(tmp_path / "a.csv")
    assert [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()] == list(mr)
    assert pq.read_table(tmp_path / "a.parquet").to_pylist() == list(mr)
    assert [p.reference_id for p in read_predictions(tmp_path / "a.csv")] == [r["reference_id"] for r in mr]
