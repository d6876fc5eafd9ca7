"""The voting budget of the candidate stage (matcher.retrieval.candidates.strongest_keypoints)."""
from __future__ import annotations

import numpy as np

from matcher.local.types import LocalFeatures
from matcher.retrieval.candidates import strongest_keypoints


def _features(n: int, mirrored: bool = True) -> LocalFeatures:
    rng = np.random.default_rng(0)
    d = rng.random((n, 128), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return LocalFeatures(rng.random((n, 2), dtype=np.float32) * 100, np.ones(n, np.float32),
                         np.zeros(n, np.float32), d, (100, 100), d[:, ::-1].copy() if mirrored else None)


def test_keeps_the_first_k_strongest_with_their_mirrors():
    f = _features(50)
    s = strongest_keypoints(f, 20)
    assert s.n == 20 and s.image_size == f.image_size
    np.testing.assert_array_equal(s.descriptors, f.descriptors[:20])
    np.testing.assert_array_equal(s.keypoints, f.keypoints[:20])
    np.testing.assert_array_equal(s.mirrored, f.mirrored[:20])


def test_zero_or_a_larger_budget_keeps_everything():
    f = _features(30)
    assert strongest_keypoints(f, 0) is f
    assert strongest_keypoints(f, 30) is f
    assert strongest_keypoints(f, 100) is f


def test_without_mirrored_descriptors():
    s = strongest_keypoints(_features(10, mirrored=False), 4)
    assert s.n == 4 and s.mirrored is None
