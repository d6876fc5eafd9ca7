"""Groups of copies: connected components of the pairs at or above the threshold, each with its likely original.

The original is the member the others are crops or edits of, read from the asymmetric evidence of each pair
(:func:`source_of`: which direction scores as a copy, which frame holds the other and whether it was pasted
there, which holds more content), then the largest picture (pixel area), then the smallest id. Each pair inside a group
votes: +1 for its source, -1 for its copy; the member with the highest total wins.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matcher.dedup.pairs import Pair, Picture

__all__ = ["Group", "UnionFind", "choose_original", "connected_components", "group_pairs", "source_of"]

INSIDE = ("query_in_reference",)  # the query shows a part of the reference: the reference is the fuller picture
AROUND = ("reference_in_query",)  # the reference lies inside the query
NORM_MARGIN = 0.02  # |log ASL norm ratio| from which, at equal extents, the picture holding more content is the source
SEAM_PASTED = 2.5  # seam ratio from which a picture inside another was pasted in (bench/RESULTS.md, seam check:
# holistic pictures around a crop 90th percentile 2.0, pasted copies 10th percentile 3.4)


class UnionFind:
    """Disjoint sets over hashable items (path halving, union by size)."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}
        for x in items:
            self.add(x)

    def add(self, x: str) -> None:
        """A new singleton (no-op when ``x`` is known)."""
        if x not in self._parent:
            self._parent[x] = x
            self._size[x] = 1

    def find(self, x: str) -> str:
        """The representative of ``x``'s set (``x`` is added when new)."""
        self.add(x)
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def union(self, x: str, y: str) -> None:
        """Merge the sets of ``x`` and ``y``."""
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return
        if self._size[rx] < self._size[ry]:
            rx, ry = ry, rx
        self._parent[ry] = rx
        self._size[rx] += self._size[ry]

    def sets(self) -> list[list[str]]:
        """Every set as a sorted list; sets ordered by their smallest item."""
        out: dict[str, list[str]] = {}
        for x in self._parent:
            out.setdefault(self.find(x), []).append(x)
        return sorted((sorted(v) for v in out.values()), key=lambda s: s[0])


def connected_components(edges: Iterable[tuple[str, str]], items: Iterable[str] = ()) -> list[list[str]]:
    """Connected components (sorted lists, ordered by their smallest item) of the graph of ``edges`` over
    ``items`` plus the edges' ends; isolated items are singletons."""
    uf = UnionFind(items)
    for a, b in edges:
        uf.union(a, b)
    return uf.sets()


def _held(pair: Pair) -> int:
    """+1 when the local evidence says a's frame lies inside b's, -1 for the reverse, 0 when neither."""
    held = 0
    if pair.ab is not None:
        held += (pair.ab.containment in INSIDE) - (pair.ab.containment in AROUND)
    if pair.ba is not None:
        held += (pair.ba.containment in AROUND) - (pair.ba.containment in INSIDE)
    return (held > 0) - (held < 0)


def source_of(pair: Pair, threshold: float) -> str | None:
    """Which picture of ``pair`` the other is a crop or edit of, or None when the evidence does not say.

    1. The score is asymmetric: when only one direction is a copy (q against r at or above ``threshold``, r
       against q below), r is the source. A crop scores high against its whole picture, the whole picture low
       against its crop (no seam around the crop: not a paste).
    2. When both directions are copies and one picture's frame holds the other's, the seam decides: a seam
       along the held picture's border in the holding one (:data:`SEAM_PASTED`) means it was pasted in, framed or
       overlaid, so the held picture is the source; no seam means the held one is a crop of the fuller picture.
    3. Same extents (a recoloured, blurred, noisy, compressed or overlaid copy): the ASL descriptor norm, which
       measures how much content a picture holds; the picture whose norm is higher by at least
       :data:`NORM_MARGIN` (log ratio, mean of both directions) is the source.
    Exact duplicates, and pairs none of these decides, give None (:func:`choose_original` then prefers the larger
    picture)."""
    if pair.exact:
        return None
    a_copy = pair.ab is not None and pair.ab.score >= threshold  # a is a copy of b
    b_copy = pair.ba is not None and pair.ba.score >= threshold
    if a_copy != b_copy:
        return pair.b if a_copy else pair.a
    if not a_copy:
        return None
    held = _held(pair)
    if not held:
        ratios = [d.log_norm_ratio for d in (pair.ab, pair.ba) if d is not None]
        lnr = ((pair.ab.log_norm_ratio if pair.ab is not None else 0.0) -
               (pair.ba.log_norm_ratio if pair.ba is not None else 0.0)) / len(ratios)  # log norm(a) - log norm(b)
        return pair.a if lnr >= NORM_MARGIN else pair.b if lnr <= -NORM_MARGIN else None
    inner, outer = (pair.a, pair.b) if held > 0 else (pair.b, pair.a)
    around = pair.ba if held > 0 else pair.ab  # the holding picture matched against the held one
    pasted = around is not None and math.isfinite(around.frame_seam) and around.frame_seam >= SEAM_PASTED
    return inner if pasted else outer


def choose_original(members: Sequence[str], pairs: Iterable[Pair], pictures: Mapping[str, Picture],
                    threshold: float) -> tuple[str, dict[str, int]]:
    """(the likely original of a group, each member's votes): +1 each time a pair names the member as the source
    (:func:`source_of`), -1 each time it names it as the copy; ties broken by the larger pixel area, then the
    smaller id."""
    votes = dict.fromkeys(members, 0)
    for p in pairs:
        src = source_of(p, threshold)
        if src is None or p.a not in votes or p.b not in votes:
            continue
        votes[src] += 1
        votes[p.b if src == p.a else p.a] -= 1

    def key(m: str) -> tuple[int, int, str]:
        pic = pictures.get(m)
        return (-votes[m], -(pic.area if pic is not None else 0), m)

    return min(members, key=key), votes


@dataclass
class Group:
    """A group of copies: its likely ``original``, all ``members`` (the original first, then by id), the pairs at
    or above the threshold between them (highest score first) and each member's original votes."""

    original: str
    members: list[str]
    pairs: list[Pair]
    votes: dict[str, int] = field(default_factory=dict)

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """``{"original", "members", "pairs": [{"a", "b", "score"}, ...]}``."""
        return {"original": self.original, "members": list(self.members),
                "pairs": [p.to_dict(details) for p in self.pairs]}


def group_pairs(pairs: Iterable[Pair], pictures: Mapping[str, Picture], threshold: float) -> list[Group]:
    """Groups of copies: the connected components of the pairs with score >= ``threshold`` (at least two
    members), each with its original (:func:`choose_original`); largest groups first, then by original id."""
    kept = [p for p in pairs if p.score >= threshold]
    by_root: dict[str, list[Pair]] = {}
    uf = UnionFind()
    for p in kept:
        uf.union(p.a, p.b)
    for p in kept:
        by_root.setdefault(uf.find(p.a), []).append(p)
    groups = []
    for members in uf.sets():
        inner = sorted(by_root[uf.find(members[0])], key=lambda p: (-p.score, p.a, p.b))
        original, votes = choose_original(members, inner, pictures, threshold)
        groups.append(Group(original, [original, *[m for m in members if m != original]], inner, votes))
    return sorted(groups, key=lambda g: (-len(g.members), g.original))
