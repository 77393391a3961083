#!/usr/bin/env bash
# Training throughput of the mambabyte program on the GPU (fp32 model, --device cuda): bytes/s
# for presets at a context and batch, printed as a table. Usage (repository root):
#   bash tests/cuda/bench_train_cuda.sh MAMBABYTE [CTX [BATCH [STEPS [PRESET...]]]]
# defaults: ctx 2048, batch 16, 30 steps, presets small medium. Throughput is the mean over the
# steps after the first 5 (start-up and cuBLAS warm-up excluded) of the per-step bytes/s that
# the trainer logs in metrics.jsonl. FLOP/s counts 6 x non-embedding parameters per trained
# byte (the scan not included), against the H200's ~67 TFLOP/s dense fp32 (no tensor cores).
set -uo pipefail
CLI=${1:?usage: bench_train_cuda.sh MAMBABYTE [CTX [BATCH [STEPS [PRESET...]]]]}
CTX=${2:-2048}
BATCH=${3:-16}
STEPS=${4:-30}
shift $(($# < 4 ? $# : 4))
PRESETS=("$@")
[ ${#PRESETS[@]} -eq 0 ] && PRESETS=(small medium)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# one document of real text, long enough for any context: the repository's sources, repeated
SRC=$(cd "$(dirname "$0")/../.." && pwd)
for i in 1 2 3 4 5 6 7 8; do cat "$SRC"/src/*.c "$SRC"/src/*/*.c "$SRC"/src/*/*.cu "$SRC"/cli/*.c; done >"$T/data.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-unknown}; ctx $CTX, batch $BATCH, $STEPS steps (mean of steps 6..$STEPS)"
printf "| preset | params | non-emb params | ms/step | kB/s | TFLOP/s (6N) | of 67 fp32 | peak device mem |\n"
printf "|---|---|---|---|---|---|---|---|\n"
for p in "${PRESETS[@]}"; do
  out="$T/$p"
  (while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; done) >"$T/$p.mem" &
  mon=$!
  "$CLI" train --data "$T/data.txt" --out "$out" --preset "$p" --ctx "$CTX" --batch "$BATCH" \
    --steps "$STEPS" --eval-every 0 --final-eval-bytes 16384 --val-fraction 0.01 --device cuda \
    --quiet >"$T/$p.out" 2>"$T/$p.err"
  rc=$?
  kill $mon 2>/dev/null
  wait $mon 2>/dev/null
  if [ $rc -ne 0 ]; then
    echo "| $p | failed (exit $rc): $(tail -1 "$T/$p.err") |"
    continue
  fi
  params=$(sed -n 's/.*d_model \([0-9]*\),.* \([0-9]*\) params$/\1 \2/p' "$T/$p.err" | head -1)
  d=${params% *}
  n=${params#* }
  mem=$(sort -n "$T/$p.mem" | tail -1)
  grep -o '"step":[0-9]*,.*"bytes_per_s":[0-9.]*' "$out/metrics.jsonl" |
    sed 's/"step":\([0-9]*\),.*"bytes_per_s":\([0-9.]*\)/\1 \2/' |
    awk -v p="$p" -v n="$n" -v d="$d" -v bs=$((CTX * BATCH)) -v mem="$mem" '
      $1 > 5 { s += $2; k++ }
      END { r = s / k; ne = n - 256 * d; fl = 6 * ne * r;
            printf "| %s | %.2fM | %.2fM | %.1f | %.0f | %.2f | %.1f%% | %s MiB |\n",
                   p, n / 1e6, ne / 1e6, 1000 * bs / r, r / 1000, fl / 1e12, 100 * fl / 67e12, mem }'
done
