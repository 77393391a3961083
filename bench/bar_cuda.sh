#!/usr/bin/env bash
# Issue 4's bar in one command: the six measurements its table names, each beside the official
# implementation's figure (mamba_ssm 2.3.2 + causal-conv1d 1.6.1 on the same H200, from the
# issue) and the target, with met / not met. Usage (repository root, on a GPU machine):
#   bash bench/bar_cuda.sh BIN_DIR [OUT_DIR]
# BIN_DIR holds mambabyte, bench_scan_cuda and bench_generate_cuda (a CUDA build directory);
# OUT_DIR (default: a temporary directory) keeps each program's own table; with
# MB_BAR_PRINT_ONLY=1 the table is printed again from an OUT_DIR's files without running anything.
# Takes about a minute on an H200. The commit printed is the checkout's HEAD (MB_BAR_COMMIT
# overrides it, e.g. where the binaries were built from another tree). The rows:
#   training 353m: --recompute on --gpu-memory 66 (within mamba_ssm's 68 GiB), ctx 8192 x 8,
#     12 steps (tests/cuda/bench_train_cuda.sh: mean of steps 6..12, peak memory by nvidia-smi);
#   training medium: ctx 8192 x 32, 14 steps (automatic plan);
#   scan forward / backward: bench_scan_cuda 8 8192 2048 16, the row of each pass closest to its
#     own floor (the larger of its bytes at 4.3 TB/s and its exponentials at 4e12 / s, as
#     bench_scan_cuda prints it; the issue: "within 2x of the floor"), diagnostic rows excluded;
#   generation: bench_generate_cuda PRESET BATCH bf16 STEPS, batch 1 against 50% of the
#     weight-bandwidth limit (weight bytes per step at 4.3 TB/s), batch 64 against 3x mamba_ssm.
set -uo pipefail
BIN=${1:?usage: bash bench/bar_cuda.sh BIN_DIR [OUT_DIR]}
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")/.." && pwd)
for p in mambabyte bench_scan_cuda bench_generate_cuda; do
    [ "${MB_BAR_PRINT_ONLY:-0}" = 1 ] || [ -x "$BIN/$p" ] || { echo "bar_cuda.sh: $BIN/$p: not found (a CUDA build directory?)" >&2; exit 2; }
done
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null |
    sed 's/^/GPU: /'
echo "commit: ${MB_BAR_COMMIT:-$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)}"

if [ "${MB_BAR_PRINT_ONLY:-0}" != 1 ]; then
MB_RECOMPUTE=on MB_GPU_MEMORY=66 bash "$here/tests/cuda/bench_train_cuda.sh" "$BIN/mambabyte" \
    8192 8 12 353m >"$OUT/train_353m.txt" 2>&1
bash "$here/tests/cuda/bench_train_cuda.sh" "$BIN/mambabyte" 8192 32 14 medium \
    >"$OUT/train_medium.txt" 2>&1
# (a program's non-zero exit status is kept beside its output: its row then reads "failed")
run() { f=$1; shift; rm -f "$OUT/$f.rc"; "$@" >"$OUT/$f.txt" 2>&1 || echo $? >"$OUT/$f.rc"; }
run scan "$BIN/bench_scan_cuda" 8 8192 2048 16
run gen_353m_b1 "$BIN/bench_generate_cuda" 353m 1 bf16 1500
run gen_972m_b1 "$BIN/bench_generate_cuda" 972m 1 bf16 1500
run gen_353m_b64 "$BIN/bench_generate_cuda" 353m 64 bf16 400
fi

# a training row's field k (| preset | params | numerics | ms/step | kB/s | TFLOP/s | MFU | mem |)
trow() { grep "^| $1 |" "$OUT/train_$1.txt" | head -1 | awk -F'|' -v k="$2" '{gsub(/ /, "", $(k + 1)); print $(k + 1)}'; }
# a generation row's field k (| preset | batch | weights | ms/step | bytes/s | MB | GB/s | % |)
grow() { [ -e "$OUT/$1.rc" ] && return; grep "^| " "$OUT/$1.txt" | head -1 | awk -F'|' -v k="$2" '{gsub(/ /, "", $(k + 1)); print $(k + 1)}'; }
# the bench_scan_cuda row of pass $1 closest to its own floor (diagnostic rows, which leave part of
# the work out, excluded): "ms floor name"
srow() {
    [ -e "$OUT/scan.rc" ] && return
    grep "^| $1" "$OUT/scan.txt" | grep -v -e "(diag)" -e ", no " |
        awk -F'|' '{n = $2; gsub(/^ +| +$/, "", n); m = $3 + 0; f = $7 + 0;
                    if (f > 0) printf "%.6f %s %s %s\n", m / f, m, f, n}' |
        sort -n | head -1 | cut -d' ' -f2-
}
yes_no() { awk -v a="$1" -v b="$2" -v ge="$3" 'BEGIN { ok = ge ? a >= b : a <= b; print ok ? "**yes**" : "no" }'; }

echo
echo "| measurement | config | mamba_ssm 2.3.2 | target | ours | met? |"
echo "|---|---|---|---|---|---|"
ms=$(trow 353m 4) kbs=$(trow 353m 5) mfu=$(trow 353m 7) mem=$(trow 353m 8)
if [ -n "$kbs" ]; then
    memmib=${mem%MiB}
    ok=no
    [[ $memmib =~ ^[0-9]+$ ]] &&
        ok=$(awk -v k="$kbs" -v m="$memmib" 'BEGIN { print (k >= 141.2 && m < 68 * 1024) ? "**yes**" : "no" }')
    echo "| training | \`353m\`, ctx 8192 x 8, \`--recompute on --gpu-memory 66\` | 928 ms/step = 70.6 kB/s, 68 GiB | >= 141.2 kB/s in < 68 GiB | $ms ms/step = $kbs kB/s, $mfu MFU, $memmib MiB | $ok |"
else
    echo "| training | \`353m\` | 70.6 kB/s | >= 141.2 kB/s | failed: $(tail -1 "$OUT/train_353m.txt") | no |"
fi
ms=$(trow medium 4) kbs=$(trow medium 5) mfu=$(trow medium 7) mem=$(trow medium 8)
if [ -n "$kbs" ]; then
    echo "| training | \`medium\`, ctx 8192 x 32 | 958 kB/s | >= 1,916 kB/s | $ms ms/step = $kbs kB/s, $mfu MFU, ${mem%MiB} MiB | $(yes_no "$kbs" 1916 1) |"
else
    echo "| training | \`medium\` | 958 kB/s | >= 1,916 kB/s | failed: $(tail -1 "$OUT/train_medium.txt") | no |"
fi
for pass in forward backward; do
    read -r sm sf sn <<<"$(srow "$pass")"
    off=$([ "$pass" = forward ] && echo 2.56 || echo 9.19)
    if [ -n "${sm:-}" ]; then
        tgt=$(awk -v f="$sf" 'BEGIN { printf "%.2f", 2 * f }')
        echo "| scan $pass | B 8, Di 2048, L 8192, N 16 | $off ms (bf16 in) | <= $tgt ms (2x its floor, $sf ms) | $sm ms ($sn) | $(yes_no "$sm" "$tgt" 0) |"
    else
        echo "| scan $pass | B 8, Di 2048, L 8192, N 16 | $off ms | 2x floor | failed: $(tail -1 "$OUT/scan.txt") | no |"
    fi
done
for g in "353m 1 486" "972m 1 498"; do
    read -r pr b off <<<"$g"
    f=gen_${pr}_b$b
    ms=$(grow "$f" 4) bps=$(grow "$f" 5) pct=$(grow "$f" 8)
    if [ -n "$bps" ]; then
        wmb=$(grow "$f" 6)
        tgt=$(awk -v w="${wmb%MB}" 'BEGIN { printf "%.0f", 0.5 * 4.3e12 / (w * 1e6) }')
        echo "| generation, batch 1 | \`$pr\`, bf16 weights | $off bytes/s | >= $tgt bytes/s (50% of the weight limit) | $ms ms/step = $bps bytes/s, $pct of the limit | $(yes_no "$bps" "$tgt" 1) |"
    else
        echo "| generation, batch 1 | \`$pr\` | $off bytes/s | 50% of the limit | failed: $(tail -1 "$OUT/$f.txt") | no |"
    fi
done
ms=$(grow gen_353m_b64 4) bps=$(grow gen_353m_b64 5)
if [ -n "$bps" ]; then
    echo "| generation, batch 64 | \`353m\`, bf16 weights | 31,279 bytes/s | >= 93,837 bytes/s | $ms ms/step = $bps bytes/s | $(yes_no "$bps" 93837 1) |"
else
    echo "| generation, batch 64 | \`353m\` | 31,279 bytes/s | >= 93,837 bytes/s | failed: $(tail -1 "$OUT/gen_353m_b64.txt") | no |"
fi
echo
echo "(each program's own table: $OUT)"
