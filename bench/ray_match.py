"""Issue 15, Ray: `icd match` in one process vs `icd match --ray local --ray-cpus N` on the same queries and index;
checks that the two submissions are byte-identical and records the wall times (JSON).

    .venv/bin/python bench/ray_match.py --queries /tmp/q300 --first 60 --index /tmp/domains/home_index \
        --out bench/results_ray_match.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"{wall:.1f} s: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    return wall, done.stdout  # the --json summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", required=True)
    ap.add_argument("--first", type=int, default=60, help="the first N query files (sorted)")
    ap.add_argument("--index", required=True)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--ray-first", action="store_true", help="run the Ray job first (the machine is shared: "
                                                             "alternate the order between runs)")
    ap.add_argument("--out", default="bench/results_ray_match.json", help="JSON list; each run is appended")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        qdir = Path(tmp) / "queries"
        qdir.mkdir()
        for p in sorted(Path(args.queries).iterdir())[: args.first]:
            (qdir / p.name).symlink_to(p.resolve())
        base = [sys.executable, "-m", "matcher.cli", "-q", "match", "--queries", str(qdir), "--index", args.index,
                "--no-progress", "--json"]
        single = Path(tmp) / "single.csv"
        clustered = Path(tmp) / "ray.csv"
        ray_cmd = [*base, "--output", str(clustered), "--ray", "local", "--ray-cpus", str(args.cpus)]
        if args.ray_first:
            t_ray, s_ray = _run(ray_cmd)
        t_one, s_one = _run([*base, "--output", str(single)])
        if not args.ray_first:
            t_ray, s_ray = _run(ray_cmd)
        same = single.read_bytes() == clustered.read_bytes()
        rows = len(single.read_text().splitlines()) - 1
    one, ray = json.loads(s_one), json.loads(s_ray)
    result = {"queries": args.first, "index": args.index, "references": one["n_references"], "rows": rows,
              "identical": same, "single_wall_s": round(t_one, 1), "ray_wall_s": round(t_ray, 1),
              "ray_cpus": args.cpus, "order": "ray first" if args.ray_first else "single first",
              "single_seconds": one["seconds"], "ray_seconds": ray["seconds"],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
                         f"{os.getloadavg()[0]:.1f}"}
    out = Path(args.out)
    runs = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else []
    runs = runs if isinstance(runs, list) else [runs]
    out.write_text(json.dumps([*runs, result], indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("seconds")}, indent=1))
    if not same:
        raise SystemExit("the submissions differ")


if __name__ == "__main__":
    main()
