"""icd match / run_exhaustive_match on a small folder with good and bad files; icd score CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from matcher.benchmark.demo_photos import demo_photo
from matcher.cli import main
from matcher.isc.exhaustive import run_exhaustive_match
from matcher.isc.submission import read_predictions


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("match")
    refs, qs = root / "refs", root / "queries"
    refs.mkdir()
    qs.mkdir()
    names = ["astronaut", "coffee", "rocket", "chelsea"]
    for n in names:
        Image.fromarray(demo_photo(n)).save(refs / f"{n}.png")
    (refs / "corrupt_ref.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    a, r = demo_photo("astronaut"), demo_photo("rocket")
    Image.fromarray(a[60:360, 80:400]).save(qs / "q_crop_astronaut.jpg", quality=80)
    Image.fromarray(np.ascontiguousarray(r[:, ::-1])).save(qs / "q_flip_rocket.png")
    Image.fromarray(demo_photo("moon")).save(qs / "q_negative_moon.png")
    Image.fromarray(demo_photo("camera")).save(qs / "ünïcødé_名前.png")
    (qs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (qs / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(qs / "tiny.png")
    (qs / "notes.txt").write_text("not an image")
    return refs, qs


def test_exhaustive_match_writes_submission_and_skipped(folders, tmp_path):
    refs, qs = folders
    out = tmp_path / "sub.csv"
    summary = run_exhaustive_match(qs, refs, out, progress=False)
    assert summary.n_references == 4 and summary.n_queries == 4
    rows = read_predictions(out)
    best = {}
    for row in rows:
        best.setdefault(row.query_id, row)
    assert best["q_crop_astronaut"].reference_id == "astronaut"
    assert best["q_flip_rocket"].reference_id == "rocket"
    assert all(r.score <= 0.5 for r in rows if r.query_id in ("q_negative_moon", "ünïcødé_名前"))
    with open(tmp_path / "sub.csv.skipped.csv", newline="", encoding="utf-8") as fh:
        skipped = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(fh)}
    assert set(skipped) == {"broken.jpg", "empty.png", "tiny.png", "notes.txt", "corrupt_ref.png"}
    assert skipped["tiny.png"] == "too_small" and skipped["empty.png"] == "empty"


def test_match_cli_exit_code_and_feature_cache(folders, tmp_path, capsys):
    refs, qs = folders
    out = tmp_path / "sub.csv"
    cache = tmp_path / "store"
    args = ["match", "--exhaustive", "--queries", str(qs), "--references", str(refs), "--output", str(out),
            "--cache", str(cache), "--no-progress", "--top-k", "1"]
    assert main(args) == 3  # completed, some files skipped
    first = out.read_bytes()
    assert (cache / "index.json").exists()
    assert main(args) == 3  # second run reads reference features from the store
    assert out.read_bytes() == first
    rows = read_predictions(out)
    assert max(sum(r.query_id == q for r in rows) for q in {r.query_id for r in rows}) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err


def test_score_cli_json_and_show(tmp_path, capsys):
    a = demo_photo("astronaut")
    q, r = tmp_path / "q.jpg", tmp_path / "r.png"
    Image.fromarray(a[100:400, 100:400]).save(q)
    Image.fromarray(a).save(r)
    show = tmp_path / "show.png"
    assert main(["score", str(q), str(r), "--json", "--show", str(show), "--local-only"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["is_copy"] and data["evidence"]["containment"] == "query_in_reference"
    img = np.asarray(Image.open(show))
    assert img.shape[0] > 400 and img.shape[1] > 800
    assert main(["score", str(tmp_path / "missing.jpg"), str(r)]) == 2


def test_reference_regions_match_a_picture_inside_a_reference(tmp_path):
    """A reference that holds the query's picture in one quadrant is found through its grid regions, once."""
    refs, qs = tmp_path / "refs", tmp_path / "qs"
    refs.mkdir()
    qs.mkdir()
    a = demo_photo("astronaut")
    board = np.asarray(Image.fromarray(demo_photo("coffee")).resize((800, 800))).copy()
    board[400:800, 400:800] = np.asarray(Image.fromarray(a).resize((400, 400)))
    Image.fromarray(board).save(refs / "board.png")
    Image.fromarray(demo_photo("rocket")).save(refs / "rocket.png")
    Image.fromarray(a[50:450, 50:450]).save(qs / "q.png")
    out = tmp_path / "sub.csv"
    assert main(["match", "--exhaustive", "--queries", str(qs), "--references", str(refs), "--output", str(out),
                 "--reference-regions", "full,grid2", "--no-progress"]) == 0
    rows = read_predictions(out)
    assert [r.reference_id for r in rows if r.score > 0.5] == ["board"]
    assert len({(r.query_id, r.reference_id) for r in rows}) == len(rows)
