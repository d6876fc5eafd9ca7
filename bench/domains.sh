#!/usr/bin/env bash
# Issue 14: build the training and evaluation benchmarks, index them and collect the pipeline's candidate-pair
# feature tables (no fusion applied), one after the other; each step is skipped when its output exists, so the
# script resumes after an interruption. Writes under $OUT (default /tmp/domains).
#
#   bash bench/domains.sh            # then: python bench/fit_fusion.py ... and python bench/bench_pipeline.py ...
#
# Training (train photos and train graphics only): tp1 (photos, the training edit recipe, shared overlays with
# train clip art as symbols, re-shoots mined from train photos), tg1 and tg2 (graphics, two seeds), tp2 (photos,
# 400 holistic-vs-crop negatives, from the train photos minus the shipped background set, linked into
# $OUT/train_photos_nobg). The shipped fusion was fitted on all four:
#   python bench/fit_fusion.py --bench $OUT/tp1 --index $OUT/tp1_index --table $OUT/tp1.npz (same for tg1, tg2, tp2) \
#       --model trees --holistic-weight 10 --cv-repeats 1 --leave-out
# Evaluation (bench only, never fitted on): home (the default build, as in earlier reports), graphics,
# independent (the independent edit recipe), reshoot (re-shoots mined from bench photos, shared overlays).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/domains}"
PY=.venv/bin/python
ICD=.venv/bin/icd
DATA="${DATA:-../shared/data}"
mkdir -p "$OUT"

build() {  # name, then icd make-benchmark arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/manifest.json" ]; then
    echo "== build $name"; "$ICD" make-benchmark "$@" "$OUT/$name" --quiet
  fi
}
collect() {  # name
  local name=$1
  if [ ! -f "$OUT/$name.npz" ]; then
    echo "== collect $name"
    "$PY" bench/bench_pipeline.py --bench "$OUT/$name" --index "$OUT/${name}_index" --table "$OUT/$name.npz" \
      --collect-only --out "$OUT/${name}_collect.json"
  fi
}

build tp1 "$DATA/photos/train" --references 500 --queries 1000 --holistic 150 --same-scene 60 --shared-overlay 100 \
  --symbols "$DATA/graphics/train" --reshoot-pairs bench/reshoots_train.json --seed 7
build tg1 "$DATA/graphics/train" --references 200 --queries 400 --holistic 40 --same-scene 20 --shared-overlay 40 \
  --background 20 --seed 5
build tg2 "$DATA/graphics/train" --references 250 --queries 500 --holistic 40 --same-scene 20 --shared-overlay 40 \
  --background 20 --seed 9
if [ ! -d "$OUT/train_photos_nobg" ]; then  # train photos that are not in the score-normalisation background set
  "$PY" - "$DATA/photos/train" "$OUT/train_photos_nobg" <<'PYEOF'
import os, sys
from pathlib import Path
from bench.fit_fusion import background_photos  # the set fit_fusion.py leaves out, from the same file
from matcher.config import MatcherConfig
src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
background = background_photos(MatcherConfig())
tmp = dst.with_name(dst.name + ".tmp")
tmp.mkdir(parents=True, exist_ok=True)
for p in sorted(src.iterdir()):
    if p.is_file() and p.name not in background and not (tmp / p.name).exists():
        os.symlink(p, tmp / p.name)
tmp.rename(dst)
PYEOF
fi
build tp2 "$OUT/train_photos_nobg" --references 500 --queries 800 --holistic 400 --same-scene 60 --shared-overlay 60 \
  --symbols "$DATA/graphics/train" --background 50 --seed 11
build home "$DATA/photos/bench"
build graphics "$DATA/graphics/bench" --references 150 --queries 300 --holistic 20 --same-scene 10 \
  --shared-overlay 30 --background 20 --seed 1
build independent "$DATA/photos/bench" --recipe independent --references 500 --queries 1000 --holistic 50 \
  --same-scene 25 --background 50 --seed 2
build reshoot "$DATA/photos/bench" --references 300 --queries 300 --holistic 30 --same-scene 0 \
  --shared-overlay 60 --symbols "$DATA/graphics/bench" --reshoot-pairs bench/reshoots_bench.json --background 30 \
  --seed 3
for name in tp1 tg1 graphics independent reshoot home tg2 tp2; do collect "$name"; done
echo "== done"
