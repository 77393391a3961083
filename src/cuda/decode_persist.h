/* Persistent recurrent step for small batches (1..MBP_MAX_SEQ sequences) on the GPU: the whole
 * step of src/cuda/step_cuda.cu (every layer, norm_f, lm_head; model.md "Recurrent step",
 * mamba_ssm `Mamba.step`) in ONE kernel of one block per multiprocessor, the phases of a layer
 * separated by one grid-wide barrier (a flag per block in global memory; split arrive / wait)
 * and by LL words (below).
 *
 * Block b of nb owns the channels [b*Di/nb, (b+1)*Di/nb) of every layer and the lm_head rows
 * [b*256/nb, (b+1)*256/nb) and out_proj rows [b*d/nb, (b+1)*d/nb). Per layer:
 *   phase A: residual += hidden (all of it, once every block's rows have come; every block
 *            recomputes the residual stream and the norm statistics redundantly, in double),
 *            in_proj rows x and z of its channels (by default, from layer 1 on, with the norm
 *            folded into the rows: dot products on the raw residual, finished with the
 *            statistics; a.fold),
 *            conv window shift + conv + SiLU, its x_proj partial sums -> added to dbc (global);
 *            grid barrier;
 *   phase B: dt_proj + softplus + selective-state update + D skip + SiLU(z) gate of its channels
 *            -> y (global);
 *   phase H: its out_proj rows (dot products over all of y, once every block's channels have
 *            come) -> hidden (global).
 * With a.ll (the default at batch 1 and 2), y and hidden travel as LL words (NCCL's low-latency
 * protocol): the value and the step's epoch in one 8-byte store, so a reader spins on the words
 * themselves, with one grid barrier per layer; else they are plain floats, each followed by a
 * grid barrier (3 per layer). On the H200 (bench_generate_cuda, ms/step, since ll_read re-reads
 * the late words together) LL is faster at batch 1 (353m bf16 0.74 against 0.88) and 2 (1.01
 * against 1.09), even at 3 (1.23 against 1.25; not the default) and slower at 4 (1.51 against
 * 1.46), where each block spins on 4x the words.
 * The x_proj partial sums are added as 32.32 fixed point (int64 atomics: exact, so the result
 * does not depend on the order of the blocks: deterministic, bit-identical run to run). Values
 * must stay below 2^31 in magnitude (a NaN / inf becomes a large finite value). out_proj was
 * summed the same way (partial sums of each block's channels over all d outputs: 132 x 1024
 * atomics per layer at 353m, whose drain cost ~5k cycles of a ~31k-cycle layer on the H200).
 * Every phase's weights of the block (and its own slice of the recurrent state) are copied into
 * shared memory (bulk copies by the TMA engine for 16-byte-aligned segments, issued by a 16th
 * producer warp that the compute warps hand each buffer to through named barriers, and
 * cp.async for the rest) as soon as the buffer is free, i.e. about one phase and a barrier
 * ahead, so that HBM streams across the barriers (paced at batch 1, 2: a.pace_cyc); rows of
 * in_proj / out_proj / lm_head that do
 * not fit (large models) are read from global memory in the phase (where rows overflow, only
 * MBP_OVERFLOW_ROWS bytes of them stay in shared memory: all the warps reading the rest keep
 * more bytes in flight than the fills), or, with a.ring (opt-in), all rows stream through a
 * ring of shared-memory chunks that the producer refills as soon as each is read.
 * The grid must be co-resident: mbp_prepare sizes it from the occupancy API (at most one block
 * per multiprocessor); a barrier that waits more than 10 s traps (launch failure) instead of
 * hanging. */
#ifndef MB_CUDA_DECODE_PERSIST_H
#define MB_CUDA_DECODE_PERSIST_H

#include <cuda_runtime.h>
#include <stdint.h>

#define MBP_MAX_SEQ 4
/* compute threads (15 warps); + 32 with the producer warp. At 16 warps the kernel has 128
 * registers (a multiprocessor's 4 partitions hold 16K each, its warps spread over them) and spills
 * 40-70 bytes; 12 warps (-DMBP_THREADS=352, a lab knob: up to 168 registers, no spills) measured
 * slower on the H200 at batch 1 (972m bf16 0.967 -> 1.184 ms/step, 353m 0.625 -> 0.650) and
 * faster at 353m batch 2 (0.910 -> 0.848; 972m 1.368 -> 1.492), session 30 */
#ifndef MBP_THREADS
#define MBP_THREADS 480
#endif
#define MBP_OVERFLOW_ROWS 30720 /* weight-row bytes kept in shared memory where they overflow */
#define MBP_PACE_CYC 250        /* default pace of the producer's copies at batch 1, 2 (pace_cyc) */
#define MBP_PACE_BYTES 4096     /* and their piece size (pace_bytes) */
/* Profile slots (cycles of block 0's thread 0, or of every block's with
 * MB_CUDA_GEN_PERSIST_PROF=2, summed over layers and steps): 8 wait for hidden
 * (LL), 0 wait for phase A's weights, 1 residual + norm, 9 in_proj rows, 10 conv, 2 x_proj sums,
 * 3 barrier arrive, 14 issue of the next A fill, 4 barrier wait, 5 wait for phase B's weights, 6
 * dbc load, 7 dt + state update, 16 wait for y (LL), 17 out_proj rows, 15 issue of the next B
 * fill, 11 norm_f + lm_head (per step), 12 steps, 13 whole kernel (per step). */
#define MBP_PROF 18

/* One layer's device tensors as the persistent kernel reads them. */
typedef struct {
    const float *norm_w, *norm_b; /* (d); norm_b NULL for RMSNorm */
    const void *in;               /* in_proj.weight (2Di, d), fp32 or bf16 */
    const float *conv_w, *conv_b; /* (Di, K), (Di) */
    const float *xwT;             /* x_proj.weight transposed: (Di, W), W = R + 2N */
    const float *dt_w, *dt_b;     /* (Di, R), (Di) */
    const float *A, *D;           /* -exp(A_log) (Di, N), (Di) */
    const void *out;              /* out_proj.weight (d, Di), fp32 or bf16 */
    /* a.fold, layers 1..: the norm folded into in_proj (mbp_fold_norm). in is then W.gamma
     * (in_proj.weight times the norm weight per column, rounded to the weight type) and fold holds,
     * per block b of nb, 4 CBmax floats at b 4 CBmax: s[i] (the row sums of the rounded W.gamma) at
     * i and W.beta (0 for RMSNorm) at 2 CBmax + i, for the block's rows i = 0..2CB-1 (x rows c0..,
     * then z rows Di + c0..) */
    const float *fold;
} mbp_layer;

typedef struct {
    const mbp_layer *layers; /* device array (n_layer) */
    const float *emb;        /* (V, d) fp32 */
    const float *normf_w, *normf_b;
    const void *lm;           /* lm_head (V, d), fp32 or bf16 */
    const uint8_t *tok;       /* (S) input bytes */
    float *conv, *ssm;        /* state (n_layer, S, K-1, Di), (n_layer, S, Di, N) */
    float *logits;            /* (S, V) */
    unsigned long long *acc;  /* 2 (step parity) x n_layer x S x W fixed-point x_proj sums */
    unsigned long long *yll;  /* (n_layer, S, Di) gated scan outputs: LL words (a.ll), else plain
                                 floats in the first half; zeroed at start */
    unsigned long long *hll;  /* (n_layer, S, d) out_proj outputs, the same way */
    unsigned *flags;          /* (nb) barrier counts */
    unsigned *step;           /* steps run (parity of acc) */
    unsigned long long *prof; /* NULL, or (MBP_PROF) clock64 cycles summed by block 0 thread 0;
                                 with prof_all (nb, MBP_PROF): every block's thread 0 */
    int prof_all;
    int S, d, Di, N, K, R, V, n_layer, rms, bf16, nb;
    int light_fence; /* 1: barrier arrival by the release store alone, without __threadfence
                        (CUTLASS's barrier; the default, env MB_CUDA_GEN_PERSIST_FENCE=full: 0) */
    int bulk;        /* 1: 16-byte-aligned segments by bulk copies (TMA engine) completing on an
                        mbarrier, the rest by cp.async; 0: all by cp.async. Default 1, env
                        MB_CUDA_GEN_PERSIST_BULK=0 forces 0 */
    int producer;    /* 1 (with bulk): a 16th warp issues the bulk copies, so that the compute
                        warps never wait for the copy issue (launched with MBP_THREADS + 32
                        threads); env MB_CUDA_GEN_PERSIST_PRODUCER=0 turns it off */
    int ll;          /* 1: y and hidden as LL words (one grid barrier per layer), 0: plain floats
                        and two more barriers. Default 1 at batch 1, 2; env MB_CUDA_GEN_PERSIST_LL */
    int all16;       /* 1: every segment of every block's fills is 16-byte aligned (bulk copies
                        only), so the compute threads skip their walk of the segments for cp.async
                        ones (set by mbp_all_aligned; env MB_CUDA_GEN_PERSIST_ALL16=0 forces 0) */
    int win_mode;    /* conv windows and biases in shared memory: 0 (default) unless they would
                        push out weight rows that fit without them, 1 never, 2 whenever they
                        fit (env MB_CUDA_GEN_PERSIST_WIN=0|1 forces 1|2) */
    float eps;
    /* shared memory plan (bytes; filled by mbp_prepare) */
    int CBmax, capA, capB; /* channels per block (max), rows of bufA / bufB kept in smem */
    int off_r, off_u, off_xz, off_xc, off_dbc;
    int off_nw, off_nb, off_cw, off_xw, off_rowsA;
    int off_dw, off_A, off_ss, off_rowsB, off_yall;
    int off_lt; /* the layer table (n_layer mbp_layer), copied in at the start */
    int win;    /* 1: the block's conv windows (n_layer, S, K - 1, CBmax) and conv biases
                   (n_layer, CBmax) at off_win, loaded at the start of the step (each is read
                   once per step: the shifted windows go to global memory only); set by
                   mbp_plan from win_mode */
    int off_win;
    int smem;
    /* (the ring's fields last: fields added before the others moved their offsets in the
     * kernel's parameter and changed the code of every kernel; 972m batch 2 1.45 -> 1.51
     * ms/step) */
    int ring_mode; /* weight rows through the ring: 0 (default) and 1 never, 2 whenever it can
                      run (env MB_CUDA_GEN_PERSIST_RING=1; on the H200 it was at best level with
                      the fixed buffers and their overflow cap: see mbp_plan) */
    int ring;      /* 1: every in_proj / out_proj / lm_head row is streamed through a ring of
                      ring_ns slots of ring_sb = d x (2 or 4) bytes at off_ring (out_proj rows
                      as ring_p = d_inner / d_model pieces of d weights), filled in chunks of
                      ring_c slots, each with a full and an empty mbarrier (off_rmb: full[NC],
                      empty[NC], the two small buffers' empty barriers, then each chunk's count
                      of consumed rows; NC = ring_ns / ring_c): the producer warp refills a chunk
                      as soon as its rows are read, so HBM streams across the grid barriers and
                      waits; capA = capB = 0 (the fills carry the small tensors only). Needs the
                      producer warp, bulk copies, d_inner a multiple of d_model and 16-byte
                      aligned rows (mbp_rows_aligned); set by mbp_plan */
    int ring_ns, ring_c, ring_sb, ring_p, off_ring, off_rmb;
    int off_prof; /* the profile's two clocks (16 bytes), at the end of the layout */
    int pad_base; /* bytes before the layout's first offset (a multiple of 16): set by mbp_plan */
    int pad_set;  /* nonzero: pad_base = pad_ask (env MB_CUDA_GEN_PERSIST_PAD, a lab knob) */
    int pad_ask;
    int ring_c_ask; /* > 0: rows per ring chunk asked for (env MB_CUDA_GEN_PERSIST_RING_C, a lab
                       knob), else the plan's choice */
    int pace_cyc;   /* > 0: the producer warp issues its bulk copies in pieces of pace_bytes
                       (a multiple of 16, >= 16), on average one per pace_cyc cycles from the
                       start of each fill, instead of 32 KB pieces at once. A fill of ~100 KB
                       per block issued by all 132 blocks at once queued ~13 MB in front of the
                       LL words and barrier flags that the next sync phase reads, so that phase
                       waited for it; at about the block's share of the HBM bandwidth the queue
                       stays short. Default 250 cycles per 4 KB (16 B/cycle/SM) at batch 1 and 2
                       (H200, ms/step, docs/benchmarks.md session 9: 353m bf16 b1 0.747 ->
                       0.685, its y wait 4.0k -> 2.0k cycles per layer; b2 1.016 -> 0.980; 972m
                       bf16 b1 1.041 -> 1.015; 972m fp32 1.440 -> 1.425; 353m fp32 and 972m b2
                       level), off at 3 and 4 (353m b3 / b4 1.26 / 1.45 -> 1.32 / 1.56 paced:
                       their larger fills then end late); 2 KB pieces cost 353m b1 0.84 (the copy
                       engine's cost per copy). Env MB_CUDA_GEN_PERSIST_PACE=cycles[:bytes]
                       (cycles <= 100000), 0: off */
    int pace_bytes;
    int fold; /* 1: the norm of every layer but the first folded into its in_proj
                 (mbp_layer.fold): where |mean| <= MBP_FOLD_MAXR spreads (every sequence), the
                 rows' dot products run on the residual r itself and each is finished as
                 (r.(W gamma) - mean s) rstd + W.beta, which equals W ((r - mean) rstd gamma +
                 beta) in real arithmetic when s comes from the rounded weights: the block's
                 normalized copy of r and the barrier after it go. Further out (the subtraction
                 would lose digits in proportion to mean / spread) the rows run on the centered
                 copy (r - mean) rstd and add W.beta. The fills carry the 4 CBmax fold floats
                 instead of the 2 d norm weights. Set before the plan (the area off_nw holds
                 max(d, 4 CBmax) floats); default 1, env MB_CUDA_GEN_PERSIST_FOLD=0 turns it
                 off. Layer 0 and norm_f before lm_head keep the normalized copy */
} mbp_args;

/* 1 when layer l's in_proj rows are the folded ones (a->fold: layers 1..n_layer-1; layer 0 and
 * norm_f keep the normalized copy): the kernel, its fills, the preparation and the emulator */
static inline __host__ __device__ int mbp_folded(const mbp_args *a, int l) {
    return a->fold && l > 0 && l < a->n_layer;
}

/* Plan the kernel for a's shape (S, d, Di, N, K, R, V, n_layer, rms, bf16 set): grid size (at
 * most sm_count; fewer with env MB_CUDA_GEN_PERSIST_BLOCKS=n), the shared memory layout (rows
 * kept in shared memory capped by env MB_CUDA_GEN_PERSIST_ROWBYTES=bytes, for tests), kernel
 * attributes. Returns 0 when the kernel covers the shape (fills nb, the offsets, smem), 1 when
 * it does not (S > MBP_MAX_SEQ, odd d_model, not enough shared memory or occupancy), or a
 * negative MB_E* code on a CUDA error. */
int mbp_prepare(mbp_args *a, int sm_count);

/* The shared memory plan alone (no CUDA calls): nb blocks, optin bytes of shared memory per
 * block, rows kept in shared memory limited to row_bytes when >= 0. 0: planned, 1: not covered. */
int mbp_plan(mbp_args *a, int nb, int optin, long long row_bytes);

/* Launch the step on stream (no programmatic dependent launch). */
int mbp_launch(const mbp_args *a, cudaStream_t stream);

/* 1 when every segment that any block copies (for_segs in decode_persist.cu: weights, states)
 * is 16-byte aligned in source, size and shared-memory offset, else 0. layers: the host copy of
 * the layer table (device addresses); needs the plan (mbp_prepare / mbp_plan) and the pointers
 * of a (normf_w, normf_b, lm, ssm) set. */
int mbp_all_aligned(const mbp_args *a, const mbp_layer *layers);

/* 1 when every row the ring streams (in_proj, out_proj pieces, lm_head) is 16-byte aligned in
 * source and size, else 0 (layers: the host copy of the layer table; a.lm set). */
int mbp_rows_aligned(const mbp_args *a, const mbp_layer *layers);

/* The norm of one layer folded into its in_proj for a.fold (a planned: nb, CBmax, Di, d, bf16,
 * rms): wf (2Di, d) := W * gamma per column, rounded to bf16 when a->bf16 (else fp32); fold
 * (nb, 4 CBmax) := the per-block row sums of wf and W.beta (zeros where a block has fewer rows,
 * and W.beta = 0 where beta is NULL), sums in double. W: in_proj.weight (2Di, d) fp32. */
int mbp_fold_norm(const mbp_args *a, void *wf, float *fold, const float *W, const float *gamma,
                  const float *beta, cudaStream_t stream);

/* dst (cols, rows) = transpose of src (rows, cols), fp32 (x_proj.weight for the layer table). */
int mbp_transpose(float *dst, const float *src, int64_t rows, int64_t cols, cudaStream_t stream);

#endif
