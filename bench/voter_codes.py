"""Compressed keypoint voters (issue 15, a lean index): candidate recall, voting time and bytes per keypoint for each
``pipeline.voting_codes`` setting (flat float32, sq8, pq32, pq64) over one index's reference keypoints.

    python bench/voter_codes.py --bench /tmp/domains/home --index /tmp/domains/home_index --work /tmp/vk_codes \\
        --codes flat sq8 pq32 pq64

Each voter is built from the index's feature store (as ``icd index`` builds it: same seed, sample and lists) and
saved under ``--work`` (the index folder is only read). Every copy query of the benchmark (``--queries`` caps them,
a seeded sample) is described once (whole-picture RootSIFT + mirrored, as the pipeline's voting stage gets it),
then voted with each voter, memory-mapped as a query process loads it: "recall@k" = the true reference is among
the voter's best k (k = ``--top``, 40 = the pipeline's 10 voting candidates + its 30 global ones, the ``top`` the
candidate stage asks for; also 10), "agree@k" = share of flat's best k also in this voter's best k (over the
queries flat gives at least one candidate). Seconds per
query: the vote only (both descriptor sets searched), one thread per process as measured (the machine is shared).
RAM: the process's anonymous and file-backed resident memory after loading and voting, read from /proc (file-backed
pages are shared page cache). Writes JSON (``--out``).

``--match-rss QUERIES`` instead runs ``icd match --queries QUERIES --index INDEX`` and records the process's peak
resident memory, split into anonymous (private) and file-backed (mapped index files, shared between processes)
by polling /proc, plus its wall time:

    python bench/voter_codes.py --index /tmp/vk_home_pq32 --match-rss /tmp/vk_q50 --match-codes pq32 \\
        --label rss_pq32
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matcher.config import MatcherConfig
from matcher.io.images import ImageLoadError, load_image
from matcher.local.types import LocalFeatures
from matcher.references.disk.store import IndexStore
from matcher.retrieval.index import file_crc32
from matcher.retrieval.voting import VOTER_CODES, KeypointVoter


def rss_kb() -> dict[str, int]:
    """RssAnon / RssFile of this process, kB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def copy_queries(bench: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """(query id, true reference id) of the benchmark's copy queries; a seeded sample of ``n`` when n > 0."""
    with open(bench / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        pairs = [(r["query_id"], r["reference_id"]) for r in csv.DictReader(fh) if r["reference_id"]]
    if 0 < n < len(pairs):
        pick = np.random.default_rng(seed).choice(len(pairs), size=n, replace=False)
        pairs = [pairs[i] for i in sorted(pick)]
    return pairs


def describe(bench: Path, pairs: list[tuple[str, str]], cache: Path) -> dict[str, LocalFeatures]:
    """Whole-picture query features (with mirrored descriptors), cached in ``cache`` (npz)."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:  # each z[...] reads the whole array: read each once
            ids, offs, desc, mirr = [str(i) for i in z["ids"]], z["offsets"], z["desc"], z["mirr"]
        return {q: LocalFeatures(keypoints=np.zeros((offs[i + 1] - offs[i], 2), np.float32),
                                 scales=np.ones(offs[i + 1] - offs[i], np.float32),
                                 orientations=np.zeros(offs[i + 1] - offs[i], np.float32),
                                 descriptors=desc[offs[i]:offs[i + 1]], image_size=(1, 1),
                                 mirrored=mirr[offs[i]:offs[i + 1]]) for i, q in enumerate(ids)}
    from matcher.local.engine import LocalEngine

    engine = LocalEngine(MatcherConfig())
    files = {p.stem: p for p in (bench / "queries").iterdir()}
    out: dict[str, LocalFeatures] = {}
    for i, (qid, _) in enumerate(pairs):
        try:
            f = engine.query_features(load_image(files[qid])).features[0]
        except (KeyError, ImageLoadError) as exc:
            print(f"skipped {qid}: {exc}", file=sys.stderr)
            continue
        out[qid] = f
        if i % 100 == 0:
            print(f"described {i}/{len(pairs)}", file=sys.stderr, flush=True)
    ids = list(out)
    offs = np.concatenate([[0], np.cumsum([out[q].n for q in ids])])
    np.savez(cache, ids=np.array(ids), offsets=offs,
             desc=np.concatenate([out[q].descriptors for q in ids]).astype(np.float32),
             mirr=np.concatenate([out[q].mirrored for q in ids]).astype(np.float32))
    return out


def build(index: Path, codes: str, folder: Path) -> dict[str, float]:
    """Build the ``codes`` voter of ``index`` into ``folder`` (skipped when there); its build seconds."""
    if (folder / "voter.json").exists():
        return json.loads((folder / "build.json").read_text())
    with IndexStore.open(index) as store:
        n = len(store)
        t = time.perf_counter()
        v = KeypointVoter.from_chunks(lambda: store.feature_chunks(0, n), seed=store.config.seed, codes=codes)
        sec = time.perf_counter() - t
        v.save(folder, n_refs=n)
    info = {"build_s": round(sec, 1)}
    (folder / "build.json").write_text(json.dumps(info))
    return info


def measure(folder: Path, feats: dict[str, LocalFeatures], truth: dict[str, int], top: int,
            nprobe: int) -> dict:
    """Votes of every query with the voter saved in ``folder`` (memory-mapped), and its sizes."""
    meta = KeypointVoter.read_meta(folder)
    f = folder / meta["faiss"]
    t = time.perf_counter()
    crc = file_crc32(f)
    crc_s = time.perf_counter() - t
    before = rss_kb()
    t = time.perf_counter()
    voter = KeypointVoter.load(folder, nprobe=nprobe, mmap=True)
    load_s = time.perf_counter() - t
    lists, secs = {}, []
    for qid, q in feats.items():
        t = time.perf_counter()
        votes = voter.vote(q, top)
        secs.append(time.perf_counter() - t)
        lists[qid] = [r for r, _ in votes]
    after = rss_kb()
    hit = {k: float(np.mean([truth[q] in lists[q][:k] for q in feats])) for k in (10, top)}
    size = f.stat().st_size
    return {"codes": meta.get("codes", "flat"), "index_type": type(voter.index).__name__,
            "vectors": len(voter), "references": voter.n_refs, "file_bytes": size,
            "bytes_per_keypoint": round(size / max(1, len(voter)), 1),
            "bytes_per_reference": round(size / max(1, voter.n_refs)),
            "crc32_s": round(crc_s, 2), "crc32_ok": crc == meta.get("crc32", crc), "load_mmap_s": round(load_s, 2),
            "rss_anon_kb_growth": after["RssAnon"] - before["RssAnon"],
            "rss_file_kb_growth": after["RssFile"] - before["RssFile"],
            "recall@10": round(hit[10], 4), f"recall@{top}": round(hit[top], 4),
            "ms_per_query": round(1000 * float(np.mean(secs)), 1),
            "ms_per_query_p90": round(1000 * float(np.percentile(secs, 90)), 1), "lists": lists}


def match_rss(index: Path, queries: Path, work: Path, codes: str | None) -> dict:
    """Peak RssAnon / RssFile / VmHWM (kB) and seconds of one ``icd match`` process over ``queries`` (with
    ``pipeline.voting_codes`` = ``codes`` when given)."""
    import subprocess

    icd = Path(sys.executable).with_name("icd")
    cmd = [str(icd), "-q", "match", "--queries", str(queries), "--index", str(index), "--output",
           str(work / "match_rss.csv")]
    if codes:
        (work / "codes.json").write_text(json.dumps({"pipeline": {"voting_codes": codes}}))
        cmd += ["--config", str(work / "codes.json")]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak: dict[str, int] = {}
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(("RssAnon:", "RssFile:", "VmHWM:")):
                        key = line.split(":")[0]
                        peak[key] = max(peak.get(key, 0), int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.2)
    return {"index": str(index), "codes": codes, "queries": len(list(queries.iterdir())), "rc": proc.returncode,
            "seconds": round(time.perf_counter() - t, 1), "peak_rss_anon_kb": peak.get("RssAnon"),
            "peak_rss_file_kb": peak.get("RssFile"), "vm_hwm_kb": peak.get("VmHWM")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/voter_codes"),
                    help="folder for the built voters and the query features")
    ap.add_argument("--match-rss", type=Path, default=None, metavar="QUERIES",
                    help="measure the peak memory of icd match over QUERIES against --index instead")
    ap.add_argument("--match-codes", default=None, choices=VOTER_CODES, help="pipeline.voting_codes for --match-rss")
    ap.add_argument("--codes", nargs="+", default=list(VOTER_CODES), choices=VOTER_CODES)
    ap.add_argument("--flat-voter", type=Path, default=None,
                    help="an existing flat voter folder to use instead of building one (e.g. INDEX/voter)")
    ap.add_argument("--queries", type=int, default=0, help="0 = every copy query")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results_voter_codes.json"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.match_rss is not None:
        res = match_rss(args.index, args.match_rss, args.work, args.match_codes)
        print(json.dumps(res))
        old[args.label or f"rss {args.index}"] = res
        args.out.write_text(json.dumps(old, indent=1) + "\n")
        return 0
    if args.bench is None:
        ap.error("--bench is required unless --match-rss is given")
    pairs = copy_queries(args.bench, args.queries, args.seed)
    with IndexStore.open(args.index) as store:
        truth = {q: store.row_of(r) for q, r in pairs if r in store}
    feats = {q: f for q, f in describe(args.bench, pairs, args.work / "queries.npz").items() if q in truth}
    results = []
    for codes in args.codes:
        folder = args.flat_voter if codes == "flat" and args.flat_voter else args.work / f"voter_{codes}"
        info = {} if folder == args.flat_voter else build(args.index, codes, folder)
        res = {**measure(folder, feats, truth, args.top, args.nprobe), **info}
        print(json.dumps({k: v for k, v in res.items() if k != "lists"}), flush=True)
        results.append(res)
    flat = next((r["lists"] for r in results if r["codes"] == "flat"), None)
    voted = [q for q in feats if flat and flat[q]]  # queries with at least one flat candidate
    for r in results:
        if flat is not None:
            for k in (10, args.top):
                r[f"agree@{k}"] = round(float(np.mean([
                    len(set(r["lists"][q][:k]) & set(flat[q][:k])) / len(flat[q][:k]) for q in voted])), 4)
        del r["lists"]
    out = {"label": args.label, "bench": str(args.bench), "index": str(args.index), "queries": len(feats),
           "top": args.top, "nprobe": args.nprobe, "results": results}
    old = json.loads(args.out.read_text()) if args.out.exists() else {}  # re-read: another run may have written
    old[args.label or str(args.index)] = out
    args.out.write_text(json.dumps(old, indent=1) + "\n")
    for r in results:
        print(f"{r['codes']:5s} recall@10 {r['recall@10']:.4f} recall@{args.top} {r[f'recall@{args.top}']:.4f} "
              f"agree@{args.top} {r.get(f'agree@{args.top}', 1.0):.4f} {r['ms_per_query']:.1f} ms/query "
              f"{r['bytes_per_keypoint']:.1f} B/keypoint {r['bytes_per_reference']} B/reference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
