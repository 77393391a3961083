#!/bin/sh
# Build the GPU scan test and benchmark without the full CMake project (the device machine may
# lack cJSON / cmocka / OpenBLAS) and run them. Usage (repository root):
#   sh tests/cuda/device_run.sh OUTDIR [PREBUILT_DIR]
# PREBUILT_DIR: a folder holding test_scan_cuda and bench_scan_cuda built by
# `sh tests/cuda/device_run.sh --build-only DIR` on another machine (saves the device the
# compile); they are rebuilt here if they are missing or do not start.
set -e
NVF="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Isrc -Xcompiler=-Wall,-Wextra -Werror=all-warnings"
build() { # build DIR
    mkdir -p "$1"
    gcc -O3 -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/common.c -o "$1/common.o"
    gcc -O3 -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/cpu/scan.c -o "$1/scan_cpu.o"
    nvcc $NVF -Xptxas -v -c src/cuda/scan.cu -o "$1/scan_cuda.o" 2> "$1/ptxas.txt"
    nvcc $NVF tests/cuda/test_scan_cuda.cu "$1/scan_cuda.o" "$1/common.o" "$1/scan_cpu.o" -lgomp -o "$1/test_scan_cuda"
    nvcc $NVF bench/bench_scan_cuda.cu "$1/scan_cuda.o" "$1/common.o" "$1/scan_cpu.o" -lgomp -o "$1/bench_scan_cuda"
}
if [ "$1" = "--build-only" ]; then
    build "$2"
    exit 0
fi
OUT=${1:-/tmp/mb_cuda_out}
BIN=${2:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if [ -z "$BIN" ] || ! "$BIN/bench_scan_cuda" 1 64 64 16 > /dev/null 2>&1; then
    echo "building on the device"
    BIN=/tmp/mbc
    build "$BIN"
fi
[ -f "$BIN/ptxas.txt" ] && cp "$BIN/ptxas.txt" "$OUT/ptxas.txt"
OMP_NUM_THREADS=16 "$BIN/test_scan_cuda" > "$OUT/test.txt" 2>&1 || echo "TEST FAILED rc=$?" >> "$OUT/test.txt"
grep -E "FAIL|DIFFERS|NO|failed|passed" "$OUT/test.txt" | head -40
"$BIN/bench_scan_cuda" 2>&1 | tee "$OUT/bench.txt"
"$BIN/bench_scan_cuda" 1 8192 2048 16 2>&1 | tee "$OUT/bench_b1.txt"
