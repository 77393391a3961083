#!/bin/sh
# GPU generation benchmark table (bench_generate_cuda): bytes/s for the 353m and 972m presets at
# batch 1, 4 and 64 (fp32 and bf16 weights; batch > 4 is the batched path: its bf16 GEMMs by our
# skinny GEMM (src/cuda/gemm_decode_cuda.h) at 48..64 sequences where its plan takes one wave of
# blocks, else cuBLAS; MB_CUDA_GEN_GEMM=cublas / =own force either; MB_CUDA_NO_PDL=1 turns
# programmatic dependent launch off; MB_CUDA_GEN_XPROJ_MINB=1|2 sets conv_xproj's blocks per
# multiprocessor, by default 2 where its grid exceeds the multiprocessors; MB_CUDA_GEN_XPROJ_NT=256:
# conv_xproj with 8 warps where it would take 12 (x_proj rows of 9-12 warp passes, one block per
# multiprocessor: the 353m preset); MB_CUDA_GEN_L2PF=0: no
# L2 prefetch of each layer's states and small weights by its norm kernel (on by default where
# our skinny GEMM does in_proj); MB_CUDA_GEN_GEMM_PROF=1: the skinny GEMMs' phase times at exit,
# and with a build compiled with -DMB_CUDA_GEN_TIMELINE the batched kernels' too, one time line).
# Batch <= 4 is the persistent step kernel (src/cuda/decode_persist.h); the rows with
# MB_CUDA_GEN_PERSIST=0 are the per-layer kernels it replaced, for comparison;
# its weight copies are bulk copies (TMA) issued by a producer warp, with barrier arrival
# without __threadfence; the other variants: MB_CUDA_GEN_PERSIST_PRODUCER=0 (thread 0 issues
# the bulk copies), MB_CUDA_GEN_PERSIST_BULK=0 (cp.async), MB_CUDA_GEN_PERSIST_FENCE=full;
# MB_CUDA_GEN_PERSIST_PROF=1: cycles per phase (block 0) printed under the row;
# MB_CUDA_GEN_PERSIST_ALL16=0: the compute threads walk the copy segments even when all are
# bulk copies; MB_CUDA_GEN_PERSIST_LL=0|1: y and hidden as plain floats with grid barriers / as
# LL words (default: LL words at batch 1 and 2); MB_CUDA_GEN_PERSIST_WIN=0|1: conv windows in
# global / shared memory (default: shared where no weight row that would fit is pushed out);
# MB_CUDA_GEN_PERSIST_PROF=2: every block's profile (min / median / max);
# MB_CUDA_GEN_PERSIST_RING=1: weight rows streamed through the ring of chunks instead of the
# fixed buffers (default: fixed buffers; where the rows overflow shared memory, at most 30 KB of
# them there and the rest read by the warps in their phase); MB_CUDA_GEN_PERSIST_RING_C=n: rows
# per ring chunk; MB_CUDA_GEN_PERSIST_ROWBYTES=n: at most n bytes of rows in shared memory (a
# large n: every row that fits, the plan before session 8); MB_CUDA_GEN_PERSIST_PACE=0 or
# =cycles[:bytes]: the producer's copies at once in 32 KB pieces / paced, one piece of bytes
# (default 4096) per cycles (default: 250 at batch 1 and 2, off at 3 and 4);
# MB_CUDA_GEN_PERSIST_FOLD=0: each layer's norm computed in the kernel instead of folded into
# in_proj (default: folded).
# Usage: sh bench/bench_generate_cuda.sh [BENCH_BINARY] [STEPS]
B=${1:-build/bench_generate_cuda}
N=${2:-1000}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
echo "| preset | batch | weights | ms/step | bytes/s | weight bytes/step | GB/s | % of 4.3 TB/s |"
echo "|---|---|---|---|---|---|---|---|"
"$B" 353m 1 fp32 "$N"
"$B" 353m 1 bf16 "$N"
"$B" 972m 1 fp32 "$N"
"$B" 972m 1 bf16 "$N"
"$B" 353m 2 bf16 "$N"
"$B" 353m 4 bf16 "$N"
MB_CUDA_GEN_PERSIST_PROF=1 "$B" 353m 1 bf16 "$N" | sed '1s/$/ (profiled)/'
MB_CUDA_GEN_PERSIST_PROF=2 "$B" 972m 1 bf16 "$N" | sed '1s/$/ (profiled)/'
MB_CUDA_GEN_PERSIST_PROF=1 "$B" 353m 4 bf16 "$N" | sed '1s/$/ (profiled)/'
MB_CUDA_GEN_PERSIST_PRODUCER=0 MB_CUDA_GEN_PERSIST_PROF=1 "$B" 353m 1 bf16 "$N" | sed '1s/$/ no producer warp (profiled)/'
MB_CUDA_GEN_PERSIST_ALL16=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ segments walked/'
MB_CUDA_GEN_PERSIST_LL=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ barriers (no LL words)/'
MB_CUDA_GEN_PERSIST_LL=0 "$B" 353m 2 bf16 "$N" | sed 's/$/ barriers (no LL words)/'
"$B" 353m 3 bf16 "$N"
MB_CUDA_GEN_PERSIST_LL=1 "$B" 353m 3 bf16 "$N" | sed 's/$/ LL words/'
MB_CUDA_GEN_PERSIST_WIN=0 "$B" 972m 1 bf16 "$N" | sed 's/$/ conv windows in global memory/'
MB_CUDA_GEN_PERSIST_PACE=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ copies not paced/'
MB_CUDA_GEN_PERSIST_PACE=0 "$B" 972m 1 bf16 "$N" | sed 's/$/ copies not paced/'
MB_CUDA_GEN_PERSIST_PACE=0 MB_CUDA_GEN_PERSIST_PROF=1 "$B" 353m 1 bf16 "$N" | sed '1s/$/ copies not paced (profiled)/'
MB_CUDA_GEN_PERSIST_PACE=250 "$B" 353m 3 bf16 "$N" | sed 's/$/ copies paced/'
MB_CUDA_GEN_PERSIST_ROWBYTES=1000000 "$B" 972m 1 bf16 "$N" | sed 's/$/ every row that fits in shared memory/'
MB_CUDA_GEN_PERSIST_ROWBYTES=1000000 "$B" 972m 2 bf16 "$N" | sed 's/$/ every row that fits in shared memory/'
MB_CUDA_GEN_PERSIST_ROWBYTES=1000000 "$B" 353m 1 fp32 "$N" | sed 's/$/ every row that fits in shared memory/'
MB_CUDA_GEN_PERSIST_RING=1 "$B" 972m 1 bf16 "$N" | sed 's/$/ ring/'
MB_CUDA_GEN_PERSIST_RING=1 MB_CUDA_GEN_PERSIST_RING_C=5 "$B" 972m 1 bf16 "$N" | sed 's/$/ ring, chunks of 5 rows/'
MB_CUDA_GEN_PERSIST_RING=1 "$B" 353m 1 bf16 "$N" | sed 's/$/ ring/'
MB_CUDA_GEN_PERSIST_RING=1 "$B" 972m 2 bf16 "$N" | sed 's/$/ ring/'
MB_CUDA_GEN_PERSIST_WIN=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ conv windows in global memory/'
"$B" 972m 2 bf16 "$N"
MB_CUDA_GEN_PERSIST_WIN=0 "$B" 972m 2 bf16 "$N" | sed 's/$/ conv windows in global memory/'
MB_CUDA_GEN_PERSIST_LL=1 "$B" 353m 4 bf16 "$N" | sed 's/$/ LL words/'
MB_CUDA_GEN_PERSIST_FOLD=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ norm not folded/'
MB_CUDA_GEN_PERSIST_FOLD=0 "$B" 972m 1 bf16 "$N" | sed 's/$/ norm not folded/'
MB_CUDA_GEN_PERSIST_FENCE=full "$B" 353m 1 bf16 "$N" | sed 's/$/ full fence/'
MB_CUDA_GEN_PERSIST_BULK=0 "$B" 353m 1 bf16 "$N" | sed 's/$/ cp.async only/'
MB_CUDA_GEN_PERSIST_BULK=0 "$B" 353m 1 fp32 "$N" | sed 's/$/ cp.async only/'
MB_CUDA_GEN_PERSIST=0 "$B" 353m 1 bf16 "$N"
MB_CUDA_GEN_PERSIST=0 "$B" 972m 1 bf16 "$N"
MB_CUDA_GEN_PERSIST=0 "$B" 353m 4 bf16 "$N"
"$B" 353m 64 fp32 "$N"
"$B" 353m 64 bf16 "$N"
"$B" 972m 64 bf16 "$N"
MB_CUDA_GEN_GEMM=cublas "$B" 353m 64 bf16 "$N" | sed 's/$/ cuBLAS GEMMs/'
MB_CUDA_GEN_GEMM=cublas "$B" 972m 64 bf16 "$N" | sed 's/$/ cuBLAS GEMMs/'
MB_CUDA_NO_PDL=1 "$B" 353m 64 bf16 "$N" | sed 's/$/ no PDL/'
MB_CUDA_GEN_XPROJ_MINB=1 "$B" 972m 64 bf16 "$N" | sed 's/$/ conv_xproj 1 block\/SM/'
MB_CUDA_GEN_XPROJ_MINB=2 "$B" 353m 64 bf16 "$N" | sed 's/$/ conv_xproj 2 blocks\/SM/'
