"""Issue-6 benchmark: the pasted-picture detector (YOLO) on synthetic and real edits, and its effect on matching.

    python bench/bench_detector.py --weights weights/detector_yolov8n.pt --synth /tmp/det/data \
        --bench /tmp/bench_det --out /tmp/bench_detector

Sections (``--sections``, default all):

* ``synthetic``: mAP50 and mAP50-95 on the synthetic val set (our own pipeline: letterbox, conf 0.001, NMS
  IoU 0.7, up to 100 boxes; COCO 101-point interpolated AP), and the detector's false alarms on val examples
  with nothing pasted, split into those with and without text/emoji distractors (the text/emoji class decision);
* ``speed``: images/s of ``detect_regions`` (batch 16) on the benchmark's reference photos;
* ``recall``: on the benchmark's overlay/meme/screenshot/mosaic queries, the share with a detected box of IoU
  >= 0.5 to the true placement (manifest ``placement_box``) at the default settings, per family, next to what the
  whole image or the best 2x2/3x3 grid tile would give;
* ``false_alarms``: boxes per image at the default confidence on unedited photos (the benchmark references),
  and on text/emoji queries vs queries with photometric edits only;
* ``agreement``: for verified pairs, the best IoU between the matched query area and a detected box: copies
  of the overlay/meme/screenshot/mosaic families vs holistic hard negatives (the query is the whole photo the reference was cut from);
* ``e2e``: µAP of the local engine on the overlay-family queries, query regions ("full",) vs ("full", "yolo"),
  against all references or (``--e2e-refs N``) the true references plus a seeded sample of the others.

Writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from detectors.detect import Detector
from detectors.evidence import box_iou
from matcher.config import DetectorConfig, MatcherConfig
from matcher.regions.region import grid_regions

OVERLAY_FAMILIES = ("overlay", "meme", "screenshot", "mosaic")
PHOTOMETRIC = ("color", "blur", "noise", "jpeg", "pixelize")


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------------------------------------------
# synthetic val: mAP


def _yolo_boxes(label: Path, w: int, h: int) -> np.ndarray:
    rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
    out = np.array([[float(v) for v in r[1:]] for r in rows if r[0] == "0"], np.float64).reshape(-1, 4)
    cx, cy, bw, bh = out[:, 0] * w, out[:, 1] * h, out[:, 2] * w, out[:, 3] * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


def average_precision(preds: list[tuple[int, float, np.ndarray]], gts: list[np.ndarray], iou: float) -> float:
    """COCO-style AP (101-point interpolation) of (image index, score, box) predictions against per-image
    ground-truth boxes (N_i, 4), greedy matching by score at IoU >= ``iou``."""
    n_gt = sum(len(g) for g in gts)
    if n_gt == 0:
        return float("nan")
    used = [np.zeros(len(g), bool) for g in gts]
    tp = []
    for i, _s, box in sorted(preds, key=lambda p: -p[1]):
        g = gts[i]
        ok = False
        if len(g):
            ious = box_iou(box, g)
            ious[used[i]] = -1
            j = int(np.argmax(ious))
            if ious[j] >= iou:
                used[i][j] = ok = True
        tp.append(ok)
    tp_a = np.array(tp, float)
    ctp = np.cumsum(tp_a)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(tp_a) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        k = np.searchsorted(recall, r, side="left")
        ap += precision[k] if k < len(precision) else 0.0
    return ap / 101


def section_synthetic(det: Detector, synth: Path) -> dict[str, Any]:
    manifest = json.loads((synth / "manifest.json").read_text())
    val = [r for r in manifest["examples"] if r["split"] == "val"]
    images = [_load(synth / "images" / "val" / f"{r['name']}.jpg") for r in val]
    gts = [_yolo_boxes(synth / "labels" / "val" / f"{r['name']}.txt", im.shape[1], im.shape[0])
           for r, im in zip(val, images)]
    dets = det(images, DetectorConfig(conf=0.001, iou=0.7, max_boxes=100))
    preds = [(i, d.score, np.array(d.box)) for i, ds in enumerate(dets) for d in ds if d.cls == 0]
    aps = {t: average_precision(preds, gts, t) for t in np.round(np.arange(0.5, 0.96, 0.05), 2)}
    out: dict[str, Any] = {"n_val": len(val), "n_boxes": int(sum(len(g) for g in gts)),
                           "map50": aps[0.5], "map50_95": float(np.mean(list(aps.values())))}
    by_layout = {}
    for layout in sorted({r["layout"] for r in val} - {"none"}):
        idx = [i for i, r in enumerate(val) if r["layout"] == layout]
        sub = {i: k for k, i in enumerate(idx)}
        p = [(sub[i], s, b) for i, s, b in preds if i in sub]
        by_layout[layout] = {"n": len(idx), "map50": average_precision(p, [gts[i] for i in idx], 0.5)}
    out["map50_by_layout"] = by_layout
    # false alarms on val examples with nothing pasted, with / without text-emoji distractors (conf 0.1)
    default = DetectorConfig()
    fa = {"clean": [], "text_emoji": []}
    on_distractor = []
    for r, ds in zip(val, dets):
        if r["layout"] != "none":
            continue
        kept = [d for d in ds if d.score >= default.conf][: default.max_boxes]
        marks = [x for x in r["distractors"] if x["kind"] in ("text", "emoji") and x["box"]]
        fa["text_emoji" if marks else "clean"].append(len(kept))
        for d in kept if marks else []:
            on_distractor.append(bool(max(box_iou(d.box, np.array([m["box"] for m in marks]))) >= 0.3))
    out["false_alarms_none_layout"] = {
        k: {"images": len(v), "boxes_per_image": float(np.mean(v)) if v else None,
            "images_with_box": float(np.mean(np.array(v) > 0)) if v else None} for k, v in fa.items()}
    out["false_alarms_on_text_emoji_boxes"] = {"boxes": len(on_distractor),
                                               "iou_ge_0.3_with_a_text_or_emoji": int(sum(on_distractor))}
    return out


# ------------------------------------------------------------------------------------------------------------
# benchmark photos


def _bench_queries(bench: Path, families: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    manifest = json.loads((bench / "manifest.json").read_text())
    return [(q, e) for q, e in sorted(manifest["queries"].items()) if e.get("primary_family") in families]


def section_speed(det: Detector, bench: Path, n: int) -> dict[str, Any]:
    import torch

    paths = sorted((bench / "references").glob("*.jpg"))[:n]
    images = [_load(p) for p in paths]
    det(images[:4])  # warm-up
    t = time.perf_counter()
    det(images, DetectorConfig(batch_size=16))
    dt = time.perf_counter() - t
    return {"images": len(images), "seconds": dt, "images_per_s": len(images) / dt, "device": det.device,
            "torch_threads": torch.get_num_threads(), "imgsz": det.imgsz,
            "load_average_1min": os.getloadavg()[0]}


def _best_iou(box: list[float], boxes: list[tuple[float, ...]]) -> float:
    return float(box_iou(box, np.array(boxes)).max()) if boxes else 0.0


def section_recall(det: Detector, bench: Path) -> dict[str, Any]:
    rows = _bench_queries(bench, OVERLAY_FAMILIES)
    cfg = DetectorConfig()
    res: dict[str, Any] = {"n_queries": len(rows), "families": {}}
    hits = {"detector": [], "detector_top1": [], "full_image": [], "best_grid_tile": []}
    per_fam: dict[str, dict[str, list[bool]]] = {}
    n_boxes = []
    all_dets = []
    for _qid, e in rows:
        img = _load(bench / e["file"])
        h, w = img.shape[:2]
        ds = det([img], cfg)[0]
        all_dets.append(ds)
        n_boxes.append(len(ds))
        truth = e["placement_box"]
        tiles = [r.box for n in (2, 3) for r in grid_regions(img, n)]
        vals = {"detector": _best_iou(truth, [d.box for d in ds]) >= 0.5,
                "detector_top1": _best_iou(truth, [d.box for d in ds[:1]]) >= 0.5,
                "full_image": _best_iou(truth, [(0, 0, w, h)]) >= 0.5,
                "best_grid_tile": _best_iou(truth, tiles) >= 0.5}
        fam = per_fam.setdefault(e["primary_family"], {k: [] for k in hits})
        for k, v in vals.items():
            hits[k].append(v)
            fam[k].append(v)
    res["recall_iou50"] = {k: float(np.mean(v)) for k, v in hits.items()}
    res["by_conf"] = {str(c): {"recall_iou50": float(np.mean([_best_iou(e["placement_box"], [d.box for d in ds
                                                                                           if d.score >= c]) >= 0.5
                                                              for (_q, e), ds in zip(rows, all_dets)])),
                               "boxes_per_query": float(np.mean([sum(d.score >= c for d in ds) for ds in all_dets]))}
                      for c in (0.1, 0.25, 0.5)}
    res["families"] = {f: {"n": len(v["detector"]), **{k: float(np.mean(x)) for k, x in v.items()}}
                       for f, v in sorted(per_fam.items())}
    res["boxes_per_query"] = float(np.mean(n_boxes))
    return res


def section_false_alarms(det: Detector, bench: Path) -> dict[str, Any]:
    cfg = DetectorConfig()
    refs = sorted((bench / "references").glob("*.jpg"))
    counts, top, c25, c50 = [], [], [], []
    for p in refs:
        ds = det([_load(p)], cfg)[0]
        counts.append(len(ds))
        c25.append(sum(d.score >= 0.25 for d in ds))
        c50.append(sum(d.score >= 0.5 for d in ds))
        top.append(ds[0].score if ds else 0.0)
    out: dict[str, Any] = {"unedited_photos": {
        "images": len(refs), "boxes_per_image": float(np.mean(counts)),
        "boxes_per_image_conf_0.25": float(np.mean(c25)), "boxes_per_image_conf_0.5": float(np.mean(c50)),
        "images_with_box": float(np.mean(np.array(counts) > 0)),
        "images_with_box_conf_0.25": float(np.mean(np.array(top) >= 0.25)),
        "images_with_box_conf_0.5": float(np.mean(np.array(top) >= 0.5))}}
    for name, fams in (("text_emoji_queries", ("text", "emoji")), ("photometric_queries", PHOTOMETRIC)):
        rows = [(q, e) for q, e in _bench_queries(bench, fams) if len(e.get("families", [])) == 1]
        c = [len(det([_load(bench / e["file"])], cfg)[0]) for _q, e in rows]
        out[name] = {"images": len(c), "boxes_per_image": float(np.mean(c)) if c else None,
                     "images_with_box": float(np.mean(np.array(c) > 0)) if c else None}
    return out


# ------------------------------------------------------------------------------------------------------------
# detector agreement as pair evidence


def section_agreement(det: Detector, bench: Path) -> dict[str, Any]:
    """Best IoU between the matched query area and a detected box, for verified pairs: copies of the overlay,
    meme, screenshot and mosaic families (query vs its reference) vs holistic hard negatives (whole photo vs a
    reference cut out of it)."""
    from detectors.evidence import pair_detector_agreement
    from matcher.local.engine import LocalEngine

    manifest = json.loads((bench / "manifest.json").read_text())
    engine = LocalEngine(MatcherConfig())
    copies = [(q, e, e["reference_id"]) for q, e in _bench_queries(bench, OVERLAY_FAMILIES) if e["kind"] == "copy"]
    groups = {**{f"copy_{f}": [r for r in copies if r[1]["primary_family"] == f] for f in OVERLAY_FAMILIES},
              "holistic_negative": [(q, e, e["related_references"][0]) for q, e in sorted(manifest["queries"].items())
                                    if e["kind"] == "hard_negative_holistic"]}
    out: dict[str, Any] = {}
    for name, rows in groups.items():
        ious = []
        for _q, e, rid in rows:
            img = _load(bench / e["file"])
            res = engine.score_pair(img, bench / manifest["references"][rid]["file"])
            if not res.evidence.verified:
                continue
            ag = pair_detector_agreement(res.evidence, det([img])[0], (img.shape[1], img.shape[0]))
            ious.append(ag.iou)
        a = np.array(ious)
        out[name] = {"pairs": len(rows), "verified": len(a), "mean_iou": float(a.mean()) if len(a) else None,
                     "share_iou_ge_0.5": float((a >= 0.5).mean()) if len(a) else None}
    return out


# ------------------------------------------------------------------------------------------------------------
# end to end


def section_e2e(bench: Path, out: Path, weights: str, variants: list[str], n_refs: int) -> dict[str, Any]:
    from matcher.isc.exhaustive import run_exhaustive_match
    from matcher.isc.metrics import evaluate, restrict
    from matcher.isc.submission import read_ground_truth, read_predictions
    from matcher.local.engine import LocalEngine

    rows = _bench_queries(bench, OVERLAY_FAMILIES)
    qdir = out / "overlay_queries"
    if qdir.exists():
        shutil.rmtree(qdir)
    qdir.mkdir(parents=True)
    for _q, e in rows:
        shutil.copyfile(bench / e["file"], qdir / Path(e["file"]).name)
    gt = read_ground_truth(bench / "ground_truth.csv")
    ids = {q for q, _e in rows}
    refs = sorted(p.name for p in (bench / "references").glob("*.jpg"))
    rdir = bench / "references"
    if 0 < n_refs < len(refs):  # the true references of these queries plus a seeded sample of the others
        need = sorted({g.reference_id + ".jpg" for g in gt if g.query_id in ids and g.reference_id})
        others = [r for r in refs if r not in need]
        pick = np.random.default_rng(0).choice(len(others), max(0, n_refs - len(need)), replace=False)
        rdir = out / "e2e_references"
        if rdir.exists():
            shutil.rmtree(rdir)
        rdir.mkdir(parents=True)
        for name in need + [others[i] for i in sorted(pick)]:
            shutil.copyfile(bench / "references" / name, rdir / name)
    res: dict[str, Any] = {"n_queries": len(rows), "n_copies": sum(1 for _q, e in rows if e["kind"] == "copy"),
                           "n_references": len(list(rdir.glob("*.jpg")))}
    old = out / "results.json"
    if old.exists():  # keep variants measured by an earlier run
        res.update({k: v for k, v in json.loads(old.read_text())["sections"].get("e2e", {}).items()
                    if k not in ("n_queries", "n_copies", "n_references", "section_seconds")})
    for name, regions in (("full", ("full",)), ("full+yolo", ("full", "yolo"))):
        if name not in variants:
            continue
        config = MatcherConfig.make(local={"query_regions": regions}, detector={"weights": weights})
        engine = LocalEngine(config)
        t = time.perf_counter()
        summary = run_exhaustive_match(qdir, rdir, out / f"e2e_{name}.csv", engine=engine,
                                       cache_dir=out / "feature_cache", progress=False)
        preds, g = restrict(read_predictions(out / f"e2e_{name}.csv"), gt, ids)
        m = evaluate(preds, g)
        res[name] = {"micro_ap": m.micro_ap, "recall_at_p90": m.recall_at_p90, "recall_at_rank1": m.recall_at_rank1,
                     "n_predictions": m.n_predictions, "seconds": time.perf_counter() - t,
                     "query_seconds": summary.seconds.get("queries")}
    return res


# ------------------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def to_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Detector benchmark ({r['machine']})", "", f"weights: `{r['weights']}`", ""]
    for name, sec in r["sections"].items():
        lines += [f"## {name}", "", "```json", json.dumps(sec, indent=1, default=_fmt), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="", help="detector weights (default: the shipped ones)")
    p.add_argument("--synth", type=Path, help="synthetic data folder (make-detector-data output)")
    p.add_argument("--bench", type=Path, help="benchmark folder (make-benchmark output)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sections", default="synthetic,speed,recall,false_alarms,agreement,e2e")
    p.add_argument("--speed-images", type=int, default=96)
    p.add_argument("--device", default="cpu")
    p.add_argument("--e2e-variants", default="full,full+yolo", help="query-region variants of the e2e section")
    p.add_argument("--e2e-refs", type=int, default=0,
                   help="e2e gallery: the true references plus random others up to this many (0 = all)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    needs_det = set(args.sections.split(",")) - {"e2e"} or "full+yolo" in args.e2e_variants
    det = Detector.load(DetectorConfig(weights=args.weights, device=args.device)) if needs_det else None
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "weights":
                           args.weights or "weights/detector_yolov8n.pt", "sections": {}}
    path = args.out / "results.json"
    if path.exists():
        res["sections"] = json.loads(path.read_text()).get("sections", {})
    for sec in args.sections.split(","):
        t = time.perf_counter()
        if sec == "synthetic":
            out = section_synthetic(det, args.synth)
        elif sec == "speed":
            out = section_speed(det, args.bench, args.speed_images)
        elif sec == "recall":
            out = section_recall(det, args.bench)
        elif sec == "false_alarms":
            out = section_false_alarms(det, args.bench)
        elif sec == "agreement":
            out = section_agreement(det, args.bench)
        elif sec == "e2e":
            out = section_e2e(args.bench, args.out, args.weights, args.e2e_variants.split(","), args.e2e_refs)
        else:
            p.error(f"unknown section {sec!r}")
        out["section_seconds"] = time.perf_counter() - t
        res["sections"][sec] = out
        print(sec, json.dumps(out, default=_fmt), flush=True)
        path.write_text(json.dumps(res, indent=1, default=float))
        (args.out / "results.md").write_text(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
