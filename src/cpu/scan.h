/* Selective scan (S6) on the CPU: forward and backward, per (sequence, channel), with the
 * state in registers / a local array of d_state floats.
 *
 * Follows mamba_ssm `selective_scan_ref` with delta_softplus already applied, D skip and
 * z gate fused (model.md "Forward"):
 *   s_t[c,n] = exp(delta_t[c] * A[c,n]) * s_{t-1}[c,n] + delta_t[c] * B_t[n] * x_t[c]
 *   y_t[c]   = (sum_n s_t[c,n] * C_t[n] + D[c] * x_t[c]) * SiLU(z_t[c])
 * with A = -exp(A_log). The forward keeps only the states at chunk boundaries; the backward
 * recomputes the states inside each chunk (a reverse scan), so no (L, Di, N) tensor exists.
 */
#ifndef MB_CPU_SCAN_H
#define MB_CPU_SCAN_H

#include <stdint.h>
#include <string.h>

#include "mambabyte.h"

#define MB_SCAN_MAX_N 256 /* largest d_state (the state lives on the stack) */
#ifndef MB_SCAN_LANES
#define MB_SCAN_LANES 32 /* channels processed together by one work item (2 AVX-512 vectors) */
#endif

typedef struct {
    int64_t B, L, Di, N;
    int64_t chunk; /* positions per chunk (> 0); boundary states are kept every `chunk` steps.
                      The backward must use the same chunk as the forward that wrote h_chunks. */
    /* inputs; element (b, t, c) of a strided tensor is at [(b * L + t) * stride + c] */
    const float *x; /* (B, L, Di), stride x_stride: conv output after SiLU */
    int64_t x_stride;
    const float *delta; /* (B, L, Di), stride Di: softplus already applied */
    const float *A_log; /* (Di, N) */
    const float *Bm;    /* (B, L, N), stride bc_stride */
    const float *Cm;    /* (B, L, N), stride bc_stride */
    int64_t bc_stride;
    const float *D; /* (Di) */
    const float *z; /* (B, L, Di), stride z_stride; NULL: no gate */
    int64_t z_stride;
    /* state */
    const float *h0; /* (B, Di, N) initial state, or NULL for zeros */
    float *h_last;   /* (B, Di, N) final state out, or NULL */
    float *h_chunks; /* (B, Di, n_chunks, N), n_chunks = mb_scan_n_chunks(L, chunk): state
                        entering each chunk, i.e. before position k * chunk (chunk 0 holds h0 or
                        zeros). Written by the forward, read by the backward; may be NULL for
                        forward-only use. B * Di * n_chunks * N floats. */
} mb_scan_args;

/* Scan arguments for one Mamba layer of a batch, with the model's activation layouts (used by
 * the CPU and CUDA models alike): xc (B, L, Di) conv output, delta (B, L, Di), dbc (B, L, R+2N)
 * holding dt_low | B | C, xz (B, L, 2Di) holding x | z (may be NULL: z NULL), h_chunks (B, Di,
 * n_chunks, N).
 * Pointers may be host or device pointers; h0/h_last are left NULL. */
static inline mb_scan_args mb_scan_layer_args(const mb_config *c, int64_t B, int64_t L,
                                              int64_t chunk, const float *xc, const float *delta,
                                              const float *dbc, const float *xz, const float *A_log,
                                              const float *D, float *h_chunks) {
    const int64_t Di = c->d_inner, N = c->d_state, R = c->dt_rank;
    mb_scan_args s;
    memset(&s, 0, sizeof s);
    s.B = B;
    s.L = L;
    s.Di = Di;
    s.N = N;
    s.chunk = chunk;
    s.x = xc;
    s.x_stride = Di;
    s.delta = delta;
    s.A_log = A_log;
    s.Bm = dbc + R;
    s.Cm = dbc + R + N;
    s.bc_stride = R + 2 * N;
    s.D = D;
    s.z = xz ? xz + Di : NULL; /* (NULL xz: no gate from args; the CUDA model's bf16 z) */
    s.z_stride = 2 * Di;
    s.h_chunks = h_chunks;
    return s;
}

/* Number of chunks for L positions: ceil(L / chunk), 0 for L <= 0. */
int64_t mb_scan_n_chunks(int64_t L, int64_t chunk);
/* Default chunk length for a sequence length: min(L, 128) (h_chunks then costs N / 128 of a
 * (B, L, Di) tensor; the backward's per-thread recompute buffer is 2 * chunk * N * MB_SCAN_LANES
 * floats). */
int64_t mb_scan_default_chunk(int64_t L);

/* Forward: writes y (B, L, Di) contiguous (gated output), h_chunks and h_last if given.
 * OpenMP over (b, block of MB_SCAN_LANES channels). Allocates nothing. Preconditions (internal
 * API): the pointers cover their shapes, 1 <= N <= MB_SCAN_MAX_N, chunk > 0; on a violated N /
 * chunk it sets mb_fail(MB_EINVAL) and fills y with NaN. */
void mb_scan_forward(const mb_scan_args *a, float *y);

/* Backward given dy (B, L, Di) contiguous (gradient of the gated output). Requires the
 * h_chunks written by the forward with the same args (same chunk, h0, inputs). h0 is treated
 * as a constant (no gradient). OpenMP over (b, block of MB_SCAN_LANES channels); allocates a
 * workspace of threads * (2 * min(chunk, L) * N * MB_SCAN_LANES + 4 * N * MB_SCAN_LANES + 4 * L * N
 * + Di * (N + 1)) floats. On allocation failure (or h_chunks NULL, bad N / chunk) it sets
 * mb_fail(...) and fills dx and ddelta with NaN. Writes (=): dx (B, L, Di) contiguous, ddelta (B,
 * L, Di) contiguous, dB and dC with stride bc_stride (same layout as Bm/Cm; only the N columns of
 * each are touched, so dB and dC may sit at offsets R and R + N of one (B, L, R + 2N) buffer), dz
 * with stride z_stride (if z != NULL; only the Di columns at dz are touched). Accumulates (+=):
 * dA_log (Di, N), dD (Di). */
void mb_scan_backward(const mb_scan_args *a, const float *dy, float *dx, float *ddelta,
                      float *dA_log, float *dB, float *dC, float *dD, float *dz);

#endif
