"""Descriptor matching: Numba kernel and torch path against the plain-numpy reference (matcher.local.matching)."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from matcher.local import kernels
from matcher.local.matching import (
    MatchBatch,
    Matches,
    MatchingInputError,
    _select_numpy,
    _select_segments,
    match_mnn_ratio,
    match_mnn_ratio_numpy,
    match_one_to_many,
    match_one_to_many_torch,
)

D = 128


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _problem(seed: int, n: int, sizes: list[int], noise: float = 0.15):
    """Random unit query/reference descriptors with planted near-copies so that matches exist."""
    rng = np.random.default_rng(seed)
    refs = [_unit(rng.standard_normal((m, D))) if m else np.zeros((0, D), np.float32) for m in sizes]
    q = _unit(rng.standard_normal((n, D))) if n else np.zeros((0, D), np.float32)
    for r in refs:
        k = min(len(r), n // 3)
        if k:
            qi = rng.choice(n, k, replace=False)
            q[qi] = _unit(r[rng.choice(len(r), k, replace=False)] + noise * rng.standard_normal((k, D)))
    qm = _unit(q[:, ::-1] + 0.05 * rng.standard_normal(q.shape)) if n else q.copy()
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ref = np.concatenate(refs) if refs else np.zeros((0, D), np.float32)
    return q, qm, ref, offsets, refs


def _tie_problem(seed: int, n: int, sizes: list[int]):
    """Descriptors with 4 entries of +-0.5 among 128 (unit norm): every dot product is an exact multiple of 0.25,
    so exact ties (and +-0.0) occur often and all implementations see identical similarities."""
    rng = np.random.default_rng(seed)

    def draw(k: int) -> np.ndarray:
        x = np.zeros((k, D), np.float32)
        for i in range(k):
            x[i, rng.choice(6, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return x

    refs = [draw(m) for m in sizes]
    q = draw(n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return q, np.concatenate(refs), offsets, refs


def _assert_same(a: Matches, b: Matches, exact: bool = False) -> None:
    assert a.idx_q.dtype == b.idx_q.dtype == np.int32 and a.idx_r.dtype == b.idx_r.dtype == np.int32
    assert a.dist.dtype == b.dist.dtype == np.float32
    np.testing.assert_array_equal(a.idx_q, b.idx_q)
    np.testing.assert_array_equal(a.idx_r, b.idx_r)
    if exact:
        np.testing.assert_array_equal(a.dist, b.dist)
    else:
        np.testing.assert_allclose(a.dist, b.dist, atol=2e-6)


def _check_batch(batch: MatchBatch, q: np.ndarray, refs: list[np.ndarray], ratio: float, mutual: bool,
                 exact: bool = False) -> int:
    assert len(batch) == len(refs)
    total = 0
    for r, ref in enumerate(refs):
        expected = match_mnn_ratio_numpy(q, ref, ratio, mutual)
        _assert_same(batch[r], expected, exact)
        total += len(expected)
    np.testing.assert_array_equal(batch.counts(), [len(m) for m in batch])
    return total


# ---------------------------------------------------------------------------------------------- numpy reference
def test_reference_on_hand_made_cases() -> None:
    rng = np.random.default_rng(0)
    r = _unit(rng.standard_normal((5, D)))
    # exact copies, permuted: every query matches its copy at distance 0
    perm = np.array([3, 0, 4, 1, 2])
    m = match_mnn_ratio_numpy(r[perm], r)
    np.testing.assert_array_equal(m.idx_q, np.arange(5))
    np.testing.assert_array_equal(m.idx_r, perm)
    np.testing.assert_allclose(m.dist, 0.0, atol=1e-3)
    # a duplicated reference descriptor: best == second best, so the ratio test fails for the queries hitting it
    m = match_mnn_ratio_numpy(r, np.concatenate([r, r[2:3]]))
    np.testing.assert_array_equal(m.idx_q, [0, 1, 3, 4])
    # duplicated queries: mutual keeps only the lowest index; without mutual both map to the first duplicate ref
    q = np.concatenate([r[:1], r[:1]])
    m = match_mnn_ratio_numpy(q, r, mutual=True)
    assert (m.idx_q.tolist(), m.idx_r.tolist()) == ([0], [0])
    m = match_mnn_ratio_numpy(q, r, mutual=False)
    assert (m.idx_q.tolist(), m.idx_r.tolist()) == ([0, 1], [0, 0])
    # M == 1: the ratio test passes; N == 0 / M == 0: nothing
    m = match_mnn_ratio_numpy(_unit(rng.standard_normal((3, D))), r[:1], mutual=False)
    assert len(m) == 3
    assert len(match_mnn_ratio_numpy(np.zeros((0, D), np.float32), r)) == 0
    assert len(match_mnn_ratio_numpy(r, np.zeros((0, D), np.float32))) == 0
    assert len(Matches.empty()) == 0 and Matches.empty().idx_q.dtype == np.int32


def test_ratio_threshold_is_strict_and_on_l2_distance() -> None:
    # sims chosen so that d1 / d2 == 0.5 exactly: d^2 = 2 - 2s, s1 = 0.875 -> d1^2 = 0.25, s2 = 0.5 -> d2^2 = 1
    sim = np.array([[0.875, 0.5, -1.0]], np.float32)
    assert len(_select_numpy(sim, 0.5, True)) == 0  # 0.25 < 0.25 * 1 fails
    assert len(_select_numpy(sim, 0.5000001, True)) == 1
    m = _select_segments(sim, 1, np.array([0, 3], np.int64), 0.5, True)[0]
    assert len(m[0]) == 0
    m = _select_segments(sim, 1, np.array([0, 3], np.int64), 0.5000001, True)[0]
    assert m[0].tolist() == [0] and m[2].tolist() == [np.float32(0.5)]


# ------------------------------------------------------------------------------------------ numba kernel vs numpy
CASES = [  # (seed, N, segment sizes)
    (1, 0, [5, 7]),
    (2, 6, [0, 0, 0]),
    (3, 1, [9, 1, 0, 4]),
    (4, 40, [1]),
    (5, 1, [1]),
    (6, 64, [80]),
    (7, 60, list(np.random.default_rng(7).integers(0, 40, 50))),
    (8, 200, [0, 300, 2, 0, 150, 1, 0]),
]


@pytest.mark.parametrize("seed,n,sizes", CASES)
@pytest.mark.parametrize("ratio,mutual", [(0.85, True), (0.85, False), (1.0, True), (0.5, False)])
def test_one_to_many_matches_reference(seed: int, n: int, sizes: list[int], ratio: float, mutual: bool) -> None:
    q, qm, ref, offsets, refs = _problem(seed, n, [int(s) for s in sizes])
    res = match_one_to_many(q, ref, offsets, ratio=ratio, mutual=mutual, mirrored=qm)
    _check_batch(res.plain, q, refs, ratio, mutual)
    _check_batch(res.mirrored, qm, refs, ratio, mutual)


def test_planted_cases_do_produce_matches() -> None:
    q, _, ref, offsets, refs = _problem(8, 200, [0, 300, 2, 0, 150, 1, 0])
    res = match_one_to_many(q, ref, offsets)
    assert _check_batch(res.plain, q, refs, 0.85, True) > 50
    assert res.mirrored is None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ratio,mutual", [(0.85, True), (1.0, False), (0.5, True)])
def test_exact_ties_follow_lowest_index_rule(seed: int, ratio: float, mutual: bool) -> None:
    q, ref, offsets, refs = _tie_problem(seed, 40, [0, 30, 1, 25, 3, 60])
    res = match_one_to_many(q, ref, offsets, ratio=ratio, mutual=mutual)
    total = _check_batch(res.plain, q, refs, ratio, mutual, exact=True)
    assert total > 0
    tres = match_one_to_many_torch(torch.from_numpy(q), torch.from_numpy(ref), offsets, ratio=ratio, mutual=mutual)
    _check_batch(tres.plain, q, refs, ratio, mutual, exact=True)


def test_kernel_on_arbitrary_similarities_with_signed_zeros() -> None:
    rng = np.random.default_rng(3)
    sim = (rng.integers(-3, 4, (30, 41)) / 4).astype(np.float32)  # many ties, values in [-0.75, 0.75]
    sim[rng.random(sim.shape) < 0.2] = -0.0
    sim[5] = -0.0
    sim[6, :] = 0.0
    sim[6, ::3] = -0.0
    seg = np.array([0, 1, 1, 12, 41], np.int64)
    for ratio, mutual in [(0.85, True), (1.0, False), (0.6, True)]:
        parts = _select_segments(sim.reshape(2, 15, 41).reshape(30, 41), 2, seg, ratio, mutual)
        for b, (iq, ir, d, counts) in enumerate(parts):
            off = np.concatenate([[0], np.cumsum(counts)])
            for s in range(len(seg) - 1):
                block = sim[b * 15 : (b + 1) * 15, seg[s] : seg[s + 1]]
                got = Matches(iq[off[s] : off[s + 1]], ir[off[s] : off[s + 1]], d[off[s] : off[s + 1]])
                want = _select_numpy(block, ratio, mutual) if block.size else Matches.empty()
                _assert_same(got, want, exact=True)


def test_parallel_kernel_equals_serial_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kernels.segments_kernel(1, 1 << 30) is kernels.mnn_ratio_segments_serial
    assert kernels.segments_kernel(8, 10) is kernels.mnn_ratio_segments_serial
    q, qm, ref, offsets, refs = _problem(17, 90, [0, 40, 1, 70, 3, 0, 55, 20])
    serial = match_one_to_many(q, ref, offsets, mirrored=qm)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMS", 0)
    if numba.get_num_threads() > 1:
        assert kernels.segments_kernel(2, 1).__wrapped__ is kernels.mnn_ratio_segments
    par = match_one_to_many(q, ref, offsets, mirrored=qm)
    for a, b in ((par.plain, serial.plain), (par.mirrored, serial.mirrored)):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        for r in range(len(refs)):
            _assert_same(a[r], b[r], exact=True)
    _check_batch(par.plain, q, refs, 0.85, True)


def test_pair_matcher_equals_reference_and_one_to_many() -> None:
    q, _, _, _, refs = _problem(11, 120, [90, 130])
    for r in refs:
        _assert_same(match_mnn_ratio(q, r), match_mnn_ratio_numpy(q, r))
    assert len(match_mnn_ratio(q[:0], refs[0])) == 0 and len(match_mnn_ratio(q, refs[0][:0])) == 0


def test_mirrored_equals_two_separate_calls() -> None:
    q, qm, ref, offsets, refs = _problem(12, 100, [50, 0, 120, 7])
    both = match_one_to_many(q, ref, offsets, ratio=0.9, mutual=True, mirrored=qm)
    plain = match_one_to_many(q, ref, offsets, ratio=0.9, mutual=True).plain
    mirr = match_one_to_many(qm, ref, offsets, ratio=0.9, mutual=True).plain
    for got, want in ((both.plain, plain), (both.mirrored, mirr)):
        for r in range(len(refs)):
            _assert_same(got[r], want[r], exact=True)
        np.testing.assert_array_equal(got.offsets, want.offsets)


def test_chunking_and_float16_references_do_not_change_results() -> None:
    q, qm, ref, offsets, refs = _problem(13, 50, [30, 0, 200, 15, 15, 1, 40])
    whole = match_one_to_many(q, ref, offsets, mirrored=qm)
    tiny = match_one_to_many(q, ref, offsets, mirrored=qm, chunk_bytes=1)  # one reference per chunk
    small = match_one_to_many(q, ref, offsets, mirrored=qm, chunk_bytes=4 * 100 * 40)  # 40 columns, 200 splits
    for res in (tiny, small):
        for a, b in ((res.plain, whole.plain), (res.mirrored, whole.mirrored)):
            for r in range(len(refs)):
                _assert_same(a[r], b[r], exact=True)
    ref16 = ref.astype(np.float16)
    half = match_one_to_many(q, ref16, offsets, chunk_bytes=4 * 50 * 64)
    _check_batch(half.plain, q, [ref16[offsets[i] : offsets[i + 1]] for i in range(len(refs))], 0.85, True)


def test_match_batch_access() -> None:
    q, _, ref, offsets, _ = _problem(14, 60, [20, 0, 30])
    batch = match_one_to_many(q, ref, offsets).plain
    assert len(batch) == 3 and len(batch.to_list()) == 3
    assert batch.offsets[0] == 0 and batch.offsets[-1] == len(batch.idx_q)
    _assert_same(batch[-1], batch[2], exact=True)
    assert len(batch[1]) == 0
    with pytest.raises(IndexError):
        batch[3]
    empty = match_one_to_many(q, ref[:0], np.zeros(1, np.int64)).plain
    assert len(empty) == 0


# ------------------------------------------------------------------------------------------------------- torch
@pytest.mark.parametrize("seed,n,sizes", CASES)
@pytest.mark.parametrize("ratio,mutual", [(0.85, True), (0.5, False)])
def test_torch_matches_reference(seed: int, n: int, sizes: list[int], ratio: float, mutual: bool) -> None:
    q, qm, ref, offsets, refs = _problem(seed, n, [int(s) for s in sizes])
    res = match_one_to_many_torch(torch.from_numpy(q), torch.from_numpy(ref), torch.from_numpy(offsets),
                                  ratio=ratio, mutual=mutual, mirrored=torch.from_numpy(qm),
                                  chunk_elems=2 * max(n, 1) * 64 * 8)
    _check_batch(res.plain, q, refs, ratio, mutual)
    _check_batch(res.mirrored, qm, refs, ratio, mutual)


def test_torch_mirrored_equals_two_separate_calls() -> None:
    q, qm, ref, offsets, refs = _problem(15, 80, [40, 0, 90])
    tq, tqm, tref = torch.from_numpy(q), torch.from_numpy(qm), torch.from_numpy(ref)
    both = match_one_to_many_torch(tq, tref, offsets, mirrored=tqm)
    for got, alone in ((both.plain, match_one_to_many_torch(tq, tref, offsets).plain),
                       (both.mirrored, match_one_to_many_torch(tqm, tref, offsets).plain)):
        for r in range(len(refs)):
            _assert_same(got[r], alone[r], exact=True)


# ------------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_typed_errors() -> None:
    q, qm, ref, offsets, _ = _problem(16, 10, [5, 5])
    with pytest.raises(MatchingInputError, match="ratio"):
        match_one_to_many(q, ref, offsets, ratio=0.0)
    with pytest.raises(MatchingInputError, match="ratio"):
        match_mnn_ratio_numpy(q, ref, ratio=1.5)
    with pytest.raises(MatchingInputError, match="ref_offsets"):
        match_one_to_many(q, ref, np.array([0, 5, 9]))
    with pytest.raises(MatchingInputError, match="ref_offsets"):
        match_one_to_many(q, ref, np.array([0, 6, 4, 10]))
    with pytest.raises(MatchingInputError, match="ref_offsets"):
        match_one_to_many(q, ref, np.array([0.0, 10.0]))
    with pytest.raises(MatchingInputError, match="ref_desc"):
        match_one_to_many(q, ref[:, :64], offsets)
    with pytest.raises(MatchingInputError, match="desc_q"):
        match_one_to_many(q[0], ref, offsets)
    with pytest.raises(MatchingInputError, match="desc_q"):
        match_one_to_many(q.astype(np.int32), ref, offsets)
    with pytest.raises(MatchingInputError, match="mirrored"):
        match_one_to_many(q, ref, offsets, mirrored=qm[:5])
    with pytest.raises(MatchingInputError, match="disagree"):
        match_one_to_many_torch(torch.from_numpy(q), torch.from_numpy(ref[:, :64]), offsets)
    with pytest.raises(MatchingInputError, match="ref_desc"):
        match_one_to_many_torch(torch.from_numpy(q), ref, offsets)


def test_parallel_kernel_keeps_the_host_torch_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numba's OpenMP pool sets OpenMP's thread count, which torch reads: the host's setting is put back."""
    torch = pytest.importorskip("torch")
    q, qm, ref, offsets, _ = _problem(5, 60, [0, 30, 40, 12])
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMS", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        match_one_to_many(q, ref, offsets, mirrored=qm)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
