/* Kernel time by category and phase (profile_cuda.h). */
#include "cuda/profile_cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROF_SLOTS 16384

static int g_on = -1;
static int g_phase = MB_PHASE_FWD;
static cudaEvent_t g_ev[2 * PROF_SLOTS];
static int g_cat[PROF_SLOTS], g_ph[PROF_SLOTS];
static int g_n = 0, g_created = 0;
static double g_ms[MB_PROF_N][MB_PHASE_N];
static long g_calls[MB_PROF_N][MB_PHASE_N];
static double g_pend_ms[MB_PROF_N][MB_PHASE_N];
static long g_pend_calls[MB_PROF_N][MB_PHASE_N];
static long g_steps = 0, g_seen = 0, g_skip = 0;

static const char *cat_name[MB_PROF_N] = {"gemm",      "scan fwd",  "scan bwd", "conv",
                                          "norm",      "softplus",  "bf16 cvt", "loss",
                                          "embedding", "optimizer", "copy"};
static const char *phase_name[MB_PHASE_N] = {"forward", "recompute", "backward", "optimizer"};

static void report(void) {
    if (!g_steps) return;
    double total = 0.0;
    for (int c = 0; c < MB_PROF_N; c++)
        for (int p = 0; p < MB_PHASE_N; p++)
            total += g_ms[c][p];
    fprintf(stderr, "\nGPU kernel time per step (MB_CUDA_PROFILE, mean of %ld steps; %.2f ms):\n",
            g_steps, total / (double)g_steps);
    fprintf(stderr, "| category | phase | calls/step | ms/step | share |\n|---|---|---|---|---|\n");
    for (int c = 0; c < MB_PROF_N; c++)
        for (int p = 0; p < MB_PHASE_N; p++)
            if (g_calls[c][p])
                fprintf(stderr, "| %s | %s | %.0f | %.3f | %.1f%% |\n", cat_name[c], phase_name[p],
                        (double)g_calls[c][p] / (double)g_steps, g_ms[c][p] / (double)g_steps,
                        100.0 * g_ms[c][p] / total);
}

extern "C" int mb_prof_on(void) {
    if (g_on < 0) {
        const char *e = getenv("MB_CUDA_PROFILE");
        g_on = e && !strcmp(e, "1");
        const char *k = getenv("MB_CUDA_PROFILE_SKIP");
        g_skip = k ? atol(k) : 0;
        if (g_on) atexit(report);
    }
    return g_on;
}

extern "C" void mb_prof_phase(int phase) {
    g_phase = phase;
}

extern "C" int mb_prof_begin(int category, void *stream) {
    if (!mb_prof_on() || g_n >= PROF_SLOTS) return -1;
    const int s = g_n++;
    if (s >= g_created) {
        if (cudaEventCreate(&g_ev[2 * s]) != cudaSuccess ||
            cudaEventCreate(&g_ev[2 * s + 1]) != cudaSuccess) {
            (void)cudaGetLastError();
            g_n--;
            return -1;
        }
        g_created = s + 1;
    }
    g_cat[s] = category;
    g_ph[s] = g_phase;
    cudaEventRecord(g_ev[2 * s], (cudaStream_t)stream);
    return s;
}

extern "C" void mb_prof_end(int slot, void *stream) {
    if (slot >= 0) cudaEventRecord(g_ev[2 * slot + 1], (cudaStream_t)stream);
}

extern "C" void mb_prof_collect(int count_step) {
    if (g_on != 1) return;
    for (int s = 0; s < g_n; s++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, g_ev[2 * s], g_ev[2 * s + 1]) == cudaSuccess) {
            g_pend_ms[g_cat[s]][g_ph[s]] += ms;
            g_pend_calls[g_cat[s]][g_ph[s]]++;
        } else {
            (void)cudaGetLastError();
        }
    }
    g_n = 0;
    if (!count_step) return;
    /* a training step ends: commit its times (after the first MB_CUDA_PROFILE_SKIP steps) */
    if (g_seen++ >= g_skip) {
        for (int c = 0; c < MB_PROF_N; c++)
            for (int p = 0; p < MB_PHASE_N; p++) {
                g_ms[c][p] += g_pend_ms[c][p];
                g_calls[c][p] += g_pend_calls[c][p];
            }
        g_steps++;
    }
    memset(g_pend_ms, 0, sizeof g_pend_ms);
    memset(g_pend_calls, 0, sizeof g_pend_calls);
}
