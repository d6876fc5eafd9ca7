"""Fusion of all evidence about one candidate pair into one calibrated, asymmetric, explainable score.

A pair's evidence (local geometric fit, global descriptor scores of the query's regions and of the reference's
crops, the ASL norm ratio, detector agreement) is turned into the fixed feature vector :data:`FEATURE_NAMES`
(:func:`pair_features`; incl. the seam check of :mod:`matcher.frame_edge`) and scored by a small model. Two kinds
read the same features (:func:`load_fusion` tells them apart by the file's ``format``):

- boosted trees (:class:`matcher.fusion_trees.TreeFusionModel`, the shipped default):
  p(copy) = sigmoid(base + sum_t tree_t(x)), monotone in the evidence that may only raise or lower it;
- logistic regression (:class:`FusionModel`): p(copy) = sigmoid(bias + sum_i w_i * (x_i - mean_i) / std_i).

Both are fitted on candidate pairs of benchmarks built from the ``train`` photos (``bench/fit_fusion.py``; never on
``bench``) and shipped as plain JSON (``weights/fusion.json``, ``weights/fusion_logistic.json``). The score is
asymmetric because the features are: a query that is the holistic picture around a reference (the reference is a
crop of the query) shows the pattern "reference inside query" *without* a seam along the reference's frame, without
a detected pasted box and with a larger descriptor norm (ASL: more content), which the model learns to push down,
while a crop of the reference ("query inside reference") or a detected paste scores high. Each score carries its
per-feature contributions to the logit (``explain``), the evidence that decided it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from matcher.local.evidence import PairEvidence

__all__ = [
    "DEFAULT_FUSION_PATH",
    "FEATURE_NAMES",
    "SEAM_CLEAR",
    "SEAM_NONE",
    "Fusion",
    "FusionModel",
    "GlobalEvidence",
    "explanation",
    "feature_columns",
    "fit_fusion",
    "load_fusion",
    "pair_features",
    "reference_inside_query",
]

DEFAULT_FUSION_PATH = Path(__file__).resolve().parents[1] / "weights" / "fusion.json"
FORMAT = "icd-fusion/1"

FEATURE_NAMES = (
    "verified",  # 1 when a geometric fit was accepted
    "log1p_inliers",  # log(1 + unique inlier locations)
    "inlier_ratio",  # inliers / tentative matches
    "coverage",  # max(query, reference) inlier hull coverage
    "query_in_reference",  # fraction of the reference shown by the query's mapped frame
    "reference_in_query",  # fraction of the query that is reference content
    "reference_inside_query",  # query_in_reference * (1 - reference_in_query): the reference is a part of the query
    "inside_with_detector",  # reference_inside_query * detector IoU (a detected paste explains it)
    "detector_iou",  # IoU of the inlier box in the query with a detected pasted-picture box (0 if none)
    "global_full",  # normalised similarity of whole query vs whole reference
    "global_regions",  # best normalised similarity of a query region (incl. full) vs the whole reference
    "global_to_local",  # best normalised similarity of the whole query vs a reference crop
    "log_norm_ratio",  # log||f(q)|| - log||f(r)|| (ASL: > 0 = the query holds more content)
    "gate_excess",  # max(0, log_norm_ratio - gate margin)
    "inside_norm",  # reference_inside_query * max(0, log_norm_ratio)
    "frame_seam",  # log seam strength along the reference frame inside the query, in [-2, 4]; 0 when none inside
    "inside_without_seam",  # reference_inside_query * seamless(seam): 1 at seam <= SEAM_NONE, 0 at >= SEAM_CLEAR
)
SEAM_NONE = 2.0  # seam ratio (matcher.frame_edge) at or below which the frame counts as showing no seam
SEAM_CLEAR = 3.0  # seam ratio at or above which "reference inside the query" is fully explained by a paste
# (log-linear in between). Chosen by 5-fold cross-validation on the train benchmark's candidate pairs; there the
# holistic negatives' seams have median 1.5 and 90th percentile 2.0, pasted copies' 10th percentile is 3.4


@dataclass
class GlobalEvidence:
    """Global-descriptor evidence for one (query, reference) candidate; similarities are normalised (raw cosine
    minus beta * mean top-k background similarity), ``nan`` where not measured.

    full: whole query vs whole reference (cosine: the same before normalisation); regions: best over query regions (incl. full) vs whole reference, with
    ``region`` the winning query region tag; to_local: whole query vs best reference crop, with
    ``reference_crop`` its tag; log_norm_ratio: ASL norm ratio of the whole images; sources: which candidate
    generators proposed the pair ("global", "regions", "global_to_local", "voting")."""

    full: float = float("nan")
    cosine: float = float("nan")  # raw cosine of whole query vs whole reference (before normalisation)
    regions: float = float("nan")
    region: str = "full"
    to_local: float = float("nan")
    reference_crop: str = ""
    log_norm_ratio: float = 0.0
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        def f(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 6)

        return {"full": f(self.full), "cosine": f(self.cosine), "regions": f(self.regions), "region": self.region,
                "to_local": f(self.to_local), "reference_crop": self.reference_crop,
                "log_norm_ratio": f(self.log_norm_ratio), "sources": list(self.sources)}


def _finite(v: float | None, default: float = 0.0) -> float:
    return float(v) if v is not None and math.isfinite(v) else default


def feature_columns(features: tuple[str, ...]) -> np.ndarray:
    """(len(features),) int64 positions of ``features`` in a full :data:`FEATURE_NAMES` row."""
    return np.array([FEATURE_NAMES.index(f) for f in features], np.int64)


def explanation(features: tuple[str, ...], contrib: np.ndarray, bias: float) -> dict[str, float]:
    """{feature: logit contribution} for (len(features),) ``contrib``, largest magnitude first (ties in feature
    order), then "bias"; rounded to 4 decimals."""
    order = np.argsort(-np.abs(contrib), kind="stable")
    out = {features[i]: round(float(contrib[i]), 4) for i in order}
    out["bias"] = round(float(bias), 4)
    return out


def reference_inside_query(ev: PairEvidence) -> float:
    """How much of the match is "the reference is a part of the query": query_in_reference * (1 -
    reference_in_query), in [0, 1] (1 = the query shows all of the reference, which fills little of the query)."""
    return float(ev.query_frame_in_reference) * (1.0 - float(ev.reference_frame_in_query))


def pair_features(ev: PairEvidence | None, g: GlobalEvidence, gate_margin: float = 0.0) -> np.ndarray:
    """(F,) float64 features of :data:`FEATURE_NAMES` for one candidate pair; ``ev`` None = not verified."""
    ok = ev is not None and ev.verified and ev.n_inliers > 0
    if ok:
        assert ev is not None
        inl = math.log1p(ev.n_inliers)
        ratio = float(ev.inlier_ratio)
        cov = max(float(ev.query_coverage), float(ev.reference_coverage))
        q_in_r = float(ev.query_frame_in_reference)
        r_in_q = float(ev.reference_frame_in_query)
        det = _finite(ev.detector_iou)
        inside = reference_inside_query(ev)
    else:
        inl = ratio = cov = q_in_r = r_in_q = det = inside = 0.0
    seam = ev.frame_seam if ok and ev is not None and ev.frame_seam is not None else math.nan
    if math.isfinite(seam):
        log_seam = min(4.0, max(-2.0, math.log(max(seam, 1e-6))))
        w = math.log(SEAM_CLEAR / max(seam, 1e-6)) / math.log(SEAM_CLEAR / SEAM_NONE)
        seamless = inside * min(1.0, max(0.0, w))
    else:  # no side of the frame inside the query (or not measured): nothing to check
        log_seam = seamless = 0.0
    # missing global scores (pair found only by another generator) count as "no similarity"
    full = _finite(g.full, -0.2)
    regions = max(_finite(g.regions, -0.2), full)
    to_local = _finite(g.to_local, -0.2)
    lnr = _finite(g.log_norm_ratio)
    return np.array([
        float(ok), inl, ratio, cov, q_in_r, r_in_q, inside, inside * det, det,
        full, regions, to_local, lnr, max(0.0, lnr - gate_margin), inside * max(0.0, lnr), log_seam, seamless,
    ], np.float64)


@dataclass(frozen=True)
class FusionModel:
    """Logistic model over standardised :data:`FEATURE_NAMES`; ``threshold`` is the documented default decision
    threshold on its probability; ``gate_margin`` the ASL margin the features were computed with."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5
    gate_margin: float = 0.0
    features: tuple[str, ...] = FEATURE_NAMES
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.weights) == len(self.mean) == len(self.std) == n):
            raise ValueError(f"fusion model: {n} features but {len(self.weights)} weights, {len(self.mean)} means, "
                             f"{len(self.std)} stds")
        if unknown := [f for f in self.features if f not in FEATURE_NAMES]:
            raise ValueError(f"fusion model: unknown features {unknown}")
        vals = (*self.weights, *self.mean, *self.std, self.bias)
        if not all(math.isfinite(v) for v in vals) or min(self.std) <= 0:
            raise ValueError("fusion model: weights, means and stds must be finite and stds > 0")

    @property
    def _cols(self) -> np.ndarray:
        return feature_columns(self.features)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x: (N, len(FEATURE_NAMES)) full feature rows -> (N,) float64 logits."""
        z = (np.asarray(x, np.float64)[:, self._cols] - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N,) probabilities in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(x), -50, 50)))

    def score(self, features: np.ndarray) -> float:
        """Probability for one (F,) feature vector."""
        return float(self.predict(np.asarray(features)[None])[0])

    def explain(self, features: np.ndarray) -> dict[str, float]:
        """Per-feature contribution to the logit (w_i * standardised x_i), largest magnitude first, plus "bias"."""
        x = np.asarray(features, np.float64)[self._cols]
        contrib = np.asarray(self.weights) * (x - np.asarray(self.mean)) / np.asarray(self.std)
        return explanation(self.features, contrib, self.bias)

    # ------------------------------------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | Path | None = None) -> FusionModel:
        """Read a logistic fusion JSON (default ``weights/fusion.json``); a clear error naming the file when
        missing/bad or of another kind (use :func:`load_fusion` for any kind)."""
        p = Path(path) if path else DEFAULT_FUSION_PATH
        model = load_fusion(p)
        if not isinstance(model, cls):
            raise ValueError(f"{p}: not an {FORMAT} file (it holds a {type(model).__name__})")  # noqa: TRY004
        return model

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "") -> FusionModel:
        """From the JSON object written by :meth:`save`; ``ValueError`` naming ``name`` when malformed."""
        try:
            return cls(tuple(float(v) for v in data["weights"]), float(data["bias"]),
                       tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                       float(data.get("threshold", 0.5)), float(data.get("gate_margin", 0.0)),
                       tuple(str(f) for f in data["features"]), str(data.get("source", name)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{name}: bad fusion weights: {exc}") from exc

    def save(self, path: str | Path, **card: object) -> None:
        """Write as JSON atomically, with extra model-card fields ``card`` (data, recipe, metrics)."""
        from matcher.fsutil import atomic_write_text

        data = {"format": FORMAT, "features": list(self.features), "weights": list(self.weights),
                "bias": self.bias, "mean": list(self.mean), "std": list(self.std), "threshold": self.threshold,
                "gate_margin": self.gate_margin, "source": self.source, **card}
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class Fusion(Protocol):
    """What the pipeline needs of a fusion model (:class:`FusionModel`, :class:`~matcher.fusion_trees.TreeFusionModel`)."""

    threshold: float
    gate_margin: float
    features: tuple[str, ...]
    source: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...  # (N, len(FEATURE_NAMES)) -> (N,) in [0, 1]

    def score(self, features: np.ndarray) -> float: ...

    def explain(self, features: np.ndarray) -> dict[str, float]: ...

    def save(self, path: str | Path, **card: object) -> None: ...


def load_fusion(path: str | Path | None = None) -> Fusion:
    """Read any fusion model JSON (default ``weights/fusion.json``): logistic (``icd-fusion/1``) or boosted
    trees (``icd-fusion-trees/1``), told apart by its ``format``; a clear error naming the file when it is
    missing, unreadable or malformed. Plain JSON, never a pickle."""
    from matcher.fusion_trees import TREES_FORMAT, TreeFusionModel

    p = Path(path) if path else DEFAULT_FUSION_PATH
    if not p.exists():
        raise FileNotFoundError(f"fusion weights not found: {p} (fit them with `python bench/fit_fusion.py`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read fusion weights {p}: {exc}") from exc
    kinds: dict[str, Any] = {FORMAT: FusionModel, TREES_FORMAT: TreeFusionModel}
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in kinds:
        raise ValueError(f"{p}: not an icd-fusion file (format {fmt!r}; expected one of {sorted(kinds)})")
    return kinds[fmt].from_dict(data, p.name)


def fit_fusion(x: np.ndarray, y: np.ndarray, *, features: tuple[str, ...] = FEATURE_NAMES, l2: float = 1e-4,
               iters: int = 50, gate_margin: float = 0.0, sample_weight: np.ndarray | None = None,
               source: str = "") -> FusionModel:
    """Fit logistic regression by Newton's method, L2 penalty ``l2 * sum(sample weights)`` on standardised weights.

    x: (N, len(FEATURE_NAMES)) feature rows (all features; ``features`` selects the columns used), y: (N,) {0, 1}.
    """
    xs = np.asarray(x, np.float64)[:, feature_columns(features)]
    y = np.asarray(y, np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("fit_fusion needs both positive and negative pairs")
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mu = xs.mean(0)
    sd = xs.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = np.hstack([(xs - mu) / sd, np.ones((len(y), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * sw.sum())
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        g = z.T @ (sw * (p - y)) + reg * w
        h = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return FusionModel(tuple(float(v) for v in w[:-1]), float(w[-1]), tuple(float(v) for v in mu),
                       tuple(float(v) for v in sd), gate_margin=gate_margin, features=tuple(features), source=source)
