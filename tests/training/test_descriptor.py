"""Descriptor losses, training views and the training loop (2 tiny steps on CPU, checkpoint resume)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matcher.descriptors.weights import read_weights
from matcher.training.descriptor import TrainSettings, evaluate_holdout, export_weights, train
from matcher.training.losses import asl_norm_loss, multi_positive_infonce, relational_kd
from matcher.training.views import (
    ViewPool,
    crop_resize,
    load_view_pool,
    make_view_pool,
    sample_sub_boxes,
    save_view_pool,
)


class TestAslLoss:
    def test_equal_norms_give_one(self):
        f = torch.tensor([[3.0, 4.0]])
        assert asl_norm_loss(f, f).item() == pytest.approx(1.0)

    def test_hand_values(self):
        more = torch.tensor([[6.0, 8.0], [1.0, 0.0]])  # norms 10, 1
        less = torch.tensor([[0.0, 5.0], [0.0, 2.0]])  # norms 5, 2
        expected = (math.exp(1 - 2.0) + math.exp(1 - 0.5)) / 2
        assert asl_norm_loss(more, less).item() == pytest.approx(expected, rel=1e-6)

    def test_gradient_grows_more(self):
        more = torch.tensor([[1.0, 0.0]], requires_grad=True)
        asl_norm_loss(more, torch.tensor([[0.0, 1.0]])).backward()
        assert more.grad[0, 0] < 0  # descending the loss increases ||f_more||

    def test_empty(self):
        assert asl_norm_loss(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


class TestInfoNce:
    def test_perfect_separation_is_low(self):
        z = F.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]]), dim=1)
        labels = torch.tensor([0, 0, 1, 1])
        good = multi_positive_infonce(z, labels, tau=0.05).item()
        bad = multi_positive_infonce(z, torch.tensor([0, 1, 0, 1]), tau=0.05).item()
        assert good < 1e-6 and bad > 10

    def test_bank_same_label_ignored(self):
        z = F.normalize(torch.tensor([[1.0, 0], [1.0, 0.1]]), dim=1)
        labels = torch.tensor([0, 0])
        base = multi_positive_infonce(z, labels, 0.1)
        same = multi_positive_infonce(z, labels, 0.1, bank=z[:1].clone(), bank_labels=torch.tensor([0]))
        other = multi_positive_infonce(z, labels, 0.1, bank=z[:1].clone(), bank_labels=torch.tensor([5]))
        assert same.item() == pytest.approx(base.item()) and other.item() > base.item()


class TestRelationalKd:
    def test_zero_when_equal(self):
        z = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
        assert relational_kd(z, z).item() == pytest.approx(0.0, abs=1e-6)

    def test_positive_when_different(self):
        g = torch.Generator().manual_seed(1)
        a, b = F.normalize(torch.randn(6, 8, generator=g), dim=1), F.normalize(torch.randn(6, 16, generator=g), dim=1)
        assert relational_kd(a, b).item() > 0.01


class TestViews:
    def test_sub_boxes_area_and_bounds(self):
        b = sample_sub_boxes(np.random.default_rng(0), 200, (0.2, 0.6))
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        assert np.all(b >= 0) and np.all(b <= 1 + 1e-9)
        assert area.min() > 0.1 and area.max() <= 0.6 + 1e-6

    def test_crop_resize_shape(self):
        x = torch.rand(3, 3, 40, 40)
        out = crop_resize(x, np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5], [0.2, 0.3, 0.7, 0.9]]), 24)
        assert out.shape == (3, 3, 24, 24)

    def test_pool_seeded_and_round_trip(self, tmp_path):
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(3)]
        a = make_view_pool(images, ["a", "b", "c"], n_edited=1, size=32, seed=1, max_side=96)
        b = make_view_pool(images, ["a", "b", "c"], n_edited=1, size=32, seed=1, max_side=96)
        assert a.views.shape == (3, 2, 32, 32, 3) and np.array_equal(a.views, b.views)
        assert np.all(a.visible[:, 0] == 1) and np.all((a.visible >= 0) & (a.visible <= 1))
        save_view_pool(a, tmp_path / "p")
        c = load_view_pool(tmp_path / "p")
        assert np.array_equal(np.asarray(c.views), a.views) and c.ids == ["a", "b", "c"]
        d = make_view_pool(images, ["a", "b", "c"], n_edited=1, size=32, seed=1, max_side=96, degrade=1.0)
        assert np.array_equal(d.views[:, 0], a.views[:, 0]) and not np.array_equal(d.views[:, 1], a.views[:, 1])

    def test_cache_with_other_settings_is_refused(self, tmp_path):
        import cv2

        from matcher.training.data import prepare_cache

        photos = tmp_path / "photos"
        photos.mkdir()
        rng = np.random.default_rng(3)
        for i in range(4):
            cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        cache = tmp_path / "cache"
        tr, ho = prepare_cache(photos, cache, n_holdout=1, n_edited=1, size=32)
        assert tr.views.shape[:2] == (3, 2) and ho.views.shape[:2] == (1, 2)
        again, _ = prepare_cache(photos, cache, n_holdout=1, n_edited=1, size=32)  # same settings: reused
        assert np.array_equal(np.asarray(again.views), tr.views)
        with pytest.raises(ValueError, match=r"cache.*n_edited: 1 there, 2 asked"):
            prepare_cache(photos, cache, n_holdout=1, n_edited=2, size=32)
        assert np.array_equal(np.asarray(prepare_cache(photos, cache, n_holdout=1, n_edited=1, size=32)[0].views),
                              tr.views)  # untouched by the refusal
        tr2, _ = prepare_cache(photos, cache, n_holdout=1, n_edited=2, size=32, rebuild=True)
        assert tr2.views.shape[:2] == (3, 3)

    def test_every_degradation(self):
        from matcher.training.views import DEGRADATIONS, degrade_view

        img = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
        seen = set()
        for seed in range(60):
            out, name = degrade_view(img, np.random.default_rng(seed))
            seen.add(name)
            assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
        assert seen == set(DEGRADATIONS)


def _pool(n: int = 8, v: int = 3, size: int = 40, seed: int = 0) -> ViewPool:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, size, size, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, (n, v, size, size, 3))
    views = np.clip(base.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    vis = np.ones((n, v), np.float32)
    vis[:, 1:] = 0.5
    return ViewPool(views, vis, np.zeros((n, v), bool), [f"p{i}" for i in range(n)])


SETTINGS = {"dim": 32, "image_size": 32, "batch": 4, "lr": 1e-3, "warmup": 1, "bank_size": 8, "eval_every": 0, "freeze_blocks": 5}


class TestTrainLoop:
    def test_two_steps_and_resume_match(self, tmp_path):
        pool = _pool()
        teacher = np.random.default_rng(1).normal(size=(8, 3, 16)).astype(np.float16)
        s = TrainSettings(steps=2, **SETTINGS)
        full = train(pool, None, tmp_path / "full", s, teacher=teacher, progress=False)
        assert full["steps_done"] == 2 and (tmp_path / "full" / "asl_lite0_32.pt").is_file()
        part = train(pool, None, tmp_path / "part", s, teacher=teacher, progress=False, max_seconds=1e-9)
        assert part["steps_done"] == 1 and "weights" not in part
        rest = train(pool, None, tmp_path / "part", s, teacher=teacher, progress=False)
        assert rest["steps_done"] == 2
        a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
        b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
        for k in a["model"]:
            assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
        assert torch.allclose(a["bank"]["z"], b["bank"]["z"], atol=1e-6)
        log = (tmp_path / "full" / "log.jsonl").read_text().splitlines()
        assert len(log) == 2 and '"kd"' in log[0] and '"asl"' in log[0]

    def test_start_from_weights(self, tmp_path):
        pool = _pool()
        s = TrainSettings(steps=1, **SETTINGS)
        train(pool, None, tmp_path / "a", s, progress=False)
        export_weights(tmp_path / "a" / "checkpoint.pt", tmp_path / "a.pt", holdout=_pool(seed=3))
        out = train(pool, None, tmp_path / "b", TrainSettings(steps=1, **{**SETTINGS, "lr": 0.0}), progress=False,
                    init=tmp_path / "a.pt")
        assert out["steps_done"] == 1  # lr 0: the weights are the initial ones
        a, _ = read_weights(tmp_path / "a.pt")
        b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
        assert torch.allclose(a["proj.weight"].float(), b["proj.weight"].float(), atol=1e-2)
        assert float(b["whiten.enabled"]) == 0.0
        carried = train(pool, None, tmp_path / "d", TrainSettings(steps=2, **SETTINGS), progress=False,
                        init=tmp_path / "a.pt", start_step=1)  # a run carried on from exported weights
        assert carried["steps_done"] == 2
        assert len((tmp_path / "d" / "log.jsonl").read_text().splitlines()) == 1
        with pytest.raises(ValueError, match="32-d weights"):
            train(pool, None, tmp_path / "c", TrainSettings(steps=1, **{**SETTINGS, "dim": 16}), progress=False,
                  init=tmp_path / "a.pt")

    def test_holdout_eval_and_export(self, tmp_path):
        pool = _pool()
        s = TrainSettings(steps=1, **SETTINGS)
        train(pool, None, tmp_path, s, progress=False)
        meta = export_weights(tmp_path / "checkpoint.pt", tmp_path / "w.pt", holdout=_pool(seed=3))
        _, meta2 = read_weights(tmp_path / "w.pt")
        assert meta2["dim"] == 32 and "gate_margin" in meta2 and meta["copies_marked"] <= 0.25
        from matcher.descriptors.registry import load_descriptor

        model, spec, _ = load_descriptor("asl_lite0", tmp_path / "w.pt")
        ev = evaluate_holdout(model, _pool(seed=3), spec, 32)
        assert 0.0 <= ev["uap"] <= 1.0 and 0.0 <= ev["true_pairs_q_norm_above_r"] <= 1.0


class TestShippedWeights:
    def test_loads_with_metadata(self):
        from matcher.descriptors.registry import get_spec, load_descriptor

        path = get_spec("asl_lite0").weights_path()
        if not path.is_file():
            pytest.skip("weights/asl_lite0_256.pt not present")
        model, spec, sha = load_descriptor("asl_lite0")
        _, meta = read_weights(path)
        assert spec.dim == 256 and spec.image_size == 160 and len(sha) == 64
        assert float(model.whiten.enabled) == 1.0 and "gate_margin" in meta
        assert path.stat().st_size < 10_000_000
