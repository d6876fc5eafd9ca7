"""Queries matched a chunk at a time (matcher.pipeline.batch): the chunk's index searches are made once for the
whole chunk (one global search, one crop search), and every query gets the candidates, rows and scores it gets
when searched alone (up to the last bits of the cosines: faiss multiplies a batch as a matrix)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from matcher.io.images import load_image
from matcher.pipeline.batch import match_queries
from matcher.references.disk.store import IndexStore
from matcher.retrieval.candidates import search_queries


def _queries(folder: Path) -> list[tuple[str, np.ndarray]]:
    """The loadable queries of the small collection (q_camera, q_chelsea_mirror, q_coffee_crop)."""
    return [(p.stem, load_image(p.read_bytes())) for p in sorted(folder.iterdir()) if p.stem != "q_broken"]


def test_a_chunk_searched_at_once_gives_each_query_its_own_hits(small_matcher, small_collection, small_index,
                                                                 monkeypatch):
    pipe = small_matcher.pipeline
    items = _queries(small_collection[1])
    with IndexStore.open(small_index) as store:
        described = pipe.describe_queries(items)
        k = min(pipe.config.pipeline.global_k, len(store))
        calls = {"global": 0, "crops": 0}
        real_global, real_crops = store.global_index.search, store.search_regions

        def count_global(*a, **kw):
            calls["global"] += 1
            return real_global(*a, **kw)

        def count_crops(*a, **kw):
            calls["crops"] += 1
            return real_crops(*a, **kw)

        monkeypatch.setattr(store.global_index, "search", count_global)
        monkeypatch.setattr(store, "search_regions", count_crops)
        hits = pipe.search(described, store)
        assert calls == {"global": 1, "crops": 1}
        for q, h in zip(described, hits, strict=True):
            alone = search_queries([q.descriptors], store, k)[0]
            assert h.global_rows.shape == (len(q.descriptors), k) and h.crop_rows.shape == (k,)
            assert np.array_equal(h.global_rows, alone.global_rows) and np.array_equal(h.crop_rows, alone.crop_rows)
            np.testing.assert_allclose(h.global_scores, alone.global_scores, atol=1e-5)
            np.testing.assert_allclose(h.crop_cos, alone.crop_cos, atol=1e-5)
            batched, single = pipe.match(q, store, hits=h), pipe.match(q, store)
            assert [m.reference_id for m in batched] == [m.reference_id for m in single]
            np.testing.assert_allclose([m.score for m in batched], [m.score for m in single], atol=1e-4)
        calls["global"] = calls["crops"] = 0
        got = [[m.reference_id for m in ms] for ms in match_queries(pipe, store, iter(items), chunk=len(items))]
        assert calls == {"global": 1, "crops": 1}  # match_queries searches once per chunk
        assert got[1][0] == "chelsea" and got[2][0] == "coffee"


def test_an_empty_store_has_no_hits(small_matcher, small_collection, tmp_path):
    pipe = small_matcher.pipeline
    store = IndexStore.open(tmp_path / "empty", pipe.config, create=True)
    try:
        described = pipe.describe_queries(_queries(small_collection[1])[:1])
        assert pipe.search(described, store) == [None]
        assert pipe.match(described[0], store) == []
        assert pipe.search([], store) == []
    finally:
        store.close()
