#!/usr/bin/env bash
# The main job: fetch the prose corpus (King James Bible + Jane Austen, from Debian packages),
# train the default small model for 8 minutes on this machine's CPU, print the validation bpb
# against gzip -9 on the same held-out text, and generate a sample.
# Usage: scripts/run_main.sh [seconds of training, default 480]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-480}
bash scripts/build.sh
bash scripts/fetch_corpus.sh prose data/corpus

# Hold out one novel (Persuasion) as validation text; train on the rest.
split=data/prose_split
if [ ! -d "$split/train" ]; then
  mkdir -p "$split/train" "$split/val"
  for f in data/corpus/prose/*.txt; do
    case "$(basename "$f")" in
      austen_persuasion.txt) cp "$f" "$split/val/" ;;
      *) cp "$f" "$split/train/" ;;
    esac
  done
fi
val="$split/val/austen_persuasion.txt"
out=runs/main
rm -rf "$out"
mkdir -p runs
./build/mambabyte train --data "$split/train" --val "$val" --out "$out" --preset small \
  --ctx 512 --batch 8 --lr 2e-3 --time-limit "$secs" --eval-every 50 --eval-bytes 32768 \
  --final-eval-bytes 0 --seed 1337 | tee runs/main.val
model_bpb=$(awk '/^val_bpb:/ {print $2}' runs/main.val)
orig=$(stat -c %s "$val")
gz=$(gzip -9 -c "$val" | wc -c)
gzip_bpb=$(awk -v g="$gz" -v o="$orig" 'BEGIN { printf "%.4f", 8 * g / o }')
echo
echo "validation text: $val ($orig bytes)"
echo "  mambabyte small: $model_bpb bpb"
echo "  gzip -9:         $gzip_bpb bpb"
awk -v m="$model_bpb" -v g="$gzip_bpb" 'BEGIN { if (m < g) print "  -> the model beats gzip -9"; else print "  -> the model does NOT beat gzip -9" }'
echo
echo "sample (temperature 0.8, top-p 0.95, seed 1):"
./build/mambabyte generate -m "$out" -p "It is a truth universally acknowledged" -n 600 --seed 1
echo
