"""Precision-recall plots of matching-track predictions (matplotlib Agg, no pyplot global state)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from matcher.io.atomic import atomic_write
from matcher.isc.metrics import PRECISION_TARGET, evaluate_with_curve
from matcher.isc.submission import GroundTruthMatch, PredictedMatch

__all__ = ["plot_pr_curve"]

MAX_POINTS = 4000  # points drawn per curve; a 700 px wide plot shows no more


def _draw(
    ax: Axes,
    predictions: Sequence[PredictedMatch],
    ground_truth: Sequence[GroundTruthMatch],
    label: str,
    *,
    main: bool,
) -> None:
    """Add one PR curve (and, for the main curve, its recall@P90 marker) to ``ax``."""
    m, precision, recall, _ = evaluate_with_curve(predictions, ground_truth)
    ap = "n/a" if np.isnan(m.micro_ap) else f"{m.micro_ap:.3f}"
    # Start the curve at recall 0 so that a curve with one point is still visible; draw at most
    # MAX_POINTS points of long curves (evenly spaced ranks, always keeping the last one).
    keep = np.unique(np.linspace(0, len(precision) - 1, MAX_POINTS).astype(np.int64)) if len(precision) else []
    r = np.concatenate([[0.0], np.nan_to_num(recall[keep])])
    p = np.concatenate([[precision[0] if len(precision) else 1.0], precision[keep]])
    (line,) = ax.plot(r, p, lw=2.0 if main else 1.0, alpha=1.0 if main else 0.8,
                      label=f"{label} (µAP {ap}, n={m.n_predictions})")
    if main and m.threshold_at_p90 is not None:
        # the marker sits at the first rank reaching recall@P90 (recall is computed the same way: exact)
        i = int(np.argmax((recall == m.recall_at_p90) & (precision >= PRECISION_TARGET)))
        ax.plot([m.recall_at_p90], [precision[i]], marker="o", ms=8, color=line.get_color(), ls="none",
                label=f"recall@P90 {m.recall_at_p90:.3f} (score >= {m.threshold_at_p90:.4g})")


def plot_pr_curve(
    predictions: Sequence[PredictedMatch],
    ground_truth: Sequence[GroundTruthMatch],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    by_family: Mapping[str, tuple[Sequence[PredictedMatch], Sequence[GroundTruthMatch]]] | None = None,
) -> None:
    """Write a PNG precision-recall curve of ``predictions`` (µAP in the legend, a marker at recall@P90,
    a dashed line at precision 0.9), plus one thinner curve per entry of ``by_family``
    (family -> (predictions, ground truth), e.g. from :func:`matcher.isc.metrics.split_by_family`).
    The file is written atomically."""
    fig = Figure(figsize=(7, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _draw(ax, predictions, ground_truth, "all", main=True)
    for fam, (preds, gt) in (by_family or {}).items():
        if any(g.reference_id for g in gt):
            _draw(ax, preds, gt, fam, main=False)
    ax.axhline(PRECISION_TARGET, ls="--", lw=1, color="grey", label=f"precision {PRECISION_TARGET}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision-recall (micro, all queries pooled)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_write(path, mode="wb") as f:
        fig.savefig(f, format="png")
