"""Edit recipes: which edits a benchmark's queries are made with.

- ``augly`` (the default): AugLy plus the builder's own edits (:mod:`matcher.benchmark.edits`,
  :mod:`matcher.benchmark.compose`), the generator the engine's fusion model was fitted on;
- ``independent``: a second generator written without AugLy (:mod:`matcher.benchmark.independent`), with wider
  ranges, for evaluation only.

A recipe names its edits (a registry), each edit's family, the families random chains draw from, and the
composite families (at most one per chain). Every recipe has a "mild" family for lightly edited hard negatives.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from matcher.benchmark.edits import EditResult

__all__ = ["RECIPE_NAMES", "Recipe", "get_recipe"]

RECIPE_NAMES = ("augly", "independent")


@dataclass(frozen=True)
class Recipe:
    """``edit(name)`` -> the edit function; ``family[name]`` its family; ``chain_families``: the families random
    chains draw from, in a fixed order; ``composite_families``: those that combine the picture with others."""

    name: str
    edit: Callable[[str], Callable[..., EditResult]]
    family: Mapping[str, str]
    chain_families: tuple[str, ...]
    composite_families: frozenset[str]

    def edits_in_family(self, family: str) -> list[str]:
        """Sorted names of the edits of ``family`` (ValueError naming the known families if none)."""
        names = sorted(n for n, f in self.family.items() if f == family)
        if not names:
            known = ", ".join(sorted(set(self.family.values())))
            raise ValueError(f"recipe {self.name!r}: unknown edit family {family!r}; known: {known}")
        return names


@cache
def get_recipe(name: str = "augly") -> Recipe:
    """The recipe called ``name`` (ValueError listing the known ones)."""
    if name == "augly":
        from matcher.benchmark import compose  # noqa: F401  (registers the composite edits)
        from matcher.benchmark.edits import _FAMILY, CHAIN_FAMILIES, COMPOSITE_FAMILIES, EDITS

        return Recipe("augly", EDITS.get, _FAMILY, CHAIN_FAMILIES, COMPOSITE_FAMILIES)
    if name == "independent":
        from matcher.benchmark.independent import (
            INDEPENDENT_CHAIN_FAMILIES,
            INDEPENDENT_COMPOSITES,
            INDEPENDENT_EDITS,
            INDEPENDENT_FAMILY,
        )

        return Recipe("independent", INDEPENDENT_EDITS.get, INDEPENDENT_FAMILY, INDEPENDENT_CHAIN_FAMILIES,
                      INDEPENDENT_COMPOSITES)
    raise ValueError(f"unknown edit recipe {name!r}; known: {', '.join(RECIPE_NAMES)}")
