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
#   racecheck and synccheck of generation (bench_generate_cuda PRESET BATCH WEIGHTS 2 nograph: a
#     prefill, 50 warm-up steps and 2 timed ones): the persistent step kernel (tiny batch 1 bf16,
#     small batch 3 fp32, medium batch 1 bf16), the per-layer kernels (MB_CUDA_GEN_PERSIST=0,
#     small batch 2 bf16, every kernel of ours through the filter 'kernel'), the batched path
#     (tiny and small at batch 64 bf16 with MB_CUDA_GEN_GEMM=own: the *_b_kernel, norm_b2, skinny
#     GEMM and sampler kernels, each set through its filter). Small shapes keep racecheck within
#     minutes (the 353m step did not finish in 200 s).
# MB_SANITIZE_TOOLS picks the tools (default "memcheck racecheck synccheck"), MB_SANITIZE_SETS
# the programs racecheck and synccheck run (default "scan kernels generation"),
# MB_SANITIZE_LIMIT the seconds one run may take (default 600).
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
    timeout "${MB_SANITIZE_LIMIT:-$lim}" $CS --tool "$tool" "$@" >"$OUT/$name.txt" 2>&1
    st=$?
    sum=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$OUT/$name.txt" | sed 's/=* *//' |
        tr '\n' ';')
    echo "$tool $name: exit $st, $(($(date +%s) - s)) s: $sum"
    [ "$st" = 0 ] || rc=1
}
export MB_BENCH_NO_PRODUCTS=1 # (read by bench_kernels_cuda only)
TOOLS=${MB_SANITIZE_TOOLS:-memcheck racecheck synccheck}
SETS=" ${MB_SANITIZE_SETS:-scan kernels generation} "
has() { case "$SETS" in *" $1 "*) return 0 ;; esac; return 1; }
case " $TOOLS " in *" memcheck "*)
    for t in test_scan_cuda test_kernels_cuda test_step_cuda test_model_cuda; do
        run "memcheck_$t" 600 memcheck --leak-check full "$BIN/$t"
    done
    ;;
esac
for tool in $TOOLS; do
    [ "$tool" = memcheck ] && continue
    has scan && run "${tool}_scan" 600 "$tool" --kernel-name kns=scan_ "$BIN/bench_scan_cuda" 1 130 64 16
    for k in norm_ conv_ dt_proj_; do
        has kernels &&
            run "${tool}_$k" 600 "$tool" --kernel-name "kns=$k" "$BIN/bench_kernels_cuda" 1 300 1024 392 4
    done
    has generation || continue
    G="$BIN/bench_generate_cuda"
    run "${tool}_persist_tiny" 600 "$tool" --kernel-name kns=persist_step "$G" tiny 1 bf16 2 nograph
    run "${tool}_persist_small" 600 "$tool" --kernel-name kns=persist_step "$G" small 3 fp32 2 nograph
    run "${tool}_persist_medium" 600 "$tool" --kernel-name kns=persist_step "$G" medium 1 bf16 2 nograph
    export MB_CUDA_GEN_PERSIST=0
    run "${tool}_per_layer" 600 "$tool" --kernel-name kns=kernel "$G" small 2 bf16 2 nograph
    unset MB_CUDA_GEN_PERSIST
    export MB_CUDA_GEN_GEMM=own
    for k in b_kernel norm_b2 gemm_decode sample_kernel; do
        for p in tiny small; do
            run "${tool}_batched_${k}_$p" 600 "$tool" --kernel-name "kns=$k" "$G" $p 64 bf16 2 nograph
        done
    done
    unset MB_CUDA_GEN_GEMM
done
exit $rc
