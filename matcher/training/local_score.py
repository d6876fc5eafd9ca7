"""Fitting the local score model (training code): logistic regression with non-negative weights, so that the
score of :class:`~matcher.local.score.LocalScoreModel` is monotone in the evidence. ``bench/fit_local_score.py`` fits
the shipped ``weights/local_score.json`` on pairs built from the ``train`` photos."""
from __future__ import annotations

import numpy as np

__all__ = ["fit_logistic"]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iters: int = 3000, lr: float = 0.5) -> tuple[np.ndarray, float]:
    """Logistic regression with non-negative weights by projected gradient descent on standardised features.

    x: (n, F) float features, y: (n,) {0, 1}. Returns (weights (F,) >= 0 in the raw feature scale, bias).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    w = np.zeros(x.shape[1])
    b = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = p - y
        w -= lr * (z.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
        w = np.maximum(w, 0.0)  # standardisation divides by sd > 0, so sign is preserved in the raw scale
    w_raw = w / sd
    return w_raw, float(b - np.dot(w_raw, mu))
