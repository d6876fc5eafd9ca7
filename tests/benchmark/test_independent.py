"""The independent edit recipe (no AugLy, wider ranges), its geometry, and the shared-overlay hard negatives."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.benchmark.builder import build_benchmark
from matcher.benchmark.chain import apply_chain
from matcher.benchmark.edits import EditContext, synthetic_photo
from matcher.benchmark.geometry import apply_homography
from matcher.benchmark.independent import INDEPENDENT_CHAIN_FAMILIES, INDEPENDENT_EDITS, INDEPENDENT_FAMILY
from matcher.benchmark.overlays import shared_overlay
from matcher.benchmark.plan import BenchmarkError
from matcher.benchmark.recipes import get_recipe

REPO = Path(__file__).resolve().parents[2]
RED = np.array([220, 20, 20])


def _photo(seed: int = 0, w: int = 200, h: int = 150) -> np.ndarray:
    return synthetic_photo(np.random.default_rng(seed), w, h)


def _context() -> EditContext:
    others = [_photo(11, 300, 200), _photo(12, 180, 240)]
    return EditContext(random_other_photo=lambda rng: others[int(rng.integers(len(others)))])


@pytest.mark.parametrize("name", INDEPENDENT_EDITS.names())
def test_edit_is_valid_and_deterministic(name: str) -> None:
    img = _photo(3)
    before = img.copy()
    res = INDEPENDENT_EDITS.get(name)(img, np.random.default_rng(5), _context())
    assert np.array_equal(img, before), "edit modified its input"
    out = res.image
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 16
    json.dumps(res.params)
    assert res.transform is not None and res.transform.shape == (3, 3) and np.all(np.isfinite(res.transform))
    again = INDEPENDENT_EDITS.get(name)(img, np.random.default_rng(5), _context())
    assert np.array_equal(again.image, out) and again.params == res.params


def test_ranges_reach_past_the_training_generator() -> None:
    rng = np.random.default_rng(0)
    img = _photo(1)
    seen: dict[str, list[float]] = {}
    for name, key in (("pixelate", "factor"), ("jpeg_low", "quality"), ("gaussian_blur", "sigma"),
                      ("noise_strong", "sigma"), ("brightness_far", "factor"), ("contrast_low", "factor"),
                      ("rotate_fill", "angle")):
        seen[name] = [INDEPENDENT_EDITS.get(name)(img, rng, _context()).params[key] for _ in range(60)]
    assert max(seen["pixelate"]) >= 11 and min(seen["jpeg_low"]) <= 7 and max(seen["gaussian_blur"]) >= 4.5
    assert max(seen["noise_strong"]) >= 27 and min(seen["brightness_far"]) <= 0.25
    assert min(seen["contrast_low"]) <= 0.35 and all(8 <= abs(a) <= 30 for a in seen["rotate_fill"])


@pytest.mark.parametrize("name", ["crop_tight", "downscale", "rotate_fill", "mirror", "frame", "paste_on_photo"])
def test_geometric_transform_maps_a_marked_pixel(name: str) -> None:
    checked = 0
    for seed in range(40):
        img = np.full((150, 200, 3), 70, np.uint8)
        img[40:51, 120:131] = RED  # centre (125.5, 45.5) in continuous coordinates
        res = INDEPENDENT_EDITS.get(name)(img, np.random.default_rng(seed), _context())
        if "fill" in res.params and res.params["fill"][0] - max(res.params["fill"][1:]) > 60:
            continue
        px, py = apply_homography(res.transform, np.array([[125.5, 45.5]]))[0]
        h, w = res.image.shape[:2]
        if not (6 <= px <= w - 6 and 6 <= py <= h - 6):
            continue
        r, g, b = (res.image[..., i].astype(int) for i in range(3))
        ys, xs = np.nonzero((r - g > 90) & (r - b > 90))
        near = np.hypot(xs + 0.5 - px, ys + 0.5 - py) < 12
        assert near.any(), f"{name} seed {seed}: no marker near ({px:.1f}, {py:.1f})"
        assert np.hypot(xs[near].mean() + 0.5 - px, ys[near].mean() + 0.5 - py) <= 2.5
        checked += 1
        if checked == 4:
            break
    assert checked >= 3, f"{name}: too few usable seeds"


def test_recipes_and_chains() -> None:
    ind = get_recipe("independent")
    assert set(ind.chain_families) == set(INDEPENDENT_CHAIN_FAMILIES) and ind.edits_in_family("mild")
    assert set(INDEPENDENT_FAMILY.values()) == set(INDEPENDENT_CHAIN_FAMILIES) | {"mild"}
    with pytest.raises(ValueError, match="unknown edit recipe"):
        get_recipe("nope")
    res = apply_chain(_photo(2), np.random.default_rng(4), _context(), n_edits=3, recipe=ind)
    assert len(res.edits) == 3 and all(e["name"] in INDEPENDENT_FAMILY for e in res.edits)
    assert sum(e["family"] in ind.composite_families for e in res.edits) <= 1


def test_the_independent_recipe_needs_no_augly() -> None:
    code = ("import sys\nimport numpy as np\nfrom matcher.benchmark.recipes import get_recipe\n"
            "from matcher.benchmark.chain import apply_chain\nfrom matcher.benchmark.edits import EditContext\n"
            "r = get_recipe('independent')\nimg = np.zeros((80, 100, 3), np.uint8) + 90\n"
            "ctx = EditContext(random_other_photo=lambda rng: img)\n"
            "for f in r.chain_families:\n    apply_chain(img, np.random.default_rng(0), ctx, families=[f], recipe=r)\n"
            "assert not any(m == 'augly' or m.startswith('augly.') for m in sys.modules), 'augly imported'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]


def test_shared_overlay_is_the_same_on_two_pictures(tmp_path: Path) -> None:
    sym = tmp_path / "sym.png"
    Image.fromarray(_photo(9, 60, 60)).save(sym)
    for seed in range(12):
        a, pa = shared_overlay(_photo(1), seed, (sym,), np.random.default_rng(1))
        _, pb = shared_overlay(_photo(2, 260, 180), seed, (sym,), np.random.default_rng(2))
        assert {k: v for k, v in pa.items() if k != "box"} == {k: v for k, v in pb.items() if k != "box"}
        x0, y0, x1, y1 = pa["box"]
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 150
        assert np.abs(a.astype(int) - _photo(1)).sum() > 0
    kinds = {shared_overlay(_photo(1), s, (sym,), np.random.default_rng(0))[1]["kind"] for s in range(40)}
    assert kinds == {"text", "sign", "symbol"}
    assert {shared_overlay(_photo(1), s, (), np.random.default_rng(0))[1]["kind"] for s in range(40)} <= {
        "text", "sign"}


def test_builder_with_the_independent_recipe_and_shared_overlays(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(40):
        Image.fromarray(_photo(i, 220, 160)).save(photos / f"p{i}.png")
    symbols = tmp_path / "symbols"
    symbols.mkdir()
    Image.fromarray(_photo(99, 64, 64)).save(symbols / "logo.png")
    args = {"n_references": 6, "n_queries": 12, "copy_fraction": 0.5, "n_background": 1, "n_holistic": 1,
            "n_same_scene": 1, "n_shared_overlay": 3, "recipe": "independent", "symbols": symbols, "seed": 2,
            "progress": False}
    summary = build_benchmark(photos, tmp_path / "b", **args)
    assert summary.queries["hard_negative_shared_overlay"] == 3
    assert summary.references["shared_overlay_reference"] == 3
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["params"]["recipe"] == "independent"
    shared = [q for q in m["queries"].values() if q["kind"] == "hard_negative_shared_overlay"]
    for q in shared:
        ref = m["references"][q["related_references"][0]]
        assert q["reference_id"] is None and ref["kind"] == "shared_overlay_reference"
        assert {k: v for k, v in q["overlay"].items() if k != "box"} == \
            {k: v for k, v in ref["overlay"].items() if k != "box"}
        assert q["source"] != ref["source"]  # two different pictures
    names = {e["name"] for q in m["queries"].values() for e in q["edits"]}
    assert names and names <= set(INDEPENDENT_FAMILY)
    build_benchmark(photos, tmp_path / "b2", **args)
    assert (tmp_path / "b" / "manifest.json").read_bytes() == (tmp_path / "b2" / "manifest.json").read_bytes()


def test_reshoot_pairs_become_hard_negatives(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        Image.fromarray(_photo(i, 220, 160)).save(photos / f"p{i}.png")
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"a": "p1.png", "b": "p2.png"}, {"a": "p3", "b": "p4"}]))
    args = {"n_references": 5, "n_queries": 8, "n_background": 1, "n_holistic": 0, "n_same_scene": 0, "seed": 1,
            "progress": False}
    build_benchmark(photos, tmp_path / "b", reshoot_pairs=pairs, **args)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    neg = [q for q in m["queries"].values() if q["kind"] == "hard_negative_reshoot"]
    assert len(neg) == 2
    for q in neg:
        ref = m["references"][q["related_references"][0]]
        assert ref["kind"] == "reshoot_reference" and q["reference_id"] is None
        assert {q["source"], ref["source"]} in ({"p1.png", "p2.png"}, {"p3.png", "p4.png"})
    used = {"p1.png", "p2.png", "p3.png", "p4.png"}  # the paired photos have no other role
    others = [v["source"] for v in m["references"].values() if v["kind"] != "reshoot_reference"]
    others += [v["source"] for v in m["queries"].values() if v["kind"] != "hard_negative_reshoot"]
    others += [f["source"] for v in m["queries"].values() for f in v["fillers"]]
    assert not used & set(others)
    for bad, message in (([{"a": "p1.png", "b": "nope.png"}], "not a usable photo"),
                         ([{"a": "p1.png", "b": "p2.png"}, {"a": "p2.png", "b": "p5.png"}], "repeats a photo"),
                         ({"a": 1}, "unusable")):
        pairs.write_text(json.dumps(bad))
        with pytest.raises(BenchmarkError, match=message):
            build_benchmark(photos, tmp_path / "c", reshoot_pairs=pairs, **args)
