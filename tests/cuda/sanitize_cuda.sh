#!/bin/sh
# NVIDIA compute-sanitizer over the GPU programs (run on a GPU machine, repository root):
#   sh tests/cuda/sanitize_cuda.sh BIN OUT
# BIN holds the programs of a CUDA build (a build directory, or the bin/ of tests/cuda/
# pack_prebuilt.sh's archive); every tool's output is kept in OUT.
#   memcheck (with leak check): test_scan_cuda, test_kernels_cuda, test_step_cuda, test_model_cuda,
#     whole (out-of-bounds and misaligned device accesses, leaked device memory);
#   racecheck and synccheck (shared-memory hazards, invalid barriers): our scan kernels (every
#     form bench_scan_cuda times) at B 1, L 130, Di 64, N 16, and the norm, conv and dt
#     projection kernels of bench_kernels_cuda at 1 x 300, d_model 1024, d_inner 392, each set
#     through a kernel-name filter (only kernels whose names hold the substring are checked) and
#     bench_kernels_cuda without its cuBLAS products (MB_BENCH_NO_PRODUCTS=1): unfiltered,
#     racecheck reports cuBLAS's TMA kernels (nvjet_*) as racy; filtered out, they stop with an
#     internal sanitizer error. racecheck is slow: ~2 min for the scan at that size.
# MB_SANITIZE_TOOLS picks the tools (default "memcheck racecheck synccheck").
# Prints one line per run: the tool, the program, its exit status and the sanitizer's summary; exits
# non-zero if any run failed (exit status 99 = the sanitizer found an error).
BIN=${1:?BIN}
OUT=${2:?OUT}
mkdir -p "$OUT"
CS="compute-sanitizer --error-exitcode 99"
rc=0
run() { # name timeout tool args...
    name=$1 lim=$2 tool=$3
    shift 3
    s=$(date +%s)
    timeout "$lim" $CS --tool "$tool" "$@" >"$OUT/$name.txt" 2>&1
    st=$?
    sum=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$OUT/$name.txt" | sed 's/=* *//' |
        tr '\n' ';')
    echo "$tool $name: exit $st, $(($(date +%s) - s)) s: $sum"
    [ "$st" = 0 ] || rc=1
}
export MB_BENCH_NO_PRODUCTS=1 # (read by bench_kernels_cuda only)
TOOLS=${MB_SANITIZE_TOOLS:-memcheck racecheck synccheck}
case " $TOOLS " in *" memcheck "*)
    for t in test_scan_cuda test_kernels_cuda test_step_cuda test_model_cuda; do
        run "memcheck_$t" 600 memcheck --leak-check full "$BIN/$t"
    done
    ;;
esac
for tool in $TOOLS; do
    [ "$tool" = memcheck ] && continue
    run "${tool}_scan" 600 "$tool" --kernel-name kns=scan_ "$BIN/bench_scan_cuda" 1 130 64 16
    for k in norm_ conv_ dt_proj_; do
        run "${tool}_$k" 600 "$tool" --kernel-name "kns=$k" "$BIN/bench_kernels_cuda" 1 300 1024 392 4
    done
done
exit $rc
