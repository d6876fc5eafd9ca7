"""Chains of 1-3 edits with the composed homography and where the original picture lies in the result."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matcher.benchmark.edits import CHAIN_FAMILIES, COMPOSITE_FAMILIES, EditContext, resize_image
from matcher.benchmark.geometry import ContentTracker, scaling
from matcher.benchmark.recipes import Recipe, get_recipe

__all__ = ["ChainResult", "apply_chain", "fit_size", "sample_families"]

N_EDITS_P: tuple[float, float, float] = (0.4, 0.35, 0.25)  # P(1 edit), P(2 edits), P(3 edits)


@dataclass(frozen=True)
class ChainResult:
    """An edited picture and how it was made.

    ``image``: RGB uint8 (H', W', 3). ``edits``: [{"name", "family", "params"}] in the order applied.
    ``transform``: 3x3 float64 input -> output homography (None if an edit had no geometric map).
    ``placement_quad``: the input's 4 corners in the output [[x, y] x 4] (TL, TR, BR, BL; unclipped);
    ``placement_box``: the bounding box [x0, y0, x1, y1] of the part of the input still in the output (what
    was cut away by any edit on the way, e.g. a crop before an overlay, is excluded; None if nothing is left);
    ``visible_fraction``: the fraction of the input's area still in the output. ``fit``: the final rescale
    [sx, sy] applied to respect the size limits, or None. ``save_quality``: JPEG quality to save with when the
    last edit was a JPEG re-encode (so its artefacts are kept as made), else None.
    """

    image: np.ndarray
    edits: list[dict[str, Any]]
    transform: np.ndarray | None
    placement_quad: list[list[float]] | None
    placement_box: list[float] | None
    visible_fraction: float | None
    fit: list[float] | None
    save_quality: int | None

    @property
    def families(self) -> list[str]:
        return [e["family"] for e in self.edits]


def sample_families(
    rng: np.random.Generator,
    n_edits: int | None = None,
    primary: str | None = None,
    families: Sequence[str] = CHAIN_FAMILIES,
    composites: frozenset[str] = COMPOSITE_FAMILIES,
) -> list[str]:
    """Draw an ordered list of ``n_edits`` (default: 1, 2 or 3 with probabilities :data:`N_EDITS_P`) distinct
    families from ``families``, containing ``primary`` when given, with at most one of the ``composites``; the
    order is random."""
    if n_edits is None:
        n_edits = int(rng.choice(3, p=N_EDITS_P)) + 1
    if n_edits < 1:
        raise ValueError(f"n_edits must be >= 1, got {n_edits}")
    chosen = [primary] if primary is not None else []
    while len(chosen) < n_edits:
        has_composite = any(f in composites for f in chosen)
        pool = [f for f in families if f not in chosen and not (has_composite and f in composites)]
        if not pool:
            break
        chosen.append(pool[int(rng.integers(len(pool)))])
    return [chosen[i] for i in rng.permutation(len(chosen))]


def fit_size(
    width: int, height: int, max_side: int = 1024, min_side: int = 64, min_short: int = 32
) -> tuple[int, int]:
    """The size (w, h) an image is rescaled to (aspect kept) so that its longer side lies in
    [min_side, max_side] and its shorter side is >= min_short where the longer side allows it."""
    s = 1.0
    if max(width, height) > max_side:
        s = max_side / max(width, height)
    elif max(width, height) < min_side:
        s = min_side / max(width, height)
    if min(width, height) * s < min_short:
        s = min(min_short / min(width, height), max_side / max(width, height))
    if s == 1.0:
        return width, height
    return max(1, round(width * s)), max(1, round(height * s))


def apply_chain(
    image: np.ndarray,
    rng: np.random.Generator,
    ctx: EditContext,
    n_edits: int | None = None,
    families: Sequence[str] | None = None,
    *,
    primary: str | None = None,
    max_side: int = 1024,
    min_side: int = 64,
    recipe: Recipe | None = None,
) -> ChainResult:
    """Apply a chain of edits of ``recipe`` (default: the "augly" recipe) to RGB uint8 (H, W, 3) ``image``.

    ``families``: the exact ordered families to apply (an edit is drawn within each); default
    :func:`sample_families` (``n_edits``, ``primary``). At most one composite family is allowed. The result is
    rescaled (aspect kept) so its longer side lies in [min_side, max_side] px (shorter side >= 32 px when
    possible).
    """
    recipe = recipe or get_recipe("augly")
    fams = list(families) if families is not None else sample_families(
        rng, n_edits, primary, recipe.chain_families, recipe.composite_families)
    if sum(f in recipe.composite_families for f in fams) > 1:
        raise ValueError(f"at most one composite edit per chain, got families {fams}")
    tracker = ContentTracker((image.shape[1], image.shape[0]))
    out = image
    edits: list[dict[str, Any]] = []
    for fam in fams:
        names = recipe.edits_in_family(fam)
        name = names[int(rng.integers(len(names)))]
        res = recipe.edit(name)(out, rng, ctx)
        out = res.image
        tracker.step(res.transform, (out.shape[1], out.shape[0]), res.visible_box)
        edits.append({"name": name, "family": fam, "params": res.params})
    fit = None
    ow, oh = fit_size(out.shape[1], out.shape[0], max_side, min_side)
    if (ow, oh) != (out.shape[1], out.shape[0]):
        sx, sy = ow / out.shape[1], oh / out.shape[0]
        out = resize_image(out, ow, oh)
        tracker.step(scaling(sx, sy), (ow, oh))
        fit = [round(sx, 6), round(sy, 6)]
    quad, box, visible = tracker.result()
    save_quality = None
    if edits and edits[-1]["family"] in ("jpeg", "mild") and "quality" in edits[-1]["params"]:
        save_quality = int(edits[-1]["params"]["quality"])  # a JPEG re-encode: keep its artefacts as made
    out = np.ascontiguousarray(out)
    return ChainResult(out, edits, tracker.transform, quad, box, visible, fit, save_quality)
