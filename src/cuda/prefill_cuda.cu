/* Prompt prefill by the parallel forward (prefill_cuda.h). */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_check.h"
#include "cuda/matmul_cuda.h"
#include "cuda/model_cuda.h"
#include "cuda/prefill_cuda.h"

/* activations for S sequences of L bytes, with their host input buffer (kept per shape) */
typedef struct {
    mb_cuda_acts *acts;
    uint8_t *x; /* host (S, L) */
    int64_t S, L;
} prefill_ws;

struct mb_cuda_prefill {
    mb_cuda_model dm;
    prefill_ws full, tail; /* whole chunks, and the last partial one */
    int bf16;
};

static void ws_free(prefill_ws *w) {
    mb_cuda_acts_free(w->acts);
    free(w->x);
    memset(w, 0, sizeof *w);
}

/* w holds activations for (S, L) afterwards (MB_ENOMEM with the message set otherwise) */
static int ws_ensure(mb_cuda_prefill *p, prefill_ws *w, int64_t S, int64_t L) {
    if (w->acts && w->S == S && w->L == L) return MB_OK;
    ws_free(w);
    w->x = (uint8_t *)malloc((size_t)(S * L));
    if (!w->x) return mb_fail(MB_ENOMEM, "mb_cuda_prefill: out of host memory");
    w->acts = mb_cuda_acts_create_ex(&p->dm.cfg, S, L, p->bf16 ? MB_CUDA_ACTS_BF16 : 0, 0);
    if (!w->acts) {
        ws_free(w);
        return MB_ENOMEM; /* message set by mb_cuda_acts_create_ex */
    }
    w->S = S, w->L = L;
    return MB_OK;
}

extern "C" int mb_cuda_prefill_create(mb_cuda_prefill **out, const mb_config *c, int bf16) {
    if (!out || !c) return mb_fail(MB_EINVAL, "mb_cuda_prefill_create: NULL argument");
    *out = NULL;
    mb_cuda_prefill *p = (mb_cuda_prefill *)calloc(1, sizeof *p);
    if (!p) return mb_fail(MB_ENOMEM, "mb_cuda_prefill_create: out of host memory");
    int rc = mb_cuda_model_create_ex(&p->dm, c, 0, MB_CUDA_MODEL_INFERENCE);
    if (!rc && bf16) rc = mb_cuda_model_set_bf16(&p->dm, 1);
    if (rc) {
        mb_cuda_prefill_free(p);
        return rc;
    }
    /* heuristic plans only: every new prompt length makes new plans, timing them would cost
     * more than it saves (MB_CUDA_GEMM_TUNE is for training) */
    if (p->dm.cublaslt) mb_cublaslt_set_tune(p->dm.cublaslt, 0);
    p->bf16 = bf16 != 0;
    *out = p;
    return MB_OK;
}

extern "C" void mb_cuda_prefill_free(mb_cuda_prefill *p) {
    if (!p) return;
    ws_free(&p->full);
    ws_free(&p->tail);
    mb_cuda_model_free(&p->dm);
    free(p);
}

extern "C" mb_weights *mb_cuda_prefill_weights(mb_cuda_prefill *p) {
    return p ? &p->dm.w : NULL;
}

extern "C" int mb_cuda_prefill_weights_set(mb_cuda_prefill *p) {
    if (!p) return mb_fail(MB_EINVAL, "mb_cuda_prefill_weights_set: NULL");
    MB_CUDA_TRY(cudaDeviceSynchronize(), "mb_cuda_prefill_weights_set");
    return p->bf16 ? mb_cuda_model_set_bf16(&p->dm, 1) : MB_OK;
}

extern "C" int mb_cuda_prefill_run(mb_cuda_prefill *p, const uint8_t *bytes, int64_t S, int64_t L,
                                   int64_t n, float *conv_state, float *ssm_state) {
    if (!p || !bytes || S < 1 || n < 1 || n > L || !ssm_state)
        return mb_fail(MB_EINVAL, "mb_cuda_prefill_run: bad arguments (S %lld, L %lld, n %lld)",
                       (long long)S, (long long)L, (long long)n);
    int64_t chunk = MB_CUDA_PREFILL_TOKENS / S;
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    const int64_t rest = n % chunk;
    /* every workspace before the first forward: out of memory leaves the state untouched */
    MB_TRY(ws_ensure(p, &p->full, S, chunk));
    if (rest) MB_TRY(ws_ensure(p, &p->tail, S, rest));
    for (int64_t o = 0; o < n;) {
        prefill_ws *w = n - o >= chunk ? &p->full : &p->tail;
        const int64_t m = w->L;
        for (int64_t s = 0; s < S; s++)
            memcpy(w->x + s * m, bytes + s * L + o, (size_t)m);
        MB_TRY(mb_cuda_forward_stateful(&p->dm, w->acts, conv_state, ssm_state, w->x, NULL, NULL,
                                        NULL));
        o += m;
    }
    MB_CUDA_TRY(cudaDeviceSynchronize(), "mb_cuda_prefill_run");
    return MB_OK;
}
