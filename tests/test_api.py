"""The Python API with pictures in memory (numpy arrays, PIL images, encoded bytes, with ids) and index editing:
``Matcher.index`` / ``.match`` take them besides paths, ``Matcher.remove`` takes references out of an index."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher import Matcher
from matcher.config import MatcherConfig

CONFIG = MatcherConfig.make(pipeline={"reference_regions": ["grid2"]})


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.from_pretrained(CONFIG)


def test_index_and_match_in_memory_then_remove(matcher, tmp_path):
    photos = {"astronaut": data.astronaut()[::2, ::2], "coffee": data.coffee()[::2, ::2],
              "chelsea": data.chelsea()[::2, ::2], "rocket": data.rocket()[::2, ::2]}
    refs = {"astronaut": photos["astronaut"], "coffee": Image.fromarray(photos["coffee"]),
            "chelsea": _jpeg(photos["chelsea"]), "rocket": photos["rocket"]}
    summary = matcher.index(refs, tmp_path / "idx")
    assert (summary.added, summary.skipped) == (4, [])
    crop = photos["coffee"][20:180, 40:260]
    queries = [("q_coffee", crop.copy()), ("q_chelsea", _jpeg(np.ascontiguousarray(photos["chelsea"][:, ::-1]))),
               ("q_bad", b"\x89PNG\r\n\x1a\n broken")]
    rows = matcher.match(queries, index=tmp_path / "idx", top_k=1)
    best = {r["query_id"]: r for r in rows}
    assert best["q_coffee"]["reference_id"] == "coffee" and best["q_coffee"]["is_copy"]
    assert best["q_chelsea"]["reference_id"] == "chelsea" and best["q_chelsea"]["is_copy"]
    assert [(s.path, s.reason) for s in rows.skipped] == [("<memory:q_bad>", "not_an_image")]
    # references in memory, indexed for the call only
    rows = matcher.match({"q": crop}, references={"c": photos["coffee"], "r": photos["rocket"]}, top_k=1)
    assert rows[0]["reference_id"] == "c" and rows[0]["is_copy"]
    # removing: never returned again; the same picture under the same id can be added back
    removed = matcher.remove("coffee", index=tmp_path / "idx")
    assert (removed.removed, removed.missing, removed.total) == (["coffee"], [], 3)
    rows = matcher.match({"q_coffee": crop}, index=tmp_path / "idx", top_k=5)
    assert "coffee" not in {r["reference_id"] for r in rows}
    assert matcher.index({"coffee": refs["coffee"]}, tmp_path / "idx").added == 1
    rows = matcher.match({"q_coffee": crop}, index=tmp_path / "idx", top_k=1)
    assert rows[0]["reference_id"] == "coffee" and rows[0]["is_copy"]


def test_bad_in_memory_inputs_are_refused_clearly(matcher, tmp_path):
    with pytest.raises(ValueError, match="given twice"):
        matcher.match([("a", b"x"), ("a", b"y")], references={"r": data.coffee()})
    with pytest.raises(TypeError, match="expected bytes, a numpy array"):
        matcher.index({"a": 1.5}, tmp_path / "idx")
    with pytest.raises(TypeError, match="picture ids must be strings"):
        matcher.index({3: data.coffee()}, tmp_path / "idx")
