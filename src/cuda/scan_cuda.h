/* Selective scan (S6) on a CUDA GPU: forward and backward with the semantics, argument struct
 * and layouts of the CPU reference (src/cpu/scan.h, mb_scan_forward / mb_scan_backward); every
 * pointer in mb_scan_args and every output is a DEVICE pointer. fp32 inputs and fp32 state.
 *
 * Structure (mamba_ssm csrc/selective_scan, adapted to our (B, L, Di) channel-contiguous
 * layout): a thread owns one channel and 4 consecutive states; G = N/4 (rounded up to a power
 * of two) lanes share a channel. Forward: a block of 32 channels (G warps) walks the whole
 * sequence, each thread scanning its channel serially; tiles of 32 positions of x, delta, z
 * (32 channels, 128-byte rows) and of B, C are copied into shared memory one tile ahead with
 * cp.async, so a step touches only shared memory and registers; the gated output goes back into
 * the tile's z slots and is written out as whole 128-byte rows during the next tile. Backward
 * (v5, default): a block of 32 channels x G lanes walks the sequence backwards one 64-position
 * chunk at a time (x, delta, B, C of the chunk staged in shared memory); every thread walks the
 * chunk alone, forward from the saved entering state (checkpoints every 8 positions, pre-gate
 * output, gate), then backward in 8-position sub-chunks recomputed into registers; warps never
 * wait for one another inside a chunk; dB/dC are summed over channel pairs by a shuffle, then
 * over the warp's channels in shared memory, and added with one 16-byte red per (position, 4
 * states, warp); dA_log/dD by one atomic per value and block. The previous backward (v4: 8 or
 * 16 warps split each chunk in time and combine their (a, b) aggregates in shared memory) stays
 * selectable and serves small grids. Only the states entering each chunk (args.chunk) are
 * saved; no (L, Di, N) tensor. The dense form (mb_scan_cuda_opts.y_pregate with chunk 8, for
 * training when memory allows): the forward also writes the pre-gate output and the backward
 * stages both instead of its forward pass over each chunk. exp is exp2 with A pre-scaled by
 * log2(e). The shared x / delta / z / output tiles are column-swizzled by row against bank
 * conflicts.
 *
 * Errors: functions return 0 or a negative MB_E* code with mb_fail() naming the argument or the
 * CUDA error (they never abort). Launches are asynchronous on `stream` (a cudaStream_t passed
 * as void *, NULL = default stream); argument errors are detected before any launch.
 */
#ifndef MB_CUDA_SCAN_CUDA_H
#define MB_CUDA_SCAN_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cpu/scan.h"

/* Number of CUDA devices (0 when there is no driver or no device; never fails). */
int mb_cuda_device_count(void);

/* Chunk length the GPU backward handles without recomputing finer chunk states (64). A
 * forward whose h_chunks feed mb_scan_cuda_backward should use it; any chunk > 0 is correct. */
int64_t mb_scan_cuda_preferred_chunk(void);

/* Chunk (8) at which a forward's saved states, with its y_pregate (mb_scan_cuda_opts), let the
 * backward skip its recomputation (the dense form; see y_pregate). */
int64_t mb_scan_cuda_dense_chunk(void);

/* 1 when a backward of these sizes takes the dense form (y_pregate) with 16-byte aligned tensors
 * whose x / z rows have a stride of 2 Di and whose B / C columns follow R others in rows of
 * R + 2N (the model's layout): N 12 or 16, L >= 8, Di and R multiples of 4, and a grid for
 * which the v5 backward is chosen (the lab knobs included); else 0. */
int mb_scan_cuda_dense_supported(int64_t B, int64_t L, int64_t Di, int64_t N, int64_t R);

/* 1 when the forward and backward take bf16 x / delta (mb_scan_cuda_opts.x_bf16, delta_bf16)
 * at these sizes with the lab knobs as they are now (the tensors' alignment still checked per
 * call), else 0. */
int mb_scan_cuda_bf16in_supported(int64_t B, int64_t L, int64_t Di, int64_t N);

/* Forward (mb_scan_forward): writes y (B, L, Di) contiguous, h_chunks and h_last if non-NULL.
 * y may be NULL (states only). Supports 1 <= N <= 32, chunk > 0, L < 2^31.
 * MB_EINVAL for a bad size / NULL input; MB_EIO (message names the CUDA error) on a CUDA
 * failure of the launch. */
int mb_scan_cuda_forward(const mb_scan_args *a, float *y, void *stream);

/* Backward (mb_scan_backward) given dy (B, L, Di) contiguous and the h_chunks of the forward
 * with the same args. Writes (=) dx, ddelta (B, L, Di) contiguous, the N columns of dB and dC
 * (stride bc_stride), dz (stride z_stride, if z != NULL); accumulates (+=) dA_log (Di, N) and
 * dD (Di). Supports 1 <= N <= 16. When chunk > mb_scan_cuda_preferred_chunk() it first recomputes
 * the chunk states at the preferred chunk into a temporary device buffer (cudaMallocAsync,
 * B*Di*ceil(L/64)*N floats), costing one more forward scan. Errors as for the forward (MB_ENOMEM if
 * the temporary buffer cannot be allocated). */
int mb_scan_cuda_backward(const mb_scan_args *a, const float *dy, float *dx, float *ddelta,
                          float *dA_log, float *dB, float *dC, float *dD, float *dz, void *stream);

/* Options of the _ex forms, for the model's use (mamba_ssm selective_scan_fn's delta_bias /
 * delta_softplus, and the mixed-precision path's bf16 operand copies). All DEVICE pointers;
 * NULL / 0 fields keep the plain behaviour. */
typedef struct {
    const float *dt_bias;  /* (Di): the scan uses delta + dt_bias[c] ... */
    int dt_softplus;       /* ... through softplus (threshold 20) when set; args.delta is raw */
    uint16_t *y_bf16;      /* forward: y (B, L, Di) written here as bf16 instead of fp32 y */
    float *ddt_bias;       /* backward: += the column sums of the returned ddelta */
    uint16_t *ddelta_bf16; /* backward: ddelta (B, L, Di) written here as bf16, not to ddelta */
    uint16_t *dz_bf16; /* backward: dz written here as bf16 (stride z_stride, or z_bf16_stride where
                          z_bf16 is given), not to dz */
    uint16_t *dx_bf16; /* backward: dx (B, L, Di) written here as bf16, not to dx (may be NULL) */
    /* backward: args.delta already holds the effective delta (softplus(delta + dt_bias) as
     * mb_dt_proj_softplus_cuda writes it); dt_softplus then shapes only the gradients (ddelta is
     * still d loss / d (delta + dt_bias), ddt_bias its column sums) and dt_bias is not used */
    int delta_is_eff;
    /* forward: also write the output before the SiLU(z) gate, with the D skip (mamba_ssm's
     * `out`), (B, L, Di) fp32. backward: that output of the forward with the same args; with
     * args.chunk == mb_scan_cuda_dense_chunk() (the forward then saved a state every 8 positions)
     * and N 12 or 16, 16-byte aligned tensors and the v5 kernel, the backward reads both
     * instead of recomputing them (its forward pass over each chunk, about a fifth of its work,
     * goes), at the cost of memory: B*Di*N*ceil(L/8) + B*L*Di floats per layer (the states 8x
     * those at chunk 64). Otherwise it is ignored (the same result up to rounding). Measured
     * and not kept: the output as bf16, read by the backward's gate from global memory (both
     * passes slower, session 19 in docs/benchmarks.md). */
    float *y_pregate;
    /* forward and backward: bf16 inputs (mamba_ssm's autocast operands; uint16_t bit
     * patterns). Where non-NULL, x (B, L, Di; row stride x_bf16_stride elements) and delta
     * (B, L, Di contiguous; raw or effective as args.delta would be) are read from these
     * instead of args.x / args.delta, which may then be NULL; the arithmetic stays fp32 (the
     * values widened exactly). Both or neither. Only the staged forward and the v5 backward
     * (pair exchange) with 16-byte copies read them (kernel forms of their own): 16-byte
     * aligned tensors, Di and x_bf16_stride multiples of 8, N 12 or 16, and a grid for which
     * v5 is chosen; mb_scan_cuda_bf16in_supported says whether the sizes qualify. MB_EINVAL
     * otherwise. */
    const uint16_t *x_bf16;
    int64_t x_bf16_stride;
    const uint16_t *delta_bf16;
    /* With x_bf16 / delta_bf16 only (MB_EINVAL otherwise), for the same kernels: z (B, L, Di;
     * row stride z_bf16_stride elements, a multiple of 8, which dz / dz_bf16 then take too) read
     * as bf16 instead of args.z, which must then be NULL; and the backward's dy (B, L, Di
     * contiguous) read as bf16 instead of the dy argument, which may then be NULL. 16-byte
     * aligned. mamba_ssm's autocast passes z and dout to its scan as bf16. */
    const uint16_t *z_bf16;
    int64_t z_bf16_stride;
    const uint16_t *dy_bf16;
    /* With y_pregate or y_pregate_bf16, in the dense form (args.chunk ==
     * mb_scan_cuda_dense_chunk(), the backward's dense kernel; MB_EINVAL where the forward or the
     * backward would take another): the states saved every 8 positions are written and read as bf16
     * (uint16_t bit patterns at the element indices the fp32 ones would take, so args.h_chunks
     * needs half the bytes). The backward recomputes each 8-position sub-chunk from its rounded
     * entering state; its outputs differ from the fp32 states' by about bf16's rounding
     * (test_scan_cuda). */
    int dense_states_bf16;
    /* Forward: also write the output before the gate, with the D skip, as bf16 (B, L, Di)
     * contiguous, 4-byte aligned (not with y_pregate). Backward, in the bf16-input form (x_bf16
     * ...; MB_EINVAL otherwise): that output of the forward with the same args, which its gate
     * reads instead of recomputing it in the forward pass over each chunk (the pass then keeps
     * only the states) or, at args.chunk == mb_scan_cuda_dense_chunk(), instead of y_pregate in
     * the dense form (without the pass; half y_pregate's bytes); where y_bf16 is also given, the
     * gated output
     * out * SiLU(z) is written there as bf16, recomputed from it (y_bf16 may be
     * y_pregate_bf16 itself: each element is read before it is overwritten, by the same
     * thread). mamba_ssm's MambaInnerFn keeps its scan's `out` so and recomputes out_z in the
     * backward (recompute_out_z) for out_proj's weight gradient. dz then carries the rounding
     * of the bf16 output (about one more bf16 ulp). */
    uint16_t *y_pregate_bf16;
    /* Not in the dense form: the chunk states (h_chunks) written by the forward and read by the
     * backward as bf16 (uint16_t bit patterns at the fp32 ones' element indices, so h_chunks
     * needs half the bytes), as dense_states_bf16 does for the dense form's. The staged forward
     * at a chunk that is a multiple of 32 and the v5 backward at one that divides 64 (N a
     * multiple of 4, 16-byte aligned tensors; MB_EINVAL otherwise). The backward recomputes each
     * chunk from its rounded entering state. */
    int chunk_states_bf16;
} mb_scan_cuda_opts;

/* Forward / backward with options (o may be NULL = the functions above). With dt_bias or
 * dt_softplus the effective delta is delta_eff = softplus(delta + dt_bias) (or delta + dt_bias)
 * in both passes, and the backward's ddelta is the gradient of the pre-activation delta +
 * dt_bias (ddelta_eff * sigmoid(pre) with softplus). bf16 copies are rounded to nearest even
 * (uint16_t bit patterns of __nv_bfloat16). Errors as for the plain forms; the forward with
 * y_bf16 refuses the legacy forward kernel (lab knob). */
int mb_scan_cuda_forward_ex(const mb_scan_args *a, const mb_scan_cuda_opts *o, float *y,
                            void *stream);
int mb_scan_cuda_backward_ex(const mb_scan_args *a, const mb_scan_cuda_opts *o, const float *dy,
                             float *dx, float *ddelta, float *dA_log, float *dB, float *dC,
                             float *dD, float *dz, void *stream);

/* Lab knob: 0 (default) = the staged forward kernel; 1, 2, 4, 8 or 16 = the previous
 * (legacy, unstaged) forward kernel with that many warps splitting a tile in time. Results do
 * not depend on it beyond rounding of the (a, b) combination order. Not thread-safe (global). */
void mb_scan_cuda_set_forward_warps(int warps);

/* Lab knob: lane layout of the staged forward and the v5 backward, both set to 0 =
 * channel-major (lane = channel * G + q) or 1 = state-group-major (lane = q * 32/G + channel:
 * the 8 lanes of a quarter-warp read the same B / C bytes, 2 shared-memory wavefronts per
 * float4 read instead of 4); negative = the defaults, the faster of each on the H200: forward
 * state-group-major (5% faster), backward channel-major (2% faster). Results are the same bit
 * for bit. Not thread-safe (global). */
void mb_scan_cuda_set_lane_layout(int state_major);

/* Lab knob: backward kernel. 0 (default) = automatic (v5 with the pair exchange, or v4 8 x 8
 * for grids of fewer than 1.5 blocks of 32 channels per multiprocessor); 1 = v5 (no split in
 * time: one thread walks each chunk); 2 = v5 whose dB/dC terms are first summed over channel
 * pairs by one shuffle (half the shared-memory traffic of their sums); 8 or 16 = v4 with that
 * many warps splitting each 64-position chunk in time (8 x 8 or 16 x 4 positions). Results do
 * not depend on it beyond rounding. Not thread-safe (global). */
void mb_scan_cuda_set_backward_warps(int warps);

/* Lab diagnostic for bench_scan_cuda: blocks of the v5 backward kernel that fit on one
 * multiprocessor at d_state N (cudaOccupancyMaxActiveBlocksPerMultiprocessor; 4 expected for
 * N = 16), or a negative MB_E* code. */
int mb_scan_cuda_lab_backward_occupancy(int64_t N);

/* Lab diagnostic for bench_scan_cuda: blocks of the dense-form staged forward (d_state 12 or 16)
 * that fit on one multiprocessor, with fp32 (x16 0) or bf16 (x16 1) x / delta, or a negative
 * MB_E* code. */
int mb_scan_cuda_lab_forward_occupancy(int x16);

/* Lab knob: non-zero makes the backward ignore y_pregate (the dense form off: it recomputes
 * the states and the pre-gate output as without it; results equal up to rounding). Not
 * thread-safe (global). */
void mb_scan_cuda_lab_dense_off(int off);

/* Lab diagnostic for bench_scan_cuda only: non-zero makes the backward leave out its dB/dC
 * atomics (v5: also their shared-memory sums; dB/dC are then zero, i.e. WRONG), to time their
 * share. */
void mb_scan_cuda_lab_skip_bc_atomics(int skip);

/* Lab knob: 0 makes the bf16-input backward gate one element per lane (the form before session
 * 33) instead of by channel quads where it may (scan.cu, gate_quads); 1 (default) allows the
 * quads; -1 reads the environment again (MB_CUDA_SCAN_GATE4=0 turns the quads off; read once,
 * at the first backward). Same results up to the order of dD's sums. Not thread-safe (global). */
void mb_scan_cuda_lab_gate4(int on);

#ifdef __cplusplus
}
#endif
#endif
