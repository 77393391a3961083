/* Skinny bf16 GEMM of batched generation: y (S, rows) = x (S, K) @ W^T for the few rows of x
 * (the sequences, S <= 64 per grid slice) of one decoding step, with W (rows, K) and x (S, K)
 * bf16 row-major, fp32 accumulation (mma.sync m16n8k16) and fp32 output. Such a product moves
 * its weights once and does little arithmetic per weight byte (64 multiply-adds), so it is
 * bound by how fast the weights stream in: every block copies its whole weight tile to shared
 * memory (TMA tensor copies) before waiting for the previous kernel (programmatic dependent
 * launch), so the copy overlaps that kernel's tail, and the grid is sized to about one block per
 * multiprocessor by splitting K (the splits of a row tile are one thread-block cluster and are
 * summed in split order through distributed shared memory: deterministic).
 * Used by src/cuda/step_cuda.cu for in_proj, out_proj and lm_head with bf16 weights at 48..64
 * sequences where the plan takes one wave of blocks and at most 2 splits of K (else cuBLAS;
 * MB_CUDA_GEN_GEMM=own / =cublas force either). */
#ifndef MB_CUDA_GEMM_DECODE_CUDA_H
#define MB_CUDA_GEMM_DECODE_CUDA_H
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

/* A launch shape: RT row tiles of 16 per block, KT splits of K over the grid (KB = K / KT per
 * block; the KT blocks of a row tile are one cluster); the kernel runs 8 / RT warps along KB. */
typedef struct {
    int rt, kt, kb;
    int split_out; /* kt > 1 partial outputs, split k at y + k ysplit (the caller sums them in
                      split order), instead of a cluster reduction */
    int ns;        /* copy stages (the products of a stage start when it is in) */
    int prof_slot; /* -1, or 0..2: record phase times (MB_CUDA_GEN_GEMM_PROF) */
    size_t smem;   /* dynamic shared memory bytes */
    unsigned blocks;
    int waves;
} mb_gemm_decode_plan;

/* Choose a plan for (rows, K, S) on sm_count multiprocessors whose blocks may opt in to
 * smem_optin bytes of shared memory, where the caller can add up to out_splits partial outputs
 * itself (1: none; plans with 2..out_splits splits of K then write them, plan.split_out, instead
 * of a cluster reduction): fewest waves of blocks, then at most 2 splits, then the most
 * blocks, then fewest splits, then 32 rows per block (the measurements behind the order are in
 * the .cu); 0 when one fits, else -1 (use another GEMM; rows must be a multiple of
 * 16 and K of 64, and the tiles must fit in shared memory). plan.waves: the waves of blocks it
 * takes. The environment variables MB_CUDA_GEN_GEMM_RT (1, 2, 4 or 8), MB_CUDA_GEN_GEMM_KT (1,
 * 2, 4 or 8) and MB_CUDA_GEN_GEMM_NS (1 to 4) force the row tiles per block, the splits of K and
 * the copy stages (benchmarks, tests), as one value for every product or "in,out,lm" per product
 * (`which`: 0 in_proj, 1 out_proj, 2 lm_head; an empty item leaves that product free). */
int mb_gemm_decode_plan_for(mb_gemm_decode_plan *p, int which, int64_t rows, int64_t K, int64_t S,
                            int out_splits, int sm_count, int64_t smem_optin);

/* 0 when the plan variables (MB_CUDA_GEN_GEMM_RT / _KT / _NS) are unset or well formed, else
 * -1 with a message naming the variable and what it takes in msg (cap bytes). */
int mb_gemm_decode_env_check(char *msg, size_t cap);

/* TMA tensor map of a bf16 row-major matrix (rows, K) at p for a plan: boxes of box_rows rows x
 * box_chunks chunks of 64 columns, 128-byte swizzle: box_rows = 16 * plan.rt for a weight, 64
 * for x (rows past the matrix read as zeros), box_chunks = plan.kb / 64 / plan.ns. p 16-byte
 * aligned, K a multiple of 64. 0, or -1 when the driver has no cuTensorMapEncodeTiled or refuses
 * the map. */
int mb_gemm_decode_tmap(CUtensorMap *t, const __nv_bfloat16 *p, int64_t rows, int64_t K,
                        int box_rows, int box_chunks);

/* Enqueue y (S, rows; row stride ldy floats) = x (S, K) @ W^T on stream with plan p, the
 * weights' and x's tensor maps tw / tx, with programmatic dependent launch when pdl; with
 * p->split_out the p->kt partial sums over K go to y + k ysplit (k < kt; y then has room for kt
 * outputs) and y is their sum in split order. y 16-byte aligned, ldy (and ysplit where used) a
 * positive multiple of 4, ysplit at least S ldy (else cudaErrorInvalidValue). Returns the launch's
 * cudaError_t. */
cudaError_t mb_gemm_decode_launch(const mb_gemm_decode_plan *p, const CUtensorMap *tw,
                                  const CUtensorMap *tx, float *y, int64_t ldy, int64_t ysplit,
                                  int64_t rows, int64_t S, cudaStream_t stream, int pdl);

/* Print the phase times of the last launch of the plans p[k] with used[k] set (prof_slot k),
 * k < n, to stderr. */
void mb_gemm_decode_prof_print(const mb_gemm_decode_plan *p, const int *used, int n);

/* Allow each kernel instance the shared memory plans may use on a device whose opt-in limit
 * is smem_optin bytes; the cudaError_t of the first refusal. */
cudaError_t mb_gemm_decode_init(int64_t smem_optin);

#endif
