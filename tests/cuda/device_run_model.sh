#!/bin/sh
# Build the GPU model test without the full CMake project (the device machine may lack cJSON /
# cmocka / OpenBLAS: the CPU reference's sgemm then comes from tests/cuda/cblas_shim.c) and
# run it. Usage (repository root): sh tests/cuda/device_run_model.sh OUTDIR
set -e
OUT=${1:-/tmp/mb_cuda_model_out}
B=/tmp/mbm
mkdir -p "$OUT" $B
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
CF="-O2 -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc"
if [ -z "$MB_BLAS_SHIM" ] && { [ -f /usr/include/cblas.h ] || [ -f /usr/include/x86_64-linux-gnu/cblas.h ]; }; then
  BLAS="-lopenblas"; echo "CPU reference: system OpenBLAS"
else
  CF="$CF -Itests/cuda/shim"; BLAS="$B/cblas_shim.o"; echo "CPU reference: tests/cuda/cblas_shim.c"
  gcc $CF -c tests/cuda/cblas_shim.c -o $B/cblas_shim.o
fi
for f in src/common.c src/config.c src/params.c src/cpu/*.c src/train/adamw.c; do
  gcc $CF -c $f -o $B/$(echo $f | tr / _).o &
done
NVF="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Isrc -Xcompiler=-Wall,-Wextra -Werror=all-warnings"
# MB_SCAN_SRC: another scan.cu to build instead of src/cuda/scan.cu (e.g. a committed copy)
for f in src/cuda/*.cu; do
  src=$f
  [ "$(basename $f)" = scan.cu ] && [ -n "$MB_SCAN_SRC" ] && src=$MB_SCAN_SRC
  nvcc $NVF -c $src -o $B/$(basename $f).o &
done
wait
for f in src/cuda/*.cu; do
  [ -f $B/$(basename $f).o ] || { echo "build of $f failed"; exit 1; }
done
rc=0
for t in test_kernels_cuda test_model_cuda; do
  nvcc $NVF tests/cuda/$t.cu $B/*.cu.o $B/src_*.o $BLAS -lcublas -lgomp -o $B/$t &
done
wait
for t in test_kernels_cuda test_model_cuda; do
  OMP_NUM_THREADS=16 $B/$t > "$OUT/$t.txt" 2>&1 || { echo "$t: exit status $?"; rc=1; }
  grep -E "FAIL|worst rel err|passed|NaN in|training|skipped|rror|fault" "$OUT/$t.txt" | head -60
done
exit $rc
