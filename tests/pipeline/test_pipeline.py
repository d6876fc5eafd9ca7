"""The matching pipeline end to end on small generated images: candidates, verification, fused asymmetric score,
the Matcher API, `icd match --index` / `--references`, `icd score`, and a folder of bad inputs."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from matcher.api import Matcher
from matcher.benchmark.demo_photos import demo_photo
from matcher.cli import main
from matcher.config import MatcherConfig
from matcher.fusion.features import FEATURE_NAMES
from matcher.isc.submission import read_predictions
from matcher.references.memory import MemoryStore

# small but real: 2x2 reference crops (tests stay fast); query variants with the shipped detector, whose boxes
# are what tells a pasted copy from a holistic picture around a reference
CONFIG = MatcherConfig.make(pipeline={"reference_regions": ["grid2"],
                                      "query_regions": ["full", "grid2", "rotations", "flips", "yolo"]})
NAMES = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field")


def _save(img: np.ndarray, path) -> None:
    Image.fromarray(np.ascontiguousarray(img)).save(path, quality=92)


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.from_pretrained(CONFIG)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    refs, qs = root / "refs", root / "queries"
    refs.mkdir()
    qs.mkdir()
    photos = {n: demo_photo(n) for n in NAMES}
    for n, im in photos.items():
        _save(im, refs / f"{n}.jpg")
    a, c, r = photos["astronaut"], photos["coffee"], photos["rocket"]
    _save(a[60:380, 80:420], qs / "crop_astronaut.jpg")  # a crop
    _save(np.rot90(c), qs / "rot_coffee.jpg")  # rotated
    _save(r[:, ::-1], qs / "flip_rocket.jpg")  # mirrored
    canvas = np.full((600, 800, 3), 235, np.uint8)  # a paste of chelsea onto a flat page
    ch = photos["chelsea"][::2, ::2]
    canvas[150:150 + ch.shape[0], 200:200 + ch.shape[1]] = ch
    _save(canvas, qs / "paste_chelsea.jpg")
    rng = np.random.default_rng(0)
    _save((rng.random((300, 300, 3)) * 255).astype(np.uint8), qs / "noise.jpg")  # no copy
    return refs, qs


@pytest.fixture(scope="module")
def index_dir(matcher, folders, tmp_path_factory):
    refs, _ = folders
    d = tmp_path_factory.mktemp("idx") / "refs.icdindex"
    job = matcher.index(refs, d)
    assert job.added == len(NAMES) and not job.skipped
    return d


EXPECTED = {"crop_astronaut": "astronaut", "rot_coffee": "coffee", "flip_rocket": "rocket",
            "paste_chelsea": "chelsea"}


class TestMatch:
    def test_copies_rank_first_and_noise_is_not_a_copy(self, matcher, folders, index_dir):
        _, qs = folders
        rows = matcher.match(qs, index=index_dir)
        assert set(rows.columns) >= {"query_id", "reference_id", "score", "is_copy", "containment"}
        best: dict[str, dict] = {}
        for r in rows:
            if r["query_id"] not in best or r["score"] > best[r["query_id"]]["score"]:
                best[r["query_id"]] = r
        for q, ref in EXPECTED.items():
            assert best[q]["reference_id"] == ref, (q, best[q])
            assert best[q]["is_copy"], best[q]
        assert not any(r["is_copy"] for r in rows if r["query_id"] == "noise")
        assert all(0.0 <= r["score"] <= 1.0 for r in rows)
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)

    def test_a_reference_folder_and_an_index_take_one_path(self, matcher, folders, index_dir):
        refs, qs = folders
        a = {(r["query_id"], r["reference_id"]): r["score"] for r in matcher.match(qs, index=index_dir)}
        b = {(r["query_id"], r["reference_id"]): r["score"] for r in matcher.match(qs, references=refs)}
        assert a == b  # the same rows and the same scores

    def test_references_in_memory_score_as_in_the_index(self, matcher, folders, index_dir):
        """A memory store keeps what the index keeps, at the same precision: a pair scores the same in both."""
        refs, qs = folders
        rows = {(r["query_id"], r["reference_id"]): r["score"] for r in matcher.match(qs, index=index_dir)}
        for qid, rid in EXPECTED.items():
            pair = matcher.score(next(qs.glob(f"{qid}.*")), refs / f"{rid}.jpg")
            assert pair.score == pytest.approx(rows[(qid, rid)], abs=1e-9)

    def test_needs_a_reference_source(self, matcher, folders):
        with pytest.raises(ValueError, match="index="):
            matcher.match(folders[1])


class TestScore:
    def test_explained_score(self, matcher):
        a = demo_photo("astronaut")
        m = matcher.score(a[100:400, 100:400], a)
        assert m.is_copy and m.score >= matcher.pipeline.threshold
        assert m.evidence is not None and m.evidence.verified
        assert m.features.shape == (len(FEATURE_NAMES),)
        assert set(m.contributions) == set(matcher.pipeline.fusion.features) | {"bias"}
        d = m.to_dict()
        assert json.loads(json.dumps(d))["local"]["n_inliers"] > 20
        dense = m.evidence.dense  # the crop agrees with the reference wherever they overlap
        assert dense is not None and dense.agree >= 0.9 and dense.disagree_blob <= 0.1 and dense.cells >= 8
        assert json.loads(json.dumps(d))["local"]["dense"]["agree"] == pytest.approx(dense.agree, abs=1e-4)

    def test_asymmetric_crop_vs_holistic(self, matcher):
        """The crop is a copy of the holistic picture; the holistic picture is not a copy of its crop."""
        a = demo_photo("astronaut")
        crop = a[150:350, 150:350]
        forward = matcher.score(crop, a).score
        backward = matcher.score(a, crop).score
        assert forward > backward, (forward, backward)
        assert forward >= matcher.pipeline.threshold

    def test_seam_tells_paste_from_holistic(self, matcher):
        """Both queries hold the reference inside them; only the paste leaves a seam along its frame."""
        a = demo_photo("astronaut")
        ref = a[100:356, 120:376]
        paste = demo_photo("coffee").copy()
        paste[80:336, 200:456] = ref
        pasted = matcher.score(paste, ref).evidence
        holistic = matcher.score(a, ref).evidence
        assert pasted is not None and pasted.verified and holistic is not None and holistic.verified
        assert pasted.frame_seam > 3.0, pasted.frame_seam
        assert holistic.frame_seam < 2.0, holistic.frame_seam

    def test_unrelated_pictures(self, matcher):
        m = matcher.score(demo_photo("coffee"), demo_photo("rocket"))
        assert not m.is_copy and m.score < 0.5


class TestMemoryStore:
    def test_empty_store_gives_no_candidates(self, matcher):
        p = matcher.pipeline
        store = MemoryStore(p.config, p.descriptor)
        (q,) = p.describe_queries([("q", demo_photo("coffee"))])
        assert p.candidates(q, store) == []
        assert p.verify(q, [], store) == []


class TestCli:
    def test_match_against_index_and_folder(self, folders, index_dir, tmp_path, capsys):
        refs, qs = folders
        out = tmp_path / "sub.csv"
        assert main(["match", "--queries", str(qs), "--index", str(index_dir), "--output", str(out),
                     "--no-progress", "--top-k", "2"]) == 0
        rows = read_predictions(out)
        assert len(rows) <= 2 * 5
        top = {}
        for r in rows:
            top.setdefault(r.query_id, r)
        assert {q: top[q].reference_id for q in EXPECTED} == EXPECTED
        assert "queries/s" in capsys.readouterr().out
        out2 = tmp_path / "sub2.csv"
        assert main(["match", "--queries", str(qs), "--references", str(refs), "--output", str(out2),
                     "--no-progress", "--top-k", "2", "--query-regions", "full,grid2,rotations,flips,yolo",
                     "--reference-regions", "grid2"]) == 0
        assert {(r.query_id, r.reference_id, r.score) for r in read_predictions(out2)} == \
            {(r.query_id, r.reference_id, r.score) for r in rows}

    def test_keypoint_voting_switch(self, folders, index_dir, tmp_path, capsys):
        _, qs = folders
        for flag in ("on", "off"):
            out = tmp_path / f"sub_{flag}.csv"
            assert main(["match", "--queries", str(qs), "--index", str(index_dir), "--output", str(out),
                         "--no-progress", "--keypoint-voting", flag]) == 0
            printed = capsys.readouterr().out
            assert (", voting " in printed) == (flag == "on"), printed
            top = {}
            for r in read_predictions(out):
                top.setdefault(r.query_id, r)
            assert {q: top[q].reference_id for q in EXPECTED} == EXPECTED

    def test_match_refuses_an_index_built_with_other_settings(self, folders, index_dir, tmp_path, capsys):
        _, qs = folders
        code = main(["match", "--queries", str(qs), "--index", str(index_dir), "--output", str(tmp_path / "x.csv"),
                     "--reference-regions", "grid3", "--no-progress"])
        assert code == 2
        assert "reference_regions" in capsys.readouterr().err
        assert not (tmp_path / "x.csv").exists()

    def test_score_cli_uses_the_pipeline(self, tmp_path, capsys):
        a = demo_photo("astronaut")
        q, r = tmp_path / "q.jpg", tmp_path / "r.jpg"
        _save(a[100:400, 100:400], q)
        _save(a, r)
        assert main(["score", str(q), str(r), "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["is_copy"] and d["global"]["full"] is not None and "contributions" in d
        assert main(["score", str(q), str(r)]) == 0
        assert "decided by:" in capsys.readouterr().out


def _bad_folder(root, good: dict[str, np.ndarray]):
    """A query folder with good images of every awkward kind plus broken files; returns (folder, good ids)."""
    d = root / "bad_inputs"
    d.mkdir()
    a = good["astronaut"]
    ids = []
    _save(a[50:450, 50:450], d / "plain_crop.jpg")
    ids.append("plain_crop")
    Image.fromarray(a[100:420, 60:460]).convert("CMYK").save(d / "cmyk.jpg")
    ids.append("cmyk")
    g16 = (good["coffee"][..., 0].astype(np.uint16) * 257)
    Image.fromarray(g16).save(d / "grey16.png")
    ids.append("grey16")
    frames = [Image.fromarray(good["rocket"][:, ::-1]), Image.fromarray(good["rocket"])]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:])
    ids.append("animated")
    im = Image.fromarray(np.ascontiguousarray(np.rot90(good["chelsea"], -1)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the loader turns it upright
    im.save(d / "exif_rotated.jpg", exif=exif)
    ids.append("exif_rotated")
    _save(a[::2, ::2], d / "ünïcödé 名前.jpg")
    ids.append("ünïcödé 名前")
    big = np.kron(good["coffee"][:200, :200], np.ones((12, 12, 1), np.uint8))  # 2400 x 2400 px
    _save(big, d / "huge.jpg")
    ids.append("huge")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    (d / "notes.txt").write_text("hello")
    data = (d / "plain_crop.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    _save(np.zeros((8, 8, 3), np.uint8), d / "tiny.png")
    return d, ids


def test_bad_input_folder_runs_to_completion(folders, index_dir, tmp_path, capsys):
    photos = {n: demo_photo(n) for n in ("astronaut", "coffee", "rocket", "chelsea")}
    d, good_ids = _bad_folder(tmp_path, photos)
    out = tmp_path / "sub.csv"
    code = main(["match", "--queries", str(d), "--index", str(index_dir), "--output", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    matched = {r.query_id for r in read_predictions(out)}
    assert set(good_ids) <= matched, set(good_ids) - matched
    with open(tmp_path / "sub.csv.skipped.csv", newline="", encoding="utf-8") as fh:
        skipped = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(fh)}
    assert set(skipped) >= {"empty.jpg", "text.jpg", "notes.txt", "truncated.jpg", "tiny.png"}, skipped
    assert all(skipped.values())
    assert f"skipped {len(skipped)} file(s)" in captured.out
    best = {}
    for r in read_predictions(out):
        best.setdefault(r.query_id, r)
    assert best["plain_crop"].reference_id == "astronaut" and best["cmyk"].reference_id == "astronaut"
    assert best["exif_rotated"].reference_id == "chelsea"
    assert all(not math.isnan(r.score) for r in best.values())


def test_background_falls_back_to_the_index_set(matcher):
    """Without a shipped background set, score normalisation uses the store's own background descriptors."""
    p = matcher.pipeline

    class Store:
        def __init__(self, bg):
            self.bg = bg

        def __len__(self):
            return 3

        def background_descriptors(self):
            return self.bg

    rng = np.random.default_rng(0)
    bg = rng.normal(size=(7, 4)).astype(np.float32)
    first = Store(bg)
    got = p._store_background(first)
    assert got.shape == (7, 4) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    del first  # a new store, even at a reused address and the same size, is never served the old set
    assert p._store_background(Store(np.zeros((0, 4), np.float32))).shape[0] == 0
