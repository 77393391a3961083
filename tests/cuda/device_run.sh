#!/bin/sh
# Build the GPU scan test and benchmark without the full CMake project (the device machine may
# lack cJSON / cmocka / OpenBLAS) and run them. Usage (repository root): sh tests/cuda/device_run.sh OUTDIR
set -e
OUT=${1:-/tmp/mb_cuda_out}
mkdir -p "$OUT" /tmp/mbc
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
gcc -O3 -march=native -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/common.c -o /tmp/mbc/common.o
gcc -O3 -march=native -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/cpu/scan.c -o /tmp/mbc/scan_cpu.o
NVF="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Isrc -Xcompiler=-Wall,-Wextra -Werror=all-warnings"
nvcc $NVF -Xptxas -v -c src/cuda/scan.cu -o /tmp/mbc/scan_cuda.o 2> "$OUT/ptxas.txt"
grep -E "registers|spill" "$OUT/ptxas.txt" | head -40
nvcc $NVF tests/cuda/test_scan_cuda.cu /tmp/mbc/scan_cuda.o /tmp/mbc/common.o /tmp/mbc/scan_cpu.o -lgomp -o /tmp/mbc/test_scan_cuda
nvcc $NVF bench/bench_scan_cuda.cu /tmp/mbc/scan_cuda.o /tmp/mbc/common.o /tmp/mbc/scan_cpu.o -lgomp -o /tmp/mbc/bench_scan_cuda
OMP_NUM_THREADS=16 /tmp/mbc/test_scan_cuda > "$OUT/test.txt" 2>&1 || echo "TEST FAILED rc=$?" >> "$OUT/test.txt"
grep -E "FAIL|DIFFERS|NO|failed|passed" "$OUT/test.txt" | head -40
/tmp/mbc/bench_scan_cuda 2>&1 | tee "$OUT/bench.txt"
/tmp/mbc/bench_scan_cuda 1 8192 2048 16 2>&1 | tee "$OUT/bench_b1.txt"
