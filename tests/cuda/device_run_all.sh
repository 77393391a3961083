#!/bin/sh
# Every GPU test and benchmark in one device call, from an archive made by
# tests/cuda/pack_prebuilt.sh (run in the repository root on the device machine):
#   sh tests/cuda/device_run_all.sh ARCHIVE OUT
# test_scan_cuda, test_step_cuda, then tests/cuda/device_run_prebuilt.sh (kernel, model and CLI
# tests; the training benchmark unless MB_SKIP_BENCH=1), bench_scan_cuda at B 8 and 1 and the
# generation table (bench/bench_generate_cuda.sh). Every program's output is kept in OUT.
ARCH=${1:?ARCHIVE}
OUT=${2:?OUT}
mkdir -p "$OUT"
P=$(mktemp -d)
tar -C "$P" -xzf "$ARCH"
BIN=$P/pack/bin
export LD_LIBRARY_PATH="$P/pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
rc=0
for t in test_scan_cuda test_step_cuda; do
    "$BIN/$t" >"$OUT/$t.txt" 2>&1 || { echo "$t: exit status $?"; rc=1; }
    echo "$t: $(tail -1 "$OUT/$t.txt")"
    grep -E "FAIL" "$OUT/$t.txt" | head -20
done
sh tests/cuda/device_run_prebuilt.sh "$BIN" "$OUT" "$P/pack" || rc=1
if [ "${MB_SKIP_BENCH:-0}" != 1 ]; then
    "$BIN/bench_scan_cuda" 8 8192 2048 16 | tee "$OUT/bench_scan_b8.txt"
    "$BIN/bench_scan_cuda" 1 8192 2048 16 >"$OUT/bench_scan_b1.txt" 2>&1
    sh bench/bench_generate_cuda.sh "$BIN/bench_generate_cuda" "${MB_GEN_STEPS:-400}" |
        tee "$OUT/bench_generate.txt"
fi
rm -rf "$P"
exit $rc
