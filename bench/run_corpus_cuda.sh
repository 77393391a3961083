#!/usr/bin/env bash
# The main job's corpus on the GPU: train the `small` preset on the prose corpus (KJV + five
# Austen novels; scripts/fetch_corpus.sh, split as scripts/run_main.sh does: Persuasion held
# out) for SECS seconds with --device cuda (bf16 mixed precision), report the validation bpb on
# all of Persuasion beside gzip -9, and generate a sample on the GPU.
# Usage: [PRESET=small] [LR=3e-3] [CTX=1024] [BATCH=32] \
#   bash bench/run_corpus_cuda.sh MAMBABYTE SPLIT_DIR OUT_DIR [SECS (default 570)]
#   SPLIT_DIR holds train/ and val/austen_persuasion.txt (scripts/run_main.sh makes
#   data/prose_split). The device call of docs/benchmarks.md carries data/prose_split.
set -uo pipefail
CLI=${1:?usage: run_corpus_cuda.sh MAMBABYTE SPLIT_DIR OUT_DIR [SECS]}
SPLIT=${2:?split dir}
OUT=${3:?out dir}
SECS=${4:-570}
val="$SPLIT/val/austen_persuasion.txt"
run=/tmp/mb_corpus_run
rm -rf "$run"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
t0=$(date +%s)
"$CLI" train --data "$SPLIT/train" --val "$val" --out "$run" --preset "${PRESET:-small}" \
  --ctx "${CTX:-1024}" --batch "${BATCH:-32}" --lr "${LR:-3e-3}" --time-limit "$SECS" \
  --eval-every "${EVAL_EVERY:-2000}" --eval-bytes 65536 \
  --final-eval-bytes 0 --seed 1337 --device cuda --quiet >"$OUT/corpus_train.out" 2>"$OUT/corpus_train.err"
echo "train exit $?, $(( $(date +%s) - t0 )) s"
grep -E "^device|^model|^data" "$OUT/corpus_train.err"
cp "$run/metrics.jsonl" "$OUT/corpus_metrics.jsonl" 2>/dev/null
grep -o '"step":[0-9]*,"val_bpb":[0-9.]*' "$run/metrics.jsonl" | tail -12
grep -o '"step":[0-9]*,.*"bytes_per_s":[0-9.]*' "$run/metrics.jsonl" | tail -1
model_bpb=$(awk '/^val_bpb:/ {print $2}' "$OUT/corpus_train.out")
orig=$(stat -c %s "$val")
gz=$(gzip -9 -c "$val" | wc -c)
echo "validation text: $val ($orig bytes): mambabyte ${PRESET:-small} $model_bpb bpb, gzip -9 $(awk -v g="$gz" -v o="$orig" 'BEGIN { printf "%.4f", 8 * g / o }') bpb"
echo "sample (GPU, temperature 0.8, top-p 0.95, seed 1):"
"$CLI" generate -m "$run" -p "It is a truth universally acknowledged" -n 600 --seed 1 --device cuda
echo
