#!/bin/sh
# On a GPU machine without cJSON / OpenBLAS packages (the device image): run the GPU training
# test (tests/cuda/test_train_cuda.sh) and the training benchmark (bench_train_cuda.sh) with
# the mambabyte program. Usage (repository root):
#   sh tests/cuda/device_run_train.sh OUTDIR [DEPS [PREBUILT]]
# DEPS: a folder with include/{cjson/cJSON.h,cblas.h,openblas_config.h} and lib/{libcjson.so.1,
#   libopenblas.so.0, and what that needs (libgfortran.so.5, libquadmath.so.0)} copied from a
#   Debian/Ubuntu machine (default .devdeps). PREBUILT: a mambabyte built elsewhere with CUDA;
#   used if it starts here, else the program is built here with gcc + nvcc.
set -e
OUT=${1:-/tmp/mb_train_out}
DEPS=$(cd "${2:-.devdeps}" && pwd)
PRE=${3:-}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$DEPS/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
CLI=""
if [ -n "$PRE" ] && [ -x "$PRE" ] && "$PRE" train --help >/dev/null 2>&1; then
  CLI=$(cd "$(dirname "$PRE")" && pwd)/$(basename "$PRE")
  echo "using the prebuilt $PRE"
else
  echo "building mambabyte here"
  B=/tmp/mbtrain
  mkdir -p $B
  CF="-O3 -march=native -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -Icli -I$DEPS/include -DMB_HAVE_CUDA=1"
  for f in src/*.c src/*/*.c cli/*.c; do
    gcc $CF -c "$f" -o "$B/$(echo "$f" | tr / _).o" &
  done
  NVF="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Iinclude -Isrc"
  for f in src/cuda/*.cu; do
    nvcc $NVF -c "$f" -o "$B/$(basename "$f").o" &
  done
  wait
  nvcc -o $B/mambabyte $B/*.o "$DEPS/lib/libopenblas.so.0" "$DEPS/lib/libcjson.so.1" -lcublas -lgomp -lm
  CLI=$B/mambabyte
fi
rc=0
MB_CLI=$CLI MB_SOURCE_DIR=$PWD OMP_NUM_THREADS=16 bash tests/cuda/test_train_cuda.sh >"$OUT/test_train_cuda.txt" 2>&1 || rc=$?
cat "$OUT/test_train_cuda.txt"
echo "test_train_cuda: exit $rc"
if [ "${MB_SKIP_BENCH:-0}" != 1 ]; then
  OMP_NUM_THREADS=16 bash tests/cuda/bench_train_cuda.sh "$CLI" 2048 16 30 small medium | tee "$OUT/bench_train_cuda.txt"
fi
exit $rc
