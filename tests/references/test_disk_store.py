"""The persistent reference index (matcher.references.disk, ``icd index``): build, resume, append, refuse, survive kill -9."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matcher.cli import main
from matcher.config import MatcherConfig
from matcher.references.disk.store import DB_NAME, IndexMismatchError, IndexStore, IndexStoreError
from matcher.references.features import FeatureStore
from matcher.retrieval.index import ReferenceIndex

REPO = Path(__file__).resolve().parents[2]
N_REFS = 24
CONFIG_OVERRIDES = {"pipeline": {"reference_regions": ["grid2"]}}  # 4 crops per reference keeps the tests fast
CONFIG = MatcherConfig.make(**CONFIG_OVERRIDES, index={"batch_size": 8})


def _photos() -> list[np.ndarray]:
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]


def _make_images(folder: Path, n: int, seed: int, prefix: str = "r") -> list[Path]:
    """``n`` distinct 200-300 px JPEG crops of scikit-image photos, tinted, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = src.shape[:2]
        ch, cw = int(rng.integers(200, 300)), int(rng.integers(200, 300))
        y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        im = src[y:y + ch, x:x + cw].astype(np.float32) * rng.uniform(0.7, 1.2, 3)
        p = folder / f"{prefix}{i:02d}.jpg"
        Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(p, quality=90)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(reference folder, index folder, the store's GlobalDescriptor) of an uninterrupted in-process build."""
    root = tmp_path_factory.mktemp("index_store")
    refs = root / "refs"
    _make_images(refs, N_REFS, seed=0)
    store = IndexStore.open(root / "index", CONFIG, create=True)
    summary = store.add_references(refs, progress=False)
    assert (summary.added, summary.already, summary.skipped) == (N_REFS, 0, [])
    descriptor = store._writer._descriptor
    store.close()
    return refs, root / "index", descriptor


def _copy(index: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "index_copy"
    shutil.copytree(index, dst)
    return dst


# --------------------------------------------------------------------------------------------------- build
def test_create_and_read_back(built):
    refs, index, _ = built
    with IndexStore.open(index) as store:  # config None: the stored one
        assert store.config.pipeline.reference_regions == ("grid2",)
        assert len(store) == N_REFS and store.ids == [f"r{i:02d}" for i in range(N_REFS)]
        rec = store.records([3, 0])
        assert [r["id"] for r in rec] == ["r03", "r00"] and rec[0]["path"] == str(refs / "r03.jpg")
        with Image.open(refs / "r03.jpg") as im:
            assert (rec[0]["width"], rec[0]["height"]) == im.size
        g = store.global_descriptors()
        assert g.shape == (N_REFS, 256) and g.dtype == np.float32 and np.all(np.linalg.norm(g, axis=1) > 0)
        assert len(store.global_index) == N_REFS and store.global_index.ids == store.ids
        tags, boxes, rdesc = store.region_descriptors(3)
        assert tags == ["grid2:r0c0", "grid2:r0c1", "grid2:r1c0", "grid2:r1c1"]
        assert boxes.dtype == np.int32 and boxes.shape == (4, 4) and rdesc.shape == (4, 256)
        assert boxes[:, 2].max() == rec[0]["width"] and boxes[:, 3].max() == rec[0]["height"]
        feats = store.local_features([0, 3])
        assert all(f.n > 20 and f.mirrored is None for f in feats)  # references match with plain descriptors
        assert feats[1].image_size == (rec[0]["width"], rec[0]["height"])
        assert store.background_descriptors().shape == (0, 256)
        info = store.info
        assert info["descriptor_model"] == "asl_lite0" and len(info["descriptor_sha256"]) == 64
        assert info["count"] == N_REFS and info["config.pipeline.reference_regions"] == ["grid2"]
    assert ReferenceIndex.load(index / "global").ids == [f"r{i:02d}" for i in range(N_REFS)]
    fs = FeatureStore(index / "local", info["local_signature"])
    assert len(fs) == N_REFS and fs.verify() == []


def test_rerun_skips_everything(built, tmp_path):
    refs, index, _ = built
    copy = _copy(index, tmp_path)
    before = IndexStore.open(copy)
    desc = before.global_descriptors()
    before.close()
    with IndexStore.open(copy, create=True) as store:  # create=True opens an existing compatible index
        s = store.add_references(refs, progress=False)
        assert (s.added, s.already, s.skipped, s.total) == (0, N_REFS, [], N_REFS)
        assert store._writer._descriptor is None  # nothing was decoded or described: the model was never loaded
        assert np.array_equal(store.global_descriptors(), desc)
    assert "already indexed 24" in str(s)


def test_search_finds_own_row_and_region_parent(built):
    _, index, descriptor = built
    with IndexStore.open(index, descriptor=descriptor) as store:
        res = store.global_index.search(store.global_descriptors(), 3)
        assert np.array_equal(res.rows[:, 0], np.arange(N_REFS)) and np.allclose(res.scores[:, 0], 1, atol=1e-4)
        # an edited copy (downscaled, brightened) of reference 7 retrieves it first
        with Image.open(store.records([7])[0]["path"]) as im:
            edited = np.asarray(im.convert("RGB").resize((im.width // 2, im.height // 2)), np.float32)
        edited = np.clip(edited * 1.15 + 10, 0, 255).astype(np.uint8)
        q = descriptor.describe([edited])
        assert store.global_index.search(q, 1).rows[0, 0] == 7
        # a reference's own crop (and a slightly shifted one) retrieves its parent through the region index
        with Image.open(store.records([11])[0]["path"]) as im:
            full = np.asarray(im.convert("RGB"))
        tags, boxes, _ = store.region_descriptors(11)
        assert tags[2] == "grid2:r1c0"
        x0, y0, x1, y1 = boxes[2]
        crops = [full[y0:y1, x0:x1], full[y0 + 4:y1 - 2, x0 + 3:x1 - 5]]
        rows, idx, cos = store.search_regions(descriptor.describe(crops), 3)
        assert rows[:, 0].tolist() == [11, 11] and idx[:, 0].tolist() == [2, 2]
        assert cos[0, 0] > 0.99 and np.all(np.diff(cos, axis=1) <= 1e-6)
        # per reference: distinct rows; padding past the collection
        rows, idx, cos = store.search_regions(descriptor.describe(crops[:1]), N_REFS + 5, per_reference=True)
        kept = rows[0][rows[0] >= 0]
        assert len(kept) == N_REFS == len(set(kept.tolist()))
        assert np.all(rows[0, N_REFS:] == -1) and np.all(np.isinf(cos[0, N_REFS:])) and np.all(idx[0, N_REFS:] == -1)
        with pytest.raises(ValueError, match="region queries"):
            store.search_regions(np.zeros((2, 7), np.float32), 3)
        with pytest.raises(IndexError, match="out of range"):
            store.records([N_REFS])


# --------------------------------------------------------------------------------------------------- append
def test_add_appends_without_touching_existing_rows(built, tmp_path):
    refs, index, descriptor = built
    copy = _copy(index, tmp_path)
    new = tmp_path / "new"
    _make_images(new, 3, seed=5, prefix="n")
    shutil.copy(refs / "r04.jpg", new / "twin.jpg")  # new id, content already indexed as r04
    shutil.copy(new / "n01.jpg", new / "n01b.jpg")  # new id, same content as another new file of the batch
    with IndexStore.open(copy, descriptor=descriptor) as store:
        before = store.global_descriptors()
        regions_before = store.region_descriptors(5)
        shard_files = sorted(p.name for p in (copy / "local").glob("shard-*.bin"))
        s = store.add_references(new, progress=False)
        assert (s.added, s.already, s.skipped) == (5, 0, [])
        assert store.ids == [f"r{i:02d}" for i in range(N_REFS)] + ["n00", "n01", "n01b", "n02", "twin"]
        after = store.global_descriptors()
        assert np.array_equal(after[:N_REFS], before)
        assert np.array_equal(after[-1], before[4])  # the twin reuses r04's descriptor (not decoded)
        assert np.array_equal(after[N_REFS + 1], after[N_REFS + 2])
        assert all(np.array_equal(a, b) for a, b in zip(store.region_descriptors(5), regions_before, strict=True))
        assert len(store.global_index) == N_REFS + 5
        assert store.global_index.search(after[[24, 25, 27]], 1).rows[:, 0].tolist() == [24, 25, 27]
        assert store.local_features([N_REFS + 4])[0].n == store.local_features([4])[0].n
    # old shards are untouched; the saved faiss index agrees on reopening
    for name in shard_files:
        assert (copy / "local" / name).read_bytes() == (index / "local" / name).read_bytes()
    with IndexStore.open(copy) as store:
        assert len(store.global_index) == len(store) == N_REFS + 5


def test_cli_add_needs_existing_index(tmp_path, capsys):
    assert main(["index", str(tmp_path), "--index", str(tmp_path / "none"), "--add", "--no-progress"]) == 2
    assert "--add needs an existing index" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# --------------------------------------------------------------------------------------------------- refusals
def test_mismatching_config_refused(built, tmp_path, capsys):
    _, index, _ = built
    with pytest.raises(IndexMismatchError, match=r"local\.working_size 512 vs 384") as err:
        IndexStore.open(index, MatcherConfig.make(**CONFIG_OVERRIDES, local={"working_size": 384}))
    assert err.value.differences == ["local.working_size 512 vs 384"]
    with pytest.raises(IndexMismatchError, match="pipeline.reference_regions"):
        IndexStore.open(index, MatcherConfig.make(pipeline={"reference_regions": ["grid3"]}))
    other = tmp_path / "other_weights.pt"
    other.write_bytes((REPO / "weights" / "asl_lite0_256.pt").read_bytes() + b"x")
    with pytest.raises(IndexMismatchError, match="descriptor weights sha256 96783502"):
        IndexStore.open(index, MatcherConfig.make(**CONFIG_OVERRIDES, descriptor={"weights": str(other)}))
    # settings that do not shape stored data may differ
    with IndexStore.open(index, MatcherConfig.make(**CONFIG_OVERRIDES, local={"ratio": 0.7}, threshold=0.3)) as s:
        assert s.config.local.ratio == 0.7 and len(s) == N_REFS
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**CONFIG_OVERRIDES, "local": {"working_size": 384}}))
    assert main(["index", str(tmp_path), "--index", str(index), "--config", str(cfg), "--no-progress"]) == 2
    assert "local.working_size 512 vs 384" in capsys.readouterr().err


def test_not_an_index_old_format_corrupt(built, tmp_path):
    _, index, _ = built
    with pytest.raises(IndexStoreError, match="no icd-matcher index here"):
        IndexStore.open(tmp_path / "missing")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    with pytest.raises(IndexStoreError, match="not empty and holds no index"):
        IndexStore.open(photos, create=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexStoreError, match=rf"{bad / DB_NAME}.*not an icd-matcher index database"):
        IndexStore.open(bad)
    newer = _copy(index, tmp_path)
    with sqlite3.connect(newer / DB_NAME) as con:
        con.execute("UPDATE info SET value = '2' WHERE key = 'format_version'")
    con.close()
    with pytest.raises(IndexStoreError, match="format version 2 was written by a newer"):
        IndexStore.open(newer)


def test_stale_or_missing_faiss_index_is_rebuilt(built, tmp_path):
    _, index, _ = built
    copy = _copy(index, tmp_path)
    with IndexStore.open(copy) as store:
        ref = store.global_descriptors()
    small = ReferenceIndex.create(256, "asl_lite0", store.info["descriptor_sha256"])
    small.add(["r00"], ref[:1])
    small.save(copy / "global")  # as if a crash left an older, smaller index
    with IndexStore.open(copy) as store:
        assert len(store.global_index) == N_REFS
        assert np.array_equal(store.global_index.search(ref, 1).rows[:, 0], np.arange(N_REFS))
    assert len(ReferenceIndex.load(copy / "global")) == N_REFS  # and written back
    shutil.rmtree(copy / "global")
    with IndexStore.open(copy) as store:
        assert len(store.global_index) == N_REFS


def test_one_writer_at_a_time(built, tmp_path):
    refs, index, _ = built
    copy = _copy(index, tmp_path)
    fd = os.open(copy / "write.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer
        with IndexStore.open(copy) as store:  # reading is fine
            assert len(store) == N_REFS
            with pytest.raises(IndexStoreError, match="being written by another process"):
                store.add_references(refs, progress=False)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------- bad input
def test_bad_files_skipped_and_listed(built, tmp_path, capsys):
    refs, _, _ = built
    src = tmp_path / "mixed"
    src.mkdir()
    for name in ("r01.jpg", "r02.jpg"):
        shutil.copy(refs / name, src / name)
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.jpg").write_text("not a picture at all\n" * 20)
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(src / "tiny.jpg")
    (src / "notes.txt").write_text("hello")
    bg = tmp_path / "bg"
    _make_images(bg, 2, seed=9, prefix="b")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CONFIG_OVERRIDES))
    idx = tmp_path / "index"
    argv = ["index", str(src), "--index", str(idx), "--background", str(bg), "--config", str(cfg), "--no-progress"]
    assert main(argv) == 3
    out = capsys.readouterr()
    assert "references: added 2" in out.out and "background: added 2" in out.out
    with open(idx / "skipped.csv", newline="") as fh:
        reasons = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert reasons == {"empty.jpg": "empty", "text.jpg": "not_an_image", "tiny.jpg": "too_small",
                       "notes.txt": "not_an_image_extension"}
    with IndexStore.open(idx) as store:
        assert store.ids == ["r01", "r02"] and store.background_descriptors().shape == (2, 256)
        # an id already indexed with other content is refused with a reason, never overwritten
        conflict = tmp_path / "conflict"
        conflict.mkdir()
        shutil.copy(refs / "r05.jpg", conflict / "r01.jpg")
        s = store.add_references(conflict, progress=False)
        assert s.added == 0 and s.skipped[0].reason == "id_conflict" and "r01" in s.skipped[0].message
        s = store.add_references(bg, progress=False, background=True)
        assert (s.added, s.already) == (0, 2)


# --------------------------------------------------------------------------------------------------- kill -9
def test_kill_minus_9_then_resume(built, tmp_path):
    refs, index, descriptor = built
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CONFIG_OVERRIDES))
    idx = tmp_path / "killed"
    cmd = [sys.executable, "-m", "matcher.cli", "index", str(refs), "--index", str(idx), "--batch-size", "2",
           "--config", str(cfg), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    try:
        deadline = time.monotonic() + 60
        while committed < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if (idx / DB_NAME).exists():
                try:
                    con = sqlite3.connect(idx / DB_NAME, timeout=1)
                    committed = con.execute("SELECT COUNT(*) FROM refs").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    pass
        assert proc.poll() is None, "indexing ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 2 <= committed < N_REFS
    with IndexStore.open(idx) as store:  # the interrupted index opens; its faiss index is rebuilt to match
        n = len(store)
        assert 2 <= n < N_REFS and len(store.global_index) == n
    with IndexStore.open(idx, descriptor=descriptor) as store:
        s = store.add_references(refs, progress=False, batch_size=2)
        assert s.skipped == [] and s.already == n and s.added == N_REFS - n
    with IndexStore.open(idx) as store, IndexStore.open(index) as clean:
        assert store.ids == clean.ids  # every picture exactly once (ids are unique), same order
        assert len(store.global_index) == len(store) == N_REFS
        assert np.allclose(store.global_descriptors(), clean.global_descriptors(), atol=1e-4)
        assert all(np.allclose(store.region_descriptors(r)[2], clean.region_descriptors(r)[2], atol=1e-2)
                   for r in range(N_REFS))
        assert [f.n for f in store.local_features(range(N_REFS))] == [f.n for f in clean.local_features(range(N_REFS))]
        fs = FeatureStore(idx / "local", store.info["local_signature"])
        assert fs.verify() == [] and set(fs.ids()) == {r["sha256"] for r in store.records(range(N_REFS))}
    assert len(ReferenceIndex.load(idx / "global")) == N_REFS


# --------------------------------------------------------------------------------------------------- keypoint voter
def test_keypoint_voter_saved_grown_and_reloaded(built, tmp_path, monkeypatch):
    from matcher.retrieval.voting import KeypointVoter

    _refs, index, _ = built
    idx = _copy(index, tmp_path)
    meta = KeypointVoter.read_meta(idx / "voter")  # the indexing job left it ready
    assert meta["n_refs"] == N_REFS
    built_ = []
    real = KeypointVoter.from_chunks.__func__

    def counting(cls, *a, **k):
        built_.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(KeypointVoter, "from_chunks", classmethod(counting))
    with IndexStore.open(idx) as store:  # a query process loads it, never builds it
        v = store.keypoint_voter()
        assert v.n_refs == N_REFS and built_ == []
        assert v.vote(store.local_features([5])[0], top=1)[0][0] == 5
    _make_images(tmp_path / "more", 4, seed=5, prefix="m")
    with IndexStore.open(idx, CONFIG) as store:  # adding references appends to it, no rebuild
        summary = store.add_references(tmp_path / "more", progress=False)
        assert summary.added == 4 and "voter" in summary.seconds and built_ == []
    meta2 = KeypointVoter.read_meta(idx / "voter")
    assert meta2["n_refs"] == N_REFS + 4 and meta2["faiss"] != meta["faiss"]
    assert [p.name for p in (idx / "voter").glob("voter-*.faiss")] == [meta2["faiss"]]
    with IndexStore.open(idx) as store:
        assert store.keypoint_voter().vote(store.local_features([N_REFS + 2])[0], top=1)[0][0] == N_REFS + 2
        assert built_ == []
    meta2["rows_sha256"] = "0" * 64  # a voter saved for other references is never used: rebuilt
    (idx / "voter" / "voter.json").write_text(json.dumps(meta2))
    with IndexStore.open(idx) as store:
        assert store.keypoint_voter().n_refs == N_REFS + 4 and built_ == [1]
    assert KeypointVoter.read_meta(idx / "voter")["rows_sha256"] != "0" * 64
    with IndexStore.open(idx) as store:  # and the rebuilt one is saved
        store.keypoint_voter()
        assert built_ == [1]


def test_thumbnails_kept_for_the_dense_check(built, tmp_path):
    refs, index, _ = built
    copy = _copy(index, tmp_path)
    with IndexStore.open(copy) as store:
        thumbs = store.thumbnails([0, 3, N_REFS - 1])
        sizes = [(r["width"], r["height"]) for r in store.records([0, 3, N_REFS - 1])]
        for t, (w, h) in zip(thumbs, sizes, strict=True):
            assert t is not None and t.dtype == np.uint8 and max(t.shape) == min(128, max(w, h))
            assert abs(t.shape[1] / t.shape[0] - w / h) < 0.1
    con = sqlite3.connect(copy / DB_NAME)  # an index written before thumbnails were kept
    con.execute("DROP TABLE thumbnails")
    con.commit()
    con.close()
    with IndexStore.open(copy) as store:
        assert store.thumbnails([0, 1]) == [None, None]
        dup = tmp_path / "dup"
        dup.mkdir()
        (dup / "again.jpg").write_bytes(next(refs.glob("*.jpg")).read_bytes())  # stored content, a new id
        assert store.add_references(dup, progress=False).added == 1
        assert store.thumbnails([N_REFS]) == [None]  # the copied row has no thumbnail to copy


# --------------------------------------------------------------------------------------------------- faults, media
def _flip_byte(path: Path) -> None:
    """Change one byte in the middle of ``path`` (same size), after a pause: a coarse file-system clock then gives
    the write another mtime / ctime than the save had."""
    time.sleep(0.05)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_voter_is_reported_and_rebuilt(built, tmp_path, caplog):
    from matcher.retrieval.voting import KeypointVoter

    idx = _copy(built[1], tmp_path)
    meta = KeypointVoter.read_meta(idx / "voter")
    with IndexStore.open(idx) as store:
        sound = [store.keypoint_voter().vote(f, top=3) for f in store.local_features([1, 7])]
    _flip_byte(idx / "voter" / meta["faiss"])
    with caplog.at_level("WARNING"), IndexStore.open(idx) as store:
        v = store.keypoint_voter()  # refused by name, rebuilt from the feature store, same votes
        assert [v.vote(f, top=3) for f in store.local_features([1, 7])] == sound
    assert f"{meta['faiss']}: corrupt keypoint voter" in caplog.text and "rebuilding it" in caplog.text
    meta2 = KeypointVoter.read_meta(idx / "voter")  # and replaced on disk (the folder is writable)
    assert meta2["faiss"] != meta["faiss"] and [p.name for p in (idx / "voter").glob("*.faiss")] == [meta2["faiss"]]
    KeypointVoter.load(idx / "voter", verify=True)
    (idx / "voter" / meta2["faiss"]).write_bytes(b"")  # truncated: the same
    caplog.clear()
    with caplog.at_level("WARNING"), IndexStore.open(idx) as store:
        assert store.keypoint_voter().n_refs == N_REFS
    assert f"{meta2['faiss']}: truncated or overwritten keypoint voter" in caplog.text


def test_voter_codes_setting_rebuilds_the_saved_voter(built, tmp_path, monkeypatch):
    from matcher.retrieval.voting import KeypointVoter

    idx = _copy(built[1], tmp_path)
    shutil.rmtree(idx / "voter")
    real = KeypointVoter.from_chunks.__func__
    built_ = []

    def ivf(cls, *a, **k):  # an IVF voter on this small index (the default keeps it exact below 200k vectors)
        built_.append(k["codes"])
        return real(cls, *a, **{**k, "exact_below": 10})

    monkeypatch.setattr(KeypointVoter, "from_chunks", classmethod(ivf))
    with IndexStore.open(idx) as store:  # the stored configuration: the default codes
        assert store.keypoint_voter().codes == "pq32" and built_ == ["pq32"]
    for codes, builds in (("sq8", ["pq32", "sq8"]), ("sq8", ["pq32", "sq8"])):  # rebuilt once, then loaded
        config = MatcherConfig.make(pipeline={**CONFIG_OVERRIDES["pipeline"], "voting_codes": codes})
        with IndexStore.open(idx, config) as store:
            v = store.keypoint_voter()
            assert v.codes == codes and built_ == builds and type(v.index).__name__ == "IndexIVFScalarQuantizer"
            assert v.vote(store.local_features([4])[0], top=1)[0][0] == 4
    assert v.mapped and KeypointVoter.read_meta(idx / "voter")["codes"] == "sq8"


def test_index_built_before_voter_codes_keeps_its_flat_voter(built, tmp_path):
    idx = _copy(built[1], tmp_path)
    con = sqlite3.connect(idx / DB_NAME)
    stored = json.loads(con.execute("SELECT value FROM info WHERE key = 'config'").fetchone()[0])
    del stored["pipeline"]["voting_codes"]
    con.execute("UPDATE info SET value = ? WHERE key = 'config'", (json.dumps(stored),))
    con.commit()
    con.close()
    with IndexStore.open(idx) as store:
        assert store.config.pipeline.voting_codes == "flat"


def test_tampered_feature_shard_is_refused_by_name(built, tmp_path):
    from matcher.references.features import FeatureStoreError

    idx = _copy(built[1], tmp_path)
    shard = min((idx / "local").glob("shard-*.bin"))
    _flip_byte(shard)
    with IndexStore.open(idx) as store:
        assert store.local_features([N_REFS - 1])  # other shards are still read
        with pytest.raises(FeatureStoreError, match=f"{shard.name}: corrupt shard"):
            store.local_features([0])
    shard.write_bytes(shard.read_bytes()[:-7])
    with IndexStore.open(idx) as store, pytest.raises(FeatureStoreError, match=f"{shard.name}: truncated"):
        store.local_features([0])


def test_tampered_global_index_is_reported_and_rebuilt(built, tmp_path, caplog):
    idx = _copy(built[1], tmp_path)
    with IndexStore.open(idx) as store:
        q = store.global_descriptors()[:3]
        sound = store.global_index.search(q, 5).rows
    _flip_byte(idx / "global" / "index.faiss")
    with caplog.at_level("WARNING"), IndexStore.open(idx) as store:
        assert np.array_equal(store.global_index.search(q, 5).rows, sound)
    assert "index.faiss: corrupt global index" in caplog.text
    assert len(ReferenceIndex.load(idx / "global")) == N_REFS  # saved again, sound


def _region_queries(store: IndexStore) -> np.ndarray:
    """The stored crop descriptors of references 2, 9 and 17 (and 2's whole picture) as queries (M, D)."""
    parts = [store.region_descriptors(r)[2] for r in (2, 9, 17)]
    return np.concatenate([*parts, store.global_descriptors()[2:3]]).astype(np.float32)


def _region_hits(index: Path, q: np.ndarray) -> tuple[tuple[np.ndarray, ...], bool]:
    """(search_regions of ``q``, top 6 and per reference, and whether the crop index was memory-mapped)."""
    with IndexStore.open(index) as store:
        hits = (*store.search_regions(q, 6), *store.search_regions(q, 6, per_reference=True))
        return hits, store._region.mapped


def _same_hits(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_crop_index_saved_mapped_and_grown(built, tmp_path):
    """``icd index`` saves the crop index (crops/); a reader maps it and finds what one built from the database
    finds; an index without it (made before it existed) builds it and saves it; an added batch extends it; a saved
    crop index that covers only the first rows is extended in memory, then saved whole."""
    from matcher.references.disk.crops import read_crop_meta

    idx = _copy(built[1], tmp_path)
    meta = read_crop_meta(idx / "crops")
    assert meta is not None and meta["n_refs"] == N_REFS and meta["ntotal"] == 4 * N_REFS
    with IndexStore.open(idx) as store:
        q = _region_queries(store)
    saved, mapped = _region_hits(idx, q)
    assert mapped
    assert saved[0][:3, 0].tolist() == [2, 2, 2] and saved[1][:4, 0].tolist() == [0, 1, 2, 3]
    shutil.rmtree(idx / "crops")  # as an index made before crops/ existed: built from the database, then saved
    rebuilt, mapped = _region_hits(idx, q)
    assert not mapped and _same_hits(rebuilt, saved)
    assert read_crop_meta(idx / "crops")["n_refs"] == N_REFS
    assert _same_hits(_region_hits(idx, q)[0], saved)
    first = tmp_path / "crops_first"
    shutil.copytree(idx / "crops", first)
    new = tmp_path / "new"
    _make_images(new, 3, seed=6, prefix="n")
    with IndexStore.open(idx) as store:
        assert store.add_references(new, progress=False).added == 3
        q_new = np.concatenate([q, store.region_descriptors(N_REFS + 1)[2]])
    assert read_crop_meta(idx / "crops")["n_refs"] == N_REFS + 3
    grown, mapped = _region_hits(idx, q_new)
    assert mapped and grown[0][-4:, 0].tolist() == [N_REFS + 1] * 4
    shutil.rmtree(idx / "crops")
    shutil.copytree(first, idx / "crops")  # covers the first N_REFS rows only
    prefix, mapped = _region_hits(idx, q_new)
    assert not mapped and _same_hits(prefix, grown)
    assert read_crop_meta(idx / "crops")["n_refs"] == N_REFS + 3  # saved whole by the reader
    shutil.rmtree(idx / "crops")
    assert _same_hits(_region_hits(idx, q_new)[0], grown)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_crop_index_is_reported_and_rebuilt(built, tmp_path, caplog, damage):
    from matcher.references.disk.crops import read_crop_meta

    idx = _copy(built[1], tmp_path)
    with IndexStore.open(idx) as store:
        q = _region_queries(store)
    sound, _ = _region_hits(idx, q)
    path = idx / "crops" / "index.faiss"
    if damage == "flip":
        _flip_byte(path)
    else:
        path.write_bytes(path.read_bytes()[:-100])
    with caplog.at_level("WARNING"):
        hits, mapped = _region_hits(idx, q)
    assert _same_hits(hits, sound) and not mapped
    assert f"refused the saved crop index: {path}" in caplog.text
    assert ("contents changed" if damage == "flip" else "truncated") in caplog.text
    assert path.stat().st_size == read_crop_meta(idx / "crops")["bytes"]  # saved again, sound
    assert _region_hits(idx, q)[1]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder`` but SQLite's WAL files (which an emulated read-only folder
    cannot keep SQLite from making; a real read-only medium refuses them, see the mount test)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if not p.name.endswith(("-shm", "-wal"))}


def test_read_only_index_can_be_queried(built, tmp_path, monkeypatch):
    """A read-only medium, emulated (the tests run as root, whom chmod does not stop): the folder reports itself
    not writable (os.access, as on a read-only file system) and every write under it fails with EROFS. Queries
    work, an out-of-date global index and voter are rebuilt in memory, and nothing is written."""
    import builtins
    import errno

    idx = _copy(built[1], tmp_path)
    shutil.rmtree(idx / "global")  # both out of date: rebuilt in memory only
    shutil.rmtree(idx / "voter")
    shutil.rmtree(idx / "crops")  # built in memory from the database, not saved
    (idx / "write.lock").unlink(missing_ok=True)
    before = _snapshot(idx)
    root = str(idx)

    def erofs(path: object) -> OSError:
        return OSError(errno.EROFS, "Read-only file system", str(path))

    real_access, real_open, real_os_open = os.access, builtins.open, os.open

    def access(path, mode, *a, **k):
        if str(path).startswith(root) and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **k)

    def fake_open(file, mode="r", *a, **k):
        if str(file).startswith(root) and any(c in mode for c in "wax+"):
            raise erofs(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        if str(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise erofs(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    with IndexStore.open(idx) as store:
        assert not store.writable
        q = store.global_descriptors()[:2]
        assert store.global_index.search(q, 1).rows[:, 0].tolist() == [0, 1]
        assert store.keypoint_voter().vote(store.local_features([3])[0], top=1)[0][0] == 3
        assert store.search_regions(store.region_descriptors(5)[2], 1)[0][:, 0].tolist() == [5] * 4
        with pytest.raises((IndexStoreError, OSError)):
            store.add_references(built[0], progress=False)
    assert _snapshot(idx) == before


def test_read_only_mount_can_be_queried(built, tmp_path):
    """The real thing where this machine allows a read-only bind mount (root with CAP_SYS_ADMIN; skipped
    elsewhere): ``icd match --index`` on the mounted copy writes nothing and finds the copies."""
    idx = _copy(built[1], tmp_path)
    (idx / "write.lock").unlink(missing_ok=True)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mount = subprocess.run(["mount", "--bind", "-o", "ro", str(idx), str(mnt)], check=False, capture_output=True)
    if mount.returncode != 0:
        pytest.skip("no read-only bind mount here (needs root and CAP_SYS_ADMIN)")
    try:
        assert not os.access(mnt, os.W_OK)
        before = _snapshot(mnt)
        queries = tmp_path / "q"
        queries.mkdir()
        for p in sorted(built[0].glob("*.jpg"))[:2]:
            im = np.asarray(Image.open(p))
            Image.fromarray(im[10:-10, 10:-10]).save(queries / f"q_{p.stem}.jpg", quality=90)
        out = tmp_path / "out.csv"
        assert main(["-q", "match", "--queries", str(queries), "--index", str(mnt), "--output", str(out)]) == 0
        rows = list(csv.reader(out.open()))
        assert {(r[0], r[1]) for r in rows[1:] if float(r[2]) > 0.5} >= {("q_r00", "r00"), ("q_r01", "r01")}
        assert _snapshot(mnt) == before and not list(mnt.glob('*-shm'))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: mapped files may still be open
