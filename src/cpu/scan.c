/* Selective scan (S6) on the CPU, forward and backward (see scan.h; model.md "Forward";
 * mamba_ssm `selective_scan_ref` for the numerics, `csrc/selective_scan` for the chunked
 * structure: only chunk-entry states are saved and the backward recomputes inside a chunk).
 *
 * Work decomposition: one work item is (sequence b, block of MB_SCAN_LANES = 32 consecutive
 * channels; 32 rather than 16 halves the cost of the dB/dC lane reductions in the backward). Inside
 * an item the state is held transposed, s[n][lane], so every inner loop runs over the channel lanes
 * with unit stride and no horizontal reduction in the forward; the inputs x, delta, z, y of one
 * position are one contiguous run of 32 floats, B_t and C_t a broadcast per n. exp is a branch-free
 * polynomial (mb_fast_expf) so the lane loops vectorise without libm calls. Lanes past Di are
 * padded with x = delta = z = dy = 0, which keeps their state and gradients at exactly 0.
 *
 * The backward walks each item's chunks from last to first: it recomputes the chunk's states
 * and decay factors from the saved entry state into a per-thread buffer (2 * chunk * N * 32
 * floats), then runs the reverse recurrence. dB and dC are shared by all channels of a position:
 * work items are split into contiguous ranges per thread; a thread that owns every block of a
 * sequence writes that sequence's dB/dC directly, otherwise it fills one of its two private
 * (L, N) slots, summed into dB/dC after the parallel region. dA_log and dD (shared by the
 * sequences) go through per-thread (Di, N) / (Di) partial sums.
 */
#include "cpu/fastmath.h"
#include "cpu/scan.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "mambabyte.h"

#define LANES MB_SCAN_LANES
/* Rows are Di floats apart (one page or more at model sizes), out of the hardware prefetchers'
 * reach: prefetch the inputs this many positions ahead. */
#ifndef PF_DIST
#define PF_DIST 8
#endif

#if defined(__FMA__)
#define FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

int64_t mb_scan_n_chunks(int64_t L, int64_t chunk) {
    if (L <= 0) return 0;
    if (chunk <= 0) chunk = L;
    return (L + chunk - 1) / chunk;
}

int64_t mb_scan_default_chunk(int64_t L) {
    /* 128 positions: the backward's recompute buffer (2 * 128 * 16 * 32 floats = 512 KiB for
     * N = 16) sits in L2, and the saved states cost N / 128 = 1/8 of a (B, L, Di) tensor at N = 16.
     */
    if (L < 1) return 1;
    return L < 128 ? L : 128;
}

/* Copy cb (<= LANES) floats of src into dst and zero the remaining lanes. */
static inline void load_lanes(float *restrict dst, const float *restrict src, int cb) {
    for (int c = 0; c < cb; c++)
        dst[c] = src[c];
    for (int c = cb; c < LANES; c++)
        dst[c] = 0.0f;
}

/* State of channels c0..c0+cb-1 of sequence b from a (B, Di, N) tensor (or zeros), into
 * s[n][lane]. */
static void load_state(float *restrict s, const float *src, int64_t N, int cb) {
    memset(s, 0, sizeof(float) * (size_t)(N * LANES));
    if (!src) return;
    for (int c = 0; c < cb; c++)
        for (int64_t n = 0; n < N; n++)
            s[n * LANES + c] = src[(int64_t)c * N + n];
}

/* s[n][lane] into rows of `dst` spaced `row_stride` floats apart (one row of N per channel). */
static void store_state(float *dst, int64_t row_stride, const float *restrict s, int64_t N,
                        int cb) {
    for (int c = 0; c < cb; c++)
        for (int64_t n = 0; n < N; n++)
            dst[c * row_stride + n] = s[n * LANES + c];
}

/* One step of the recurrence for the LANES channel lanes:
 *   a[n][l] = exp(dv[l] * At[n][l]);  s_new[n][l] = a * s_old[n][l] + dv[l] * xv[l] * Bt[n]
 * s_old and s_new may be the same array. If `a_out` is given the decay factors are stored;
 * if `acc` is given, acc[l] += sum_n s_new[n][l] * Ct[n]. */
static inline void scan_step(int64_t N, const float *restrict At, const float *restrict dv,
                             const float *restrict xv, const float *Bt, const float *Ct,
                             const float *s_old, float *s_new, float *restrict a_out,
                             float *restrict acc) {
    float dx[LANES];
    for (int l = 0; l < LANES; l++)
        dx[l] = dv[l] * xv[l];
    for (int64_t n = 0; n < N; n++) {
        const float bn = Bt[n];
        const float *an = At + n * LANES;
        const float *so = s_old + n * LANES;
        float *sn = s_new + n * LANES;
        float sv[LANES];
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float a = mb_fast_expf(dv[l] * an[l]);
            sv[l] = FMA(a, so[l], dx[l] * bn);
            if (a_out) a_out[n * LANES + l] = a;
        }
        for (int l = 0; l < LANES; l++)
            sn[l] = sv[l];
        if (acc) {
            const float cn = Ct[n];
#pragma omp simd
            for (int l = 0; l < LANES; l++)
                acc[l] = FMA(sv[l], cn, acc[l]);
        }
    }
}

/* At[n][lane] = -exp(A_log[c0 + lane][n]) (padded lanes 0). */
static void load_A(float *restrict At, const float *A_log, int64_t N, int cb) {
    memset(At, 0, sizeof(float) * (size_t)(N * LANES));
    for (int c = 0; c < cb; c++)
        for (int64_t n = 0; n < N; n++)
            At[n * LANES + c] = -expf(A_log[(int64_t)c * N + n]);
}

static void fill_nan(float *p, int64_t rows, int64_t width, int64_t stride) {
    if (!p) return;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < width; c++)
            p[r * stride + c] = NAN;
}

void mb_scan_forward(const mb_scan_args *a, float *y) {
    const int64_t B = a->B, L = a->L, Di = a->Di, N = a->N;
    if (B <= 0 || L <= 0 || Di <= 0) return;
    if (N <= 0 || N > MB_SCAN_MAX_N || a->chunk <= 0) {
        mb_fail(MB_EINVAL, "mb_scan_forward: need 1 <= N <= %d and chunk > 0 (N %lld, chunk %lld)",
                MB_SCAN_MAX_N, (long long)N, (long long)a->chunk);
        fill_nan(y, B * L, Di, Di);
        return;
    }
    const int64_t chunk = a->chunk, nch = mb_scan_n_chunks(L, chunk);
    const int64_t nblk = (Di + LANES - 1) / LANES;
    const int64_t xs = a->x_stride, bcs = a->bc_stride, zs = a->z_stride;

#pragma omp parallel for schedule(static)
    for (int64_t item = 0; item < B * nblk; item++) {
        const int64_t b = item / nblk, c0 = (item % nblk) * LANES;
        const int cb = (int)(Di - c0 < LANES ? Di - c0 : LANES);
        _Alignas(64) float At[MB_SCAN_MAX_N * LANES];
        _Alignas(64) float s[MB_SCAN_MAX_N * LANES];
        _Alignas(64) float Dv[LANES], xv[LANES], dv[LANES], zv[LANES], acc[LANES];
        load_A(At, a->A_log + c0 * N, N, cb);
        load_lanes(Dv, a->D + c0, cb);
        load_state(s, a->h0 ? a->h0 + (b * Di + c0) * N : NULL, N, cb);
        for (int64_t t = 0; t < L; t++) {
            if (a->h_chunks && t % chunk == 0)
                store_state(a->h_chunks + ((b * Di + c0) * nch + t / chunk) * N, nch * N, s, N, cb);
            const int64_t row = b * L + t;
            if (PF_DIST > 0 && t + PF_DIST < L) {
                const int64_t pr = row + PF_DIST;
                __builtin_prefetch(a->x + pr * xs + c0);
                __builtin_prefetch(a->delta + pr * Di + c0);
                __builtin_prefetch(a->Bm + pr * bcs);
                if (a->z) __builtin_prefetch(a->z + pr * zs + c0);
                __builtin_prefetch(y + pr * Di + c0, 1);
            }
            load_lanes(xv, a->x + row * xs + c0, cb);
            load_lanes(dv, a->delta + row * Di + c0, cb);
            for (int l = 0; l < LANES; l++)
                acc[l] = Dv[l] * xv[l];
            scan_step(N, At, dv, xv, a->Bm + row * bcs, a->Cm + row * bcs, s, s, NULL, acc);
            float *yr = y + row * Di + c0;
            if (a->z) {
                load_lanes(zv, a->z + row * zs + c0, cb);
#pragma omp simd
                for (int l = 0; l < LANES; l++)
                    acc[l] = acc[l] * zv[l] / (1.0f + mb_fast_expf(-zv[l]));
            }
            for (int l = 0; l < cb; l++)
                yr[l] = acc[l];
        }
        if (a->h_last) store_state(a->h_last + (b * Di + c0) * N, N, s, N, cb);
    }
}

/* Per-thread workspace of the backward. */
typedef struct {
    float *sbuf, *abuf; /* (chunk, N, LANES): states s_t and decays a_t inside the chunk */
    float *slot[2];     /* (L, 2, N): dB, dC partial sums of a sequence shared with others */
    int64_t slot_b[2];  /* sequence of each slot, -1 if unused */
    float *dA;          /* (Di, N) partial dL/dA (not yet times A) */
    float *dD;          /* (Di) */
    float *At, *s0, *carry, *dAacc; /* (N, LANES) each */
} bwd_ws;

/* Backward of one work item (b, channels c0..c0+cb-1). Accumulates dB/dC of sequence b into
 * pB/pC (row t at t * ps), partial dA/dD into ws; writes dx, ddelta, dz of the item. */
static void bwd_item(const mb_scan_args *a, const float *dy, float *dx, float *ddelta, float *dz,
                     int64_t b, int64_t c0, int cb, float *pB, float *pC, int64_t ps, bwd_ws *ws) {
    const int64_t L = a->L, Di = a->Di, N = a->N, chunk = a->chunk;
    const int64_t nch = mb_scan_n_chunks(L, chunk);
    const int64_t xs = a->x_stride, bcs = a->bc_stride, zs = a->z_stride;
    const int64_t NL = N * LANES;
    float *restrict At = ws->At, *restrict s0 = ws->s0;
    float *restrict carry = ws->carry; /* a_{t+1} * g_{t+1} */
    float *restrict dAacc = ws->dAacc;
    _Alignas(64) float Dv[LANES], dDacc[LANES], xv[LANES], dv[LANES], dxv[LANES], zv[LANES],
        dyv[LANES], dyp[LANES], gB[LANES], dd[LANES];
    load_A(At, a->A_log + c0 * N, N, cb);
    load_lanes(Dv, a->D + c0, cb);
    memset(carry, 0, sizeof(float) * (size_t)NL);
    memset(dAacc, 0, sizeof(float) * (size_t)NL);
    memset(dDacc, 0, sizeof dDacc);

    for (int64_t k = nch - 1; k >= 0; k--) {
        const int64_t t0 = k * chunk, len = (t0 + chunk < L ? t0 + chunk : L) - t0;
        /* entry state (h_chunks row stride nch * N between channels) */
        for (int c = 0; c < cb; c++) {
            const float *src = a->h_chunks + ((b * Di + c0 + c) * nch + k) * N;
            for (int64_t n = 0; n < N; n++)
                s0[n * LANES + c] = src[n];
        }
        for (int c = cb; c < LANES; c++)
            for (int64_t n = 0; n < N; n++)
                s0[n * LANES + c] = 0.0f;
        /* recompute s_t, a_t inside the chunk */
        for (int64_t tt = 0; tt < len; tt++) {
            const int64_t row = b * L + t0 + tt;
            if (PF_DIST > 0 && t0 + tt + PF_DIST < L) {
                const int64_t pr = row + PF_DIST;
                __builtin_prefetch(a->x + pr * xs + c0);
                __builtin_prefetch(a->delta + pr * Di + c0);
                __builtin_prefetch(a->Bm + pr * bcs);
            }
            load_lanes(xv, a->x + row * xs + c0, cb);
            load_lanes(dv, a->delta + row * Di + c0, cb);
            scan_step(N, At, dv, xv, a->Bm + row * bcs, NULL, tt ? ws->sbuf + (tt - 1) * NL : s0,
                      ws->sbuf + tt * NL, ws->abuf + tt * NL, NULL);
        }
        /* reverse recurrence */
        for (int64_t tt = len - 1; tt >= 0; tt--) {
            const int64_t t = t0 + tt, row = b * L + t;
            const float *Bt = a->Bm + row * bcs, *Ct = a->Cm + row * bcs;
            const float *st = ws->sbuf + tt * NL, *at = ws->abuf + tt * NL;
            const float *sp = tt ? ws->sbuf + (tt - 1) * NL : s0;
            if (PF_DIST > 0 && tt >= PF_DIST) { /* outputs and dy, walked backwards */
                const int64_t pr = row - PF_DIST;
                __builtin_prefetch(dy + pr * Di + c0);
                __builtin_prefetch(dx + pr * Di + c0, 1);
                __builtin_prefetch(ddelta + pr * Di + c0, 1);
                if (a->z) __builtin_prefetch(dz + pr * zs + c0, 1);
            }
            load_lanes(xv, a->x + row * xs + c0, cb);
            load_lanes(dv, a->delta + row * Di + c0, cb);
            load_lanes(dyv, dy + row * Di + c0, cb);
            for (int l = 0; l < LANES; l++)
                dxv[l] = dv[l] * xv[l];
            if (a->z) {
                float yp[LANES], dzv[LANES];
                load_lanes(zv, a->z + row * zs + c0, cb);
                for (int l = 0; l < LANES; l++)
                    yp[l] = Dv[l] * xv[l];
                for (int64_t n = 0; n < N; n++) {
                    const float cn = Ct[n];
#pragma omp simd
                    for (int l = 0; l < LANES; l++)
                        yp[l] = FMA(st[n * LANES + l], cn, yp[l]);
                }
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float sg = 1.0f / (1.0f + mb_fast_expf(-zv[l]));
                    dyp[l] = dyv[l] * zv[l] * sg;
                    dzv[l] = dyv[l] * yp[l] * sg * (1.0f + zv[l] * (1.0f - sg));
                }
                float *dzr = dz + row * zs + c0;
                for (int l = 0; l < cb; l++)
                    dzr[l] = dzv[l];
            } else {
                for (int l = 0; l < LANES; l++)
                    dyp[l] = dyv[l];
            }
            for (int l = 0; l < LANES; l++)
                gB[l] = dd[l] = 0.0f;
            float *pBt = pB + t * ps, *pCt = pC + t * ps;
            for (int64_t n = 0; n < N; n++) {
                const float bn = Bt[n], cn = Ct[n];
                const float *an = At + n * LANES, *spn = sp + n * LANES, *stn = st + n * LANES,
                            *atn = at + n * LANES;
                float *cr = carry + n * LANES, *dAn = dAacc + n * LANES;
                float sb = 0.0f, sc = 0.0f;
#pragma omp simd reduction(+ : sb, sc)
                for (int l = 0; l < LANES; l++) {
                    float g = FMA(dyp[l], cn, cr[l]); /* dL/ds_t */
                    float e = g * spn[l] * atn[l];    /* dL/d(delta_t A) */
                    dAn[l] = FMA(e, dv[l], dAn[l]);
                    dd[l] = FMA(e, an[l], dd[l]);
                    gB[l] = FMA(g, bn, gB[l]);
                    sb += g * dxv[l];
                    sc += dyp[l] * stn[l];
                    cr[l] = g * atn[l];
                }
                pBt[n] += sb;
                pCt[n] += sc;
            }
            float *dxr = dx + row * Di + c0, *ddr = ddelta + row * Di + c0;
            for (int l = 0; l < cb; l++) {
                ddr[l] = FMA(gB[l], xv[l], dd[l]);
                dxr[l] = FMA(gB[l], dv[l], Dv[l] * dyp[l]);
            }
            for (int l = 0; l < LANES; l++)
                dDacc[l] = FMA(dyp[l], xv[l], dDacc[l]);
        }
    }
    for (int c = 0; c < cb; c++) {
        float *dA = ws->dA + (c0 + c) * N;
        for (int64_t n = 0; n < N; n++)
            dA[n] += dAacc[n * LANES + c];
        ws->dD[c0 + c] += dDacc[c];
    }
}

static void zero_rows(float *p, int64_t rows, int64_t width, int64_t stride) {
    for (int64_t r = 0; r < rows; r++)
        memset(p + r * stride, 0, sizeof(float) * (size_t)width);
}

void mb_scan_backward(const mb_scan_args *a, const float *dy, float *dx, float *ddelta,
                      float *dA_log, float *dB, float *dC, float *dD, float *dz) {
    const int64_t B = a->B, L = a->L, Di = a->Di, N = a->N;
    if (B <= 0 || Di <= 0) return;
    if (L <= 0) return;
    const int64_t nblk = (Di + LANES - 1) / LANES, W = B * nblk;
    const int64_t bcs = a->bc_stride;
    const int64_t chunk = a->chunk;
    int T = omp_get_max_threads();
    if (T > W) T = (int)W;
    if (T < 1) T = 1;
    const int64_t clen = chunk < L ? chunk : L;
    /* per thread: sbuf + abuf, 2 slots of (L, 2, N), dA (Di, N), dD (Di), 4 x (N, LANES);
     * rounded up to 16 floats so each thread's part stays 64-byte aligned */
    const int64_t per =
        (2 * clen * N * LANES + 4 * L * N + Di * N + Di + 4 * N * LANES + 15) / 16 * 16;
    float *mem = NULL;
    bwd_ws *ws = NULL;
    const char *why = NULL;
    if (N <= 0 || N > MB_SCAN_MAX_N || chunk <= 0)
        why = "need 1 <= N <= 256 and chunk > 0";
    else if (!a->h_chunks)
        why = "h_chunks is NULL (the forward must save the chunk states)";
    else {
        mem = aligned_alloc(64, (size_t)(((T * per * 4) + 63) / 64 * 64));
        ws = calloc((size_t)T, sizeof *ws);
        if (!mem || !ws) why = "out of memory for the workspace";
    }
    if (why) {
        mb_fail(why[0] == 'o' ? MB_ENOMEM : MB_EINVAL, "mb_scan_backward: %s (N %lld, chunk %lld)",
                why, (long long)N, (long long)chunk);
        fill_nan(dx, B * L, Di, Di);
        fill_nan(ddelta, B * L, Di, Di);
        free(mem);
        free(ws);
        return;
    }
    int nt_used = T;

#pragma omp parallel num_threads(T)
    {
        const int j = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        nt_used = nt;
        bwd_ws *w = &ws[j];
        float *base = mem + (int64_t)j * per;
        w->sbuf = base;
        w->abuf = base + clen * N * LANES;
        w->slot[0] = base + 2 * clen * N * LANES;
        w->slot[1] = w->slot[0] + 2 * L * N;
        w->dA = w->slot[1] + 2 * L * N;
        w->dD = w->dA + Di * N;
        w->At = w->dD + Di;
        w->s0 = w->At + N * LANES;
        w->carry = w->s0 + N * LANES;
        w->dAacc = w->carry + N * LANES;
        w->slot_b[0] = w->slot_b[1] = -1;
        memset(w->dA, 0, sizeof(float) * (size_t)(Di * N + Di));
        const int64_t lo = W * j / nt, hi = W * (j + 1) / nt;
        for (int64_t item = lo; item < hi;) {
            const int64_t b = item / nblk;
            const int64_t seg_end = hi < (b + 1) * nblk ? hi : (b + 1) * nblk;
            const int full = item == b * nblk && seg_end == (b + 1) * nblk;
            float *pB, *pC;
            int64_t ps;
            if (full) {
                pB = dB + b * L * bcs;
                pC = dC + b * L * bcs;
                ps = bcs;
            } else {
                const int sl = item == lo ? 0 : 1;
                w->slot_b[sl] = b;
                pB = w->slot[sl];
                pC = w->slot[sl] + N;
                ps = 2 * N;
            }
            zero_rows(pB, L, N, ps);
            zero_rows(pC, L, N, ps);
            for (int64_t it = item; it < seg_end; it++) {
                const int64_t c0 = (it % nblk) * LANES;
                const int cb = (int)(Di - c0 < LANES ? Di - c0 : LANES);
                bwd_item(a, dy, dx, ddelta, dz, b, c0, cb, pB, pC, ps, w);
            }
            item = seg_end;
        }
    }

    /* dB/dC of sequences split between threads: sum the slots (=). */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; b++) {
        int first = 1;
        for (int j = 0; j < nt_used; j++)
            for (int sl = 0; sl < 2; sl++) {
                if (ws[j].slot_b[sl] != b) continue;
                const float *src = ws[j].slot[sl];
                float *oB = dB + b * L * bcs, *oC = dC + b * L * bcs;
                for (int64_t t = 0; t < L; t++)
                    for (int64_t n = 0; n < N; n++) {
                        const float vb = src[t * 2 * N + n], vc = src[t * 2 * N + N + n];
                        oB[t * bcs + n] = first ? vb : oB[t * bcs + n] + vb;
                        oC[t * bcs + n] = first ? vc : oC[t * bcs + n] + vc;
                    }
                first = 0;
            }
    }
    /* dA_log += A * dL/dA (A = -exp(A_log)), dD += sum over threads. */
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < Di; c++) {
        for (int64_t n = 0; n < N; n++) {
            float s = 0.0f;
            for (int j = 0; j < nt_used; j++)
                s += ws[j].dA[c * N + n];
            dA_log[c * N + n] -= expf(a->A_log[c * N + n]) * s;
        }
        float s = 0.0f;
        for (int j = 0; j < nt_used; j++)
            s += ws[j].dD[c];
        dD[c] += s;
    }
    free(mem);
    free(ws);
}
