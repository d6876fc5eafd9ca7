"""The DISC-like benchmark builder on a small folder of photos (scikit-image's and generated ones)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.benchmark.builder import BenchmarkError, build_benchmark
from matcher.benchmark.edits import synthetic_photo
from matcher.io.images import load_image
from matcher.isc.submission import read_ground_truth

SMALL = {"n_references": 4, "n_queries": 12, "copy_fraction": 0.5, "n_distractors": 1, "n_background": 1,
         "n_holistic": 1, "n_same_scene": 1, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 usable photos (5 scikit-image ones, 3 generated, ~256 px) and 4 files the builder must skip."""
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        img.thumbnail((256, 256))
        img.save(folder / f"{name}.jpg", quality=90)
    sub = folder / "more"
    sub.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_photo(np.random.default_rng(i), 240, 180)).save(sub / f"gen{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = (folder / "coffee.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (40, 20)).save(folder / "tiny.png")  # shorter side < 64 px
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def built(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("bench") / "b1"
    summary = build_benchmark(photos, out, seed=0, workers=1, **SMALL)
    return out, summary


def _boxes_overlap(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_layout_counts_and_ground_truth(built: tuple[Path, object], photos: Path) -> None:
    out, summary = built
    m = json.loads((out / "manifest.json").read_text())
    assert m["version"] == 1 and m["seed"] == 0 and "time" not in json.dumps(m["params"])
    assert m["plan"]["tiles_per_photo"] == 2  # 8 photos < 10 roles: photos were cut into halves
    refs, queries = m["references"], m["queries"]
    kinds = {k: sum(r["kind"] == k for r in refs.values()) for k in
             ("reference", "distractor", "holistic_crop", "same_scene_crop")}
    assert kinds == {"reference": 4, "distractor": 1, "holistic_crop": 1, "same_scene_crop": 2}
    qkinds = [q["kind"] for q in queries.values()]
    assert qkinds.count("copy") == 6 + 1 and qkinds.count("negative") == 6
    assert qkinds.count("hard_negative_holistic") == 1 and qkinds.count("hard_negative_same_scene") == 1
    assert len(m["background"]) == 1
    assert summary.queries["copy"] == 7 and summary.ground_truth_pairs == 7
    assert "copy pairs: 7" in str(summary)

    # every listed file exists, nothing else is there, and every image loads within the size limits
    listed = {e["file"] for e in (*refs.values(), *queries.values())}
    listed |= {f"background/{b}.jpg" for b in m["background"]}
    on_disk = {p.relative_to(out).as_posix() for d in ("references", "queries", "background")
               for p in (out / d).iterdir()}
    assert listed == on_disk
    for rel in sorted(listed):
        img = load_image(out / rel)
        assert 64 <= max(img.shape[:2]) <= 1024 and min(img.shape[:2]) >= 32
    for q in queries.values():
        w, h = q["size"]
        assert Image.open(out / q["file"]).size == (w, h)
        assert q["families"] == [e["family"] for e in q["edits"]]
        if q["placement_box"] is not None:
            x0, y0, x1, y1 = q["placement_box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h

    # ground truth: every query exactly once, consistent with the manifest; fresh ids leak no source name
    gt = read_ground_truth(out / "ground_truth.csv")
    assert sorted(g.query_id for g in gt) == sorted(queries)
    for g in gt:
        q = queries[g.query_id]
        assert (g.reference_id or None) == q["reference_id"]
        assert (q["kind"] == "copy") == bool(g.reference_id)
        if g.reference_id:
            assert refs[g.reference_id]["kind"] in ("reference", "same_scene_crop")
            assert q["source"] == refs[g.reference_id]["source"]
            assert q["crop_box"] == refs[g.reference_id]["crop_box"]
    for rid in refs:
        assert rid.startswith("R") and rid[1:].isdigit()
    copied = {q["reference_id"] for q in queries.values() if q["kind"] == "copy"}
    assert all(r["kind"] != "distractor" for rid, r in refs.items() if rid in copied)
    assert {rid for rid, r in refs.items() if r["kind"] == "reference"} <= copied


def test_hard_negatives_and_disjoint_content(built: tuple[Path, object]) -> None:
    out, _ = built
    m = json.loads((out / "manifest.json").read_text())
    refs, queries = m["references"], m["queries"]
    (hq,) = [q for q in queries.values() if q["kind"] == "hard_negative_holistic"]
    crop = refs[hq["related_references"][0]]
    assert crop["kind"] == "holistic_crop" and crop["source"] == hq["source"] and hq["reference_id"] is None
    unit_box = hq["crop_box"]  # the whole unit (a tile here)
    cb = crop["crop_box"]
    assert unit_box[0] <= cb[0] < cb[2] <= unit_box[2] and unit_box[1] <= cb[1] < cb[3] <= unit_box[3]
    frac = (cb[2] - cb[0]) * (cb[3] - cb[1]) / ((unit_box[2] - unit_box[0]) * (unit_box[3] - unit_box[1]))
    assert 0.15 <= frac <= 0.55
    assert len(hq["edits"]) <= 1 and all(e["family"] == "mild" for e in hq["edits"])

    (sq,) = [q for q in queries.values() if q["kind"] == "copy" and "same_scene_pair" in q]
    a, b = refs[sq["reference_id"]], refs[sq["same_scene_pair"]]
    assert a["kind"] == b["kind"] == "same_scene_crop" and a["source"] == b["source"]
    assert not _boxes_overlap(a["crop_box"], b["crop_box"])
    (cq,) = [q for q in queries.values() if q["kind"] == "hard_negative_same_scene"]
    assert cq["reference_id"] is None
    assert set(cq["related_references"]) == {sq["reference_id"], sq["same_scene_pair"]}

    # no negative query and no filler shares content with any reference
    def content(e: dict) -> tuple[str, list[int] | None]:
        return e["source"], e["crop_box"]

    ref_content = [content(r) for r in refs.values()]
    for q in queries.values():
        if q["kind"] == "copy":
            continue
        others = [content(f) for f in q["fillers"]]
        if q["kind"] != "hard_negative_holistic":  # its own content holds its crop reference by design
            others.append(content(q))
        for src, box in others:
            for rsrc, rbox in ref_content:
                if src == rsrc:
                    assert box is not None and rbox is not None and not _boxes_overlap(box, rbox), (q, rsrc)
    for f in m["plan"]["filler"]:
        for rsrc, rbox in ref_content:
            assert f["source"] != rsrc or not _boxes_overlap(f["crop_box"], rbox)
    used = ref_content + [content(f) for f in m["plan"]["filler"]] + [content(q) for q in queries.values()]
    for bid, src in m["background"].items():
        box = m["background_crop_boxes"].get(bid)
        for usrc, ubox in used:
            assert src != usrc or (box and ubox and not _boxes_overlap(box, ubox)), (bid, usrc)


def test_bad_photos_are_skipped_and_reported(built: tuple[Path, object]) -> None:
    out, summary = built
    m = json.loads((out / "manifest.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in m["skipped"]}
    assert reasons == {"broken.jpg": "not_an_image", "truncated.jpg": "truncated", "tiny.png": "too_small",
                       "notes.txt": "not_an_image_extension"}
    assert len(summary.skipped) == 4 and summary.n_photos == 8
    csv_text = (out / "skipped.csv").read_text()
    assert csv_text.startswith("path,reason,message") and "truncated.jpg" in csv_text


def test_deterministic_across_runs_and_workers(
    built: tuple[Path, object], photos: Path, tmp_path: Path
) -> None:
    out, _ = built
    build_benchmark(photos, tmp_path / "b2", seed=0, workers=2, **SMALL)
    first, second = _files(out), _files(tmp_path / "b2")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []

    # another seed gives another benchmark; building it over an old one leaves no stale images behind
    other = tmp_path / "b3"
    shutil.copytree(out, other)
    (other / "queries" / ".Q000001.jpg.4242.tmp").write_bytes(b"left by an interrupted build")
    build_benchmark(photos, other, seed=1, workers=1, **{**SMALL, "n_queries": 8})
    third = _files(other)
    assert third["manifest.json"] != first["manifest.json"]
    m3 = json.loads(third["manifest.json"])
    images = {k for k in third if k.endswith((".jpg", ".tmp"))}
    assert images == {e["file"] for e in (*m3["references"].values(), *m3["queries"].values())} | {
        f"background/{b}.jpg" for b in m3["background"]}


def test_impossible_and_bad_settings(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="disjoint pieces of content"):
        build_benchmark(photos, tmp_path / "x", **{**SMALL, "n_references": 40})
    with pytest.raises(BenchmarkError, match="copy_fraction"):
        build_benchmark(photos, tmp_path / "x", **{**SMALL, "copy_fraction": 1.5})
    with pytest.raises(BenchmarkError, match="n_holistic"):
        build_benchmark(photos, tmp_path / "x", **{**SMALL, "n_holistic": -1})
    with pytest.raises(BenchmarkError, match="need references"):
        build_benchmark(photos, tmp_path / "x", **{**SMALL, "n_references": 0})
    with pytest.raises(BenchmarkError, match="not found"):
        build_benchmark(tmp_path / "missing", tmp_path / "x", **SMALL)
    with pytest.raises(BenchmarkError, match="inside the photo folder"):
        build_benchmark(photos, photos / "out", **SMALL)
    assert not (tmp_path / "x").exists()
