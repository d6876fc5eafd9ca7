"""Dedup benchmark (issue 16): a collection with planted copies, deduplicated, scored against the planted groups.

The collection (written to ``--out``, never into the repository) is made from a picture folder (e.g.
``../shared/data/photos/bench``):

* ``--groups`` originals, each with 1-3 copies: an exact byte duplicate with probability ``--exact``, otherwise a
  chain of 1-3 random edits of the project's edit recipe (``matcher.benchmark.chain.apply_chain``: crops, resizes,
  rotations, flips, colour, blur, noise, JPEG, pixelisation, perspective, text, emoji, stripes and the composite
  families overlay / screenshot / meme / mosaic / blend); with probability ``--copy-of-copy`` a copy is made from an
  earlier copy of the group instead of the original (a re-shared copy);
* singletons (distinct pictures, no copy) up to ``--size`` pictures;
* composites paste the picture onto / mix it with filler pictures that are not in the collection, each filler used
  once (two copies sharing a filler would be copies of each other); the screenshot family is left out (AugLy pastes
  every picture into the same screenshot template).

File names are random ids (the id order says nothing about the roles). With ``--variants`` (the graphics corpus),
at most one file of each variant group is drawn, so no two pictures of the collection are variants of one drawing.

Scoring (at each ``--thresholds`` value; the dedup runs once and the pairs keep their scores):

* pairs: precision = reported pairs whose two pictures are in one planted group / reported pairs; recall = planted
  (original, copy) pairs reported / planted (original, copy) pairs (``recall_all`` counts every pair within a group,
  also two copies that may share no content);
* groups, exact: a reported group is correct when its members equal a planted group's; precision = correct /
  reported groups, recall = correct / planted groups;
* groups, pairwise (co-membership): precision / recall over the pictures put together in one group;
* original: of the reported groups that equal a planted group, the share whose original is the planted original
  (or a byte duplicate of it).

Usage::

    python bench/dedup_bench.py --photos ../shared/data/photos/bench --out /tmp/dedup_photos --size 1000 \\
        --groups 150 --json bench/results_dedup_photos.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from matcher.benchmark.chain import apply_chain, sample_families
from matcher.benchmark.edits import EditContext
from matcher.benchmark.jobs import MIN_VISIBLE
from matcher.benchmark.recipes import get_recipe
from matcher.config import LoadConfig, MatcherConfig
from matcher.dedup.groups import group_pairs
from matcher.dedup.pairs import Direction, Pair, PairCollection, Picture, collect_pairs
from matcher.io.folders import SkippedFile, list_images
from matcher.io.images import load_image
from matcher.pipeline.pipeline import Pipeline

JPEG_QUALITY = 92
SHARED_TEMPLATE_FAMILIES = ("screenshot",)  # AugLy pastes every picture into one screenshot template: any two such
# copies share that template (copies of each other by the dedup's terms), so the family is left out
MAX_TRIES = 8


def _save(image: np.ndarray, path: Path, quality: int) -> None:
    if path.suffix == ".png":
        Image.fromarray(image).save(path, optimize=False)
    else:
        Image.fromarray(image).save(path, quality=quality)


def _sources(folder: Path, variants: Path | None) -> list[Path]:
    """The corpus' pictures, at most one per variant group when ``variants`` is given."""
    files = list_images(folder)
    if variants is None:
        return files
    from matcher.benchmark.variants import load_variant_groups

    out, seen = [], set()
    group_of = {name: i for i, g in enumerate(load_variant_groups(variants, folder)) for name in g}
    for p in files:
        g = group_of.get(p.stem)
        if g is None or g not in seen:
            out.append(p)
            if g is not None:
                seen.add(g)
    return out


def build_collection(photos: Path, out: Path, *, size: int, groups: int, exact: float, copy_of_copy: float,
                     fillers: int, seed: int, recipe: str, variants: Path | None) -> dict:
    """Write the collection into ``out`` and return its truth: {"groups": [{"original", "members", "copies":
    [{"id", "from", "kind", "edits"}]}], "singletons": [...]}."""
    rng = np.random.default_rng(seed)
    files = _sources(photos, variants)
    order = rng.permutation(len(files))
    n_copies = rng.integers(1, 4, size=groups)
    n_single = size - groups - int(n_copies.sum())
    if n_single < 0 or groups + n_single + fillers > len(files):
        raise SystemExit(f"{len(files)} pictures cannot make {size} with {groups} groups and {fillers} fillers")
    load = LoadConfig()
    chosen = [files[i] for i in order[:groups + n_single]]
    pool = [files[i] for i in order[groups + n_single:groups + n_single + fillers]]
    used_fillers: list[str] = []

    def other_photo(_rng: np.random.Generator) -> np.ndarray:
        """Each filler is used once, so no two copies share a filler (they would be copies of each other)."""
        if len(used_fillers) >= len(pool):
            raise SystemExit(f"--fillers {fillers} is too few for the composite edits; raise it")
        used_fillers.append(pool[len(used_fillers)].name)
        return load_image(pool[len(used_fillers) - 1], config=load)

    ctx = EditContext(random_other_photo=other_photo)
    rec = get_recipe(recipe)
    families = [f for f in rec.chain_families if f not in SHARED_TEMPLATE_FAMILIES]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    used: set[str] = set()

    def new_id(ext: str) -> str:
        while True:
            i = f"p{int(rng.integers(10**7, 10**8))}"
            if i not in used:
                used.add(i)
                return i + ext

    truth: dict = {"groups": [], "singletons": []}
    for gi, src in enumerate(chosen[:groups]):
        ext = ".png" if src.suffix.lower() == ".png" else ".jpg"
        img = load_image(src, config=load)
        orig = new_id(ext)
        _save(img, out / orig, JPEG_QUALITY)
        made = [(Path(orig).stem, img)]
        copies = []
        for _ in range(int(n_copies[gi])):
            cid_name = new_id(ext)
            if rng.random() < exact:
                shutil.copyfile(out / orig, out / cid_name)
                copies.append({"id": Path(cid_name).stem, "from": made[0][0], "kind": "exact", "edits": []})
                continue
            base_id, base = made[int(rng.integers(1, len(made)))] if len(made) > 1 and rng.random() < copy_of_copy \
                else made[0]
            for _try in range(MAX_TRIES):
                fams = sample_families(rng, None, None, families, rec.composite_families)
                res = apply_chain(base, rng, ctx, families=fams, recipe=rec)
                if res.visible_fraction is None or res.visible_fraction >= MIN_VISIBLE:
                    break
            q = res.save_quality or JPEG_QUALITY
            name = cid_name if res.save_quality is None else str(Path(cid_name).with_suffix(".jpg"))
            _save(res.image, out / name, q)
            made.append((Path(name).stem, res.image))
            copies.append({"id": Path(name).stem, "from": base_id, "kind": "edited",
                           "edits": [e["name"] for e in res.edits]})
        truth["groups"].append({"original": made[0][0], "source": src.name,
                                "members": sorted([made[0][0], *[c["id"] for c in copies]]), "copies": copies})
    for src in chosen[groups:]:
        ext = ".png" if src.suffix.lower() == ".png" else ".jpg"
        name = new_id(ext)
        _save(load_image(src, config=load), out / name, JPEG_QUALITY)
        truth["singletons"].append(Path(name).stem)
        truth.setdefault("singleton_sources", {})[Path(name).stem] = src.name
    truth["fillers_used"] = used_fillers
    return truth


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def score(pairs: list[Pair], pictures: dict, truth: dict, threshold: float, composite_edits: set[str]) -> dict:
    """Pair, group and original metrics at ``threshold`` (see the module docstring); ``composite_edits``: the
    names of the recipe's composite edits (recall is broken down by exact / composite / other edited copies)."""
    group_of = {m: i for i, g in enumerate(truth["groups"]) for m in g["members"]}
    true_sets = {frozenset(g["members"]): g["original"] for g in truth["groups"]}
    direct = {tuple(sorted((g["original"], c["id"]))) for g in truth["groups"] for c in g["copies"]}
    within = {tuple(sorted(p)) for g in truth["groups"] for p in combinations(g["members"], 2)}
    kept = [p for p in pairs if p.score >= threshold]
    reported = {(p.a, p.b) for p in kept}
    good = sum(1 for a, b in reported if a in group_of and group_of[a] == group_of.get(b))
    groups = group_pairs(pairs, pictures, threshold)
    exact_hits = [g for g in groups if frozenset(g.members) in true_sets]
    same_bytes = {c["id"]: g["original"] for g in truth["groups"] for c in g["copies"] if c["kind"] == "exact"}
    right_original = sum(1 for g in exact_hits  # a byte duplicate of the original is as right as the original
                         if true_sets[frozenset(g.members)] in (g.original, same_bytes.get(g.original)))
    co = {tuple(sorted(p)) for g in groups for p in combinations(g.members, 2)}
    kinds: dict[str, list[int]] = {}
    for g in truth["groups"]:
        for c in g["copies"]:
            k = "exact" if c["kind"] == "exact" else ("composite" if any(
                e in composite_edits for e in c["edits"]) else "edited")
            hit = tuple(sorted((g["original"], c["id"]))) in reported
            kinds.setdefault(k, [0, 0])
            kinds[k][0] += int(hit)
            kinds[k][1] += 1
    return {
        "threshold": threshold,
        "pairs": {"reported": len(reported), "correct": good, "precision": _ratio(good, len(reported)),
                  "recall": _ratio(len(reported & direct), len(direct)), "planted": len(direct),
                  "recall_all": _ratio(len(reported & within), len(within)), "within_groups": len(within),
                  "recall_by_copy_kind": {k: {"recall": _ratio(v[0], v[1]), "n": v[1]} for k, v in kinds.items()}},
        "groups": {"reported": len(groups), "planted": len(true_sets), "exact": len(exact_hits),
                   "precision": _ratio(len(exact_hits), len(groups)),
                   "recall": _ratio(len(exact_hits), len(true_sets)),
                   "pairwise_precision": _ratio(len(co & within), len(co)),
                   "pairwise_recall": _ratio(len(co & within), len(within)),
                   "split": sum(1 for s in true_sets if not any(s <= frozenset(g.members) for g in groups)),
                   "merged": sum(1 for g in groups if len({group_of.get(m, ("single", m)) for m in g.members}) > 1)},
        "original": {"scored_groups": len(exact_hits), "correct": right_original,
                     "accuracy": _ratio(right_original, len(exact_hits))},
    }


def save_pairs(path: Path, found: PairCollection) -> None:
    """Every pair found (any score, both directions' evidence), the pictures and the seconds, as JSON."""
    doc = {"pictures": {i: [p.path, p.width, p.height, p.sha256] for i, p in found.pictures.items()},
           "pairs": [p.to_dict(details=True) for p in found.pairs], "seconds": found.seconds,
           "skipped": [s.path for s in found.skipped]}
    path.write_text(json.dumps(doc) + "\n")


def load_pairs(path: Path) -> PairCollection:
    """What :func:`save_pairs` wrote (skipped files by path only)."""
    doc = json.loads(path.read_text())

    def direction(d: dict | None) -> Direction | None:
        if d is None:
            return None
        seam = d.get("frame_seam")
        return Direction(d["score"], d["containment"], d["log_norm_ratio"], d["n_inliers"],
                         float("nan") if seam is None else seam)

    pairs = [Pair(p["a"], p["b"], p["score"], direction(p["a_vs_b"]), direction(p["b_vs_a"]), p.get("exact", False))
             for p in doc["pairs"]]
    pictures = {i: Picture(i, v[0], v[1], v[2], v[3]) for i, v in doc["pictures"].items()}
    skipped = [SkippedFile(s, "skipped", s) for s in doc["skipped"]]
    return PairCollection(pairs, pictures, skipped, doc["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", required=True, type=Path, help="picture folder (e.g. ../shared/data/photos/bench)")
    ap.add_argument("--out", required=True, type=Path, help="where the collection (and its index) are written")
    ap.add_argument("--size", type=int, default=1000, help="pictures in the collection")
    ap.add_argument("--groups", type=int, default=150, help="originals with planted copies")
    ap.add_argument("--exact", type=float, default=0.15, help="probability that a copy is a byte duplicate")
    ap.add_argument("--copy-of-copy", type=float, default=0.2, help="probability that a copy is made from a copy")
    ap.add_argument("--fillers", type=int, default=300,
                    help="pictures (not in the collection) used once each by composite edits")
    ap.add_argument("--recipe", default="augly", help="edit recipe (augly or independent)")
    ap.add_argument("--variants", type=Path, help="variant groups file (bench/graphics_variants.json)")
    ap.add_argument("--thresholds", default="0.3,0.5,0.7,0.9")
    ap.add_argument("--config", type=Path, help="JSON of MatcherConfig overrides (default: the shipped defaults)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--reuse", action="store_true", help="reuse the collection in --out (built with the same args)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the pairs an earlier run saved in --out/pairs.json again (implies --reuse)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    rec = get_recipe(args.recipe)
    composite = {n for n, f in rec.family.items() if f in rec.composite_families}
    coll = args.out / "collection"
    truth_path = args.out / "truth.json"
    t0 = time.perf_counter()
    if (args.reuse or args.rescore) and truth_path.is_file():
        truth = json.loads(truth_path.read_text())
    else:
        truth = build_collection(args.photos, coll, size=args.size, groups=args.groups, exact=args.exact,
                                 copy_of_copy=args.copy_of_copy, fillers=args.fillers, seed=args.seed,
                                 recipe=args.recipe, variants=args.variants)
        truth_path.write_text(json.dumps(truth, indent=1))
    t_build = time.perf_counter() - t0
    print(f"collection: {len(list(coll.iterdir()))} pictures, {len(truth['groups'])} groups "
          f"({t_build:.0f} s)", flush=True)

    pairs_path = args.out / "pairs.json"
    if args.rescore:  # score the pairs of an earlier run again (same collection), without matching
        found = load_pairs(pairs_path)
        t_models, t_dedup = None, float(found.seconds["dedup_total"])
    else:
        config = MatcherConfig.make(**json.loads(args.config.read_text())) if args.config else MatcherConfig()
        t0 = time.perf_counter()
        pipeline = Pipeline(config)
        t_models = time.perf_counter() - t0
        index = args.out / "index"
        if index.exists():
            shutil.rmtree(index)
        t0 = time.perf_counter()
        found = collect_pairs(pipeline, coll, index=index, progress=False)
        t_dedup = time.perf_counter() - t0
        found.seconds["dedup_total"] = t_dedup
        save_pairs(pairs_path, found)
    results = [score(found.pairs, found.pictures, truth, float(t), composite) for t in args.thresholds.split(",")]
    cpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpu": model, "cores": len(__import__("os").sched_getaffinity(0)),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "collection": {"pictures": len(found.pictures), "groups": len(truth["groups"]),
                       "in_groups": sum(len(g["members"]) for g in truth["groups"]),
                       "singletons": len(truth["singletons"]),
                       "exact_copies": sum(c["kind"] == "exact" for g in truth["groups"] for c in g["copies"]),
                       "skipped": len(found.skipped), "build_seconds": round(t_build, 1)},
        "seconds": {"load_models": None if t_models is None else round(t_models, 1), **{k: round(v, 1) for k, v in found.seconds.items()}},
        "pictures_per_second": round(len(found.pictures) / t_dedup, 3),
        "results": results,
    }
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
