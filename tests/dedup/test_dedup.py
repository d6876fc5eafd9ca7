"""Dedup end to end on small generated pictures with planted copies: a crop, a resized and recoloured copy, an exact
duplicate, distinct pictures and a corrupt file (``Matcher.dedup``, ``icd dedup``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.api import Matcher
from matcher.cli import main
from matcher.config import MatcherConfig

CONFIG_OVERRIDES = {"pipeline": {"reference_regions": ["grid2"]}}  # 4 crops per picture keeps the tests fast
# ids are chosen so that the copies sort before their originals: the id tie-break alone would pick the copy
TRUE_GROUPS = {
    frozenset({"orig_astronaut", "copy_astronaut_crop"}): "orig_astronaut",
    frozenset({"orig_coffee", "copy_coffee_small"}): "orig_coffee",
    frozenset({"chelsea", "chelsea_dup"}): None,  # byte-identical: either is the original
}


def _save(rgb: np.ndarray, path: Path, quality: int = 90) -> None:
    Image.fromarray(rgb).save(path, quality=quality)


def _fit(rgb: np.ndarray, side: int = 320) -> np.ndarray:
    im = Image.fromarray(rgb)
    s = side / max(im.size)
    return np.asarray(im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dedup") / "pictures"
    root.mkdir()
    rng = np.random.default_rng(16)
    astronaut, coffee, chelsea = _fit(data.astronaut()), _fit(data.coffee()), _fit(data.chelsea())
    _save(astronaut, root / "orig_astronaut.jpg")
    h, w = astronaut.shape[:2]
    y, x = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
    _save(astronaut[y:y + int(h * 0.6), x:x + int(w * 0.6)], root / "copy_astronaut_crop.jpg")
    _save(coffee, root / "orig_coffee.jpg")
    small = np.asarray(Image.fromarray(coffee).resize((coffee.shape[1] * 2 // 3, coffee.shape[0] * 2 // 3)))
    _save(np.clip(small * np.array([1.15, 0.95, 0.8]), 0, 255).astype(np.uint8), root / "copy_coffee_small.jpg", 80)
    _save(chelsea, root / "chelsea.jpg")
    shutil.copyfile(root / "chelsea.jpg", root / "chelsea_dup.jpg")
    sub = root / "more"
    sub.mkdir()
    _save(_fit(data.rocket()), sub / "rocket.jpg")
    _save(_fit(data.immunohistochemistry()), sub / "ihc.jpg")
    _save(_fit(data.coins()[..., None].repeat(3, axis=2)), sub / "coins.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.from_pretrained(MatcherConfig.make(**CONFIG_OVERRIDES))


@pytest.fixture(scope="module")
def result(matcher, collection):
    return matcher.dedup(collection, index=collection.parent / "index")


def test_groups_and_originals(result) -> None:
    assert {frozenset(g.members) for g in result.groups} == set(TRUE_GROUPS)
    for g in result.groups:
        want = TRUE_GROUPS[frozenset(g.members)]
        assert g.members[0] == g.original
        if want is not None:
            assert g.original == want
    dup = next(g for g in result.groups if "chelsea" in g.members)
    assert dup.pairs[0].exact and dup.pairs[0].score == 1.0


def test_no_self_pairs_and_each_pair_once(result) -> None:
    keys = [(p.a, p.b) for p in result.pairs]
    assert all(a < b for a, b in keys)
    assert len(keys) == len(set(keys))
    assert all(p.score >= result.threshold for p in result.pairs)
    in_groups = [(p.a, p.b) for g in result.groups for p in g.pairs]
    assert sorted(in_groups) == sorted(keys)


def test_corrupt_file_skipped_once(result) -> None:
    assert [Path(s.path).name for s in result.skipped] == ["broken.jpg"]
    assert "broken" not in result.pictures and len(result.pictures) == 9


def test_json_and_html(result, tmp_path) -> None:
    out = tmp_path / "groups.json"
    result.to_json(out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert set(doc) >= {"groups", "skipped"}
    assert [set(g) for g in doc["groups"]] == [{"original", "members", "pairs"}] * len(result.groups)
    for g in doc["groups"]:
        assert g["members"][0] == g["original"]
        for p in g["pairs"]:
            assert {"a", "b", "score"} <= set(p) and p["a"] in g["members"] and p["b"] in g["members"]
    assert doc["skipped"][0]["path"].endswith("broken.jpg") and doc["skipped"][0]["reason"]
    assert not list(tmp_path.glob(".groups.json*"))  # the temp file of the atomic write is gone
    page = tmp_path / "groups.html"
    result.to_html(page)
    text = page.read_text(encoding="utf-8")
    assert text.count("<section") == len(result.groups)
    assert text.count("data:image/jpeg;base64,") == sum(len(g.members) for g in result.groups)
    assert "orig_astronaut" in text and "broken.jpg" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_cli(collection, tmp_path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG_OVERRIDES))
    out, page, index = tmp_path / "g.json", tmp_path / "g.html", collection.parent / "index"
    rc = main(["dedup", str(collection), "--output", str(out), "--html", str(page), "--index", str(index),
               "--config", str(cfg), "--no-progress"])
    assert rc == 3  # completed, with a skipped file
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert {frozenset(g["members"]) for g in doc["groups"]} == set(TRUE_GROUPS)
    assert page.is_file() and len(doc["skipped"]) == 1


@pytest.mark.parametrize("extra", [["--threshold", "1.5"], ["--top-k", "0"], ["--threshold", "nan"]])
def test_cli_bad_arguments(collection, tmp_path, extra, capsys) -> None:
    rc = main(["dedup", str(collection), "--output", str(tmp_path / "g.json"), *extra])
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_cli_missing_folder(tmp_path, capsys) -> None:
    assert main(["dedup", str(tmp_path / "nope"), "--output", str(tmp_path / "g.json")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_pictures_in_memory(matcher, tmp_path) -> None:
    coffee, rocket = _fit(data.coffee(), 256), _fit(data.rocket(), 256)
    pictures = {"coffee": coffee, "coffee_again": coffee.copy(), "rocket": Image.fromarray(rocket),
                "garbage": b"not a picture"}
    res = matcher.dedup(pictures)
    assert [g.members for g in res.groups] == [["coffee", "coffee_again"]]
    assert res.groups[0].pairs[0].exact
    assert [s.path for s in res.skipped] == ["<memory:garbage>"]
    res.to_html(tmp_path / "memory.html")
    assert (tmp_path / "memory.html").read_text(encoding="utf-8").count("data:image/jpeg;base64,") == 2
