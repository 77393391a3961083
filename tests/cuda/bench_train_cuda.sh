#!/usr/bin/env bash
# Training throughput of the mambabyte program on the GPU (--device cuda): bytes/s for presets
# at a context and batch, printed as a table. Usage (repository root):
#   [MB_PRECISION=auto|fp32|bf16] [MB_RECOMPUTE=auto|on|off] [MB_GPU_MEMORY=GIB] \
#   bash tests/cuda/bench_train_cuda.sh MAMBABYTE [CTX [BATCH [STEPS [PRESET...]]]]
# defaults: ctx 2048, batch 16, 30 steps, presets small medium, precision auto (bf16 mixed
# precision on the GPU), recomputation auto. Throughput is the mean over the steps after the
# first 5 (start-up and cuBLAS warm-up excluded) of the per-step bytes/s that the trainer logs
# in metrics.jsonl. FLOPs per trained byte: 6 x non-embedding parameters plus the scan's
# 27 x d_inner x d_state per layer (9 per state element forward, twice that backward; the
# Mamba paper's count), without the recomputation's extra forward (MFU convention), against the
# H200's ~790 TFLOP/s dense bf16 (bf16 runs) or ~67 TFLOP/s fp32 (fp32 runs).
set -uo pipefail
CLI=${1:?usage: bench_train_cuda.sh MAMBABYTE [CTX [BATCH [STEPS [PRESET...]]]]}
CTX=${2:-2048}
BATCH=${3:-16}
STEPS=${4:-30}
shift $(($# < 4 ? $# : 4))
PRESETS=("$@")
PREC=${MB_PRECISION:-auto}
RECOMP=${MB_RECOMPUTE:-auto}
GPUMEM=()
[ -n "${MB_GPU_MEMORY:-}" ] && GPUMEM=(--gpu-memory "$MB_GPU_MEMORY")
[ ${#PRESETS[@]} -eq 0 ] && PRESETS=(small medium)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# one document of real text, long enough for any context: the repository's sources, repeated
SRC=$(cd "$(dirname "$0")/../.." && pwd)
for i in 1 2 3 4 5 6 7 8; do cat "$SRC"/src/*.c "$SRC"/src/*/*.c "$SRC"/src/*/*.cu "$SRC"/cli/*.c; done >"$T/data.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-unknown}; ctx $CTX, batch $BATCH, $STEPS steps (mean of steps 6..$STEPS)"
printf "| preset | params | numerics | ms/step | kB/s | TFLOP/s (6N + scan) | MFU | peak device mem |\n"
printf "|---|---|---|---|---|---|---|---|\n"
for p in "${PRESETS[@]}"; do
  out="$T/$p"
  (while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; done) >"$T/$p.mem" &
  mon=$!
  "$CLI" train --data "$T/data.txt" --out "$out" --preset "$p" --ctx "$CTX" --batch "$BATCH" \
    --steps "$STEPS" --eval-every 0 --final-eval-bytes 16384 --val-fraction 0.01 --device cuda \
    --precision "$PREC" --recompute "$RECOMP" "${GPUMEM[@]}" --quiet >"$T/$p.out" 2>"$T/$p.err"
  rc=$?
  kill $mon 2>/dev/null
  wait $mon 2>/dev/null
  # MB_KEEP_LOGS=DIR: keep the run's stderr (progress, MB_CUDA_PROFILE table) as DIR/train_PRESET.err
  [ -n "${MB_KEEP_LOGS:-}" ] && cp "$T/$p.err" "$MB_KEEP_LOGS/train_$p.err"
  if [ $rc -ne 0 ]; then
    echo "| $p | failed (exit $rc): $(tail -1 "$T/$p.err") |"
    continue
  fi
  params=$(sed -n 's/.*d_model \([0-9]*\), n_layer \([0-9]*\), d_state \([0-9]*\),.* \([0-9]*\) params$/\1 \2 \3 \4/p' "$T/$p.err" | head -1)
  read -r d nl ds n <<<"$params"
  numerics=$(sed -n 's/^device: cuda ([^)]*); //p' "$T/$p.err" | head -1)
  case "$numerics" in bf16*) peak=790e12 ;; *) peak=67e12 ;; esac
  mem=$(sort -n "$T/$p.mem" | tail -1)
  grep -o '"step":[0-9]*,.*"bytes_per_s":[0-9.]*' "$out/metrics.jsonl" |
    sed 's/"step":\([0-9]*\),.*"bytes_per_s":\([0-9.]*\)/\1 \2/' |
    awk -v p="$p" -v n="$n" -v d="$d" -v nl="$nl" -v ds="$ds" -v bs=$((CTX * BATCH)) \
        -v mem="$mem" -v num="$numerics" -v peak="$peak" '
      $1 > 5 { s += $2; k++ }
      END { r = s / k; ne = n - 256 * d; fl = (6 * ne + 27 * 2 * d * ds * nl) * r;
            printf "| %s | %.2fM | %s | %.1f | %.0f | %.1f | %.1f%% | %s MiB |\n",
                   p, n / 1e6, num, 1000 * bs / r, r / 1000, fl / 1e12, 100 * fl / peak, mem }'
done
