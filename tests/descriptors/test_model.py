"""Descriptor model, registry, weights files and inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matcher.descriptors.imagenet import remap_by_order
from matcher.descriptors.infer import describe_images
from matcher.descriptors.model import gem
from matcher.descriptors.registry import DESCRIPTORS, build_model, get_spec, load_descriptor
from matcher.descriptors.weights import WeightsError, file_sha256, read_weights, save_weights
from matcher.registry import UnknownNameError
from matcher.retrieval.normalise import split_norm


@pytest.fixture(scope="module")
def tiny():
    spec = get_spec("imagenet_lite0", dim=64, image_size=64)
    return build_model(spec, seed=0).eval(), spec


def _photos(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8) for i in range(n)]


class TestGem:
    def test_p1_is_mean(self):
        x = torch.rand(2, 3, 4, 5) + 0.1
        assert torch.allclose(gem(x, 1.0), x.mean(dim=(-2, -1)), atol=1e-6)

    def test_large_p_tends_to_max(self):
        x = torch.rand(1, 2, 3, 3) + 0.1
        assert torch.allclose(gem(x, 60.0), x.amax(dim=(-2, -1)), rtol=0.05)


class TestModel:
    def test_output_shape_and_unnormalised(self, tiny):
        model, spec = tiny
        f = describe_images(model, _photos(), spec.image_size, spec.mean, spec.std, batch_size=2)
        assert f.shape == (3, 64) and f.dtype == np.float32
        z, n = split_norm(f)
        assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
        assert np.all(n > 0) and not np.allclose(n, 1.0)

    def test_batching_does_not_change_result(self, tiny):
        model, spec = tiny
        a = describe_images(model, _photos(), spec.image_size, spec.mean, spec.std, batch_size=1)
        b = describe_images(model, _photos(), spec.image_size, spec.mean, spec.std, batch_size=3)
        assert np.allclose(a, b, atol=1e-4)

    def test_multiscale_averages(self, tiny):
        model, spec = tiny
        a = describe_images(model, _photos(1), 64, spec.mean, spec.std)
        b = describe_images(model, _photos(1), 96, spec.mean, spec.std)
        ab = describe_images(model, _photos(1), 64, spec.mean, spec.std, scales=(96,))
        assert np.allclose(ab, (a + b) / 2, atol=1e-4)

    def test_empty_input(self, tiny):
        model, spec = tiny
        assert describe_images(model, [], 64, spec.mean, spec.std).shape == (0, 64)

    def test_dim_out_of_range(self):
        with pytest.raises(ValueError, match="dim"):
            build_model(get_spec("imagenet_lite0", dim=4, image_size=64), imagenet=False)


class TestRegistry:
    def test_unknown_name_lists_known(self):
        with pytest.raises(UnknownNameError) as e:
            get_spec("resnet_nonexistent")
        for name in DESCRIPTORS.names():
            assert name in str(e.value)
        assert "asl_lite0" in str(e.value)

    def test_spec_overrides(self):
        assert get_spec("asl_lite0", dim=128).dim == 128


class TestImagenetRemap:
    def test_shape_mismatch_is_refused(self):
        src = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
        with pytest.raises(ValueError, match="cannot remap"):
            remap_by_order(src, [("x", torch.Size([2, 3])), ("y", torch.Size([5]))])

    def test_order_mapping(self):
        out = remap_by_order({"a": torch.ones(2)}, [("x", torch.Size([2]))])
        assert list(out) == ["x"]


class TestWeights:
    def test_round_trip_weights_only(self, tiny, tmp_path):
        model, spec = tiny
        path = tmp_path / "w.pt"
        sha = save_weights(path, model, {"arch": spec.arch, "dim": 64, "image_size": 64, "note": "test"})
        assert sha == file_sha256(path)
        obj = torch.load(path, weights_only=True)  # plain tensors and primitives: loads without pickle
        assert obj["meta"]["note"] == "test"
        assert all(v.dtype == torch.float16 for v in obj["state_dict"].values() if v.is_floating_point())
        loaded, spec2, sha2 = load_descriptor("asl_lite0", path)
        assert spec2.dim == 64 and spec2.image_size == 64 and sha2 == sha
        x = torch.randn(2, 3, 64, 64)
        with torch.inference_mode():
            assert torch.allclose(loaded(x), model(x), atol=0.05, rtol=0.02)

    def test_wrong_shape_is_clear(self, tiny, tmp_path):
        model, spec = tiny
        path = tmp_path / "w.pt"
        save_weights(path, model, {"arch": spec.arch, "dim": 64, "image_size": 64})
        state, meta = read_weights(path)
        meta["dim"] = 128  # the file says 128-d, its projection is 64-d
        torch.save({"state_dict": state, "meta": meta}, path)
        with pytest.raises(WeightsError, match=r"w\.pt.*wrong shapes.*proj\.weight"):
            load_descriptor("asl_lite0", path)

    def test_not_a_weights_file(self, tmp_path):
        path = tmp_path / "bad.pt"
        path.write_bytes(b"not a torch file")
        with pytest.raises(WeightsError, match="bad.pt"):
            load_descriptor("asl_lite0", path)
        with pytest.raises(FileNotFoundError):
            load_descriptor("asl_lite0", tmp_path / "missing.pt")

    def test_wrong_arch_is_refused(self, tiny, tmp_path):
        model, _ = tiny
        path = tmp_path / "w.pt"
        save_weights(path, model, {"arch": "resnet50", "dim": 64, "image_size": 64})
        with pytest.raises(WeightsError, match="resnet50"):
            load_descriptor("asl_lite0", path)


class TestGlobalDescriptor:
    def test_describe_and_index_stamp(self, tiny, tmp_path):
        from matcher.config import DescriptorConfig
        from matcher.descriptors.extractor import GlobalDescriptor
        from matcher.retrieval.index import IndexModelMismatchError, ReferenceIndex

        model, spec = tiny
        path = tmp_path / "w.pt"
        sha = save_weights(path, model, {"arch": spec.arch, "dim": 64, "image_size": 64, "gate_margin": 0.2})
        g = GlobalDescriptor(DescriptorConfig(model="asl_lite0", weights=str(path)))
        assert g.dim == 64 and g.sha256 == sha and g.gate_margin == pytest.approx(0.2)
        f = g.describe(_photos())
        idx = ReferenceIndex.create(g.dim, g.name, g.sha256)
        idx.add(["a", "b", "c"], f)
        res = idx.search(f, 1, model=g.name, model_hash=g.sha256)
        assert res.rows[:, 0].tolist() == [0, 1, 2]
        with pytest.raises(IndexModelMismatchError):
            idx.search(f, 1, model="imagenet_lite0", model_hash=None)


class TestWhitening:
    def test_fit_whitens_and_keeps_norm(self):
        from matcher.descriptors.model import Whitening, fit_whitening

        g = torch.Generator().manual_seed(0)
        f = torch.randn(500, 8, generator=g) * torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 0.2]) + 3.0
        mean, proj = fit_whitening(f, shrink=0.0)
        w = (f - mean) @ proj.T
        assert torch.allclose(torch.cov(w.T), torch.eye(8), atol=1e-3)
        layer = Whitening(8)
        assert torch.equal(layer(f), f)  # off by default
        layer.mean.copy_(mean)
        layer.proj.copy_(proj)
        layer.enabled.fill_(1.0)
        out = layer(f)
        assert torch.allclose(out.norm(dim=1), f.norm(dim=1), rtol=1e-5)
        assert torch.allclose(F_normalize(out), F_normalize(w), atol=1e-5)

    def test_weights_without_whitening_still_load(self, tiny, tmp_path):
        model, spec = tiny
        path = tmp_path / "old.pt"
        save_weights(path, model, {"arch": spec.arch, "dim": 64, "image_size": 64})
        state, meta = read_weights(path)
        state = {k: v for k, v in state.items() if not k.startswith("whiten.")}
        torch.save({"state_dict": state, "meta": meta}, path)
        loaded, _, _ = load_descriptor("asl_lite0", path)
        assert float(loaded.whiten.enabled) == 0.0


def F_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)
