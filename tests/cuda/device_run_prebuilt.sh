#!/bin/sh
# One device call for the GPU model and training path with programs built on the workstation
# (the device image lacks cJSON / OpenBLAS / cmocka; their shared libraries travel in DEPS/lib):
#   sh tests/cuda/device_run_prebuilt.sh BIN OUT [DEPS]
# BIN holds mambabyte, test_kernels_cuda and test_model_cuda from a CUDA build here
# (cmake -DCMAKE_BUILD_TYPE=Release; copy the three programs); DEPS defaults to .devdeps.
# Runs the kernel and model tests, the CLI training test (tests/cuda/test_train_cuda.sh) and,
# unless MB_SKIP_BENCH=1, the training benchmark at the shapes (353m ctx 8192 x 8,
# medium ctx 8192 x 32; MB_BENCH_STEPS steps, default 12). Example `run` call: carry
# [".devdeps/lib", ".dev-me"], command `sh tests/cuda/device_run_prebuilt.sh .dev-me $OUT`.
BIN=$(cd "${1:?BIN}" && pwd)
OUT=${2:-/tmp/mb_prebuilt_out}
DEPS=$(cd "${3:-.devdeps}" && pwd)
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$DEPS/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
export OMP_NUM_THREADS=16
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
for t in test_kernels_cuda test_model_cuda; do
  "$BIN/$t" >"$OUT/$t.txt" 2>&1 || { echo "$t: exit status $?"; rc=1; }
  grep -E "FAIL|worst rel err|passed|training|stateful|skipped|rror|fault" "$OUT/$t.txt" | grep -v "^  step" | head -40
  awk '/^(ln|rms)/ { m = $2; for (i = 2; i < NF; i++) { if ($i == "logits") l = $(i + 1) + 0;
         if ($i == "grad" && $(i - 1) == "worst") g = $(i + 1) + 0;
         if ($i == "grads" && $(i - 1) == "all") a = $(i + 1) + 0 }
       if (l > ml[m]) ml[m] = l; if (g > mg[m]) mg[m] = g; if (a > ma[m]) ma[m] = a; n[m]++ }
       END { for (m in n) printf "  %-16s %d cases: worst logits %.1e, worst grad tensor %.1e, whole gradient %.1e\n", m, n[m], ml[m], mg[m], ma[m] }' "$OUT/$t.txt"
done
MB_CLI="$BIN/mambabyte" MB_SOURCE_DIR=$PWD bash tests/cuda/test_train_cuda.sh >"$OUT/test_train_cuda.txt" 2>&1 || { echo "test_train_cuda: failed"; rc=1; }
grep -E "^(ok|FAIL)|passed|gpu vs cpu|gpu bf16|recompute vs|vs .*rel diff" "$OUT/test_train_cuda.txt" | head -60
if [ "${MB_SKIP_BENCH:-0}" != 1 ]; then
  S=${MB_BENCH_STEPS:-12}
  # MB_CUDA_PROFILE=1: kernel time by category, printed by the trainer at exit (kept in OUT)
  MB_CUDA_PROFILE=${MB_CUDA_PROFILE:-1} MB_CUDA_PROFILE_SKIP=5 MB_KEEP_LOGS="$OUT" \
    bash tests/cuda/bench_train_cuda.sh "$BIN/mambabyte" 8192 8 "$S" 353m | tee "$OUT/bench_353m.txt"
  MB_CUDA_PROFILE=${MB_CUDA_PROFILE:-1} MB_CUDA_PROFILE_SKIP=5 MB_KEEP_LOGS="$OUT" \
    bash tests/cuda/bench_train_cuda.sh "$BIN/mambabyte" 8192 32 "$S" medium | tee "$OUT/bench_medium.txt"
fi
exit $rc
