/* CPU emulation of the GPU scan's staged forward and v5 backward kernels (src/cuda/scan.cu,
 * scan_fwd2_kernel and scan_bwd3_kernel, both lane layouts),
 * for checking its indexing, lane mappings and barriers on a machine without a GPU. The
 * kernel source is compiled as host C++ (MB_SCAN_EMU) and each block's threads run as
 * cooperative fibers: every __syncthreads / __syncwarp / shuffle is a block-wide barrier at which
 * the threads run one after another (thread 0 first), so a missing barrier shows up as a read
 * of data not yet written. cp.async copies are done at once; atomics are plain adds.
 * Compared with the CPU reference (src/cpu/scan.c) like tests/cuda/test_scan_cuda.cu
 * (max |emu - cpu| / max |cpu| <= 1e-4, NaN mismatches fail).
 * Build (repository root):
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/common.c -o /tmp/common.o
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -fopenmp -Iinclude -Isrc -c src/cpu/scan.c -o /tmp/scan_cpu.o
 *   g++ -O2 -std=c++17 -Iinclude -Isrc tests/cuda/scan_emu.cpp /tmp/common.o /tmp/scan_cpu.o \
 *       -fopenmp -o /tmp/scan_emu && /tmp/scan_emu
 */
#define MB_SCAN_EMU 1
#include <sanitizer/asan_interface.h> /* ASAN_(UN)POISON_MEMORY_REGION: no-ops without ASan */
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct float4 {
    float x, y, z, w;
};
struct float2 {
    float x, y;
};
static inline float4 make_float4(float a, float b, float c, float d) {
    return float4{a, b, c, d};
}
struct uint4 {
    unsigned x, y, z, w;
};
struct uint2 {
    unsigned x, y;
};
static inline uint2 make_uint2(unsigned a, unsigned b) {
    return uint2{a, b};
}
struct uint3e {
    unsigned x, y, z;
};
using std::max;
using std::min;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)

namespace emu {
struct Th {
    ucontext_t ctx;
    unsigned tid;
    bool done;
    long barriers;
    std::vector<char> stack;
};
static std::vector<Th> th;
static int cur = 0, nt = 0;
static ucontext_t main_ctx;
static uint3e bid, bdim;
static float slot[1024];
static std::function<void()> body;

static inline uint3e tidx() {
    return uint3e{th[cur].tid, 0, 0};
}
/* all threads of the block must reach it; the last one to arrive lets thread 0 go on */
static void barrier() {
    const int me = cur;
    th[me].barriers++;
    const int next = me + 1 < nt ? me + 1 : 0;
    cur = next;
    swapcontext(&th[me].ctx, &th[next].ctx);
}
static void trampoline() {
    body();
    const int me = cur;
    th[me].done = true;
    if (me + 1 < nt) {
        cur = me + 1;
        swapcontext(&th[me].ctx, &th[me + 1].ctx);
    } else {
        setcontext(&main_ctx);
    }
}
static int launch(unsigned gx, unsigned gy, int threads, std::function<void()> fn) {
    body = fn;
    nt = threads;
    th.resize(threads);
    /* blocks in reverse order: a block that writes a row of the next sequence (one past its
     * own L) is then caught, since the owner's correct value is no longer written after it */
    for (unsigned by = gy; by-- > 0;)
        for (unsigned bx = gx; bx-- > 0;) {
            bid = uint3e{bx, by, 0};
            bdim = uint3e{(unsigned)threads, 1, 1};
            for (int t = 0; t < threads; t++) {
                Th &h = th[t];
                h.tid = (unsigned)t, h.done = false, h.barriers = 0;
                h.stack.resize(1 << 18);
                getcontext(&h.ctx);
                h.ctx.uc_stack.ss_sp = h.stack.data();
                h.ctx.uc_stack.ss_size = h.stack.size();
                h.ctx.uc_link = NULL;
                makecontext(&h.ctx, trampoline, 0);
            }
            cur = 0;
            swapcontext(&main_ctx, &th[0].ctx);
            for (int t = 0; t < threads; t++)
                if (!th[t].done || th[t].barriers != th[0].barriers) {
                    printf("emu: block (%u, %u): thread %d done %d barriers %ld vs %ld\n", bx, by,
                           t, (int)th[t].done, th[t].barriers, th[0].barriers);
                    return -1;
                }
        }
    return 0;
}
} // namespace emu

#define threadIdx (emu::tidx())
#define blockIdx (emu::bid)
#define blockDim (emu::bdim)

static inline void __syncthreads() {
    emu::barrier();
}
static inline void __syncwarp() {
    emu::barrier();
}
static inline float __shfl_xor_sync(unsigned, float v, int off) {
    const int me = emu::cur;
    emu::slot[me] = v;
    emu::barrier();
    const int lane = (int)(emu::th[me].tid & 31), base = (int)(emu::th[me].tid & ~31u);
    const float r = emu::slot[base + (lane ^ off)];
    emu::barrier();
    return r;
}
static inline float __shfl_sync(unsigned, float v, int src) {
    const int me = emu::cur;
    emu::slot[me] = v;
    emu::barrier();
    const int base = (int)(emu::th[me].tid & ~31u);
    const float r = emu::slot[base + (src & 31)];
    emu::barrier();
    return r;
}
template <class T> static inline T __ldg(const T *p) {
    return *p;
}
template <class T> static inline void __stcs(T *p, T v) {
    *p = v;
}
static inline float atomicAdd(float *p, float v) {
    const float o = *p;
    *p = o + v;
    return o;
}
static inline void cp16(float *dst, const float *src, bool ok) {
    if (ok)
        memcpy(dst, src, 16); /* (bytes: the bf16 inputs' rows come this way too) */
    else
        memset(dst, 0, 16);
}
static inline void cp8(float *dst, const float *src, bool ok) {
    if (ok)
        memcpy(dst, src, 8); /* (bytes: the dense states as bf16) */
    else
        memset(dst, 0, 8);
}
static inline void cp4(float *dst, const float *src, bool ok) {
    dst[0] = ok ? src[0] : 0.0f;
}
static inline void cp_commit(void) {}
template <int K> static inline void cp_wait(void) {}
static inline void red_add_v4(float *a, float4 v) {
    a[0] += v.x, a[1] += v.y, a[2] += v.z, a[3] += v.w;
}

float4 smem4[16384];
float4 smem[16384];

#include "cuda/scan.cu"
#include "ref_check.h"
extern "C" {
#include "cpu/activations.h"
}

/* ------------------------------------------------------------------------------ driver */
static int g_fail = 0;
static double g_tol = 1e-4; /* 2e-2 for the backward on bf16 dense states (tc.hc16) */

static void check(const char *name, double err) {
    const int ok = err <= g_tol;
    if (!ok) g_fail = 1;
    printf("  %-8s rel err %.2e %s\n", name, err, ok ? "ok" : "FAIL");
}
/* bf16 bits vs fp32 reference (rows x width, stride): bf16_count_far with 1e-4 */
static void check_bf16(const char *name, const uint16_t *h, const float *ref, int64_t rows,
                       int64_t width, int64_t stride) {
    const int64_t bad = bf16_count_far(h, ref, rows, width, stride, g_tol);
    if (bad) g_fail = 1;
    printf("  %-8s %lld of %lld beyond half a bf16 ulp %s\n", name, (long long)bad,
           (long long)(rows * width), bad ? "FAIL" : "ok");
}

static float urand(mb_rng *r, float lo, float hi) {
    return lo + (hi - lo) * mb_rng_float(r);
}

struct tcase {
    int64_t B, L, Di, N, R, chunk;
    int gate, use_h0, vec, nan_at;
    int kern; /* 0: v5, 1: v5 with the dB/dC pair exchange */
    int qm;   /* state-group-major lanes (forward and backward) */
    int sp;   /* mb_scan_cuda_opts: 1 softplus(delta + dt_bias) and its gradient, 2 also bf16
                 y / ddelta / dz / dx (the kernel's O16 form), 3 as 2 with an fp32 dx (the
                 outputs' pointers chosen at run time) */
    int eff;  /* with sp: the backward reads delta already effective (delta_eff: the fused dt
                 projection's output) instead of the raw one and its transform */
    int dn;   /* dense form (chunk 8, N 12 or 16, vec, pair exchange): the emulated forward's states
                 every 8 positions and pre-gate output (y_pregate) feed the backward's DN form */
    int in16; /* bf16 x and delta (x16 / delta16, vec; the fp32 ones NULL): the reference gets the
                 same values rounded to bf16; 2: also z and the backward's dy (z16 / dy16) */
    int hc16; /* the dense states as bf16 (scan_params.hc16), or without dn the chunk states
                 (chunk 32 or 64), written by the emulated
                 forward (checked to half a bf16 ulp of the reference's) and read by the backward
                 (its outputs then within 2e-2 of the reference's, the bf16 bound) */
    int yp;   /* with in16 (dn too: instead of y_pregate): the emulated forward also writes the
                 pre-gate output as bf16
                 (yp16, checked to half a bf16 ulp), which the backward's YP form reads in its
                 gate; it writes the gated output again into the same buffer (yg16), checked
                 with dz to a bf16 ulp and 4e-3 of the largest */
    int nogate4; /* with in16 2, a gate and bf16 dz (sp >= 2), where the host takes the gate by
                    channel quads (scan_params.gate4): the per-element gate instead */
};

static void run_case(tcase tc, uint64_t seed) {
    g_tol = 1e-4;
    const int quads = (tc.N > 8) && tc.in16 == 2 && tc.gate && tc.sp >= 2 && !tc.nogate4;
    printf("B %lld L %lld Di %lld N %lld chunk %lld gate %d%s h0 %d vec %d nan %d kernel %s%s%s, "
           "%s lanes\n",
           (long long)tc.B, (long long)tc.L, (long long)tc.Di, (long long)tc.N, (long long)tc.chunk,
           tc.gate, quads ? " (channel quads)" : "", tc.use_h0, tc.vec, tc.nan_at,
           tc.kern == 1 ? "v5 pair exchange" : "v5", tc.dn ? " dense" : "",
           tc.in16 == 2
               ? (tc.hc16 ? " bf16 x / delta / z / dy, bf16 states" : " bf16 x / delta / z / dy")
           : tc.in16 ? " bf16 x / delta"
                     : "",
           tc.qm ? "state-major" : "channel-major");
    const int64_t B = tc.B, L = tc.L, Di = tc.Di, N = tc.N, R = tc.R, BL = B * L;
    const int64_t bcs = R + 2 * N;
    mb_rng r;
    mb_rng_seed(&r, seed);
    std::vector<float> xz(BL * 2 * Di), delta(BL * Di), dy(BL * Di), dbc(BL * bcs), A_log(Di * N),
        D(Di), h0(B * Di * N);
    for (auto &v : xz)
        v = urand(&r, -2.0f, 2.0f);
    for (int64_t i = 0; i < BL * Di; i++) {
        const float u = mb_rng_float(&r);
        delta[i] = u < 0.9f ? urand(&r, 0.001f, 0.1f) : urand(&r, 0.1f, 2.0f);
        dy[i] = urand(&r, -1.0f, 1.0f);
    }
    for (auto &v : dbc)
        v = urand(&r, -1.0f, 1.0f);
    for (int64_t c = 0; c < Di; c++) {
        for (int64_t n = 0; n < N; n++)
            A_log[c * N + n] = logf((float)(n + 1)) + urand(&r, -0.5f, 0.5f);
        D[c] = urand(&r, 0.5f, 1.5f);
    }
    for (auto &v : h0)
        v = urand(&r, -1.0f, 1.0f);
    if (tc.nan_at >= 0) xz[(int64_t)tc.nan_at * 2 * Di + 5] = NAN;
    /* options: the kernels get raw pre-activations and dt_bias, the reference their softplus */
    std::vector<float> raw(BL * Di), bias(Di);
    if (tc.sp) {
        for (auto &v : bias)
            v = urand(&r, -5.0f, -1.0f);
        for (int64_t i = 0; i < BL * Di; i++) {
            raw[i] = mb_rng_float(&r) < 0.01f ? urand(&r, 21.0f, 26.0f) : urand(&r, -4.0f, 4.0f);
            delta[i] = mb_softplusf(raw[i] + bias[i % Di]);
        }
    }
    /* in16: x (the x half of xz) and delta (the effective one where the kernels read it so)
     * rounded to bf16, and their bits for the kernels: x rows of stride 2 Di, delta contiguous */
    std::vector<uint16_t> x16, d16, dy16;
    if (tc.in16) {
        x16.assign(BL * 2 * Di, 0);
        d16.assign(BL * Di, 0);
        dy16.assign(BL * Di, 0);
        for (int64_t i = 0; i < BL; i++)
            for (int64_t c = 0; c < Di; c++) {
                if (tc.in16 == 2) { /* z (the z half of xz) and dy */
                    float &zv = xz[i * 2 * Di + Di + c];
                    x16[i * 2 * Di + Di + c] = ref_bf16_bits(zv);
                    zv = ref_bf16_value(x16[i * 2 * Di + Di + c]);
                    float &gv = dy[i * Di + c];
                    dy16[i * Di + c] = ref_bf16_bits(gv);
                    gv = ref_bf16_value(dy16[i * Di + c]);
                }
                float &v = xz[i * 2 * Di + c];
                x16[i * 2 * Di + c] = ref_bf16_bits(v);
                v = ref_bf16_value(x16[i * 2 * Di + c]);
                float &dv = delta[i * Di + c];
                d16[i * Di + c] = ref_bf16_bits(dv);
                dv = ref_bf16_value(d16[i * Di + c]);
            }
    }
    mb_scan_args a;
    memset(&a, 0, sizeof a);
    a.B = B, a.L = L, a.Di = Di, a.N = N, a.chunk = tc.chunk;
    a.x = xz.data(), a.x_stride = 2 * Di, a.delta = delta.data(), a.A_log = A_log.data();
    a.Bm = dbc.data() + R, a.Cm = dbc.data() + R + N, a.bc_stride = bcs, a.D = D.data();
    a.z = tc.gate ? xz.data() + Di : NULL, a.z_stride = 2 * Di;
    a.h0 = tc.use_h0 ? h0.data() : NULL;
    const int64_t nch = mb_scan_n_chunks(L, tc.chunk);
    std::vector<float> hc(B * Di * nch * N), y(BL * Di);
    a.h_chunks = hc.data();
    mb_scan_forward(&a, y.data());
    std::vector<float> dx(BL * Di), ddl(BL * Di), gbc(BL * bcs, 0.0f), dz(BL * 2 * Di, 0.0f),
        dA(Di * N, 0.25f), dD(Di, -0.5f);
    mb_scan_backward(&a, dy.data(), dx.data(), ddl.data(), dA.data(), gbc.data() + R,
                     gbc.data() + R + N, dD.data(), tc.gate ? dz.data() + Di : NULL);

    std::vector<float> dn_hc, dn_ypre; /* tc.dn: the emulated forward's outputs */
    std::vector<uint16_t> yp16;        /* tc.yp: the emulated forward's bf16 pre-gate output */
    if (tc.kern == 1 && tc.nan_at < 0) {
        /* emulated GPU forward (scan_fwd2_kernel): y, h_chunks at tc.chunk, h_last */
        const int Gf = N <= 4 ? 1 : N <= 8 ? 2 : N <= 16 ? 4 : 8;
        std::vector<float> hl(B * Di * N), ey(BL * Di, NAN), ehc(B * Di * nch * N, NAN),
            ehl(B * Di * N, NAN);
        mb_scan_args al = a;
        std::vector<float> hc2(B * Di * nch * N), y2(BL * Di);
        al.h_last = hl.data(), al.h_chunks = hc2.data();
        mb_scan_forward(&al, y2.data());
        scan_params f;
        memset(&f, 0, sizeof f);
        f.B = (int)B, f.L = (int)L, f.Di = (int)Di, f.N = (int)N, f.chunk = (int)tc.chunk;
        f.nch = (int)nch, f.hstep = 1;
        f.x = a.x, f.xs = a.x_stride, f.delta = a.delta, f.A_log = a.A_log;
        f.Bm = a.Bm, f.Cm = a.Cm, f.bcs = bcs, f.D = a.D, f.z = a.z, f.zs = a.z_stride;
        f.h0 = a.h0, f.h_last = ehl.data(), f.h_chunks = ehc.data(), f.y = ey.data();
        f.vec = tc.vec;
        f.hc16 = tc.hc16; /* (not dense: the chunk states, FINE 0) */
        std::vector<float> eyp, ypre_ref;
        if (tc.dn || tc.yp) { /* the reference pre-gate output: the forward without z */
            eyp.assign(BL * Di, NAN), ypre_ref.resize(BL * Di);
            mb_scan_args an = a;
            an.z = NULL, an.h_chunks = NULL;
            mb_scan_forward(&an, ypre_ref.data());
            if (tc.dn && !tc.yp) f.y_pregate = eyp.data();
        }
        if (tc.yp) yp16.assign(BL * Di, 0xffff), f.yp16 = yp16.data();
        std::vector<uint16_t> eyb(BL * Di, 0xffff);
        if (tc.sp) {
            f.delta = raw.data(), f.dt_bias = bias.data(), f.dt_softplus = 1;
            if (tc.sp >= 2) f.y = NULL, f.y_bf16 = eyb.data();
        }
        if (tc.in16) { /* (sp: the effective delta, as the fused dt projection gives it) */
            f.x = NULL, f.x16 = x16.data(), f.xs16 = 2 * Di;
            f.delta = NULL, f.delta16 = d16.data(), f.dt_bias = NULL, f.dt_softplus = 0;
            if (tc.in16 == 2 && tc.gate) f.z = NULL, f.z16 = x16.data() + Di;
        }
        const bool fine = tc.chunk % FT != 0;
        std::function<void()> kf;
#define EMU_F1(GG, FF, QQ)                                                                         \
    (tc.vec ? std::function<void()>([&] { scan_fwd2_kernel<GG, true, FF, QQ>(f); })                \
            : std::function<void()>([&] { scan_fwd2_kernel<GG, false, FF, QQ>(f); }))
#define EMU_F(GG)                                                                                  \
    (fine ? (tc.qm ? EMU_F1(GG, true, true) : EMU_F1(GG, true, false))                             \
          : (tc.qm ? EMU_F1(GG, false, true) : EMU_F1(GG, false, false)))
        kf = Gf == 1 ? EMU_F(1) : Gf == 2 ? EMU_F(2) : Gf == 4 ? EMU_F(4) : EMU_F(8);
        if (tc.dn) /* chunk 8: one 16-byte state store every 8 positions (FINE 2) */
            kf = tc.qm ? std::function<void()>([&] { scan_fwd2_kernel<4, true, 2, true>(f); })
                       : std::function<void()>([&] { scan_fwd2_kernel<4, true, 2, false>(f); });
        if (tc.in16) { /* the X16 form (G 4, vec) */
#define EMU_F16(FF)                                                                                \
    (tc.qm ? std::function<void()>([&] { scan_fwd2_kernel<4, true, FF, true, true>(f); })          \
           : std::function<void()>([&] { scan_fwd2_kernel<4, true, FF, false, true>(f); }))
            kf = tc.dn ? EMU_F16(2) : fine ? EMU_F16(1) : EMU_F16(0);
        }
        /* the shared memory past the size launch_forward asks for is poisoned (ASan build) */
        const int shm = fwd_smem_floats(Gf, tc.in16);
        ASAN_POISON_MEMORY_REGION((float *)smem4 + shm, sizeof smem4 - shm * sizeof(float));
        if (emu::launch((unsigned)((Di + 31) / 32), (unsigned)B, 32 * Gf, kf)) g_fail = 1;
        ASAN_UNPOISON_MEMORY_REGION((float *)smem4 + shm, sizeof smem4 - shm * sizeof(float));
        if (tc.sp >= 2)
            check_bf16("fwd y16", eyb.data(), y2.data(), BL, Di, Di);
        else
            check("fwd y", rel_err_rows(ey.data(), y2.data(), BL, Di, Di));
        if (f.hc16) { /* (bf16 at the fp32 element indices: the buffer's first half) */
            const int64_t nhc = B * Di * nch * N;
            check_bf16("fwd hc16", (const uint16_t *)ehc.data(), hc2.data(), nhc, 1, 1);
            int64_t touched = 0; /* the second half: still the NaN it was filled with */
            for (int64_t i = nhc / 2; i < nhc; i++)
                touched += !std::isnan(ehc[i]);
            if (touched) g_fail = 1;
            printf("  fwd hc16 second half: %lld written %s\n", (long long)touched,
                   touched ? "FAIL" : "ok");
        } else
            check("fwd hc", rel_err_rows(ehc.data(), hc2.data(), B * Di * nch * N, 1, 1));
        check("fwd hlast", rel_err_rows(ehl.data(), hl.data(), B * Di * N, 1, 1));
        if (tc.dn) {
            if (!tc.yp)
                check("fwd y_pregate", rel_err_rows(eyp.data(), ypre_ref.data(), BL, Di, Di));
            dn_hc = ehc, dn_ypre = eyp;
        }
        if (tc.hc16 && !tc.dn) dn_hc = ehc; /* the bf16 chunk states for the backward */
        if (tc.yp) check_bf16("fwd yp16", yp16.data(), ypre_ref.data(), BL, Di, Di);
    }
    if (N > 16) return; /* the forward only (G 8); the backward takes N <= 16 */
    /* emulated GPU backward: h_chunks at chunk 64 (hstep) or re-chunked like the host code */
    scan_params p;
    memset(&p, 0, sizeof p);
    p.B = (int)B, p.L = (int)L, p.Di = (int)Di, p.N = (int)N;
    p.x = a.x, p.xs = a.x_stride, p.delta = a.delta, p.A_log = a.A_log;
    p.Bm = a.Bm, p.Cm = a.Cm, p.bcs = bcs, p.D = a.D, p.z = a.z, p.zs = a.z_stride;
    std::vector<float> hc64;
    if (tc.dn) { /* states every 8 positions and the pre-gate output, from the emulated forward */
        p.chunk = 8, p.nch = (int)nch, p.hstep = BWD_CHUNK / 8, p.h_chunks = dn_hc.data();
        p.y_pregate = tc.yp ? NULL : dn_ypre.data();
        p.hc16 = tc.hc16;
        if (tc.hc16) g_tol = 2e-2;
    } else if (BWD_CHUNK % tc.chunk == 0) {
        p.chunk = (int)tc.chunk, p.nch = (int)nch, p.hstep = (int)(BWD_CHUNK / tc.chunk);
        p.h_chunks = hc.data();
        if (tc.hc16) { /* the emulated forward's bf16 chunk states (chunk_states_bf16) */
            p.h_chunks = dn_hc.data(), p.hc16 = 1;
            g_tol = 2e-2;
        }
    } else {
        const int64_t n64 = mb_scan_n_chunks(L, BWD_CHUNK);
        hc64.resize(B * Di * n64 * N);
        mb_scan_args a64 = a;
        a64.chunk = BWD_CHUNK, a64.h_chunks = hc64.data();
        std::vector<float> y2(BL * Di);
        mb_scan_forward(&a64, y2.data());
        p.chunk = BWD_CHUNK, p.nch = (int)n64, p.hstep = 1, p.h_chunks = hc64.data();
    }
    std::vector<float> edx(BL * Di, NAN), eddl(BL * Di, NAN), ebc(BL * bcs, NAN),
        edz(BL * 2 * Di, NAN), edA(Di * N, 0.25f), edD(Di, -0.5f);
    for (int64_t i = 0; i < BL; i++)
        for (int64_t n = 0; n < N; n++)
            ebc[i * bcs + R + n] = ebc[i * bcs + R + N + n] = 0.0f;
    p.dy = dy.data(), p.dx = edx.data(), p.ddelta = eddl.data(), p.dA_log = edA.data();
    p.dB = ebc.data() + R, p.dC = ebc.data() + R + N, p.dD = edD.data();
    p.dz = tc.gate ? edz.data() + Di : NULL;
    p.red_vec = tc.vec && bcs % 4 == 0 && N % 4 == 0 && R % 4 == 0;
    p.vec = tc.vec;
    std::vector<float> edb(Di, 0.0f), db_ref(Di, 0.0f);
    std::vector<uint16_t> eddb(BL * Di, 0xffff), edzb(BL * 2 * Di, 0xffff), edxb(BL * Di, 0xffff);
    if (tc.sp) {
        p.delta = raw.data(), p.dt_bias = bias.data(), p.dt_softplus = 1, p.ddt_bias = edb.data();
        if (tc.eff) p.delta = delta.data(), p.dt_bias = NULL, p.delta_eff = 1;
        if (tc.sp >= 2) p.ddelta_bf16 = eddb.data(), p.dz_bf16 = tc.gate ? edzb.data() + Di : NULL;
        if (tc.sp == 2) p.dx_bf16 = edxb.data(), p.dx = NULL;
        for (int64_t i = 0; i < BL * Di; i++) {
            ddl[i] *= mb_softplus_grad_from_outputf(delta[i]);
            db_ref[i % Di] += ddl[i];
        }
    }
    if (tc.in16) { /* (sp: eff, so delta16 holds the effective delta) */
        p.x = NULL, p.x16 = x16.data(), p.xs16 = 2 * Di;
        p.delta = NULL, p.delta16 = d16.data();
        if (tc.in16 == 2) {
            if (tc.gate) p.z = NULL, p.z16 = x16.data() + Di;
            p.dy = NULL, p.dy16 = dy16.data();
        }
    }
    const int G = N <= 4 ? 1 : N <= 8 ? 2 : 4;
    /* the host's choice (mb_scan_cuda_backward_ex): bf16 dy, z and dz, G 4 (the tensors here are
     * aligned) */
    p.gate4 = G == 4 && tc.in16 == 2 && tc.gate && tc.sp >= 2 && !tc.nogate4;
    std::function<void()> k;
#define EMU_K2(GG, XBV, QQ, O)                                                                     \
    (tc.vec ? std::function<void()>([&] { scan_bwd3_kernel<GG, true, XBV, QQ, O>(p); })            \
            : std::function<void()>([&] { scan_bwd3_kernel<GG, false, XBV, QQ, O>(p); }))
#define EMU_K1(GG, XBV, QQ) (tc.sp == 2 ? EMU_K2(GG, XBV, QQ, true) : EMU_K2(GG, XBV, QQ, false))
#define EMU_K(GG)                                                                                  \
    (tc.kern ? (tc.qm ? EMU_K1(GG, 1, true) : EMU_K1(GG, 1, false))                                \
             : (tc.qm ? EMU_K1(GG, 0, true) : EMU_K1(GG, 0, false)))
    const int threads = 32 * G;
    k = G == 1 ? EMU_K(1) : G == 2 ? EMU_K(2) : EMU_K(4);
    if (tc.dn) /* the dense form (host: G 4, vec, pair exchange) */
        k = tc.sp == 2 ? (tc.qm ? std::function<void()>(
                                      [&] { scan_bwd3_kernel<4, true, 1, true, true, true>(p); })
                                : std::function<void()>(
                                      [&] { scan_bwd3_kernel<4, true, 1, false, true, true>(p); }))
                       : (tc.qm ? std::function<void()>(
                                      [&] { scan_bwd3_kernel<4, true, 1, true, false, true>(p); })
                                : std::function<void()>([&] {
                                      scan_bwd3_kernel<4, true, 1, false, false, true>(p);
                                  }));
    if (tc.in16) { /* the X16 form (G 4, vec, pair exchange) */
#define EMU_B16(O, D)                                                                              \
    (tc.qm ? std::function<void()>([&] { scan_bwd3_kernel<4, true, 1, true, O, D, true>(p); })     \
           : std::function<void()>([&] { scan_bwd3_kernel<4, true, 1, false, O, D, true>(p); }))
        k = tc.sp == 2 ? (tc.dn ? EMU_B16(true, true) : EMU_B16(true, false))
                       : (tc.dn ? EMU_B16(false, true) : EMU_B16(false, false));
    }
    if (tc.yp) { /* the YP form: the gated output back into the pre-gate output's buffer */
        p.yp16 = yp16.data(), p.yg16 = yp16.data();
#define EMU_BYP(O, D)                                                                              \
    (tc.qm                                                                                         \
         ? std::function<void()>([&] { scan_bwd3_kernel<4, true, 1, true, O, D, true, true>(p); }) \
         : std::function<void()>(                                                                  \
               [&] { scan_bwd3_kernel<4, true, 1, false, O, D, true, true>(p); }))
        if (tc.dn)
            k = tc.sp == 2 ? EMU_BYP(true, true) : EMU_BYP(false, true);
        else
            k = tc.sp == 2 ? EMU_BYP(true, false) : EMU_BYP(false, false);
    }
    if (emu::launch((unsigned)((Di + 31) / 32), (unsigned)B, threads, k)) g_fail = 1;
    if (tc.nan_at >= 0) {
        const int dbn = std::isnan(ebc[tc.nan_at * bcs + R]), dan = std::isnan(edA[5 * N]);
        printf("  dB NaN at the bad position: %s, dA_log NaN: %s\n", dbn ? "yes" : "NO",
               dan ? "yes" : "NO");
        if (!dbn || !dan) g_fail = 1;
        return;
    }
    if (tc.sp == 2)
        check_bf16("dx16", edxb.data(), dx.data(), BL, Di, Di);
    else
        check("dx", rel_err_rows(edx.data(), dx.data(), BL, Di, Di));
    if (tc.sp >= 2)
        check_bf16("ddelta16", eddb.data(), ddl.data(), BL, Di, Di);
    else
        check("ddelta", rel_err_rows(eddl.data(), ddl.data(), BL, Di, Di));
    if (tc.sp) check("dt_bias", rel_err_rows(edb.data(), db_ref.data(), 1, Di, Di));
    check("dB", rel_err_rows(ebc.data() + R, gbc.data() + R, BL, N, bcs));
    check("dC", rel_err_rows(ebc.data() + R + N, gbc.data() + R + N, BL, N, bcs));
    const double tol = g_tol;
    if (tc.yp) g_tol = 4e-3; /* dz from the bf16 pre-gate output: one more rounding */
    if (tc.gate && tc.sp >= 2)
        check_bf16("dz16", edzb.data() + Di, dz.data() + Di, BL, Di, 2 * Di);
    else if (tc.gate)
        check("dz", rel_err_rows(edz.data() + Di, dz.data() + Di, BL, Di, 2 * Di));
    if (tc.yp) /* the gated output recomputed into yp16 (the reference forward's y) */
        check_bf16("yg16", yp16.data(), y.data(), BL, Di, Di);
    g_tol = tol;
    check("dA_log", rel_err_rows(edA.data(), dA.data(), Di, N, N));
    check("dD", rel_err_rows(edD.data(), dD.data(), 1, Di, Di));
    g_tol = 1e-4;
}

int main(void) {
    /* SCAN_EMU_ONLY=in16: only the bf16-input cases (a quick run) */
    const char *only = getenv("SCAN_EMU_ONLY");
    const bool all = !(only && !strcmp(only, "in16"));
    const tcase cs[] = {
        {1, 64, 32, 16, 4, 64, 1, 0, 1, -1, 0, 0},
        {2, 200, 64, 16, 4, 64, 1, 1, 1, -1, 0, 0},
        {2, 200, 40, 16, 3, 64, 1, 1, 0, -1, 0, 0},
        {1, 131, 64, 16, 4, 128, 0, 1, 1, -1, 0, 0},
        {2, 100, 72, 12, 2, 33, 1, 1, 0, -1, 0, 0},
        {1, 150, 64, 8, 4, 32, 1, 1, 1, -1, 0, 0},
        {1, 150, 40, 4, 4, 1, 1, 0, 0, -1, 0, 0},
        {1, 70, 64, 4, 4, 64, 0, 0, 1, -1, 0, 0},
        {1, 3, 64, 16, 4, 64, 1, 1, 1, -1, 0, 0},
        {1, 150, 64, 16, 4, 64, 1, 0, 1, 100, 0, 0},
        {2, 100, 37, 16, 3, 64, 1, 1, 0, -1, 0, 0}, /* odd Di: a partial block of channels */
        /* 16-byte copies with a partial block of channels and N below the lanes' states: the
         * staging's column check (stage_rows) on the 16-byte path */
        {2, 100, 40, 12, 4, 64, 1, 1, 1, -1, 0, 0},
    };
    for (int qm = 0; qm < 2 && all; qm++)
        for (int kern = qm; kern < 2; kern++) /* state-major lanes: the pair exchange only */
            for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
                tcase tc = cs[i];
                tc.kern = kern, tc.qm = qm;
                run_case(tc, 1 + i);
            }
    /* the options, pair exchange: softplus + dt_bias (sp 1); bf16 outputs in the O16 form (sp 2,
     * both lane layouts: channel-major is the backward's default); bf16 ddelta / dz with an fp32
     * dx, the outputs' run-time form (sp 3) */
    const int opt[][2] = {{1, 0}, {2, 0}, {2, 1}, {3, 0}}; /* (sp, qm): O16 in both layouts */
    for (const auto &o : opt)
        for (int i : {1, 2, 4, 5, 7, 10}) {
            if (!all) break;
            tcase tc = cs[i];
            tc.kern = 1, tc.sp = o[0], tc.qm = o[1];
            run_case(tc, 50 + i);
        }
    /* the training form with delta given effective (delta_eff), both lane layouts */
    for (int i : {1, 4, 10}) {
        if (!all) break;
        tcase tc = cs[i];
        tc.kern = 1, tc.sp = 2, tc.eff = 1, tc.qm = i == 4;
        run_case(tc, 70 + i);
    }
    /* the dense form: the forward's states every 8 positions and pre-gate output read by the
     * backward instead of its forward pass (L not a multiple of 8 or 64, a partial channel
     * block, N 12 under 4 lanes; fp32 and the training form; both lane layouts) */
    {
        const tcase dense[] = {
            {2, 200, 64, 16, 4, 8, 1, 1, 1, -1, 1, 0, 0, 0, 1},
            {1, 131, 40, 16, 4, 8, 1, 0, 1, -1, 1, 1, 2, 1, 1},
            {2, 75, 40, 12, 4, 8, 0, 1, 1, -1, 1, 1, 0, 0, 1},
            {1, 64, 32, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1},
        };
        for (size_t i = 0; i < sizeof dense / sizeof dense[0] && all; i++)
            run_case(dense[i], 90 + i);
    }
    /* bf16 x and delta (in16): the plain form and the training form (sp 2, delta effective),
     * a partial channel block (Di 40), N 12, odd L; the dense form */
    {
        const tcase in16[] = {
            {2, 200, 64, 16, 4, 64, 1, 1, 1, -1, 1, 0, 0, 0, 0, 1},
            {1, 131, 40, 16, 4, 64, 1, 0, 1, -1, 1, 1, 2, 1, 0, 1},
            {2, 75, 40, 12, 4, 33, 1, 1, 1, -1, 1, 0, 2, 1, 0, 1},
            {2, 200, 64, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1, 1},
            {1, 131, 40, 12, 4, 8, 0, 0, 1, -1, 1, 1, 0, 0, 1, 1},
            {1, 150, 64, 16, 4, 64, 1, 0, 1, 100, 1, 0, 0, 0, 0, 1},
            /* z and dy as bf16 too: plain, training form, N 12, dense, no gate */
            {2, 200, 64, 16, 4, 64, 1, 1, 1, -1, 1, 0, 0, 0, 0, 2},
            {1, 131, 40, 16, 4, 64, 1, 0, 1, -1, 1, 1, 2, 1, 0, 2},
            {2, 75, 40, 12, 4, 33, 1, 1, 1, -1, 1, 0, 2, 1, 0, 2},
            {2, 200, 64, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1, 2},
            {1, 131, 40, 12, 4, 8, 0, 0, 1, -1, 1, 1, 0, 0, 1, 2},
            /* the dense states as bf16: the training form, N 12 without a gate, both layouts */
            {2, 200, 64, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1, 2, 1},
            {1, 131, 40, 12, 4, 8, 0, 0, 1, -1, 1, 1, 0, 0, 1, 2, 1},
            /* the YP form (the forward's bf16 pre-gate output read by the gate): the training
             * form, N 12 without a gate in state-major lanes, an fp32 dz, odd L and chunk */
            {2, 200, 64, 16, 4, 64, 1, 1, 1, -1, 1, 0, 2, 1, 0, 2, 0, 1},
            {1, 131, 40, 12, 4, 64, 0, 0, 1, -1, 1, 1, 2, 1, 0, 2, 0, 1},
            {2, 75, 40, 16, 4, 33, 1, 1, 1, -1, 1, 0, 0, 0, 0, 1, 0, 1},
            /* and in the dense form (no fp32 y_pregate): bf16 states in the training form,
             * N 12 without a gate with fp32 states, state-major lanes with L 75 */
            {2, 200, 64, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1, 2, 1, 1},
            {1, 131, 40, 12, 4, 8, 0, 0, 1, -1, 1, 0, 0, 0, 1, 2, 0, 1},
            {2, 75, 40, 16, 4, 8, 1, 1, 1, -1, 1, 1, 2, 1, 1, 2, 1, 1},
            /* the chunk states as bf16 (chunk_states_bf16): the training form at chunk 64 with
             * YP, N 12 at chunk 32 without a gate, state-major lanes without YP */
            {2, 200, 64, 16, 4, 64, 1, 1, 1, -1, 1, 0, 2, 1, 0, 2, 1, 1},
            {1, 131, 40, 12, 4, 32, 0, 0, 1, -1, 1, 0, 0, 0, 0, 2, 1, 0},
            {2, 150, 40, 16, 4, 64, 1, 1, 1, -1, 1, 1, 2, 1, 0, 2, 1, 0},
            /* the per-element gate where the host would take the channel quads (lab knob
             * MB_CUDA_SCAN_GATE4=0): the training form, and dense with YP, L 75 */
            {1, 131, 40, 16, 4, 64, 1, 0, 1, -1, 1, 1, 2, 1, 0, 2, 0, 0, 1},
            {2, 75, 40, 16, 4, 8, 1, 1, 1, -1, 1, 0, 2, 1, 1, 2, 1, 1, 1},
        };
        for (size_t i = 0; i < sizeof in16 / sizeof in16[0]; i++)
            run_case(in16[i], 110 + i);
    }
    /* N 17..32: the forward's 8 lanes per channel (G 8), both lane layouts */
    const tcase wide[] = {
        {2, 100, 40, 32, 4, 33, 1, 1, 1, -1, 1, 0}, /* 16-byte copies, partial channel block */
        {1, 70, 37, 20, 3, 64, 1, 0, 0, -1, 1, 0},
    };
    for (int qm = 0; qm < 2 && all; qm++)
        for (const tcase &w : wide) {
            tcase tc = w;
            tc.qm = qm, tc.sp = qm ? 2 : 0;
            run_case(tc, 80 + qm);
        }
    printf(g_fail ? "FAILED\n" : "all passed\n");
    return g_fail;
}
