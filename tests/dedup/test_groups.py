"""Dedup on hand-made pairs: merging both directions into one pair, union-find groups, the original of a group."""
from __future__ import annotations

import math

import pytest

from matcher.dedup.groups import (
    NORM_MARGIN,
    SEAM_PASTED,
    UnionFind,
    choose_original,
    connected_components,
    group_pairs,
    source_of,
)
from matcher.dedup.pairs import Direction, Pair, Picture, exact_pairs, merge_matches

THR = 0.5


def _pic(pid: str, w: int = 100, h: int = 100, sha: str | None = None) -> Picture:
    return Picture(pid, f"/x/{pid}.jpg", w, h, sha or f"sha-{pid}")


def _d(score: float, containment: str = "same_extent", seam: float = math.nan, lnr: float = 0.0) -> Direction:
    return Direction(score, containment, lnr, 50, seam)


# ------------------------------------------------------------------------------------------ union-find
def test_union_find_components() -> None:
    uf = UnionFind(["e"])
    uf.union("a", "b")
    uf.union("c", "d")
    uf.union("b", "d")
    assert uf.find("a") == uf.find("c")
    assert uf.sets() == [["a", "b", "c", "d"], ["e"]]


def test_connected_components_chain_and_isolated() -> None:
    comps = connected_components([("x1", "x2"), ("x3", "x2"), ("y1", "y2")], items=["z"])
    assert comps == [["x1", "x2", "x3"], ["y1", "y2"], ["z"]]


def test_connected_components_large_chain_is_one_set() -> None:
    n = 5000
    comps = connected_components([(f"n{i:05d}", f"n{i + 1:05d}") for i in range(n)])
    assert len(comps) == 1 and len(comps[0]) == n + 1


# ------------------------------------------------------------------------------------------ merging
def test_merge_drops_self_pairs_and_reports_each_pair_once() -> None:
    matches = [("a", "a", _d(0.99)), ("a", "b", _d(0.7)), ("b", "a", _d(0.9)), ("b", "a", _d(0.4)),
               ("c", "b", _d(0.2)), ("a", "z", _d(0.99))]
    pairs = merge_matches(matches, allowed={"a", "b", "c"})
    assert [(p.a, p.b) for p in pairs] == [("a", "b"), ("b", "c")]
    ab = pairs[0]
    assert ab.score == 0.9 and ab.ab.score == 0.7 and ab.ba.score == 0.9  # max per direction, max overall
    assert pairs[1].ab is None and pairs[1].ba.score == 0.2  # c matched against b is the (b, c) pair's b-side


def test_exact_pairs_by_content() -> None:
    pics = [_pic("a", sha="s1"), _pic("b", sha="s2"), _pic("c", sha="s1"), _pic("d", sha="s1")]
    assert exact_pairs(pics) == [("a", "c"), ("a", "d"), ("c", "d")]


def test_pair_to_dict_schema() -> None:
    p = Pair("a", "b", 0.91234567, _d(0.91234567), None, exact=False)
    assert p.to_dict() == {"a": "a", "b": "b", "score": 0.912346}
    assert Pair("a", "b", 1.0, exact=True).to_dict() == {"a": "a", "b": "b", "score": 1.0, "exact": True}
    d = p.to_dict(details=True)
    assert d["a_vs_b"]["containment"] == "same_extent" and d["b_vs_a"] is None


# ------------------------------------------------------------------------------------------ original
def test_source_from_asymmetric_scores() -> None:
    # a is a crop of b: a against b scores high, b against a (the whole picture against its crop) low
    p = Pair("a", "b", 0.98, _d(0.98, "query_in_reference"), _d(0.05, "reference_in_query"))
    assert source_of(p, THR) == "b"
    q = Pair("a", "b", 0.98, _d(0.1, "reference_in_query"), _d(0.98, "query_in_reference"))
    assert source_of(q, THR) == "a"


def test_source_when_both_directions_are_copies() -> None:
    # a lies inside b in both readings; no seam: a is a crop of the fuller b
    crop = Pair("a", "b", 0.9, _d(0.95, "query_in_reference"), _d(0.8, "reference_in_query", seam=1.2))
    assert source_of(crop, THR) == "b"
    # a seam along a's border inside b: a was pasted into b, a is the source
    paste = Pair("a", "b", 0.9, _d(0.95, "query_in_reference"), _d(0.9, "reference_in_query", seam=SEAM_PASTED + 1))
    assert source_of(paste, THR) == "a"
    same = Pair("a", "b", 0.99, _d(0.99), _d(0.99))
    assert source_of(same, THR) is None
    # same extent: the picture holding more content (ASL norm) is the source; below the margin, no direction
    blurred = Pair("a", "b", 0.99, _d(0.99, lnr=-0.1), _d(0.99, lnr=0.1))  # a holds less than b
    assert source_of(blurred, THR) == "b"
    small = NORM_MARGIN / 4
    assert source_of(Pair("a", "b", 0.99, _d(0.99, lnr=small), _d(0.99, lnr=-small)), THR) is None
    assert source_of(Pair("a", "b", 1.0, _d(0.99), _d(0.99), exact=True), THR) is None


def test_original_is_the_uncropped_picture_then_the_largest() -> None:
    pics = {"crop1": _pic("crop1", 60, 60), "crop2": _pic("crop2", 50, 70), "whole": _pic("whole", 100, 100),
            "small": _pic("small", 50, 50)}
    pairs = [
        Pair("crop1", "whole", 0.97, _d(0.97, "query_in_reference"), _d(0.1, "reference_in_query")),
        Pair("crop2", "whole", 0.95, _d(0.95, "query_in_reference"), None),
        Pair("small", "whole", 0.99, _d(0.99), _d(0.99)),  # a downscaled copy: same extent
    ]
    original, votes = choose_original(list(pics), pairs, pics, THR)
    assert original == "whole" and votes["whole"] == 2 and votes["crop1"] == -1
    # without direction, the larger picture, then the smaller id
    pics2 = {"b": _pic("b", 200, 100), "a": _pic("a", 100, 100), "c": _pic("c", 200, 100)}
    flat = [Pair("a", "b", 0.99, _d(0.99), _d(0.99)), Pair("b", "c", 0.99, _d(0.99), _d(0.99))]
    assert choose_original(["a", "b", "c"], flat, pics2, THR)[0] == "b"


def test_group_pairs_components_threshold_and_order() -> None:
    pics = {k: _pic(k) for k in "abcdefg"}
    pics["a"] = _pic("a", 300, 300)
    pairs = [
        Pair("a", "b", 0.9, _d(0.9), _d(0.9)),
        Pair("b", "c", 0.6, _d(0.6), _d(0.6)),
        Pair("d", "e", 0.8, _d(0.8), _d(0.8)),
        Pair("e", "f", 0.3, _d(0.3), _d(0.3)),  # below the threshold: f stays out
        Pair("c", "g", 0.49, _d(0.49), None),
    ]
    groups = group_pairs(pairs, pics, THR)
    assert [g.members for g in groups] == [["a", "b", "c"], ["d", "e"]]
    assert groups[0].original == "a"
    assert [(p.a, p.b) for p in groups[0].pairs] == [("a", "b"), ("b", "c")]
    assert groups[0].to_dict() == {"original": "a", "members": ["a", "b", "c"],
                                   "pairs": [{"a": "a", "b": "b", "score": 0.9}, {"a": "b", "b": "c", "score": 0.6}]}
    assert group_pairs(pairs, pics, 0.95) == []


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_every_pair_above_the_threshold_is_inside_one_group(threshold: float) -> None:
    pics = {f"p{i}": _pic(f"p{i}") for i in range(12)}
    scores = [0.1, 0.55, 0.9, 1.0, 0.3, 0.7, 0.5, 0.2, 0.95, 0.6, 0.4]
    pairs = [Pair(f"p{i}", f"p{i + 1}", s, _d(s), _d(s)) for i, s in enumerate(scores)]
    groups = group_pairs(pairs, pics, threshold)
    where = {m: i for i, g in enumerate(groups) for m in g.members}
    for p in pairs:
        if p.score >= threshold:
            assert where[p.a] == where[p.b]
    assert sum(len(g.pairs) for g in groups) == sum(p.score >= threshold for p in pairs)
    assert all(len(set(g.members)) == len(g.members) >= 2 for g in groups)
