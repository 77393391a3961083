/* CPU emulation of src/cuda/decode_persist.cu's persistent step kernel: every thread of every
 * block is a fiber (ucontext); __syncthreads, the named barriers (bar.sync / bar.arrive), warp
 * shuffles and the grid barrier's spin are real barriers / yields; cp.async and bulk copies
 * happen at once, and the mbarriers keep their phases (arrival + expected bytes), so that the
 * producer warp's hand-over (the GPU's default) runs as on the device. A launch that makes no
 * progress for 120 s (no barrier, mbarrier phase or thread completed) is reported as a deadlock.
 * Compared with mb_step. */
#define MBP_EMU 1
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

using std::max;
using std::min;
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#undef __noinline__
#define __noinline__
#undef __grid_constant__
#define __grid_constant__

int g_prod[64][4];
namespace emu {
struct Th {
    ucontext_t ctx;
    int block, tid;
    bool done;
    std::vector<char> stack;
};
struct Bar {
    int count = 0, gen = 0, n = 0;
};
static std::vector<Th> th;
static int cur = 0, nblk = 0, nthr = 0;
static ucontext_t main_ctx;
static std::vector<std::vector<unsigned char>> smem;
static std::vector<std::vector<double>> stat;
static std::vector<Bar> bbar, wbar;
static std::vector<Bar> nbar; /* (block, id 1..3) named barriers (bar.sync / bar.arrive) */
struct Mbar {                 /* an mbarrier: phase, arrivals pending, bytes pending */
    int phase = 0, pending = 1, count = 1;
    long long tx = 0;
};
static std::vector<Mbar> mbars;                   /* (block, 2) */
static std::vector<unsigned long long> mbar_slot; /* (block, 2): the kernel's handles */
static std::map<const void *, Mbar> smem_mbars;   /* those in dynamic shared memory (the ring) */
static std::vector<double> slot;
static std::function<void()> body;
static long long yields = 0;
static time_t launch_start = 0;
/* completed barrier generations, mbarrier phases and finished threads: the watchdog's measure of
 * progress (a slow launch on a loaded machine is not a stuck one) */
static unsigned long long progress = 0, progress_seen = 0;
static time_t progress_at = 0;

/* the next fiber: the next unfinished one, or at 1 yield in 16 the first unfinished one from a
 * random place (seeded: EMU_SEED), so that blocks drift apart as on a GPU and a reader that
 * does not wait for its writer gets to run before it (round-robin alone kept every block in
 * near lockstep, which hid such races; random at every yield ran 6x slower). Launches of more
 * than 16 blocks stay round-robin: with 200 blocks the jumps made a launch run past the 60 s
 * deadlock limit. */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static bool rr_only = false; /* EMU_RR=1: round-robin only */
static int next_random(int n) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (int)(rng_state % (unsigned long long)n);
}
static void yield() {
    const int me = cur, n = (int)th.size();
    const bool jump = (++yields & 15) == 0 && !rr_only && nblk <= 16; /* 1 in 16 */
    int nx = jump ? next_random(n) : (me + 1) % n, k = 0;
    while ((th[nx].done || nx == me) && k++ < n)
        nx = (nx + 1) % n;
    if (th[nx].done) nx = me;
    if (nx == me) return;
    /* a launch is well under a second of emulation here, but minutes on a loaded machine under
     * the sanitizers: it is stuck when no barrier, mbarrier phase or thread has completed for
     * 120 s (every thread then only polls) */
    if ((yields & ((1 << 20) - 1)) == 0) {
        const time_t now = time(NULL);
        if (progress != progress_seen || progress_at < launch_start)
            progress_seen = progress, progress_at = now;
    }
    if ((yields & ((1 << 20) - 1)) == 0 && time(NULL) - progress_at > 120) {
        printf("emu: no progress for 120 s: deadlock (a barrier or mbarrier never completing)\n");
        for (int b = 0; b < nblk && b < 64; b++)
            printf("  block %d producer it %d/%d nA %d nB %d\n", b, g_prod[b][0], g_prod[b][1],
                   g_prod[b][2], g_prod[b][3]);
        int live = 0;
        for (auto &h : th)
            live += !h.done;
        printf("  %d threads not done\n", live);
        int shown = 0;
        for (auto &kv : smem_mbars)
            if (shown++ < 64)
                printf("  mbar %p phase %d pending %d tx %lld\n", kv.first, kv.second.phase,
                       kv.second.pending, kv.second.tx);
        fflush(stdout);
        _exit(3); /* (from a fiber: exit would run destructors under its stack) */
    }
    cur = nx;
    swapcontext(&th[me].ctx, &th[nx].ctx);
}
static void sync(Bar &b) {
    const int g = b.gen;
    if (++b.count == b.n) {
        b.count = 0;
        b.gen++, progress++;
    } else {
        while (b.gen == g)
            yield();
    }
}
/* arrive at named barrier b expecting n threads; wait for the others unless arrive_only */
static void named(Bar &b, int n, bool arrive_only) {
    if (b.n == 0) b.n = n;
    if (b.n != n) {
        printf("emu: named barrier used with %d and %d threads\n", b.n, n);
        fflush(stdout);
        _exit(3);
    }
    const int g = b.gen;
    if (++b.count == b.n) {
        b.count = 0;
        b.gen++, progress++;
    } else if (!arrive_only) {
        while (b.gen == g)
            yield();
    }
}
static void trampoline() {
    body();
    const int me = cur, n = (int)th.size();
    th[me].done = true;
    progress++;
    int nx = me;
    do {
        nx = (nx + 1) % n;
    } while (th[nx].done && nx != me);
    if (nx == me) setcontext(&main_ctx);
    cur = nx;
    setcontext(&th[nx].ctx);
}
static void launch(int nb, int nt, size_t smem_bytes, std::function<void()> fn) {
    body = fn;
    launch_start = time(NULL);
    progress_at = launch_start;
    nblk = nb, nthr = nt;
    th.assign((size_t)nb * nt, Th());
    smem.assign(nb, std::vector<unsigned char>(smem_bytes + 64, 0xAB));
    stat.assign(nb, std::vector<double>(256, 0.0));
    bbar.assign(nb, Bar());
    for (auto &b : bbar)
        b.n = nt;
    nbar.assign((size_t)nb * 4, Bar());
    mbars.assign((size_t)nb * 2, Mbar());
    smem_mbars.clear();
    mbar_slot.assign((size_t)nb * 2, 0);
    wbar.assign((size_t)nb * nt / 32, Bar());
    for (auto &b : wbar)
        b.n = 32;
    slot.assign((size_t)nb * nt, 0.0);
    for (int i = 0; i < nb * nt; i++) {
        Th &h = th[i];
        h.block = i / nt, h.tid = i % nt, h.done = false;
        h.stack.resize(1 << 15);
        getcontext(&h.ctx);
        h.ctx.uc_stack.ss_sp = h.stack.data();
        h.ctx.uc_stack.ss_size = h.stack.size();
        h.ctx.uc_link = NULL;
        makecontext(&h.ctx, trampoline, 0);
    }
    cur = 0;
    swapcontext(&main_ctx, &th[0].ctx);
}
/* the 64 bytes past each block's smem_bytes still as launch left them (no write past the
 * plan's shared memory) */
static bool smem_guard_ok(size_t smem_bytes) {
    for (const auto &b : smem)
        for (size_t i = smem_bytes; i < smem_bytes + 64; i++)
            if (b[i] != 0xAB) return false;
    return true;
}
} // namespace emu

struct dim3e {
    unsigned x, y, z;
};
static inline dim3e emu_tidx() {
    return dim3e{(unsigned)emu::th[emu::cur].tid, 0, 0};
}
static inline dim3e emu_bidx() {
    return dim3e{(unsigned)emu::th[emu::cur].block, 0, 0};
}
static inline dim3e emu_gdim() {
    return dim3e{(unsigned)emu::nblk, 1, 1};
}
#define threadIdx (emu_tidx())
#define blockIdx (emu_bidx())
#define gridDim (emu_gdim())
static inline unsigned char *emu_smem() {
    return emu::smem[emu::th[emu::cur].block].data();
}
static inline double *emu_static() {
    return emu::stat[emu::th[emu::cur].block].data();
}
static inline void __syncthreads() {
    emu::sync(emu::bbar[emu::th[emu::cur].block]);
}
static inline void emu_bar_sync(int id, int n) {
    emu::named(emu::nbar[(size_t)emu::th[emu::cur].block * 4 + id], n, false);
}
static inline void emu_bar_arrive(int id, int n) {
    emu::named(emu::nbar[(size_t)emu::th[emu::cur].block * 4 + id], n, true);
}
static inline unsigned long long *emu_mbar() {
    return &emu::mbar_slot[(size_t)emu::th[emu::cur].block * 2];
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int off) {
    const int me = emu::cur;
    emu::slot[me] = (double)v;
    emu::Bar &b = emu::wbar[me / 32];
    emu::sync(b);
    const T r = (T)emu::slot[(me & ~31) + ((me & 31) ^ off)];
    emu::sync(b);
    return r;
}
template <class T> static inline T __ldg(const T *p) {
    return *p;
}
template <class T> static inline T __ldcg(const T *p) {
    emu::yield(); /* let others run: reads of data other blocks write */
    return *p;
}
static inline int atomicAdd(int *p, int v) {
    const int o = *p;
    *p = o + v;
    return o;
}
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    const unsigned long long o = *p;
    *p = o + v;
    return o;
}
static inline long long __float2ll_rn(float v) {
    return llrintf(v);
}
static inline void __threadfence() {}
static inline void __trap() {
    abort();
}
static inline void cp16(void *dst, const void *src) {
    memcpy(dst, src, 16);
}
static inline void cp4(void *dst, const void *src) {
    memcpy(dst, src, 4);
}
static inline void cp_commit() {}
/* mbarriers as PTX defines them for one arrival per phase: a phase completes when its arrival
 * has come and its expected bytes have landed (bulk copies land at once here); try_wait.parity
 * P succeeds once the phase of parity P has completed, i.e. the current phase's parity != P */
static long long g_bulk_bytes = 0, g_tx_bad = 0;
/* the producer warp's bulk copies (threads >= MBP_THREADS): count, and the largest in bytes
 * (paced copies come in pieces of at most a.pace_bytes) */
static long long g_prod_copies = 0, g_prod_max = 0;
static unsigned g_compute_threads = ~0u; /* MBP_THREADS (set by run_case) */
static inline emu::Mbar &mbar_of(unsigned long long *m) {
    if (m >= emu::mbar_slot.data() && m < emu::mbar_slot.data() + emu::mbar_slot.size())
        return emu::mbars[(size_t)(m - emu::mbar_slot.data())];
    auto it = emu::smem_mbars.find(m);
    if (it == emu::smem_mbars.end()) { /* used before mbarrier.init (garbage on the GPU) */
        g_tx_bad++;
        return emu::smem_mbars[m];
    }
    return it->second;
}
static inline void mbar_complete(emu::Mbar &b) {
    if (b.pending == 0 && b.tx == 0) b.phase++, b.pending = b.count, emu::progress++;
}
static inline void mbar_init(unsigned long long *m, unsigned count = 1) {
    emu::Mbar &b = (m >= emu::mbar_slot.data() && m < emu::mbar_slot.data() + emu::mbar_slot.size())
                       ? emu::mbars[(size_t)(m - emu::mbar_slot.data())]
                       : emu::smem_mbars[m];
    b = emu::Mbar();
    b.pending = b.count = (int)count;
}
static inline void mbar_arrive_tx(unsigned long long *m, unsigned tx) {
    emu::Mbar &b = mbar_of(m);
    if (b.pending <= 0) g_tx_bad++; /* more arrivals than the phase expects */
    b.tx += tx;
    b.pending--;
    mbar_complete(b);
}
static inline void bulk_g2s(void *dst, const void *src, unsigned bytes, unsigned long long *m) {
    if (((uintptr_t)dst | (uintptr_t)src | bytes) & 15) abort();
    { /* a copy over an mbarrier (kept apart from the bytes here): the layout overlaps */
        auto o = emu::smem_mbars.lower_bound((const void *)((const char *)dst - 7));
        if (o != emu::smem_mbars.end() && o->first < (const void *)((const char *)dst + bytes))
            g_tx_bad++;
    }
    memcpy(dst, src, bytes);
    emu::Mbar &b = mbar_of(m);
    b.tx -= bytes;
    if (b.tx < 0) g_tx_bad++; /* more bytes than announced */
    g_bulk_bytes += bytes;
    if ((unsigned)emu_tidx().x >= g_compute_threads)
        g_prod_copies++, g_prod_max = std::max(g_prod_max, (long long)bytes);
    mbar_complete(b);
}
static inline void mbar_arrive(unsigned long long *m) {
    emu::Mbar &b = mbar_of(m);
    if (b.pending <= 0) g_tx_bad++; /* more arrivals than the phase expects */
    b.pending--;
    mbar_complete(b);
}
static inline bool mbar_test(unsigned long long *m, unsigned parity) {
    emu::yield(); /* polled: let the others run */
    return (unsigned)(mbar_of(m).phase & 1) != parity;
}
static inline void emu_prod_state(int it, int total, int nA, int nB) {
    if (emu::th[emu::cur].block >= 64) return;
    int *p = g_prod[emu::th[emu::cur].block];
    p[0] = it, p[1] = total, p[2] = nA, p[3] = nB;
}
static inline void emu_spin() {
    emu::yield();
}
static inline void __nanosleep(unsigned) {
    emu::yield();
}
static inline void __syncwarp() {
    emu::sync(emu::wbar[emu::cur / 32]);
}
static inline void mbar_wait(unsigned long long *m, unsigned parity) {
    emu::Mbar &b = mbar_of(m);
    while ((unsigned)(b.phase & 1) == parity)
        emu::yield();
}
template <int N> static inline void cp_wait() {}
static inline unsigned ld_acq(const unsigned *p) {
    emu::yield();
    return *(volatile const unsigned *)p;
}
static inline void red_add_u64(unsigned long long *p, unsigned long long v) {
    *p += v;
}
static inline void st_rel(unsigned *p, unsigned v) {
    *p = v;
}
static inline void ll_store(unsigned long long *p, float v, unsigned epoch) {
    unsigned u;
    memcpy(&u, &v, 4);
    *(volatile unsigned long long *)p = ((unsigned long long)epoch << 32) | u;
}
static inline unsigned long long ll_load(const unsigned long long *p) {
    emu::yield(); /* spun on: let the writers run */
    return *(volatile const unsigned long long *)p;
}
static inline void prefetch_l2(const void *) {}
static inline int __ffs(int x) {
    return __builtin_ffs(x);
}
static inline long long clock64() {
    return 0;
}
static inline unsigned long long gtimer() {
    return 0;
}

#include "cuda/decode_persist.cu"

#include "mambabyte.h"

static int g_fail = 0;
static int g_force_ll = -1; /* >= 0: a.ll for the next cases (else by batch and block count) */
static int g_win_mode = 0;  /* a.win_mode for the next cases (0: the plan's default) */
static int g_ring_mode = 0; /* a.ring_mode for the next cases (0: the plan's default) */
static int g_ring_c = 0;    /* a.ring_c asked for (0: the plan's choice) */
static int g_expand = 2;    /* d_inner / d_model of the next cases */
static int g_pace = 0;      /* > 0: a.pace_cyc = 1, a.pace_bytes = g_pace (paced producer copies) */
static int g_fold = 1;      /* a.fold for the next cases (the norms folded into in_proj) */
static int g_pad = -1;      /* >= 0: bytes before the shared memory layout asked for (a.pad_ask) */
static int g_emb_mix = 0;   /* 1: g_emb_off on the odd embedding rows only, and the
                               sequences' tokens of alternating parity (per step and sequence,
                               the folded rows on r itself for some, centered for others) */
static float g_emb_off = 0; /* added to every embedding weight of the next cases' models (a
                               residual mean far larger than its spread) */

static void transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * rows + r] = src[r * cols + c];
}

template <typename WT> static WT cvt(float v);
template <> float cvt<float>(float v) {
    return v;
}
template <> __nv_bfloat16 cvt<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}

template <typename WT, int S>
static void run_case(int64_t d, int rms, int tied, int nb, long long rowbytes, int64_t d_state,
                     int64_t d_conv, int64_t steps, double tol, const char *name,
                     int producer = 0) {
    if (getenv("EMU_ONLY") && !strstr(name, getenv("EMU_ONLY"))) return; /* EMU_ONLY=substring */
    mb_config c;
    mb_config_default(&c, d, 2);
    c.expand = g_expand;
    c.d_state = d_state;
    c.d_conv = d_conv;
    c.rms_norm = rms;
    c.tie_embeddings = tied;
    mb_model m;
    if (mb_config_finalize(&c) || mb_model_create(&m, &c)) {
        printf("model: %s\n", mb_last_error());
        exit(1);
    }
    mb_model_init(&m, 7 + d);
    mb_rng r;
    mb_rng_seed(&r, 99 + d);
    for (int64_t i = 0; i < m.n_params; i++)
        m.params[i] += 0.1f * (mb_rng_float(&r) - 0.5f);
    for (int64_t i = 0; i < 256 * d; i++)
        if (!g_emb_mix || (i / d) % 2 == 1) m.w.embedding[i] += g_emb_off;
    const int64_t nl = c.n_layer, Di = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank,
                  W = R + 2 * N, V = 256;
    const int bf = sizeof(WT) == 2;
    mbp_args a;
    memset(&a, 0, sizeof a);
    a.S = S, a.d = (int)d, a.Di = (int)Di, a.N = (int)N, a.K = (int)K, a.R = (int)R, a.V = 256;
    a.n_layer = (int)nl, a.rms = rms, a.bf16 = bf, a.eps = c.norm_eps;
    a.bulk = (nb + (int)d) % 2 == 0 || getenv("EMU_BULK") != NULL;
    a.producer = a.bulk && producer;
    a.light_fence = 1;
    a.win_mode = getenv("EMU_WIN") ? atoi(getenv("EMU_WIN")) : g_win_mode;
    a.ring_mode = getenv("EMU_RING") ? atoi(getenv("EMU_RING")) : g_ring_mode;
    a.ring_c_ask = g_ring_c;
    a.pace_cyc = g_pace > 0, a.pace_bytes = g_pace;
    a.fold = getenv("EMU_FOLD") ? atoi(getenv("EMU_FOLD")) : g_fold;
    if (g_pad >= 0) a.pad_set = 1, a.pad_ask = g_pad;
    g_compute_threads = MBP_THREADS;
    if (mbp_plan(&a, nb, 232448, rowbytes)) {
        printf("%s: not covered\n", name);
        g_fail = 1;
        return;
    }
    std::vector<mbp_layer> L(nl);
    std::vector<std::vector<float>> keep;
    std::vector<std::vector<WT>> keepw;
    for (int64_t l = 0; l < nl; l++) {
        const mb_layer_weights &w = m.w.layers[l];
        mbp_layer &h = L[l];
        h.norm_w = w.norm_w, h.norm_b = w.norm_b;
        keepw.emplace_back(2 * Di * d);
        if (mbp_folded(&a, (int)l)) { /* as mbp_fold_norm: W gamma rounded, row sums, W beta */
            const int CBm = a.CBmax;
            keep.emplace_back((int64_t)a.nb * 4 * CBm, 0.0f);
            float *f = keep.back().data();
            for (int b = 0; b < a.nb; b++) {
                const mbp_blk k = block_share(a, b, a.nb);
                for (int i = 0; i < 2 * k.CB; i++) {
                    const int64_t o = i < k.CB ? k.c0 + i : Di + k.c0 + (i - k.CB);
                    double sum = 0.0, wb = 0.0;
                    for (int64_t j = 0; j < d; j++) {
                        const WT v = cvt<WT>(w.in_proj_w[o * d + j] * w.norm_w[j]);
                        keepw.back()[o * d + j] = v;
                        sum += (double)(float)v;
                        if (!rms) wb += (double)w.in_proj_w[o * d + j] * w.norm_b[j];
                    }
                    f[(int64_t)b * 4 * CBm + i] = (float)sum;
                    f[(int64_t)b * 4 * CBm + 2 * CBm + i] = (float)wb;
                }
            }
            h.fold = f;
        } else
            for (int64_t i = 0; i < 2 * Di * d; i++)
                keepw.back()[i] = cvt<WT>(w.in_proj_w[i]);
        h.in = keepw.back().data();
        h.conv_w = w.conv_w, h.conv_b = w.conv_b;
        keep.emplace_back(Di * W);
        transpose(keep.back().data(), w.x_proj_w, W, Di);
        h.xwT = keep.back().data();
        h.dt_w = w.dt_proj_w, h.dt_b = w.dt_proj_b;
        keep.emplace_back(Di * N);
        for (int64_t i = 0; i < Di * N; i++)
            keep.back()[i] = -expf(w.A_log[i]);
        h.A = keep.back().data();
        h.D = w.D;
        keepw.emplace_back(d * Di);
        for (int64_t i = 0; i < d * Di; i++)
            keepw.back()[i] = cvt<WT>(w.out_proj_w[i]);
        h.out = keepw.back().data();
    }
    std::vector<WT> lm(V * d);
    for (int64_t i = 0; i < V * d; i++)
        lm[i] = cvt<WT>(m.w.lm_head[i]);
    std::vector<float> conv(nl * S * (K - 1) * Di + 1, 0.0f), ssm(nl * S * Di * N, 0.0f),
        logits(S * V);
    std::vector<unsigned long long> acc(2 * nl * S * W, 0);
    std::vector<unsigned long long> yll(nl * S * Di, 0), hll(nl * S * d, 0);
    std::vector<unsigned> flags(a.nb + 1, 0);
    std::vector<uint8_t> tok(S);
    a.layers = L.data(), a.emb = m.w.embedding, a.normf_w = m.w.norm_f_w, a.normf_b = m.w.norm_f_b;
    a.lm = lm.data(), a.tok = tok.data(), a.conv = conv.data(), a.ssm = ssm.data();
    a.logits = logits.data(), a.acc = acc.data(), a.yll = yll.data(), a.hll = hll.data();
    a.flags = flags.data(), a.step = flags.data() + a.nb;
    /* every segment 16-byte aligned: the compute threads skip their cp.async walk */
    a.all16 = getenv("EMU_ALL16_OFF") ? 0 : mbp_all_aligned(&a, L.data());
    if (a.fold && a.off_nb - a.off_nw < 16 * a.CBmax) { /* the fold floats' area */
        printf("%s: fold area %d bytes < %d FAIL\n", name, a.off_nb - a.off_nw, 16 * a.CBmax);
        g_fail = 1;
    }
    if (a.smem > 232448) { /* the plan's bytes past the opt-in limit */
        printf("%s: smem %d over the budget FAIL\n", name, a.smem);
        g_fail = 1;
    }
    if (a.ring && !mbp_rows_aligned(&a, L.data())) { /* as step_cuda.cu: fixed buffers */
        a.ring_mode = 1;
        mbp_plan(&a, nb, 232448, rowbytes);
        a.all16 = getenv("EMU_ALL16_OFF") ? 0 : mbp_all_aligned(&a, L.data());
    }
    { /* the pad: as asked, else 16 bytes exactly where the rows overflow (fixed buffers) */
        const int needA = std::max(2 * a.CBmax, (int)((V + a.nb - 1) / a.nb)),
                  needB = (int)((d + a.nb - 1) / a.nb);
        const int want = a.pad_set ? a.pad_ask
                         : a.ring  ? 0
                                   : (a.capA < needA || a.capB < needB ? 16 : 0);
        if (a.pad_base != want || a.off_r != a.pad_base || a.off_r % 16) {
            printf("%s: pad %d (off_r %d), expected %d FAIL\n", name, a.pad_base, a.off_r, want);
            g_fail = 1;
        }
    }
    /* y and hidden as LL words (batch 1 on the GPU by default) or plain floats + barriers */
    a.ll = getenv("EMU_LL")  ? atoi(getenv("EMU_LL"))
           : g_force_ll >= 0 ? g_force_ll
                             : (S == 1 || a.nb % 2 == 1);
    mb_state st;
    mb_state_create(&st, &c, S);
    std::vector<float> lc(S * V);
    double worst = 0;
    for (int64_t t = 0; t < steps; t++) {
        for (int s = 0; s < S; s++)
            tok[s] = (uint8_t)(g_emb_mix ? (mb_rng_below(&r, 128) * 2 + ((s + t) & 1))
                                         : mb_rng_below(&r, 256));
        mb_step(&m, &st, tok.data(), lc.data());
        const mbp_args aa = a;
        emu::launch(a.nb, MBP_THREADS + (a.producer ? 32 : 0), (size_t)a.smem, [&]() {
            if (aa.ring)
                persist_step_kernel<WT, S, true>(aa);
            else
                persist_step_kernel<WT, S, false>(aa);
        });
        if (!emu::smem_guard_ok((size_t)a.smem)) {
            printf("%s: step %lld wrote past the plan's %d bytes of shared memory FAIL\n", name,
                   (long long)t, a.smem);
            g_fail = 1;
        }
        for (int s = 0; s < S; s++) {
            double num = 0, den = 0;
            for (int v = 0; v < V; v++) {
                const double e = fabs((double)logits[s * V + v] - lc[s * V + v]);
                if (!(e <= num) && !std::isnan(num)) num = e; /* a NaN stays */
                den = std::max(den, (double)fabs(lc[s * V + v]));
            }
            const double w = num / den;
            if (!(w <= worst) && !std::isnan(worst)) worst = w;
        }
    }
    /* paced producer copies (g_pace): pieces of at most g_pace bytes, and there are some */
    const int pace_ok = !(g_pace > 0 && a.producer && a.bulk && !a.ring) ||
                        (g_prod_copies > 0 && g_prod_max <= g_pace);
    if (!pace_ok)
        printf("%s: %lld producer copies, largest %lld bytes (paced in %d) FAIL\n", name,
               g_prod_copies, g_prod_max, g_pace);
    g_prod_copies = g_prod_max = 0;
    const int ok = worst <= tol && pace_ok;
    const int ok2 = ok && g_tx_bad == 0;
    char ring[32] = "";
    if (a.ring)
        snprintf(ring, sizeof ring, " ring %dx%d p%d", a.ring_ns / a.ring_c, a.ring_c, a.ring_p);
    printf("%-28s S=%d %s nb=%d capA=%d capB=%d CB=%d smem=%d pad=%d bulk=%d%s%s%s%s (%lld bulk "
           "bytes, tx bad %lld): %lld steps max rel err %.2e %s\n",
           name, S, bf ? "bf16" : "fp32", a.nb, a.capA, a.capB, a.CBmax, a.smem, a.pad_base, a.bulk,
           a.producer ? (a.all16 ? " producer all16" : " producer") : "", a.ll ? " LL" : "",
           a.win ? " win" : "", ring, g_bulk_bytes, g_tx_bad, (long long)steps, worst,
           ok2 ? "ok" : "FAIL");
    fflush(stdout);
    if (!ok2) g_fail = 1;
    g_bulk_bytes = 0, g_tx_bad = 0;
    if (!ok) g_fail = 1;
    mb_state_free(&st);
    mb_model_free(&m);
}

/* The shared-memory plan's window rule on the presets' shapes and some small ones: the default
 * (win_mode 0) never keeps fewer weight rows than the plan without windows where that one keeps
 * them all, and every plan fits the budget (with the fold floats' area where a.fold). */
static void check_plans() {
    const int shapes[][4] = {{1024, 2048, 64, 53},
                             {1792, 3584, 112, 48},
                             {64, 128, 4, 2},
                             {512, 1024, 32, 8},
                             {2048, 4096, 128, 48}};
    for (const auto &sh : shapes)
        for (int bf = 0; bf < 2; bf++)
            for (int S = 1; S <= MBP_MAX_SEQ; S++)
                for (int nb : {3, 132}) {
                    mbp_args a, o;
                    memset(&a, 0, sizeof a);
                    a.S = S, a.d = sh[0], a.Di = sh[1], a.N = 16, a.K = 4, a.R = sh[2], a.V = 256;
                    a.n_layer = sh[3], a.bf16 = bf;
                    a.fold = (S + nb) % 2; /* (the GPU's default is 1) */
                    o = a;
                    o.win_mode = 1;
                    const int ra = mbp_plan(&a, nb, 232448, -1), ro = mbp_plan(&o, nb, 232448, -1);
                    const int all =
                        o.capA == (2 * o.CBmax > (256 + nb - 1) / nb ? 2 * o.CBmax
                                                                     : (256 + nb - 1) / nb) &&
                        o.capB == (o.d + nb - 1) / nb;
                    /* where rows overflow, at most MBP_OVERFLOW_ROWS bytes of them kept */
                    const int64_t ws = bf ? 2 : 4,
                                  kept = (int64_t)a.capA * a.d * ws + (int64_t)a.capB * a.Di * ws;
                    const int a_all =
                        a.capA == (2 * a.CBmax > (256 + nb - 1) / nb ? 2 * a.CBmax
                                                                     : (256 + nb - 1) / nb) &&
                        a.capB == (a.d + nb - 1) / nb;
                    if (ra != ro || (!ra && (a.smem > 232448 ||
                                             (a.fold && a.off_nb - a.off_nw < 16 * a.CBmax) ||
                                             (all && (a.capA < o.capA || a.capB < o.capB)) ||
                                             (!a_all && kept > MBP_OVERFLOW_ROWS)))) {
                        printf("plan d %d S %d bf16 %d nb %d: rc %d/%d capA %d/%d capB %d/%d win "
                               "%d smem %d FAIL\n",
                               a.d, S, bf, nb, ra, ro, a.capA, o.capA, a.capB, o.capB, a.win,
                               a.smem);
                        g_fail = 1;
                    }
                }
    printf("plans: %s\n", g_fail ? "FAIL" : "ok");
}

int main(int argc, char **argv) {
    const int quick = argc > 1;
    if (getenv("EMU_SEED")) emu::rng_state = strtoull(getenv("EMU_SEED"), NULL, 0) | 1ull;
    emu::rr_only = getenv("EMU_RR") != NULL;
    if (argc > 1 && !strcmp(argv[1], "plan")) {
        int shapes[2][4] = {{1024, 2048, 64, 48}, {1792, 3584, 112, 48}};
        for (int p = 0; p < 2; p++)
            for (int bf = 0; bf < 2; bf++)
                for (int S = 1; S <= 4; S++) {
                    mbp_args a;
                    memset(&a, 0, sizeof a);
                    a.S = S, a.d = shapes[p][0], a.Di = shapes[p][1], a.N = 16, a.K = 4,
                    a.R = shapes[p][2], a.V = 256, a.n_layer = 48, a.bf16 = bf;
                    a.bulk = a.producer = 1;
                    int rc = mbp_plan(&a, 132, 232448, -1);
                    printf("d %d bf16 %d S %d: rc %d CB %d capA %d (need %d) capB %d (need %d) "
                           "win %d ring %d x %d x %d B smem %d\n",
                           a.d, bf, S, rc, a.CBmax, a.capA, 2 * a.CBmax, a.capB, (a.d + 131) / 132,
                           a.win, a.ring_c ? a.ring_ns / a.ring_c : 0, a.ring_c, a.ring_sb, a.smem);
                }
        return 0;
    }
    check_plans();
    run_case<float, 1>(64, 1, 1, 3, -1, 16, 4, 6, 1e-4, "rms tied d64");
    run_case<float, 3>(64, 0, 0, 5, -1, 16, 4, 6, 1e-4, "ln untied d64");
    run_case<float, 2>(36, 0, 0, 4, 1000, 16, 4, 6, 1e-4, "ln d36 overflow rows");
    /* the producer warp (the GPU's default with bulk copies): named barriers, mbarrier phases */
    run_case<float, 2>(36, 0, 0, 4, 1000, 16, 4, 6, 1e-4, "ln d36 overflow producer", 1);
    run_case<float, 3>(64, 0, 0, 6, -1, 16, 4, 5, 1e-4, "ln untied d64 producer", 1);
    /* the GPU's default at batch 1: bulk copies, producer warp (paced copies), LL words */
    g_pace = 4096;
    run_case<float, 1>(64, 0, 0, 6, -1, 16, 4, 5, 1e-4, "ln untied d64 producer S1", 1);
    g_pace = 48; /* pieces across rows (a segment's last piece shorter) */
    run_case<float, 2>(36, 0, 0, 4, 1000, 16, 4, 4, 1e-4, "ln d36 overflow producer paced", 1);
    run_case<__nv_bfloat16, 1>(64, 1, 0, 6, -1, 16, 4, 3, 2e-2, "rms d64 bf16 paced 48", 1);
    g_pace = 0;
    g_win_mode = 1; /* conv windows in global memory (the cases above keep them in smem) */
    run_case<float, 3>(64, 0, 0, 5, -1, 16, 4, 4, 1e-4, "ln untied d64 global windows", 1);
    g_win_mode = 0;
    /* a layout that starts past 0 (MB_CUDA_GEN_PERSIST_PAD): where every row fits and where
     * they overflow (the plan pads 16 bytes there by itself) */
    g_pad = 1024;
    run_case<float, 1>(64, 0, 0, 6, -1, 16, 4, 4, 1e-4, "ln d64 S1 pad 1024", 1);
    g_pad = 48;
    run_case<__nv_bfloat16, 2>(36, 0, 0, 4, 1000, 16, 4, 4, 2e-2, "bf16 d36 overflow pad 48", 1);
    g_pad = -1;
    /* rows through the ring (opt-in, MB_CUDA_GEN_PERSIST_RING=1): 1 chunk of 1 slot, 4 chunks of 2
     * and of 3 slots (copies split where rows stop being contiguous, out_proj rows of 2 pieces
     * across chunks, a partial last chunk), every row through it at batch 1 and 4 (forced), and the
     * fixed buffers where rows overflow (ring off) */
    g_ring_mode = 2;
    run_case<float, 1>(64, 0, 0, 4, 320, 16, 4, 4, 1e-4, "ring 1 slot S1", 1);
    g_ring_c = 2; /* (not a divisor of the 15 warps: chunks across rounds) */
    run_case<float, 4>(64, 1, 0, 4, 2300, 16, 4, 3, 1e-4, "ring 4x2 S4", 1);
    g_ring_c = 0;
    run_case<__nv_bfloat16, 2>(64, 0, 1, 6, 1850, 16, 4, 3, 2e-2, "ring 4x3 bf16 S2", 1);
    run_case<float, 1>(64, 0, 0, 6, -1, 16, 4, 4, 1e-4, "ring forced S1", 1);
    run_case<__nv_bfloat16, 4>(64, 1, 1, 4, -1, 16, 4, 3, 2e-2, "ring forced bf16 tied S4", 1);
    run_case<__nv_bfloat16, 2>(64, 0, 1, 6, 2000, 16, 4, 3, 2e-2, "ring 4x3 of 13 slots bf16 S2",
                               1);
    run_case<float, 1>(8, 0, 0, 20, -1, 16, 4, 3, 1e-4, "ring forced nb 20 > Di", 1);
    g_expand = 3; /* out_proj rows of 3 pieces */
    run_case<float, 1>(64, 0, 0, 4, 3400, 16, 4, 3, 1e-4, "ring expand 3", 1);
    g_expand = 2;
    /* asked for where it cannot run (fp32 rows of d 34: 136 bytes, not whole 16-byte pieces):
     * the fixed buffers, with their pad where the rows overflow */
    run_case<float, 1>(34, 0, 0, 4, 600, 16, 4, 3, 1e-4, "ring refused d34 overflow", 1);
    g_ring_mode = 1;
    run_case<__nv_bfloat16, 1>(64, 0, 0, 4, 1200, 16, 4, 4, 2e-2, "bf16 S1 overflow no ring", 1);
    g_ring_mode = 0;
    /* the norms in the kernel (MB_CUDA_GEN_PERSIST_FOLD=0); every other case folds them */
    g_fold = 0;
    run_case<float, 2>(64, 0, 0, 5, -1, 16, 4, 4, 1e-4, "ln d64 S2 norm not folded", 1);
    run_case<__nv_bfloat16, 1>(64, 1, 0, 4, 1200, 16, 4, 4, 2e-2, "rms bf16 S1 not folded", 1);
    g_fold = 1;
    /* a residual mean ~3000x its spread (embeddings offset by 100): the folded rows run on the
     * centered copy, so they stay within the fp32 tolerance (on r itself they reached 4e-4
     * here); an uneven channel split with rows overflowing at batch 2 */
    g_emb_off = 100.0f;
    run_case<float, 1>(64, 0, 0, 6, -1, 16, 4, 5, 1e-4, "ln d64 S1 embeddings + 100", 1);
    run_case<float, 2>(36, 0, 0, 4, 1000, 16, 4, 4, 1e-4, "ln d36 S2 overflow embeddings + 100");
    g_emb_off = 0.1f; /* a mean of 1.5-2.4 spreads: the rows on r itself */
    run_case<float, 2>(64, 0, 0, 5, -1, 16, 4, 5, 1e-4, "ln d64 S2 embeddings + 0.1", 1);
    g_emb_off = -100.0f, g_emb_mix = 1; /* per step, one sequence on r, the other centered */
    run_case<float, 2>(64, 0, 0, 5, -1, 16, 4, 4, 1e-4, "ln d64 S2 mixed fold paths", 1);
    g_emb_mix = 0;
    g_emb_off = 0.0f;
    if (quick) goto big;
    run_case<__nv_bfloat16, 4>(64, 0, 1, 3, 2000, 16, 4, 5, 2e-2, "ln tied d64 bf16 overflow");
    run_case<__nv_bfloat16, 1>(36, 1, 0, 2, -1, 16, 4, 5, 2e-2, "rms d36 bf16");
    run_case<__nv_bfloat16, 4>(36, 1, 0, 2, 1500, 16, 4, 4, 2e-2, "rms d36 bf16 producer", 1);
    run_case<float, 2>(64, 0, 0, 7, -1, 8, 3, 5, 1e-4, "d_state 8 d_conv 3");
    run_case<float, 1>(64, 1, 0, 5, -1, 32, 4, 3, 1e-4, "d_state 32"); /* a warp per channel */
    /* blocks without channels (LL words; with barriers 200 blocks take minutes to emulate, and
     * test_step_cuda covers such blocks with barriers on the GPU: d64 at batch 2..4) */
    run_case<float, 1>(64, 1, 0, 200, -1, 16, 4, 3, 1e-4, "nb 200 > Di");
    for (g_force_ll = 0; g_force_ll < 2; g_force_ll++) /* both ways of passing y, hidden */
        run_case<float, 4>(64, 1, 0, 3, 0, 16, 4, 4, 1e-4, "no rows in smem");
    g_force_ll = -1;
    /* LL reads with several words per thread (y of d128 at batch 4: 1024 words over 480
     * threads), both ways of polling: re-reading every late word (the GPU's way where one round
     * of loads covers them) and the first alone, then the others (above one round) */
    g_force_ll = 1;
    for (int m = 0; m < 2; m++) {
        g_ll_all_max = m ? 0 : LL_U * PT;
        run_case<float, 4>(128, 0, 0, 3, -1, 16, 4, 3, 1e-4,
                           m ? "d128 S4 LL first-word polls" : "d128 S4 LL re-read all", 1);
    }
    g_ll_all_max = 0;
    run_case<float, 1>(64, 0, 0, 6, -1, 16, 4, 5, 1e-4, "S1 LL first-word polls", 1);
    g_ll_all_max = LL_U * PT;
    g_force_ll = -1;
    /* d_conv past the taps held in registers (MBP_KMAX 8: the serial path) and d_conv 1 (no
     * window), windows in shared and in global memory */
    for (g_win_mode = 1; g_win_mode <= 2; g_win_mode++) {
        run_case<float, 2>(64, 0, 0, 3, -1, 16, 9, 4, 1e-4,
                           g_win_mode == 2 ? "d_conv 9 win" : "d_conv 9 global windows");
        run_case<__nv_bfloat16, 3>(64, 1, 0, 4, 1500, 16, 10, 3, 2e-2,
                                   g_win_mode == 2 ? "bf16 d_conv 10 overflow win"
                                                   : "bf16 d_conv 10 overflow global");
    }
    g_win_mode = 0;
    run_case<float, 1>(64, 0, 0, 3, -1, 16, 1, 4, 1e-4, "d_conv 1");
    g_win_mode = 2; /* windows in smem even where rows do not fit */
    run_case<__nv_bfloat16, 2>(64, 0, 0, 3, 1000, 16, 3, 4, 2e-2, "bf16 d_conv 3 forced win");
    g_win_mode = 0;
big:
    if (argc > 1 && !strcmp(argv[1], "big")) {
        run_case<float, 2>(1040, 0, 0, 32, -1, 16, 4, 2, 1e-4, "d1040 fp32 2 passes");
        run_case<__nv_bfloat16, 1>(2056, 1, 0, 48, -1, 16, 4, 2, 2e-2, "d2056 bf16 2 passes");
    }
    printf(g_fail ? "FAILED\n" : "all emu checks passed\n");
    return g_fail;
}
