"""Keypoint voting: vote counting against a plain loop, a crop's keypoints voting for its source, chunked and
grown voters agreeing with one build, and saving / loading."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matcher.benchmark.demo_photos import demo_photo
from matcher.config import MatcherConfig
from matcher.local.engine import LocalEngine
from matcher.retrieval.voting import KeypointVoter, VoterCorruptError, VoterFileError, count_votes, file_state


def test_count_votes_matches_a_loop():
    rng = np.random.default_rng(0)
    sizes = np.array([5, 0, 9, 1, 0, 20, 15])  # references without keypoints among them
    owner = np.repeat(np.arange(7), sizes)  # the keypoint-to-reference table a loop reads
    nn = rng.integers(-1, 50, size=200)
    ref = np.zeros(7, np.int64)
    for j in nn:
        if j >= 0:
            ref[owner[j]] += 1
    assert np.array_equal(count_votes(np.cumsum(sizes), nn, 7), ref)
    assert np.array_equal(count_votes(np.cumsum(sizes), np.array([-1, -1]), 7), np.zeros(7, np.int64))


def test_crop_and_mirror_vote_for_their_source():
    engine = LocalEngine(MatcherConfig.make(local={"max_keypoints": 400}))
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    feats = [engine.reference_features(demo_photo(n)) for n in names]
    voter = KeypointVoter.from_features(feats)
    assert len(voter) == sum(f.n for f in feats)
    crop = demo_photo("chelsea")[50:250, 100:350]
    q = engine.query_features(crop).features[0]
    votes = voter.vote(q, top=2)
    assert votes and votes[0][0] == names.index("chelsea") and votes[0][1] > 20
    mirrored = engine.query_features(np.ascontiguousarray(crop[:, ::-1])).features[0]
    assert voter.vote(mirrored, top=1)[0][0] == names.index("chelsea")
    assert voter.vote(mirrored, top=1, mirrored=False) == [] or \
        voter.vote(mirrored, top=1, mirrored=False)[0][1] < votes[0][1]


def test_ivf_path_and_empty_inputs():
    engine = LocalEngine(MatcherConfig.make(local={"max_keypoints": 300}))
    feats = [engine.reference_features(demo_photo(n)) for n in ("astronaut", "coffee", "rocket")]
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=64)  # forces IVF on a tiny set
    q = engine.query_features(demo_photo("coffee")[40:300, 60:400]).features[0]
    assert voter.vote(q, top=1)[0][0] == 1
    empty = KeypointVoter.from_features([])
    assert len(empty) == 0 and empty.vote(q, top=3) == []
    assert voter.vote(q, top=0) == []


def _feats(n_keypoints: int = 300) -> list:
    engine = LocalEngine(MatcherConfig.make(local={"max_keypoints": n_keypoints}))
    return [engine.reference_features(demo_photo(n)) for n in ("astronaut", "coffee", "rocket", "chelsea")], engine


def test_chunks_add_and_one_build_agree():
    feats, engine = _feats()
    q = engine.query_features(demo_photo("rocket")[30:300, 40:380]).features[0]
    whole = KeypointVoter.from_features(feats, exact_below=10, nprobe=64)
    chunked = KeypointVoter.from_chunks(lambda: [feats[:1], feats[1:3], feats[3:]], exact_below=10, nprobe=64)
    assert np.array_equal(whole.sizes, chunked.sizes) and np.array_equal(whole.owner, chunked.owner)
    assert whole.vote(q, top=4) == chunked.vote(q, top=4)
    grown = KeypointVoter.from_features(feats[:2], exact_below=10, nprobe=64)
    grown.add(feats[2:])
    assert grown.n_refs == 4 and len(grown) == len(whole) and np.array_equal(grown.owner, whole.owner)
    assert grown.vote(q, top=1)[0][0] == 2
    exact = KeypointVoter.from_features(feats)
    assert exact.trained_on == 0 and exact.outgrown(200_000) and not exact.outgrown(199_999)
    assert whole.trained_on == len(whole) and whole.outgrown(4 * len(whole) + 1) and not whole.outgrown(4 * len(whole))


def test_save_load_round_trip_and_bad_files(tmp_path):
    feats, engine = _feats()
    q = engine.query_features(demo_photo("coffee")[40:300, 60:400]).features[0]
    for kw in ({}, {"exact_below": 10, "nprobe": 64}):
        voter = KeypointVoter.from_features(feats, **kw)
        folder = tmp_path / f"v{len(kw)}"
        voter.save(folder, owner_key="abc")
        assert KeypointVoter.read_meta(folder)["owner_key"] == "abc"
        back = KeypointVoter.load(folder, nprobe=kw.get("nprobe", 8))
        assert back.vote(q, top=4) == voter.vote(q, top=4) and back.trained_on == voter.trained_on
        voter.save(folder)  # a second save replaces the first file
        assert len(list(folder.glob("voter-*.faiss"))) == 1
    with pytest.raises(VoterFileError, match="no saved keypoint voter"):
        KeypointVoter.load(tmp_path / "nothing")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "voter.json").write_text("{not json")
    with pytest.raises(VoterFileError, match="unreadable"):
        KeypointVoter.load(tmp_path / "nothing")
    f = next((tmp_path / "v0").glob("voter-*.faiss"))
    f.write_bytes(f.read_bytes()[:100])  # truncated
    with pytest.raises(VoterCorruptError, match=f"{f.name}: truncated or overwritten"):
        KeypointVoter.load(tmp_path / "v0")


# --------------------------------------------------------------------------------------------------- codes, files
@pytest.mark.parametrize("codes, kind, code_size", [("flat", "IndexIVFFlat", 512), ("sq8", "IndexIVFScalarQuantizer", 128),
                                                   ("pq32", "IndexIVFPQ", 32), ("pq64", "IndexIVFPQ", 64),
                                                   ("pq32fs", "IndexIVFPQFastScan", 16),
                                                   ("pq64fs", "IndexIVFPQFastScan", 32)])
def test_codes_vote_save_and_map(tmp_path, codes, kind, code_size):
    feats, engine = _feats()
    q = engine.query_features(demo_photo("coffee")[40:300, 60:400]).features[0]
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=64, codes=codes)
    assert type(voter.index).__name__ == kind and voter.index.code_size == code_size and voter.codes == codes
    assert voter.vote(q, top=1)[0][0] == 1
    voter.save(tmp_path)
    meta = KeypointVoter.read_meta(tmp_path)
    assert meta["codes"] == codes and meta["crc32"] > 0 and len(meta["state"]) == 5
    mapped = KeypointVoter.load(tmp_path, nprobe=64, mmap=True)
    assert mapped.mapped and mapped.codes == codes and mapped.vote(q, top=4) == voter.vote(q, top=4)
    if codes in ("pq32", "pq64"):  # no precomputed distance table held per process
        assert voter.index.use_precomputed_table == mapped.index.use_precomputed_table == -1
    mapped.add(feats[:1])  # a mapped voter is copied into memory before it grows (faiss would abort)
    assert not mapped.mapped and mapped.n_refs == len(feats) + 1 and len(mapped) == len(voter) + feats[0].n
    assert mapped.vote(q, top=1)[0][0] == 1  # the added copy of reference 0 leaves the crop's vote as it was
    mapped.exclude([1])  # removed references leave the votes (an ID selector, fast-scan lists included)
    assert 1 not in [r for r, _ in mapped.vote(q, top=4)]
    exact = KeypointVoter.from_features(feats, codes=codes)  # below exact_below: float32 whatever the codes
    assert type(exact.index).__name__ == "IndexFlatL2"
    exact.save(tmp_path / "exact")
    back = KeypointVoter.load(tmp_path / "exact", mmap=True)
    back.add(feats[:1])
    assert len(back) == len(exact) + feats[0].n and back.vote(q, top=1)[0][0] == 1
    with pytest.raises(ValueError, match="voter codes must be one of"):
        KeypointVoter.from_features(feats, codes="pq7")


def test_tampered_voter_file_is_refused_by_name(tmp_path):
    import os
    import time

    feats, _ = _feats()
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=64, codes="sq8")
    voter.save(tmp_path)
    meta = KeypointVoter.read_meta(tmp_path)
    f = tmp_path / meta["faiss"]
    KeypointVoter.load(tmp_path)  # the state recorded at save: no full read
    time.sleep(0.05)  # coarse file-system clocks: let the write below get another mtime / ctime
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    f.write_bytes(bytes(data))
    with pytest.raises(VoterCorruptError, match=f"{f.name}: corrupt keypoint voter \\(CRC-32"):
        KeypointVoter.load(tmp_path)
    st = os.stat(f)
    data[len(data) // 2] ^= 0xFF  # put back, and a copy elsewhere (another file state) is verified once
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    KeypointVoter.load(tmp_path)
    assert json.loads((tmp_path / "verified.json").read_text())["state"] == list(file_state(f))
    with pytest.raises(VoterCorruptError, match="truncated or overwritten"):
        f.write_bytes(bytes(data[:-10]))
        KeypointVoter.load(tmp_path)


def test_graph_coarse_assignment_finds_the_flat_quantizer_rows():
    """Visiting every list through the centroid graph is exact search; at a small nprobe the graph's lists are
    the flat quantizer's; the graph is the same in every build; nprobe < 1 is refused."""
    feats, engine = _feats()
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=4)
    index = voter.index
    q = engine.query_features(demo_photo("chelsea")[20:260, 50:330]).features[0]
    x = np.concatenate([q.descriptors, q.mirrored]).astype(np.float32)
    index.nprobe = index.nlist
    exact_rows = index.search(x, 1)[1][:, 0]
    assert np.array_equal(voter.nearest(x, nprobe=index.nlist), exact_rows)
    index.nprobe = 4
    flat = index.search(x, 1)[1][:, 0]
    graph = voter.nearest(x, nprobe=4)
    assert np.mean(graph == flat) > 0.97
    again = KeypointVoter.from_features(feats, exact_below=10, nprobe=4)
    assert np.array_equal(again.nearest(x, nprobe=4), graph)
    assert voter.vote(q, top=1, nprobe=4)[0][0] == 3
    with pytest.raises(ValueError, match="at least 1"):
        voter.vote(q, top=1, nprobe=0)


def test_excluded_references_do_not_vote_through_the_graph():
    feats, engine = _feats()
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=8)
    q = engine.query_features(demo_photo("rocket")[30:300, 40:380]).features[0]
    assert voter.vote(q, top=1)[0][0] == 2
    voter.exclude([2])
    rows = voter.nearest(np.asarray(q.descriptors, np.float32), nprobe=8)
    assert not np.isin(rows[rows >= 0], np.flatnonzero(voter.owner == 2)).any()
    assert all(r != 2 for r, _ in voter.vote(q, top=4))


def test_threaded_scan_gives_the_one_thread_rows():
    faiss = pytest.importorskip("faiss")
    feats, engine = _feats()
    voter = KeypointVoter.from_features(feats, exact_below=10, nprobe=4)
    q = engine.query_features(demo_photo("coffee")).features[0]
    x = np.concatenate([q.descriptors, q.mirrored, q.descriptors[::-1]]).astype(np.float32)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = voter.nearest(x, nprobe=4)
        faiss.omp_set_num_threads(3)
        assert len(x) >= 3 * 128 and np.array_equal(voter.nearest(x, nprobe=4), one)
    finally:
        faiss.omp_set_num_threads(before)
