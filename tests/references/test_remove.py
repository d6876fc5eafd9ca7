"""Editing an on-disk index: removing references (never returned again, no rebuild, the id free to be indexed again)
and adding pictures given in memory (bytes, arrays, PIL images) with ids."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from matcher.cli import main
from matcher.local.types import LocalFeatures
from matcher.references.disk.store import IndexStore
from matcher.retrieval.index import ReferenceIndex, RowExclusion
from matcher.retrieval.voting import KeypointVoter
from tests.references.test_disk_store import CONFIG, _make_images

N_REFS = 8


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(reference folder, index folder, the store's GlobalDescriptor) of an 8-picture index."""
    root = tmp_path_factory.mktemp("remove")
    refs = root / "refs"
    _make_images(refs, N_REFS, seed=3)
    with IndexStore.open(root / "index", CONFIG, create=True) as store:
        store.add_references(refs, progress=False)
        descriptor = store._writer._descriptor
    return refs, root / "index", descriptor


def _copy(index: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "index_copy"
    shutil.copytree(index, dst)
    return dst


# ------------------------------------------------------------------------------------------------- exclusion
def test_row_exclusion_matches_a_filtered_search():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    flat = faiss.IndexFlatL2(8)
    flat.add(x)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 4)
    ivf.train(np.repeat(x, 4, axis=0) + rng.normal(scale=0.01, size=(200, 8)).astype(np.float32))
    ivf.add(x)
    ivf.nprobe = 4
    gone = [0, 3, 7, 11]
    for index in (flat, ivf):
        _, rows = RowExclusion(gone).search(index, x[:12], 5)
        _, full = index.search(x[:12], 50)
        want = [[r for r in row if r not in gone][:5] for row in full]
        assert rows.tolist() == want
    assert RowExclusion().params(flat) is None and len(RowExclusion([2, 2, 1])) == 2


def test_reference_index_remove_readd_save_load(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    gi = ReferenceIndex.create(16, "m", None)
    gi.add([f"r{i}" for i in range(10)], x)
    gi.remove([2, 5])
    res = gi.search(x, 10)
    assert not np.isin(res.rows, [2, 5]).any() and (res.rows[:, -2:] == -1).all() and gi.n_live == 8
    assert np.isneginf(res.scores[:, -2:]).all()
    gi.add(["r2"], x[2:3] * 2)  # the id is free again: a new row
    assert gi.search(x[2:3], 1).rows[0, 0] == 10
    gi.save(tmp_path / "g")
    back = ReferenceIndex.load(tmp_path / "g")
    assert back.removed.rows.tolist() == [2, 5] and back.search(x[2:3], 1).rows[0, 0] == 10
    assert np.array_equal(back.search(x, 4).rows, gi.search(x, 4).rows)
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    meta["removed"] = [99]
    (tmp_path / "g" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupt list of removed rows"):
        ReferenceIndex.load(tmp_path / "g")
    rebuilt = ReferenceIndex.from_rows(16, "m", None, None, gi.ids, np.concatenate([x, x[2:3] * 2]), [2, 5])
    assert np.array_equal(rebuilt.search(x, 4).rows, gi.search(x, 4).rows)


def test_voter_excludes_removed_references():
    rng = np.random.default_rng(2)
    feats = [LocalFeatures(rng.normal(size=(30, 2)).astype(np.float32), rng.random(30).astype(np.float32),
                           rng.random(30).astype(np.float32), rng.normal(size=(30, 16)).astype(np.float32),
                           (100, 100)) for _ in range(4)]
    voter = KeypointVoter.from_features(feats)
    q = feats[1]
    assert voter.vote(q, 2, mirrored=False)[0] == (1, 30)
    voter.exclude([1])
    votes = dict(voter.vote(q, 4, min_votes=-1, mirrored=False))
    assert votes[1] == 0 and sum(votes.values()) == 30  # every keypoint voted for another reference
    voter.exclude([])
    assert voter.vote(q, 1, mirrored=False)[0] == (1, 30)


# ------------------------------------------------------------------------------------------------- the store
def test_remove_is_never_returned_and_survives_reopening(small, tmp_path):
    refs, index, descriptor = small
    idx = _copy(index, tmp_path)
    with IndexStore.open(idx, descriptor=descriptor) as store:
        store.keypoint_voter()  # a saved voter that predates the removal
        before_voter = sorted((idx / "voter").glob("voter-*.faiss"))
        s = store.remove(["r03", "nope", "r03"])
        assert (s.removed, s.missing, s.total) == (["r03"], ["nope"], N_REFS - 1)
        assert "r03" not in store and store.info["count"] == N_REFS - 1 and store.info["removed_count"] == 1
        assert len(store) == N_REFS and "r03" not in store.live_ids()
        own = np.asarray(Image.open(refs / "r03.jpg").convert("RGB"))
        q = descriptor.describe([own])
        assert 3 not in store.global_index.search(q, N_REFS).rows[0]
        assert 3 not in store.search_regions(q, N_REFS * 4)[0][0]
        assert store.keypoint_voter().excluded_refs.tolist() == [3]
    assert sorted((idx / "voter").glob("voter-*.faiss")) == before_voter  # nothing rebuilt
    with IndexStore.open(idx) as store:  # another process: the removal is on disk
        assert "r03" not in store and store.removed_rows.tolist() == [3]
        assert 3 not in store.global_index.search(q, N_REFS).rows[0]
        assert store.keypoint_voter().excluded_refs.tolist() == [3]
    shutil.rmtree(idx / "global")  # a lost faiss index is rebuilt without the removed row
    with IndexStore.open(idx) as store:
        assert 3 not in store.global_index.search(q, N_REFS).rows[0]


def test_removed_id_can_be_indexed_again(small, tmp_path):
    refs, index, descriptor = small
    idx = _copy(index, tmp_path)
    with IndexStore.open(idx, descriptor=descriptor) as store:
        store.remove(["r05"])
        s = store.add_references([refs / "r05.jpg"])
        assert (s.added, s.already, s.skipped) == (1, 0, [])  # the same picture, a new row (its data reused)
        assert store.row_of("r05") == N_REFS and store.info["count"] == N_REFS
        own = np.asarray(Image.open(refs / "r05.jpg").convert("RGB"))
        assert store.global_index.search(descriptor.describe([own]), 1).rows[0, 0] == N_REFS
        store.remove(["r05"])
        other = tmp_path / "other" / "r05.png"  # other content under the freed id
        other.parent.mkdir()
        Image.fromarray(255 - own).save(other)
        assert store.add_references([other]).added == 1
    with IndexStore.open(idx) as store:
        assert store.removed_rows.tolist() == [5, N_REFS] and store.row_of("r05") == N_REFS + 1
        assert store.ids.count("r05") == 3 and store.info["count"] == N_REFS


def test_add_images_in_memory(small, tmp_path):
    refs, index, descriptor = small
    idx = _copy(index, tmp_path)
    data = (refs / "r01.jpg").read_bytes()
    arr = np.asarray(Image.open(refs / "r02.jpg").convert("RGB"))[::-1].copy()
    pil = Image.fromarray(arr[:, ::-1].copy())
    with IndexStore.open(idx, descriptor=descriptor) as store:
        s = store.add_images([("r01", data), ("upside", arr), ("pil", pil), ("bad", b"not an image"),
                              ("tiny", np.zeros((8, 8, 3), np.uint8))])
        assert (s.added, s.already) == (2, 1)  # r01's bytes are the indexed file's content
        assert sorted((k.path, k.reason) for k in s.skipped) == [("<memory:bad>", "not_an_image"),
                                                                 ("<memory:tiny>", "too_small")]
        assert store.records([store.row_of("upside")])[0]["path"] == "<memory:upside>"
        again = store.add_images({"upside": arr.copy(), "pil2": pil})
        assert (again.added, again.already) == (1, 1)  # same array content; a PIL image already indexed as "pil"
        clash = store.add_images({"pil": arr})
        assert [k.reason for k in clash.skipped] == ["id_conflict"]
        for bad in ({"": data}, {"a\nb": data}, [("x", data), ("x", data)]):
            with pytest.raises(ValueError):
                store.add_images(bad)
        with pytest.raises(TypeError, match="expected bytes"):
            store.add_images({"n": 3})


def test_cli_remove(small, tmp_path, capsys):
    _, index, _ = small
    idx = _copy(index, tmp_path)
    assert main(["index", "--index", str(idx), "--remove", "r00", "r07", "zz"]) == 0
    out = capsys.readouterr()
    assert "removed 2" in out.out and "zz" in out.err
    with IndexStore.open(idx) as store:
        assert "r00" not in store and "r07" not in store and store.info["count"] == N_REFS - 2
    assert main(["index", "--index", str(tmp_path / "none"), "--remove", "r01"]) == 2


def test_load_error_path_for_memory_pictures():
    from matcher.io.inputs import MemoryPicture, is_in_memory, memory_pictures

    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, "PNG")
    assert is_in_memory({"a": buf.getvalue()}) and is_in_memory([("a", buf.getvalue())])
    assert not is_in_memory("folder") and not is_in_memory([Path("a.jpg")]) and not is_in_memory([])
    (p,) = memory_pictures([("a", Path("x/a.jpg"))])
    assert p.path == Path("x/a.jpg") and p.label == "x/a.jpg"
    assert MemoryPicture("b", buf.getvalue()).content()[0] == MemoryPicture("c", buf.getvalue()).content()[0]
