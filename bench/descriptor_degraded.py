#!/usr/bin/env python
"""Global descriptors on degraded copies: single scale, multi-scale and region descriptors, beside SSCD (issue 14).

    python bench/descriptor_degraded.py --photos ../shared/data/photos/bench --graphics ../shared/data/graphics/bench \
        --work /tmp/desc_degraded --sscd-python /tmp/sscd312/bin/python --out bench/results_descriptor_degraded.json

For each domain, a seeded sample of ``--n`` pictures are the references, with ``--distractors`` more pictures as
distractor references; every reference is edited in the fixed starving ways of ``bench/keypoint_starvation.py``
(dark, low contrast, grey and dark, pixelised by 10, blur sigma 3.5, downscaled to 18 %, JPEG 8; graphics also a
60 % centre crop and a 12 degree rotation), and so are ``--negatives`` pictures that are not references (negative
queries). Global-only scoring (cosine, top 10 references per query), per edit and over all edits:

- ``single``: the shipped descriptor at its input size (the index's setting);
- ``multiscale``: the mean of the descriptors at the input size and at ``--scales`` (both sides);
- ``regions``: the pipeline's query variants (full, 2x2 grid, centre, rotations, flips) against whole references
  and the reference crops (2x2, 3x3 grids, centre), max cosine per reference;
- ``sscd``: SSCD ResNet-50 int8 (``bench/sscd_peer.py``, shorter side 288 px), when ``--sscd-python`` names the
  Python of its side environment.

Reported: micro-AP, recall@P90 and recall@1 of the copy queries; descriptor time per picture (process CPU).
Queries and references are written to ``--work`` as PNG (lossless) for the SSCD side.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.keypoint_starvation import EDITS, GRAPHICS_EXTRA
from matcher.descriptors.infer import describe_images
from matcher.descriptors.registry import load_descriptor
from matcher.io.folders import list_images
from matcher.io.images import load_image
from matcher.isc.metrics import evaluate
from matcher.isc.submission import GroundTruthMatch, PredictedMatch
from matcher.regions.proposers import propose_regions

QUERY_REGIONS = ("full", "grid2", "center", "rotations", "flips")
REFERENCE_REGIONS = ("full", "grid2", "grid3", "center")
TOP_K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _describe(model, spec, images: list[np.ndarray], scales: tuple[int, ...] = ()) -> tuple[np.ndarray, float]:
    t = time.process_time()
    d = describe_images(model, images, spec.image_size, spec.mean, spec.std, scales=scales)
    return _unit(d), (time.process_time() - t) / max(len(images), 1)


def _regions(model, spec, images: list[np.ndarray], names: tuple[str, ...], chunk: int = 16
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """Descriptors of every region of every picture -> ((R, D) unit, (R,) owner index, CPU s per picture)."""
    parts, owner, seconds = [], [], 0.0
    for s in range(0, len(images), chunk):
        crops = []
        for i in range(s, min(s + chunk, len(images))):
            regs = propose_regions(images[i], names)
            crops += [reg.apply(images[i]) for reg in regs]
            owner += [i] * len(regs)
        d, per_crop = _describe(model, spec, crops)
        parts.append(d)
        seconds += per_crop * len(crops)
    return np.concatenate(parts), np.asarray(owner), seconds / max(len(images), 1)


def _max_by_owner(sim: np.ndarray, owner: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Max of ``sim`` over the rows (axis 0) or columns (axis 1) that belong to the same owner."""
    out = np.full((n, sim.shape[1]) if axis == 0 else (sim.shape[0], n), -np.inf, np.float32)
    for k in range(n):
        sel = owner == k
        if axis == 0:
            out[k] = sim[sel].max(0)
        else:
            out[:, k] = sim[:, sel].max(1)
    return out


def _metrics(sim: np.ndarray, qids: list[str], rids: list[str], truth: dict[str, str]) -> dict[str, float]:
    """(Q, R) similarities -> µAP / recall@P90 over the top-10 rows, recall@1 of the copy queries."""
    rows = np.argsort(-sim, axis=1)[:, :TOP_K]
    preds = [PredictedMatch(q, rids[j], float(sim[i, j])) for i, q in enumerate(qids) for j in rows[i]]
    gt = [GroundTruthMatch(q, truth.get(q, "")) for q in qids]
    m = evaluate(preds, gt)
    copies = [i for i, q in enumerate(qids) if q in truth]
    r1 = float(np.mean([rids[rows[i, 0]] == truth[qids[i]] for i in copies])) if copies else float("nan")
    return {"uap": round(m.micro_ap, 4), "recall_at_p90": round(m.recall_at_p90, 4), "recall_at_1": round(r1, 4)}


def _write_png(folder: Path, items: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, im in items.items():
        path = folder / f"{name}.png"
        if not path.exists():
            cv2.imwrite(str(path), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))


def _sscd(python: str, folder: Path, out: Path) -> tuple[dict[str, np.ndarray], float]:
    if not out.with_suffix(".npy").exists():
        subprocess.run([python, str(Path(__file__).with_name("sscd_peer.py")), "folder", str(folder), str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    meta = json.loads(out.with_suffix(".json").read_text())
    d = np.load(out.with_suffix(".npy"), allow_pickle=False)
    return dict(zip(meta["ids"], d)), 1.0 / meta["images_per_cpu_s_model"]


def run_domain(name: str, folder: Path, edits: dict, args: argparse.Namespace, model, spec) -> dict:
    paths = list_images(folder)
    rng = np.random.default_rng(args.seed)
    n, n_dis, n_neg = args.n, args.distractors, args.negatives
    if n + n_dis + n_neg > len(paths):  # a small folder: the same proportions, scaled down
        f = len(paths) / (n + n_dis + n_neg)
        n, n_dis, n_neg = int(n * f), int(n_dis * f), int(n_neg * f)
    pick = rng.permutation(len(paths))[: n + n_dis + n_neg]
    images = {f"p{i:05d}": load_image(paths[i]) for i in sorted(pick)}
    keys = [k for k in images]
    order = rng.permutation(len(keys))
    refs = [keys[i] for i in order[:n]]
    distractors = [keys[i] for i in order[n: n + n_dis]]
    negatives = [keys[i] for i in order[n + n_dis:]]
    ref_ids = refs + distractors
    queries: dict[str, np.ndarray] = {}
    truth: dict[str, str] = {}
    for e, fn in edits.items():
        for k in refs + negatives:
            qid = f"{e}__{k}"
            queries[qid] = fn(images[k])
            if k in refs:
                truth[qid] = k
    qids = list(queries)
    ref_images = [images[k] for k in ref_ids]
    q_images = [queries[q] for q in qids]
    out: dict = {"references": len(ref_ids), "copy_queries": len(truth), "negative_queries": len(qids) - len(truth),
                 "edits": list(edits), "methods": {}}
    sims: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}

    r, _ = _describe(model, spec, ref_images)
    q, tq = _describe(model, spec, q_images)
    sims["single"], times["single"] = q @ r.T, tq
    scales = tuple(args.scales)
    r, _ = _describe(model, spec, ref_images, scales)
    q, tq = _describe(model, spec, q_images, scales)
    sims[f"multiscale {spec.image_size}+{'+'.join(map(str, scales))}"], times["multiscale"] = q @ r.T, tq
    rr, r_owner, _ = _regions(model, spec, ref_images, REFERENCE_REGIONS)
    qr, q_owner, tq = _regions(model, spec, q_images, QUERY_REGIONS)
    sim = _max_by_owner(qr @ rr.T, q_owner, len(qids), axis=0)
    sims["regions"], times["regions"] = _max_by_owner(sim, r_owner, len(ref_ids), axis=1), tq
    if args.sscd_python:
        work = args.work / name
        _write_png(work / "references", {k: images[k] for k in ref_ids})
        _write_png(work / "queries", queries)
        rd, _ = _sscd(args.sscd_python, work / "references", work / "sscd_references")
        qd, tq = _sscd(args.sscd_python, work / "queries", work / "sscd_queries")
        sims["sscd"] = np.stack([qd[k] for k in qids]) @ np.stack([rd[k] for k in ref_ids]).T
        times["sscd"] = tq
    for method, sim in sims.items():
        key = method.split(" ")[0]
        res = {"all": _metrics(sim, qids, ref_ids, truth),
               "ms_per_query": round(1000 * times.get(key, float("nan")), 1), "per_edit": {}}
        for e in edits:
            sel = [i for i, qq in enumerate(qids) if qq.startswith(f"{e}__")]
            res["per_edit"][e] = _metrics(sim[sel], [qids[i] for i in sel], ref_ids, truth)
        out["methods"][method] = res
        print(f"{name:8s} {method:26s} " + " ".join(f"{k} {v}" for k, v in res["all"].items())
              + f"  {res['ms_per_query']} ms/query  r@1 per edit " + " ".join(
                  f"{e}:{v['recall_at_1']:.2f}" for e, v in res["per_edit"].items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--graphics", type=Path, default=None)
    ap.add_argument("--n", type=int, default=150, help="references per domain (edited into copy queries)")
    ap.add_argument("--distractors", type=int, default=350, help="distractor references per domain (all three are scaled down "
                    "together for a folder with fewer pictures)")
    ap.add_argument("--negatives", type=int, default=50, help="pictures edited into negative queries")
    ap.add_argument("--scales", type=int, nargs="+", default=[128, 224], help="extra input sizes of multiscale")
    ap.add_argument("--descriptor", default="asl_lite0")
    ap.add_argument("--weights", default=None, help="descriptor weights (default: the shipped file)")
    ap.add_argument("--sscd-python", default=None, help="Python of the SSCD side environment (bench/sscd_peer.py)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/desc_degraded"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model, spec, sha = load_descriptor(args.descriptor, args.weights)
    results: dict = {"descriptor": args.descriptor, "weights_sha256": sha, "image_size": spec.image_size,
                     "seed": args.seed, "domains": {}}
    domains = [("photos", args.photos, EDITS)]
    if args.graphics:
        domains.append(("graphics", args.graphics, {**EDITS, **GRAPHICS_EXTRA}))
    for name, folder, edits in domains:
        results["domains"][name] = run_domain(name, folder, edits, args, model, spec)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
