"""Reference index (faiss), score normalisation and the ASL norm gate."""
from __future__ import annotations

import numpy as np
import pytest

from matcher.config import DescriptorConfig
from matcher.retrieval.gate import apply_gate, fit_margin, gate_marks, log_norm_ratio
from matcher.retrieval.index import IndexModelMismatchError, ReferenceIndex, ReferenceIndexError
from matcher.retrieval.normalise import background_mean, normalise_scores, subtract_negatives


def _vecs(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) * 3


def _index(n: int = 50, d: int = 32, **cfg) -> tuple[ReferenceIndex, np.ndarray]:
    f = _vecs(n, d)
    idx = ReferenceIndex.create(d, "m", "abc", DescriptorConfig(**cfg), n_expected=n)
    idx.add([f"r{i}" for i in range(n)], f)
    return idx, f


def _brute(q: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    zq = q / np.linalg.norm(q, axis=1, keepdims=True)
    zr = r / np.linalg.norm(r, axis=1, keepdims=True)
    s = zq @ zr.T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, rows, 1), rows


class TestSearch:
    def test_exact_matches_brute_force(self):
        idx, f = _index()
        q = _vecs(7, seed=1)
        res = idx.search(q, 5)
        s, rows = _brute(q, f, 5)
        assert np.array_equal(res.rows, rows)
        assert np.allclose(res.scores, s, atol=1e-5)
        assert np.allclose(res.ref_norms, np.linalg.norm(f, axis=1)[rows], rtol=1e-5)

    def test_k_larger_than_index_pads(self):
        idx, _ = _index(n=3)
        res = idx.search(_vecs(2, seed=1), 5)
        assert res.rows.shape == (2, 5) and np.all(res.rows[:, 3:] == -1) and np.all(np.isinf(res.scores[:, 3:]))

    def test_empty_index_and_queries(self):
        idx = ReferenceIndex.create(32, "m", "abc")
        assert idx.search(_vecs(2), 3).rows.tolist() == [[-1] * 3] * 2
        full, _ = _index()
        assert full.search(np.zeros((0, 32), np.float32), 3).scores.shape == (0, 3)

    def test_ivfpq_finds_exact_duplicates(self):
        idx, f = _index(n=2000, d=32, index_type="auto", index_threshold=1000, nprobe=8)
        assert idx.meta["index_type"] == "ivfpq"
        res = idx.search(f[:20], 1)
        assert np.mean(res.rows[:, 0] == np.arange(20)) >= 0.9

    def test_bad_input(self):
        idx, _ = _index()
        with pytest.raises(ReferenceIndexError, match="dimensions"):
            idx.search(_vecs(2, d=16), 3)
        with pytest.raises(ReferenceIndexError, match="already in the index"):
            idx.add(["r3"], _vecs(1))
        with pytest.raises(ReferenceIndexError, match="ids but"):
            idx.add(["x", "y"], _vecs(1))
        with pytest.raises(ReferenceIndexError, match="NaN"):
            idx.add(["z"], np.full((1, 32), np.nan, np.float32))
        with pytest.raises(ReferenceIndexError, match="unknown index type"):
            ReferenceIndex.create(32, "m", None, DescriptorConfig(index_type="hnsw"))


class TestPersistence:
    def test_round_trip(self, tmp_path):
        idx, _f = _index()
        idx.save(tmp_path / "ix")
        back = ReferenceIndex.load(tmp_path / "ix")
        q = _vecs(4, seed=2)
        a, b = idx.search(q, 5), back.search(q, 5)
        assert back.ids == idx.ids and np.array_equal(a.rows, b.rows) and np.allclose(a.scores, b.scores)
        assert np.allclose(back.norms, idx.norms) and back.meta["model_hash"] == "abc"

    def test_add_without_rebuild_after_load(self, tmp_path):
        idx, f = _index(n=20)
        idx.save(tmp_path / "ix")
        back = ReferenceIndex.load(tmp_path / "ix")
        new = _vecs(5, seed=9)
        back.add([f"n{i}" for i in range(5)], new)
        back.save(tmp_path / "ix")
        again = ReferenceIndex.load(tmp_path / "ix")
        assert len(again) == 25
        res = again.search(new, 1)
        assert [again.ids[r] for r in res.rows[:, 0]] == [f"n{i}" for i in range(5)]
        _s, rows = _brute(new, np.concatenate([f, new]), 3)
        assert np.array_equal(again.search(new, 3).rows, rows)

    def test_refuses_other_model(self, tmp_path):
        idx, _ = _index()
        idx.save(tmp_path / "ix")
        back = ReferenceIndex.load(tmp_path / "ix")
        back.search(_vecs(1), 2, model="m", model_hash="abc")
        with pytest.raises(IndexModelMismatchError, match="'m'"):
            back.search(_vecs(1), 2, model="m", model_hash="def")
        with pytest.raises(IndexModelMismatchError):
            back.search(_vecs(1), 2, model="other", model_hash="abc")

    def test_inconsistent_files(self, tmp_path):
        idx, _ = _index()
        idx.save(tmp_path / "ix")
        (tmp_path / "ix" / "ids.json").write_text('["only-one"]')
        with pytest.raises(ReferenceIndexError, match="inconsistent"):
            ReferenceIndex.load(tmp_path / "ix")
        with pytest.raises(ReferenceIndexError, match="missing"):
            ReferenceIndex.load(tmp_path / "nothing")


class TestScoreNormalisation:
    def test_toy_case(self):
        # two queries with equal raw scores; q0 is also close to the background, so it is pushed down
        bg = np.array([[1.0, 0.0], [0.8, 0.6]], np.float32)
        zq = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
        m = background_mean(zq, bg, k=2)
        assert np.allclose(m, [0.9, 0.3])
        out = normalise_scores(np.array([[0.8], [0.8]], np.float32), m, beta=1.0)
        assert np.allclose(out[:, 0], [-0.1, 0.5])
        assert out[1, 0] > out[0, 0]

    def test_k_capped_and_empty_background(self):
        zq = np.eye(2, dtype=np.float32)
        assert np.allclose(background_mean(zq, np.eye(2, dtype=np.float32)[:1], k=5), [1.0, 0.0])
        assert np.all(background_mean(zq, np.zeros((0, 2), np.float32), 3) == 0)

    def test_negative_subtraction_unit_rows(self):
        z = np.array([[1.0, 0.0]], np.float32)
        bg = np.array([[0.6, 0.8]], np.float32)
        out = subtract_negatives(z, bg, 1, 1.0)
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
        assert out[0] @ bg[0] < z[0] @ bg[0]


class TestGate:
    def test_marks_larger_query_norm(self):
        lr = log_norm_ratio(np.array([2.0, 1.0]), np.array([[1.0, 4.0], [1.0, 1.0]]))
        assert np.allclose(lr, [[np.log(2), np.log(0.5)], [0, 0]], atol=1e-6)
        marks = gate_marks(lr, 0.1)
        assert marks.tolist() == [[True, False], [False, False]]
        out = apply_gate(np.array([[0.9, 0.8], [0.7, 0.6]], np.float32), marks, 0.2)
        assert np.allclose(out, [[0.7, 0.8], [0.7, 0.6]])

    def test_fit_margin_controls_false_rejects(self):
        copies = np.linspace(-1, 1, 101)
        m = fit_margin(copies, np.array([2.0]), max_false_reject=0.1)
        assert np.mean(copies > m) <= 0.1 + 1e-9 and np.mean(copies > m) >= 0.08
        with pytest.raises(ValueError):
            fit_margin(np.zeros(0), np.zeros(1))


class TestGlobalCandidates:
    def test_norm_and_gate(self):
        from matcher.retrieval.candidates import global_candidates

        ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
        idx = ReferenceIndex.create(3, "m", None)
        idx.add(["a", "b"], ref)
        q = np.array([[5.0, 0.2, 0.0], [0.1, 0.5, 0.0]], np.float32)  # q0 holds far more than "a"
        bg = np.array([[0.0, 0.0, 1.0]], np.float32)
        cfg = DescriptorConfig(score_norm_beta=1.0, score_norm_k=1, gate_penalty=0.3)
        c = global_candidates(idx, q, 2, cfg, background=bg, gate_margin=0.5)
        assert c.rows[:, 0].tolist() == [0, 1]
        assert c.marked[0, 0] and not c.marked[1, 0]
        assert np.isclose(c.scores[0, 0], c.cosine[0, 0] - 0.3, atol=1e-6)
        assert np.isclose(c.scores[1, 0], c.cosine[1, 0], atol=1e-6)
        plain = global_candidates(idx, q, 2, cfg)
        assert not plain.marked.any() and np.allclose(plain.scores, plain.cosine)


def test_exact_batches_take_the_matrix_product_and_restore_the_setting():
    """A batch searched within exact_batches() gets the rows of a plain faiss scan (cosines to float rounding);
    faiss' process-wide setting is back to what it was afterwards, even after an error."""
    import faiss

    from matcher.retrieval.index import BLAS_MIN_QUERIES, exact_batches

    rng = np.random.default_rng(3)
    db = rng.standard_normal((3000, 64)).astype(np.float32)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    index = faiss.IndexFlatIP(64)
    index.add(db)
    before = faiss.cvar.distance_compute_blas_threshold
    scanned = index.search(q, 10)
    with exact_batches():
        assert faiss.cvar.distance_compute_blas_threshold == BLAS_MIN_QUERIES
        product = index.search(q, 10)
    assert faiss.cvar.distance_compute_blas_threshold == before
    np.testing.assert_array_equal(product[1], scanned[1])
    np.testing.assert_allclose(product[0], scanned[0], atol=1e-4)
    with pytest.raises(RuntimeError, match="inside"), exact_batches():
        raise RuntimeError("inside")
    assert faiss.cvar.distance_compute_blas_threshold == before
