#!/usr/bin/env python
"""Global-descriptor benchmark: µAP / recall@P90 (global only, with and without score normalisation),
candidate recall@k, the ASL norm gate on holistic-vs-crop hard negatives, and throughput.

Inputs: a benchmark folder from ``bench/make_dataset.py`` (references/, queries/, background/,
ground_truth.csv, manifest.json) and, for the SSCD peer, descriptors written by ``bench/sscd_peer.py folder``
(``<sscd>_references.npy/.json`` etc., made in the Python 3.12 side environment).

Example::

    python bench/bench_descriptor.py /tmp/bench_desc --work /tmp/desc_bench \\
        --models asl_lite0 imagenet_lite0 --sscd /tmp/desc_bench/sscd --json /tmp/desc_bench/results.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from matcher.config import DescriptorConfig
from matcher.descriptors.infer import describe_images
from matcher.descriptors.registry import load_descriptor
from matcher.io.folders import list_images
from matcher.io.images import load_image
from matcher.isc.metrics import evaluate, load_manifest
from matcher.isc.submission import GroundTruthMatch, PredictedMatch, read_ground_truth
from matcher.retrieval.gate import apply_gate, gate_marks, log_norm_ratio
from matcher.retrieval.index import ReferenceIndex
from matcher.retrieval.normalise import background_mean, normalise_scores, split_norm, subtract_negatives

SPLITS = ("references", "queries", "background")


def describe_folder(model: Any, spec: Any, folder: Path, batch: int = 32) -> tuple[list[str], np.ndarray, dict[str, float]]:
    """Descriptors of every picture of ``folder`` -> (ids, (N, D) float32, timing)."""
    paths = list_images(folder)
    t0 = time.perf_counter()
    images = [load_image(p) for p in paths]
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    f = describe_images(model, images, spec.image_size, spec.mean, spec.std, batch_size=batch, scales=spec.scales)
    t_model = time.perf_counter() - t1
    n = max(len(paths), 1)
    return [p.stem for p in paths], f, {"images_per_s_model": n / t_model, "images_per_s_total": n / (t_model + t_load)}


def ours(model_name: str, weights: str | None, bench: Path, work: Path, refresh: bool,
         size: int = 0) -> dict[str, Any]:
    model, spec, sha = load_descriptor(model_name, weights, **({"image_size": size} if size else {}))
    out: dict[str, Any] = {"name": model_name, "sha256": sha, "image_size": spec.image_size, "meta": {}}
    if weights or spec.weights_path():
        from matcher.descriptors.weights import read_weights

        out["meta"] = read_weights(weights or spec.weights_path())[1]
    for split in SPLITS:
        npy, js = work / f"{model_name}_{split}.npy", work / f"{model_name}_{split}.json"
        if npy.is_file() and not refresh and json.loads(js.read_text()).get("sha256") == sha:
            out[split] = (json.loads(js.read_text())["ids"], np.load(npy, allow_pickle=False))
            out.setdefault("timing", json.loads(js.read_text())["timing"])
            continue
        ids, f, timing = describe_folder(model, spec, bench / split)
        np.save(npy, f, allow_pickle=False)
        js.write_text(json.dumps({"ids": ids, "timing": timing, "sha256": sha}))
        out[split] = (ids, f)
        if split == "queries":
            out["timing"] = timing
        print(f"{model_name} {split}: {len(ids)} in {len(ids) / timing['images_per_s_total']:.0f} s", file=sys.stderr)
    return out


def sscd(prefix: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "sscd_int8", "sha256": None, "meta": {}}
    for split in SPLITS:
        meta = json.loads(Path(f"{prefix}_{split}.json").read_text())
        out[split] = (meta["ids"], np.load(f"{prefix}_{split}.npy", allow_pickle=False))
        if split == "queries":
            out["timing"] = {"images_per_s_model": meta["images_per_s_model"],
                             "images_per_s_total": meta["images_per_s_total"]}
    return out


def _preds(qids: list[str], rids: list[str], scores: np.ndarray, rows: np.ndarray, k: int) -> list[PredictedMatch]:
    return [PredictedMatch(qids[i], rids[rows[i, j]], float(scores[i, j]))
            for i in range(len(qids)) for j in range(min(k, rows.shape[1])) if rows[i, j] >= 0]


def _metrics(qids, rids, scores, rows, gt, k) -> dict[str, Any]:
    m = evaluate(_preds(qids, rids, scores, rows, k), gt)
    return {"uap": round(m.micro_ap, 4), "recall_p90": round(m.recall_at_p90, 4),
            "threshold_p90": None if m.threshold_at_p90 is None else round(m.threshold_at_p90, 4)}


def evaluate_descriptors(d: dict[str, Any], gt: list[GroundTruthMatch], manifest: dict[str, Any],
                         cfg: DescriptorConfig, top_k: int = 10, sweep: bool = True) -> dict[str, Any]:
    """All global-only figures for one descriptor set."""
    rids, fr = d["references"]
    qids, fq = d["queries"]
    _, fb = d["background"]
    zr, nr = split_norm(fr)
    zq, nq = split_norm(fq)
    zb, _ = split_norm(fb)
    index = ReferenceIndex.create(zr.shape[1], d["name"], d["sha256"], cfg)
    index.add(rids, fr)
    res = index.search(fq, 100)
    out: dict[str, Any] = {"raw": _metrics(qids, rids, res.scores, res.rows, gt, top_k)}
    bgq = background_mean(zq, zb, cfg.score_norm_k)
    sn = normalise_scores(res.scores, bgq, cfg.score_norm_beta)
    out["score_norm"] = _metrics(qids, rids, sn, res.rows, gt, top_k)
    if sweep:
        out["score_norm_sweep"] = {}
        for beta in (0.5, 1.0, 1.5, 2.0):
            for k in (3, 5, 10):
                s2 = normalise_scores(res.scores, background_mean(zq, zb, k), beta)
                out["score_norm_sweep"][f"beta={beta},k={k}"] = _metrics(qids, rids, s2, res.rows, gt, top_k)["uap"]
        bgr = background_mean(zr, zb, cfg.score_norm_k)
        sym = normalise_scores(res.scores, bgq, cfg.score_norm_beta, bgr[np.maximum(res.rows, 0)])
        out["score_norm_symmetric"] = _metrics(qids, rids, sym, res.rows, gt, top_k)
        nes_q = subtract_negatives(zq, zb, cfg.score_norm_k, 0.5)
        nes_r = subtract_negatives(zr, zb, cfg.score_norm_k, 0.5)
        nes = ReferenceIndex.create(zr.shape[1], d["name"], d["sha256"], cfg)
        nes.add(rids, nes_r)
        rn = nes.search(nes_q, top_k)
        out["neg_subtraction"] = _metrics(qids, rids, rn.scores, rn.rows, gt, top_k)
    # candidate recall@k on copy queries
    truth = {g.query_id: g.reference_id for g in gt if g.reference_id}
    row_of = {r: i for i, r in enumerate(rids)}
    qpos = [(i, row_of[truth[q]]) for i, q in enumerate(qids) if q in truth]
    out["candidate_recall"] = {f"r@{k}": round(float(np.mean([t in res.rows[i, :k] for i, t in qpos])), 4)
                               for k in (1, 10, 100)}
    # ASL norm gate (descriptors with a meaningful norm only)
    margin = d.get("meta", {}).get("gate_margin")
    if margin is not None:
        margin = float(margin)
        qrow = {q: i for i, q in enumerate(qids)}
        hol = [(qrow[q], row_of[e["related_references"][0]]) for q, e in manifest["queries"].items()
               if e["kind"] == "hard_negative_holistic"]
        lr_h = np.array([np.log(nq[i]) - np.log(nr[j]) for i, j in hol])
        lr_c = np.array([np.log(nq[i]) - np.log(nr[j]) for i, j in qpos])
        hol_sim = np.array([float(zq[i] @ zr[j]) for i, j in hol])
        marks = gate_marks(log_norm_ratio(nq, res.ref_norms), margin)
        gated = apply_gate(res.scores, marks, cfg.gate_penalty)
        gated_sn = apply_gate(sn, marks, cfg.gate_penalty)
        out["gate"] = {
            "margin": round(margin, 4),
            "holistic_rejected": round(float(np.mean(lr_h > margin)), 4),
            "copies_wrongly_rejected": round(float(np.mean(lr_c > margin)), 4),
            "holistic_q_norm_above_r": round(float(np.mean(lr_h > 0)), 4),
            "copies_q_norm_above_r": round(float(np.mean(lr_c > 0)), 4),
            "holistic_mean_cosine_to_crop": round(float(hol_sim.mean()), 4),
            "uap_gated": _metrics(qids, rids, gated, res.rows, gt, top_k),
            "uap_gated_score_norm": _metrics(qids, rids, gated_sn, res.rows, gt, top_k),
        }
        kinds = {q: e["kind"] for q, e in manifest["queries"].items()}
        hq = {qrow[q] for q, k in kinds.items() if k == "hard_negative_holistic"}
        hmask = np.array([i in hq for i in range(len(qids))])
        top = res.scores[:, 0]
        out["gate"]["holistic_top1_marked"] = round(float(marks[hmask, 0].mean()), 4) if hmask.any() else None
        del top
    return out


def search_throughput(dim: int = 256, sizes: tuple[int, ...] = (10_000, 1_000_000), n_queries: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """faiss queries/s for top-100 on synthetic unit vectors: exact (flat) at every size; IVF-PQ at the largest."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_queries, dim)).astype(np.float32)
    out: dict[str, Any] = {}
    for n in sizes:
        refs = rng.standard_normal((n, dim)).astype(np.float32)
        kinds = ["flat"] + (["ivfpq"] if n >= 100_000 else [])
        for kind in kinds:
            idx = ReferenceIndex.create(dim, "synthetic", None, DescriptorConfig(index_type=kind), n_expected=n)
            t0 = time.perf_counter()
            if kind == "ivfpq":
                zt, _ = split_norm(refs[:100_000])
                idx.index.train(zt)
            for s in range(0, n, 100_000):
                idx.add([str(i) for i in range(s, min(n, s + 100_000))], refs[s:s + 100_000])
            t_build = time.perf_counter() - t0
            idx.search(q[:10], 100)
            t1 = time.perf_counter()
            idx.search(q, 100)
            dt = time.perf_counter() - t1
            out[f"{kind}@{n}"] = {"queries_per_s": round(n_queries / dt, 1), "build_s": round(t_build, 1)}
            print(f"search {kind}@{n}: {out[f'{kind}@{n}']}", file=sys.stderr)
        del refs
    return out


def descriptor_throughput(model_name: str, folder: Path, n: int, weights: str | None = None,
                          batch: int = 32, size: int = 0) -> dict[str, float]:
    """CPU images/s of one model on the first ``n`` pictures of ``folder`` (after a warm-up batch):
    model-only (squash-resize + forward) and including JPEG decoding; also images per CPU-second (all
    threads summed), which other processes sharing the CPU do not change."""
    model, spec, _ = load_descriptor(model_name, weights, **({"image_size": size} if size else {}))
    paths = list_images(folder)[:n]
    t0 = time.perf_counter()
    images = [load_image(p) for p in paths]
    t_load = time.perf_counter() - t0
    describe_images(model, images[:batch], spec.image_size, spec.mean, spec.std, batch_size=batch)
    t1, c1 = time.perf_counter(), time.process_time()
    describe_images(model, images, spec.image_size, spec.mean, spec.std, batch_size=batch)
    dt, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {"image_size": spec.image_size, "images_per_s_model": round(len(paths) / dt, 1),
            "images_per_s_total": round(len(paths) / (dt + t_load), 1),
            "images_per_cpu_s_model": round(len(paths) / cpu, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="folder for cached descriptors")
    ap.add_argument("--models", nargs="*", default=["asl_lite0", "imagenet_lite0"])
    ap.add_argument("--weights", default=None, help="weights file for the first model (default: its registry file)")
    ap.add_argument("--sscd", type=Path, default=None, help="prefix of bench/sscd_peer.py outputs")
    ap.add_argument("--refresh", action="store_true", help="recompute cached descriptors")
    ap.add_argument("--search", action="store_true", help="also measure faiss search at 10k and 1M references")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--throughput", type=int, default=0,
                    help="only measure CPU images/s of --models on the first N queries, print JSON and stop")
    ap.add_argument("--size", type=int, default=0, help="input size override (px) of our models (use its own --work)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.throughput:
        for i, name in enumerate(args.models):
            r = descriptor_throughput(name, args.bench / "queries", args.throughput,
                                      args.weights if i == 0 else None, size=args.size)
            print(json.dumps({name: r}))
        return 0
    cfg = DescriptorConfig()
    gt = read_ground_truth(args.bench / "ground_truth.csv")
    manifest = load_manifest(args.bench / "manifest.json")
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"bench": str(args.bench), "config": cfg.__dict__, "models": {}}
    sets = []
    for i, name in enumerate(args.models):
        sets.append(ours(name, args.weights if i == 0 else None, args.bench, args.work, args.refresh, args.size))
    if args.sscd is not None:
        sets.append(sscd(args.sscd))
    for d in sets:
        r = evaluate_descriptors(d, gt, manifest, cfg)
        r["throughput"] = {k: round(v, 1) for k, v in d["timing"].items()}
        results["models"][d["name"]] = r
        print(json.dumps({d["name"]: r}, indent=1))
    if args.search:
        results["search"] = search_throughput()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
