"""Variant groups: loading (with bad files refused by name) and the ambiguous pairs of a manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matcher.benchmark.variants import corpus_key, load_variant_groups, outside_pairs, variant_pairs

MANIFEST = {
    "references": {
        "R1": {"source": "clip_a.png"}, "R2": {"source": "clip_b.png"}, "R3": {"source": "clip_c.png"},
        "R4": {"source": "clip_x.png"},
    },
    "queries": {
        "Q1": {"source": "clip_a.png", "kind": "copy", "reference_id": "R1"},  # copy of R1; variant of R2
        "Q2": {"source": "clip_d.png", "kind": "negative"},  # variant of R3 (clip_c)
        "Q3": {"source": "clip_y.png", "kind": "negative", "fillers": [{"source": "clip_b.png"}]},  # filler = R2's
        "Q4": {"source": "clip_z.png", "kind": "negative"},  # nothing
    },
}
GROUPS = [frozenset({"clip_a", "clip_b"}), frozenset({"clip_c", "clip_d"})]


def test_variant_pairs_from_sources_and_fillers():
    pairs = variant_pairs(MANIFEST, GROUPS)
    # Q1 shows clip_a: R2 (clip_b) is ambiguous, R1 is its true reference; Q3's filler clip_b is R2's own source,
    # so Q3 vs R2 stays a labelled pair (the builder never uses a reference's source as a filler) but Q3 vs R1 is a
    # variant pair
    assert pairs == {("Q1", "R2"), ("Q2", "R3"), ("Q3", "R1")}


def test_outside_pairs_masks_table_rows():
    q = np.array(["Q1", "Q1", "Q2", "Q4"])
    r = np.array(["R1", "R2", "R3", "R3"])
    np.testing.assert_array_equal(outside_pairs(q, r, variant_pairs(MANIFEST, GROUPS)), [True, False, False, True])
    assert outside_pairs(q[:0], r[:0], {("Q1", "R2")}).shape == (0,)


def test_no_groups_no_pairs():
    assert variant_pairs(MANIFEST, []) == set()


def test_corpus_key():
    assert corpus_key("../shared/data/graphics/bench") == "graphics/bench"
    assert corpus_key("/x/photos/train/") == "photos/train"


def test_load_groups(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"corpora": {"graphics/bench": {"groups": [["a", "b"], ["c", "d", "e"]]}}}))
    assert load_variant_groups(path, "/data/graphics/bench") == [frozenset("ab"), frozenset("cde")]
    assert load_variant_groups(path, "/data/photos/bench") == []


@pytest.mark.parametrize("text, problem", [
    ("not json", "not a variant-groups file"),
    ('{"groups": []}', "not a variant-groups file"),
    ('{"corpora": {"graphics/bench": {"groups": [["a"]]}}}', "two or more members"),
    ('{"corpora": {"graphics/bench": {"groups": [["a", "b"], ["b", "c"]]}}}', "more than one group"),
])
def test_bad_groups_file_named(tmp_path, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as err:
        load_variant_groups(path, "graphics/bench")
    assert str(path) in str(err.value)


def test_shipped_groups_file_loads():
    from pathlib import Path
    shipped = Path(__file__).resolve().parents[2] / "bench" / "graphics_variants.json"
    for corpus in ("graphics/bench", "graphics/train"):
        assert len(load_variant_groups(shipped, f"/d/{corpus}")) >= 5
