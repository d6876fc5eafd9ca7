"""Batch-norm folding (matcher.descriptors.fuse) against the unfolded model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from matcher.descriptors.fuse import fold_batchnorm, fold_pairs
from matcher.descriptors.infer import describe_images
from matcher.descriptors.registry import build_model, get_spec


@pytest.fixture(scope="module")
def model_with_stats():
    """A tiny ASL model whose batch norms hold non-trivial running statistics (so folding changes weights)."""
    spec = get_spec("imagenet_lite0", dim=64, image_size=64)
    model = build_model(spec, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model, spec


def test_every_batchnorm_follows_a_conv(model_with_stats):
    model, _ = model_with_stats
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 10 and len(fold_pairs(model)) == n_bn


def test_folded_descriptors_match_unfolded(model_with_stats):
    model, spec = model_with_stats
    folded = fold_batchnorm(model, spec.image_size)
    assert folded is not model and not fold_pairs(folded)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (50 + 7 * i, 70, 3), dtype=np.uint8) for i in range(5)]
    a = describe_images(model, imgs, spec.image_size, spec.mean, spec.std)
    b = describe_images(folded, imgs, spec.image_size, spec.mean, spec.std)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), np.linalg.norm(a, axis=1), rtol=1e-5)


def test_original_untouched_and_training_model_left_alone(model_with_stats):
    model, spec = model_with_stats
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model, spec.image_size)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    try:
        assert fold_batchnorm(model, spec.image_size) is model
    finally:
        model.eval()


def test_failed_check_keeps_the_model(model_with_stats):
    model, spec = model_with_stats
    bad = fold_batchnorm(model, spec.image_size, rtol=-1.0)  # no difference can pass a negative bound
    assert bad is model
