"""On-disk feature store and in-memory feature cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from matcher.local.features import mirror_sift_descriptors, rootsift
from matcher.local.types import LocalFeatures
from matcher.references import features as store_mod
from matcher.references.features import (
    FORMAT_VERSION,
    FeatureCache,
    FeatureStore,
    FeatureStoreError,
    features_nbytes,
)

SIG = {"name": "sift", "working_size": 512, "max_keypoints": 1024, "contrast_threshold": 0.04}


def _features(seed: int, n: int, size: tuple[int, int] = (640, 480)) -> LocalFeatures:
    rng = np.random.default_rng(seed)
    return LocalFeatures(
        keypoints=(rng.random((n, 2)) * size).astype(np.float32),
        scales=(rng.random(n) * 20 + 1).astype(np.float32),
        orientations=(rng.random(n) * 360).astype(np.float32),
        descriptors=rootsift(rng.random((n, 128)) ** 4),
        image_size=size,
    )


def _assert_close(a: LocalFeatures, b: LocalFeatures, atol: float = 2e-3) -> None:
    assert a.image_size == b.image_size
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_array_equal(a.orientations, b.orientations)
    assert b.descriptors.dtype == np.float32 and b.descriptors.shape == a.descriptors.shape
    np.testing.assert_allclose(b.descriptors, a.descriptors, atol=atol)


@pytest.fixture()
def items() -> dict[str, LocalFeatures]:
    return {"a": _features(0, 50), "b": _features(1, 7, (10, 20)), "empty": LocalFeatures.empty(33, 44)}


def test_round_trip_float16(tmp_path, items):
    st = FeatureStore(tmp_path / "fs", SIG, descriptor_dtype="float16")
    assert len(st) == 0 and st.ids() == [] and "a" not in st
    assert st.add(items) == 3
    again = FeatureStore(tmp_path / "fs", SIG)
    assert again.ids() == ["a", "b", "empty"] and "b" in again and len(again) == 3
    for key, f in items.items():
        g = again.get(key)
        _assert_close(f, g)
        np.testing.assert_allclose(np.linalg.norm(g.descriptors, axis=1), 1.0, atol=1e-6)
        assert g.mirrored is not None
        np.testing.assert_array_equal(g.mirrored, mirror_sift_descriptors(g.descriptors))
    assert again.get("a", with_mirrored=False).mirrored is None
    all_items = again.load_all()
    assert list(all_items) == ["a", "b", "empty"]
    for key, f in items.items():
        _assert_close(f, all_items[key])
    with pytest.raises(KeyError, match="zzz"):
        again.get("zzz")
    assert again.verify() == []


def test_empty_features_round_trip(tmp_path):
    st = FeatureStore(tmp_path, SIG)
    st.add({"e1": LocalFeatures.empty(5, 6), "e2": LocalFeatures.empty(7, 8)})
    g = FeatureStore(tmp_path, SIG).get("e2")
    assert g.n == 0 and g.image_size == (7, 8)
    assert g.keypoints.shape == (0, 2) and g.descriptors.shape == (0, 128) and g.mirrored.shape == (0, 128)


def test_uint8_descriptors(tmp_path, items):
    st = FeatureStore(tmp_path, SIG, descriptor_dtype="uint8")
    st.add(items)
    g = FeatureStore(tmp_path, SIG).get("a")  # dtype read from the index
    cos = np.sum(g.descriptors * items["a"].descriptors, axis=1)
    assert cos.min() > 0.999
    with pytest.raises(ValueError, match="descriptor_dtype"):
        FeatureStore(tmp_path / "x", SIG, descriptor_dtype="float64")


def test_append_across_opens(tmp_path, items):
    FeatureStore(tmp_path, SIG, descriptor_dtype="float16").add({"a": items["a"]})
    st = FeatureStore(tmp_path, SIG)
    st.add({"b": items["b"], "empty": items["empty"]})
    st.add({"c": _features(5, 3)})
    assert sorted(os.listdir(tmp_path)) == [
        "index.json",
        "shard-000000.bin",
        "shard-000001.bin",
        "shard-000002.bin",
    ]
    again = FeatureStore(tmp_path, SIG)
    assert again.ids() == ["a", "b", "empty", "c"]
    _assert_close(items["a"], again.get("a"))
    _assert_close(_features(5, 3), again.get("c"))
    with pytest.raises(ValueError, match="already"):
        again.add({"a": items["a"]})
    with pytest.raises(ValueError, match="str"):
        again.add({3: items["a"]})  # type: ignore[dict-item]
    bad = _features(9, 4)
    bad.descriptors = bad.descriptors[:, :64]
    with pytest.raises(ValueError, match="'bad'"):
        again.add({"bad": bad})
    assert FeatureStore(tmp_path, SIG).ids() == ["a", "b", "empty", "c"]  # refused adds wrote nothing


def test_other_format_version_is_refused(tmp_path, items):
    FeatureStore(tmp_path, SIG).add(items)
    index_path = tmp_path / "index.json"
    index = json.loads(index_path.read_text())
    index["format_version"] = FORMAT_VERSION + 1
    index_path.write_text(json.dumps(index))
    with pytest.raises(FeatureStoreError) as err:
        FeatureStore(tmp_path, SIG)
    msg = str(err.value)
    assert (
        str(index_path) in msg
        and f"version {FORMAT_VERSION + 1}" in msg
        and f"version {FORMAT_VERSION}" in msg
    )


def test_signature_mismatch_is_refused(tmp_path, items):
    FeatureStore(tmp_path, SIG).add(items)
    with pytest.raises(FeatureStoreError, match="working_size: store 512 vs 384") as err:
        FeatureStore(tmp_path, {**SIG, "working_size": 384})
    assert str(tmp_path / "index.json") in str(err.value)
    with pytest.raises(FeatureStoreError, match="extra"):
        FeatureStore(tmp_path, {**SIG, "extra": 1})
    FeatureStore(tmp_path, dict(reversed(list(SIG.items()))))  # key order does not matter


@pytest.mark.parametrize("where", [40, 2000, -3])
def test_corrupt_shard_is_detected(tmp_path, items, where):
    FeatureStore(tmp_path, SIG).add(items)
    shard = tmp_path / "shard-000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[where] ^= 0xFF
    shard.write_bytes(bytes(raw))
    st = FeatureStore(tmp_path, SIG)  # opening reads only the index
    with pytest.raises(FeatureStoreError, match="corrupt") as err:
        st.get("a")
    assert str(shard) in str(err.value)
    with pytest.raises(FeatureStoreError, match=r"shard-000000\.bin"):
        st.load_all()
    assert len(st.verify()) == 1


def test_truncated_shard_is_detected(tmp_path, items):
    FeatureStore(tmp_path, SIG).add(items)
    shard = tmp_path / "shard-000000.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(FeatureStoreError, match="truncated") as err:
        FeatureStore(tmp_path, SIG).get("b")
    assert str(shard) in str(err.value)
    shard.unlink()
    with pytest.raises(FeatureStoreError, match="cannot read shard"):
        FeatureStore(tmp_path, SIG).get("b")


def test_corrupt_index_is_reported(tmp_path, items):
    FeatureStore(tmp_path, SIG).add(items)
    (tmp_path / "index.json").write_text('{"format": ')
    with pytest.raises(FeatureStoreError, match="unreadable index") as err:
        FeatureStore(tmp_path, SIG)
    assert "index.json" in str(err.value)


@pytest.mark.parametrize("fail_on", ["shard", "index"])
def test_failed_write_leaves_previous_store_readable(tmp_path, items, monkeypatch, fail_on):
    FeatureStore(tmp_path, SIG, descriptor_dtype="float16").add({"a": items["a"]})
    real = store_mod.atomic_write_bytes

    def flaky(path, data):
        if (fail_on == "shard") == path.name.startswith("shard"):
            # a crash half-way: the temp file is written, the rename never happens
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", flaky)
    st = FeatureStore(tmp_path, SIG)
    with pytest.raises(OSError, match="disk full"):
        st.add({"b": items["b"]})
    assert "b" not in st and st.ids() == ["a"]
    monkeypatch.setattr(store_mod, "atomic_write_bytes", real)
    again = FeatureStore(tmp_path, SIG)
    assert again.ids() == ["a"]
    _assert_close(items["a"], again.get("a"))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    again.add({"b": items["b"]})  # an orphan shard from the failed add is overwritten
    assert FeatureStore(tmp_path, SIG).ids() == ["a", "b"]
    _assert_close(items["b"], FeatureStore(tmp_path, SIG).get("b"))


def test_store_bytes_per_image(tmp_path):
    n = 1024
    FeatureStore(tmp_path / "f16", SIG, descriptor_dtype="float16").add({"x": _features(0, n)})
    size = (tmp_path / "f16" / "shard-000000.bin").stat().st_size
    assert size == 32 + 4 + 8 + n * (8 + 4 + 4 + 128 * 2) + 4
    FeatureStore(tmp_path / "default", SIG).add({"x": _features(0, n)})  # default: uint8 descriptors
    size = (tmp_path / "default" / "shard-000000.bin").stat().st_size
    assert size == 32 + 4 + 8 + n * (8 + 4 + 4 + 128) + 4


# ------------------------------------------------------------------------------------------- cache
def test_cache_lru_by_bytes():
    f = _features(0, 10)
    size = features_nbytes(f)
    cache = FeatureCache(max_bytes=3 * size)
    calls = []

    def make(key):
        def compute():
            calls.append(key)
            return _features(0, 10)

        return compute

    for key in ["a", "b", "c"]:
        cache.get_or_compute(key, make(key))
    assert cache.get_or_compute("a", make("a")) is cache["a"]  # hit, "a" now most recent
    cache.get_or_compute("d", make("d"))  # evicts "b", the least recently used
    assert "b" not in cache and "a" in cache and len(cache) == 3 and cache.nbytes == 3 * size
    assert calls == ["a", "b", "c", "d"] and cache.hits == 1 and cache.misses == 4
    cache["huge"] = _features(1, 100)  # larger than the whole cache: not kept
    assert "huge" not in cache and len(cache) == 3
    assert cache.pop("a") is not None and cache.nbytes == 2 * size
    with pytest.raises(KeyError):
        cache["a"]
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    unbounded = FeatureCache()
    for i in range(20):
        unbounded[i] = f
    assert len(unbounded) == 20


def test_a_shard_is_read_whole_once_per_file_state(tmp_path, items, monkeypatch):
    """A shard re-opened unchanged after leaving the LRU is not CRC-checked again; one changed on disk since is
    (and refused when corrupt)."""
    st = FeatureStore(tmp_path, SIG, cache_shards=1)
    st.add({"a": items["a"]})
    st.add({"b": items["b"]})
    calls = []
    crc32 = store_mod.zlib.crc32
    monkeypatch.setattr(store_mod.zlib, "crc32", lambda *a: calls.append(1) or crc32(*a))
    first = st.get("a")
    assert len(calls) == 1  # the whole file against the index (its trailer's CRC is then implied)
    st.get("b")
    again = st.get("a")  # shard 0 opened again (the LRU holds one shard): unchanged, not read whole
    assert len(calls) == 2 and np.array_equal(first.descriptors, again.descriptors)
    np.testing.assert_array_equal(first.keypoints, items["a"].keypoints)
    st.get("b")
    shard = tmp_path / "shard-000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[60] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(FeatureStoreError, match=r"shard-000000\.bin: corrupt"):
        st.get("a")
