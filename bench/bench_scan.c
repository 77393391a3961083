/* Selective-scan throughput on the CPU (forward, forward + saved chunk states, backward).
 * Build (from the repository root, Release flags):
 *   gcc -O3 -march=native -fopenmp -Iinclude -Isrc bench/bench_scan.c src/cpu/scan.c \
 *       src/common.c -o /tmp/bench_scan -lm
 * Run: /tmp/bench_scan [B L Di N chunk]   (default 4 2048 1024 16 default-chunk)
 * Prints ms per call and state updates per second (B * L * Di * N / time). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpu/scan.h"

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 16777216.0f;
}

int main(int argc, char **argv) {
    int64_t B = 4, L = 2048, Di = 1024, N = 16, R = 64;
    int64_t chunk = -1;
    if (argc >= 5) B = atoll(argv[1]), L = atoll(argv[2]), Di = atoll(argv[3]), N = atoll(argv[4]);
    if (argc >= 6) chunk = atoll(argv[5]);
    if (chunk <= 0) chunk = mb_scan_default_chunk(L);
    const int64_t BL = B * L, W = R + 2 * N, nch = mb_scan_n_chunks(L, chunk);
    float *x = malloc(sizeof(float) * BL * Di), *delta = malloc(sizeof(float) * BL * Di);
    float *bc = malloc(sizeof(float) * BL * W), *xz = malloc(sizeof(float) * BL * 2 * Di);
    float *A_log = malloc(sizeof(float) * Di * N), *D = malloc(sizeof(float) * Di);
    float *y = malloc(sizeof(float) * BL * Di), *hc = malloc(sizeof(float) * B * Di * nch * N);
    float *dx = malloc(sizeof(float) * BL * Di), *dd = malloc(sizeof(float) * BL * Di);
    float *dbc = malloc(sizeof(float) * BL * W), *dxz = malloc(sizeof(float) * BL * 2 * Di);
    float *dA = calloc(Di * N, sizeof(float)), *dD = calloc(Di, sizeof(float));
    unsigned s = 1;
    for (int64_t i = 0; i < BL * Di; i++)
        x[i] = frand(&s) - 0.5f, delta[i] = 0.001f + 0.1f * frand(&s);
    for (int64_t i = 0; i < BL * W; i++)
        bc[i] = frand(&s) - 0.5f;
    for (int64_t i = 0; i < BL * 2 * Di; i++)
        xz[i] = frand(&s) - 0.5f;
    for (int64_t i = 0; i < Di * N; i++)
        A_log[i] = 0.1f * (float)(i % N);
    for (int64_t i = 0; i < Di; i++)
        D[i] = 1.0f;
    mb_scan_args a = {.B = B,
                      .L = L,
                      .Di = Di,
                      .N = N,
                      .chunk = chunk,
                      .x = x,
                      .x_stride = Di,
                      .delta = delta,
                      .A_log = A_log,
                      .Bm = bc + R,
                      .Cm = bc + R + N,
                      .bc_stride = W,
                      .D = D,
                      .z = xz + Di,
                      .z_stride = 2 * Di,
                      .h_chunks = hc};
    const double upd = (double)BL * Di * N;
    printf("B %lld L %lld Di %lld N %lld chunk %lld threads %d\n", (long long)B, (long long)L,
           (long long)Di, (long long)N, (long long)chunk, omp_get_max_threads());
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
        mb_scan_forward(&a, y);
        double t1 = omp_get_wtime();
        mb_scan_backward(&a, y, dx, dd, dA, dbc + R, dbc + R + N, dD, dxz + Di);
        double t2 = omp_get_wtime();
        printf("forward %8.2f ms (%.2f G upd/s)  backward %8.2f ms (%.2f G upd/s)\n",
               (t1 - t0) * 1e3, upd / (t1 - t0) * 1e-9, (t2 - t1) * 1e3, upd / (t2 - t1) * 1e-9);
    }
    free(x), free(delta), free(bc), free(xz), free(A_log), free(D), free(y), free(hc);
    free(dx), free(dd), free(dbc), free(dxz), free(dA), free(dD);
    return 0;
}
