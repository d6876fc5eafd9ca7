"""Load test of ``icd serve``: a real server process on 127.0.0.1, N ``POST /match`` requests with C in flight.

    .venv/bin/python bench/service_load.py --references ../shared/data/photos/bench --n-refs 300 \
        --work /tmp/icd-service-bench --requests 300 --concurrency 8 --out /tmp/service_load.json

The index (the first ``--n-refs`` pictures of ``--references``, sorted by name) is built in ``--work`` once and
reused (``--index DIR`` serves an existing index instead). Queries are edited copies of indexed pictures (a crop
of 60-90 %, brightness, JPEG quality 50-85, half of them mirrored) and, one in four, pictures that are not indexed
(``--references`` files after the first ``--n-refs``), made in memory: nothing is copied anywhere. Reports HTTP
errors, latency percentiles seen by the client, requests/s, the share of copy queries whose best match is their
source, and the server's own /stats.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matcher.io.images import IMAGE_EXTENSIONS
from matcher.service.client import ServiceClient, run_load
from matcher.service.process import ServerProcess


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _copy(path: Path, rng: np.random.Generator) -> bytes:
    """An edited copy of the picture at ``path``: crop, brightness, maybe mirrored, JPEG."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    f = rng.uniform(0.6, 0.9)
    cw, ch = int(w * f), int(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    a = np.clip(np.asarray(im, np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=int(rng.integers(50, 86)))
    return buf.getvalue()


def build_index(references: Path, n_refs: int, index: Path, config: dict) -> float:
    """Index the first ``n_refs`` pictures of ``references`` into ``index`` (resumed when it exists); seconds."""
    from matcher.config import MatcherConfig
    from matcher.references.disk.store import IndexStore

    t = time.perf_counter()
    with IndexStore.open(index, MatcherConfig.make(**config), create=True) as store:
        s = store.add_references(_files(references)[:n_refs], progress=True)
    print(s, file=sys.stderr)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--references", type=Path, help="folder of pictures: the first --n-refs are indexed, later "
                    "ones make the not-indexed queries")
    ap.add_argument("--n-refs", type=int, default=300)
    ap.add_argument("--index", type=Path, help="serve this existing index (default: WORK/index, built if needed)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/icd-service-bench"))
    ap.add_argument("--config", default="{}", help="JSON MatcherConfig overrides used when building the index")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--queries", type=int, default=40, help="distinct query pictures (cycled through)")
    ap.add_argument("--inference-slots", type=int, default=1)
    ap.add_argument("--token", default="bench-token")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.references is None:
        ap.error("--references is needed (the query pictures are made from it)")
    files = _files(args.references)
    if len(files) <= args.n_refs:
        ap.error(f"{args.references}: {len(files)} pictures, need more than --n-refs {args.n_refs}")
    args.work.mkdir(parents=True, exist_ok=True)
    index = args.index or args.work / "index"
    build_s = None
    if args.index is None:
        build_s = build_index(args.references, args.n_refs, index, json.loads(args.config))

    rng = np.random.default_rng(args.seed)
    n_copies = args.queries - args.queries // 4
    sources = rng.choice(args.n_refs, n_copies, replace=False)
    payloads = [(f"copy_{files[i].stem}.jpg", _copy(files[i], rng)) for i in sources]
    others = files[args.n_refs:]
    payloads += [(f"other_{others[i].stem}.jpg", _copy(others[i], rng))
                 for i in rng.choice(len(others), args.queries - n_copies, replace=False)]

    srv = ServerProcess(index, token=args.token, args=["--inference-slots", str(args.inference_slots), "-q"],
                        log=args.work / "server.log")
    t = time.perf_counter()
    with srv:
        startup_s = time.perf_counter() - t
        client: ServiceClient = srv.client()
        for name, data in payloads[:4]:  # warm-up (first calls load caches and compile kernels)
            client.match(data, name)
        correct, sequential = 0, []
        for name, data in payloads:  # one at a time: latency without queueing; do copies find their source?
            t = time.perf_counter()
            reply = client.match(data, name)
            sequential.append(time.perf_counter() - t)
            best = (reply.body["matches"] or [{}])[0] if reply.status == 200 else {}
            correct += name.startswith("copy_") and best.get("reference_id") == name[5:-4] and best.get("is_copy")
        load = run_load(client, payloads, requests=args.requests, concurrency=args.concurrency)
        stats = client.stats().body
    cpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{model}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "references": stats["references"], "index_build_s": None if build_s is None else round(build_s, 1),
        "server_startup_s": round(startup_s, 1), "inference_slots": args.inference_slots,
        "copy_queries_top1": f"{correct}/{n_copies}",
        "sequential_latency_ms": dict(zip(("p50", "p95"), np.percentile(np.array(sequential) * 1000, [50, 95])
                                          .round(1).tolist())),
        "load": load.summary(), "server_routes": stats["routes"],
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if load.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
