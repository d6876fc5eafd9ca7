#!/usr/bin/env bash
# Issue 15: the 100,000-reference index, built and queried on this machine. Resumable: every step skips what is
# done (distractor files are rewritten identically, `icd index --add` skips indexed references), so the job can be
# stopped and started again in a later session.
#
#   OUT=/tmp/scale bash bench/scale_100k.sh
#
# References: the 1,200 references of the home benchmark (copied from its index, $BASE) + 8,800 + 67,500 seeded
# distractors from the train photos (bench/make_distractors.py; the first 8,800 are the 10k index's) + 22,500 from
# the train graphics (../shared/data/graphics/train). Then `icd match` of 300 home queries (/tmp/q300) under
# /usr/bin/time -v: queries/s, stage split and peak RSS (target: <= 8 GB per query process).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/scale}"
BASE="${BASE:-/tmp/idx10k}"
DATA="${DATA:-../shared/data}"
QUERIES="${QUERIES:-/tmp/q300}"
PY=.venv/bin/python
ICD=.venv/bin/icd
mkdir -p "$OUT"
# the base index was built before pipeline.voting_codes existed (its stored config reads flat): ask for pq32, or the
# voter of 100k references would be rebuilt flat (~42 GB)
echo '{"pipeline": {"voting_codes": "pq32"}}' > "$OUT/pq32.json"
[ -d "$OUT/index" ] || cp -r "$BASE" "$OUT/index"
"$PY" bench/make_distractors.py --photos "$DATA/photos/train" --count 76300 --out "$OUT/photos"
"$PY" bench/make_distractors.py --photos "$DATA/graphics/train" --count 22500 --out "$OUT/graphics"
for part in photos graphics; do
  "$ICD" index "$OUT/$part" --index "$OUT/index" --add --no-progress --json --config "$OUT/pq32.json" \
    > "$OUT/index_$part.json"
done
/usr/bin/time -v "$ICD" match --queries "$QUERIES" --index "$OUT/index" --output "$OUT/match.csv" --no-progress \
  --config "$OUT/pq32.json" --json > "$OUT/match.json" 2> "$OUT/match.time"
grep -E "Maximum resident|Elapsed" "$OUT/match.time"
