#!/usr/bin/env bash
# Build the folder that ref/hf_roundtrip.py checks on a machine with transformers:
# two tiny RMSNorm models trained by `mambabyte train` (untied and tied), their exports
# (hf f32, hf bf16, mamba_ssm f32) and our logits (mb_dump_logits) on a fixed input.
#   bash ref/make_roundtrip_case.sh BUILD_DIR [OUT_DIR]     (OUT_DIR default BUILD_DIR/roundtrip)
# then, where transformers is:  python3 ref/hf_roundtrip.py OUT_DIR
set -euo pipefail
B=${1:?usage: make_roundtrip_case.sh BUILD_DIR [OUT_DIR]}
R=${2:-$B/roundtrip}
M=$B/mambabyte
D=$B/mb_dump_logits
rm -rf "$R"
mkdir -p "$R"
head -c 60000 /usr/share/common-licenses/GPL-3 >"$R/train.txt"
printf 'The MambaByte model reads raw bytes: \xc3\xa9\xe2\x9c\x93 and nothing else.\nLine two, with digits 0123456789 and {braces}.\n' >"$R/input.bin"
for v in untied tied; do
  tie=--untie
  [ $v = tied ] && tie=--tie
  "$M" train --data "$R/train.txt" --out "$R/src_$v" --preset tiny --d-model 40 --n-layer 2 \
    --rms-norm $tie --ctx 64 --batch 4 --steps 40 --warmup 4 --lr 3e-3 --eval-every 0 \
    --eval-bytes 4096 --quiet --seed 7 | tail -1
  "$M" export -m "$R/src_$v" --format hf "$R/hf_$v"
  "$M" export -m "$R/src_$v" --format hf --dtype bf16 "$R/hf_bf16_$v"
  "$M" export -m "$R/src_$v" --format mamba_ssm "$R/ssm_$v"
  "$D" "$R/src_$v" "$R/input.bin" "$R/ours_$v.safetensors"
  "$D" "$R/hf_bf16_$v" "$R/input.bin" "$R/ours_bf16_$v.safetensors"
done
