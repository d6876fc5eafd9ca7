"""`icd match` output and options on a small index of scikit-image photos: --format csv|jsonl|parquet (the same rows
as the API's MatchRows), --min-score, OUT.skipped.csv, --json summaries (match, index, score), -q, fast failures."""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.api import Matcher
from matcher.cli import main
from matcher.config import MatcherConfig
from matcher.isc.formats import COLUMNS
from matcher.isc.submission import read_predictions
from matcher.isc.track import run_pipeline_match

pq = pytest.importorskip("pyarrow.parquet")

# 2x2 reference crops and no detector keep the tests fast; query_regions is stored with the index, so `icd match
# --index` runs with it too
CONFIG_OVERRIDES = {"pipeline": {"reference_regions": ["grid2"], "query_regions": ["full", "flips"]}}


def _save(img: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(img)).save(path, quality=90)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """(references, queries): four 300 px photos; a crop, a mirrored copy, an unrelated picture, a broken file."""
    root = tmp_path_factory.mktemp("match_cli")
    refs, qs = root / "refs", root / "queries"
    refs.mkdir()
    qs.mkdir()
    photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
              "rocket": data.rocket()}
    small = {}
    for name, im in photos.items():
        small[name] = np.asarray(Image.fromarray(im).resize((300, round(300 * im.shape[0] / im.shape[1]))))
        _save(small[name], refs / f"{name}.jpg")
    _save(small["astronaut"][40:260, 40:260], qs / "q_astronaut.jpg")
    _save(small["rocket"][:, ::-1], qs / "q_rocket_flip.png")
    _save(np.asarray(Image.fromarray(data.immunohistochemistry()).resize((256, 256))), qs / "q_other.png")
    (qs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return refs, qs


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.from_pretrained(MatcherConfig.make(**CONFIG_OVERRIDES))


@pytest.fixture(scope="module")
def index_dir(matcher, folders, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("match_idx") / "refs.icdindex"
    job = matcher.index(folders[0], d)
    assert job.added == 4 and not job.skipped
    return d


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _skipped(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}


def test_formats_carry_the_same_rows_as_the_api(matcher, folders, index_dir, tmp_path):
    _, qs = folders
    summaries = {fmt: run_pipeline_match(qs, tmp_path / f"out.{fmt}", index_dir=index_dir, pipeline=matcher.pipeline,
                                         progress=False) for fmt in ("csv", "jsonl", "parquet")}
    assert {s.format for s in summaries.values()} == {"csv", "jsonl", "parquet"}  # from the suffix
    rows = _jsonl(tmp_path / "out.jsonl")
    assert rows and all(list(r) == list(COLUMNS) for r in rows)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == rows
    assert [(p.query_id, p.reference_id, p.score) for p in read_predictions(tmp_path / "out.csv")] == [
        (r["query_id"], r["reference_id"], r["score"]) for r in rows]
    best = {}
    for r in rows:
        best.setdefault(r["query_id"], r)
    crop, flip = best["q_astronaut"], best["q_rocket_flip"]
    assert crop["reference_id"] == "astronaut" and crop["is_copy"] and crop["n_inliers"] > 20
    assert crop["containment"] == "query_in_reference" and len(crop["query_box"]) == 4
    assert crop["contributions"] and crop["global"]["sources"]
    assert flip["reference_id"] == "rocket" and flip["mirrored"] and flip["is_copy"]
    assert not any(r["is_copy"] for r in rows if r["query_id"] == "q_other")
    # every run keeps its own skipped list beside its output
    for fmt, s in summaries.items():
        assert s.skipped_output == str(tmp_path / f"out.{fmt}.skipped.csv")
        assert _skipped(Path(s.skipped_output)) == {"broken.jpg": "corrupt"}
    assert not (tmp_path / "skipped.csv").exists()
    # the API's rows are the same rows, and write the same files
    api = matcher.match(qs, index=index_dir)
    key = lambda r: (r["query_id"], r["reference_id"])
    assert sorted(api, key=key) == sorted(rows, key=key)
    api.to_jsonl(tmp_path / "api.jsonl")
    api.to_parquet(tmp_path / "api.parquet")
    assert _jsonl(tmp_path / "api.jsonl") == list(api) == pq.read_table(tmp_path / "api.parquet").to_pylist()


def test_min_score(matcher, folders, index_dir, tmp_path):
    _, qs = folders
    run_pipeline_match(qs, tmp_path / "all.jsonl", index_dir=index_dir, pipeline=matcher.pipeline, progress=False)
    s = run_pipeline_match(qs, tmp_path / "copies.jsonl", index_dir=index_dir, pipeline=matcher.pipeline,
                           progress=False, min_score=0.5)
    every, kept = _jsonl(tmp_path / "all.jsonl"), _jsonl(tmp_path / "copies.jsonl")
    assert kept == [r for r in every if r["score"] >= 0.5] and 0 < len(kept) < len(every) and s.n_rows == len(kept)
    api = matcher.match(qs, index=index_dir, min_score=0.5)
    assert {(r["query_id"], r["reference_id"]) for r in api} == {(r["query_id"], r["reference_id"]) for r in kept}


def test_cli_json_summary_quiet_parquet(folders, index_dir, tmp_path, capsys):
    _, qs = folders
    out = tmp_path / "rows.parquet"
    argv = ["-q", "match", "--queries", str(qs), "--index", str(index_dir), "--output", str(out), "--min-score",
            "0.5", "--json", "--device", "cpu"]
    assert main(argv) == 3  # completed, a file skipped
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["command"], doc["mode"], doc["format"], doc["min_score"]) == ("match", "pipeline", "parquet", 0.5)
    assert (doc["n_queries"], doc["n_references"], doc["output"]) == (3, 4, str(out))
    assert doc["skipped"] == [{"path": str(qs / "broken.jpg"), "reason": "corrupt",
                               "message": doc["skipped"][0]["message"]}]
    assert doc["skipped_output"] == str(out) + ".skipped.csv" and Path(doc["skipped_output"]).is_file()
    assert {"describe", "verify", "queries_total"} <= set(doc["seconds"])
    table = pq.read_table(out).to_pylist()
    assert len(table) == doc["n_rows"] >= 2 and all(r["score"] >= 0.5 for r in table)
    # -q: warnings only, no progress bars (even without --no-progress)
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert err and all(line.startswith("warning: ") for line in err), captured.err


def test_bad_format_or_missing_pyarrow_fails_before_any_work(folders, index_dir, tmp_path, capsys, monkeypatch):
    _, qs = folders
    base = ["match", "--queries", str(qs), "--index", str(index_dir), "--no-progress"]
    assert main(base + ["--output", str(tmp_path / "rows.jsonl"), "--format", "csv"]) == 2
    assert "rows.jsonl: the suffix says jsonl but the format asked for is csv" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(base + ["--output", str(tmp_path / "rows.out"), "--format", "parquet"]) == 2
    assert "pip install 'icd-matcher[parquet]'" in capsys.readouterr().err
    assert main(["match", "--exhaustive", "--queries", str(qs), "--references", str(folders[0]), "--output",
                 str(tmp_path / "rows.parquet"), "--no-progress"]) == 2
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main(base + ["--output", str(tmp_path / "x.csv"), "--min-score", "nan"])
    assert "--min-score: must be finite" in capsys.readouterr().err


def test_exhaustive_jsonl_has_the_local_evidence(folders, tmp_path, capsys):
    refs, qs = folders
    out = tmp_path / "local.out"
    argv = ["match", "--exhaustive", "--queries", str(qs), "--references", str(refs), "--output", str(out),
            "--format", "jsonl", "--no-progress", "--json"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["mode"], doc["format"], doc["skipped_output"]) == ("exhaustive", "jsonl", f"{out}.skipped.csv")
    assert "warning: skipped " in captured.err and "broken.jpg" in captured.err
    rows = _jsonl(out)
    assert len(rows) == doc["n_rows"] > 0
    assert f"wrote {len(rows)} rows to {out} (jsonl)" in captured.err  # INFO shows by default
    best = rows[0]
    assert (best["query_id"], best["reference_id"]) in {("q_astronaut", "astronaut"), ("q_rocket_flip", "rocket")}
    assert best["n_inliers"] > 20 and best["global"] is None and best["contributions"] == []
    csv_out = tmp_path / "local.csv"
    assert main(argv[:6] + ["--output", str(csv_out), "--min-score", "0.5", "--no-progress"]) == 3
    assert all(p.score >= 0.5 for p in read_predictions(csv_out))
    assert {p.name for p in tmp_path.iterdir()} == {"local.out", "local.out.skipped.csv", "local.csv",
                                                    "local.csv.skipped.csv"}


def test_index_json_summary(folders, index_dir, tmp_path, capsys):
    refs, _ = folders
    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    src = tmp_path / "refs"
    shutil.copytree(refs, src)
    (src / "empty.jpg").write_bytes(b"")
    assert main(["index", str(src), "--index", str(idx), "--json", "--device", "cpu", "--no-progress"]) == 3
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["command"] == "index" and doc["index"] == str(idx)
    (job,) = doc["jobs"]
    assert (job["kind"], job["added"], job["already"], job["total"]) == ("references", 0, 4, 4)
    assert [(Path(s["path"]).name, s["reason"]) for s in doc["skipped"]] == [("empty.jpg", "empty")]
    assert _skipped(Path(doc["skipped_output"])) == {"empty.jpg": "empty"}
    assert "warning: skipped " in captured.err


def test_score_json_with_config_and_device(folders, tmp_path, capsys):
    refs, qs = folders
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"local": {"ratio": 0.8}, "threshold": 0.4}))
    argv = ["score", str(qs / "q_astronaut.jpg"), str(refs / "astronaut.jpg"), "--local-only", "--json",
            "--config", str(cfg), "--device", "cpu"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["is_copy"] and doc["threshold"] == 0.4 and doc["evidence"]["n_inliers"] > 20
