"""Mine "different photo, same subject" pairs (re-shoots, bursts, the same object photographed twice) from a photo
folder, for the re-shoot hard negatives of issue 14.

    python bench/mine_reshoots.py ../shared/data/photos/bench /tmp/reshoots_bench --top 15

1. Every photo is described by the shipped ASL model; each photo's ``--top`` nearest other photos are candidates.
2. Each candidate pair is verified by the local engine (both directions; the better kept). Pairs with at least
   ``--min-inliers`` inliers share a scene or an object geometrically: these are the pairs that fool keypoint
   matching.
3. The pairs are written to ``OUT/candidates.json`` (best first) with contact sheets ``OUT/sheet_*.png`` (the two
   photos side by side, numbered) to be checked by eye: a pair that is the same photo (a duplicate, a crop or an
   edit of one picture) is not a re-shoot and must be left out.
4. ``--select OUT/candidates.json --exclude N ... --out FILE`` keeps the candidates not excluded, best first, and
   drops any pair that reuses a photo of a pair already kept (each photo in one pair at most), writing the list the
   benchmark builder reads (``--reshoot-pairs``). The checked lists are kept in ``bench/`` (names only: the photos
   themselves are never committed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.config import MatcherConfig
from matcher.descriptors.extractor import GlobalDescriptor
from matcher.io.folders import read_images
from matcher.local.engine import LocalEngine
from matcher.retrieval.normalise import split_norm


def select(candidates: Path, exclude: set[int], out: Path) -> int:
    """Write the disjoint, not excluded pairs of ``candidates`` (best first) to ``out``."""
    found = json.loads(candidates.read_text())
    used: set[str] = set()
    kept = []
    for k, p in enumerate(found):
        if k in exclude or p["a_file"] in used or p["b_file"] in used:
            continue
        used.update((p["a_file"], p["b_file"]))
        kept.append({"a": p["a_file"], "b": p["b_file"], "inliers": p["inliers"], "candidate": k})
    out.write_text(json.dumps(kept, indent=1) + "\n")
    print(f"{len(kept)} disjoint pairs of {len(found)} candidates ({len(exclude)} excluded by eye) -> {out}")
    return 0


def main() -> int:
    if "--select" in sys.argv:
        sp = argparse.ArgumentParser(description="keep the disjoint pairs checked by eye")
        sp.add_argument("--select", type=Path, required=True, help="candidates.json of a mining run")
        sp.add_argument("--exclude", type=int, nargs="*", default=[], help="candidate numbers that are not re-shoots")
        sp.add_argument("--out", type=Path, required=True)
        a = sp.parse_args()
        return select(a.select, set(a.exclude), a.out)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--top", type=int, default=15, help="nearest photos checked per photo")
    ap.add_argument("--min-inliers", type=int, default=12)
    ap.add_argument("--sheet", type=int, default=24, help="pairs per contact sheet")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = MatcherConfig()
    images = read_images(args.photos)
    ids, paths, pics = [], [], []
    for pid, path, im in images.iter_loaded():
        ids.append(pid)
        paths.append(path)
        pics.append(im)
    desc = GlobalDescriptor(cfg)
    z = split_norm(np.concatenate([desc.describe(pics[i:i + 64]) for i in range(0, len(pics), 64)]))[0]
    sims = z @ z.T
    np.fill_diagonal(sims, -2)
    engine = LocalEngine(cfg)
    refs = [engine.reference_features(im) for im in pics]
    queries: dict[int, object] = {}
    seen: set[tuple[int, int]] = set()
    found = []
    for i in range(len(ids)):
        for j in np.argsort(-sims[i])[: args.top]:
            a, b = (i, int(j)) if i < j else (int(j), i)
            if (a, b) in seen:
                continue
            seen.add((a, b))
            best = None
            for q, r in ((a, b), (b, a)):
                if q not in queries:
                    queries[q] = engine.query_features(pics[q])
                s, ev = engine.verify_features(queries[q], refs[r])
                if ev.verified and (best is None or ev.n_inliers > best[1]):
                    best = (s, ev.n_inliers, ev.containment)
            if best is not None and best[1] >= args.min_inliers:
                found.append({"a": ids[a], "b": ids[b], "cosine": round(float(sims[a, b]), 4),
                              "local_score": round(float(best[0]), 4), "inliers": int(best[1]),
                              "containment": best[2], "a_file": paths[a].name, "b_file": paths[b].name})
    found.sort(key=lambda p: (-p["inliers"], p["a"], p["b"]))
    (args.out / "candidates.json").write_text(json.dumps(found, indent=1) + "\n")
    index = {pid: k for k, pid in enumerate(ids)}
    for s in range(0, len(found), args.sheet):
        chunk = found[s:s + args.sheet]
        sheet = Image.new("RGB", (4 * 300, ((len(chunk) + 3) // 4) * 165), "white")
        draw = ImageDraw.Draw(sheet)
        for k, p in enumerate(chunk):
            x, y = (k % 4) * 300, (k // 4) * 165
            for m, pid in enumerate((p["a"], p["b"])):
                im = Image.fromarray(pics[index[pid]])
                im.thumbnail((145, 145))
                sheet.paste(im, (x + m * 148, y + 16))
            draw.text((x, y), f"{s + k}: {p['inliers']} inl, cos {p['cosine']:.2f}", fill="black")
        sheet.save(args.out / f"sheet_{s // args.sheet:03d}.png")
    print(f"{len(found)} pairs with >= {args.min_inliers} inliers among {len(seen)} checked -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
