/* Prompt prefill by the parallel forward (prefill_cuda.h). */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_check.h"
#include "cuda/model_cuda.h"
#include "cuda/prefill_cuda.h"

struct mb_cuda_prefill {
    mb_cuda_model dm;
    mb_cuda_acts *acts; /* for S x Lc bytes */
    int64_t S, Lc;      /* shape of acts (0: none yet) */
    int bf16;
    uint8_t *x; /* host (S, Lc) */
};

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
    p->bf16 = bf16 != 0;
    *out = p;
    return MB_OK;
}

extern "C" void mb_cuda_prefill_free(mb_cuda_prefill *p) {
    if (!p) return;
    mb_cuda_acts_free(p->acts);
    mb_cuda_model_free(&p->dm);
    free(p->x);
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

/* acts for S sequences of Lc bytes (kept while the shape repeats) */
static int ensure_acts(mb_cuda_prefill *p, int64_t S, int64_t Lc) {
    if (p->acts && p->S == S && p->Lc == Lc) return MB_OK;
    mb_cuda_acts_free(p->acts);
    free(p->x);
    p->acts = NULL, p->x = NULL, p->S = p->Lc = 0;
    p->x = (uint8_t *)malloc((size_t)(S * Lc));
    if (!p->x) return mb_fail(MB_ENOMEM, "mb_cuda_prefill: out of host memory");
    p->acts = mb_cuda_acts_create_ex(&p->dm.cfg, S, Lc, p->bf16 ? MB_CUDA_ACTS_BF16 : 0, 0);
    if (!p->acts) return MB_ENOMEM; /* message set by mb_cuda_acts_create_ex */
    p->S = S, p->Lc = Lc;
    return MB_OK;
}

extern "C" int mb_cuda_prefill_run(mb_cuda_prefill *p, const uint8_t *bytes, int64_t S, int64_t L,
                                   int64_t n, float *conv_state, float *ssm_state) {
    if (!p || !bytes || S < 1 || n < 1 || n > L || !ssm_state)
        return mb_fail(MB_EINVAL, "mb_cuda_prefill_run: bad arguments (S %lld, L %lld, n %lld)",
                       (long long)S, (long long)L, (long long)n);
    int64_t chunk = MB_CUDA_PREFILL_TOKENS / S;
    if (chunk < 1) chunk = 1;
    for (int64_t o = 0; o < n;) {
        const int64_t m = n - o < chunk ? n - o : chunk;
        MB_TRY(ensure_acts(p, S, m));
        for (int64_t s = 0; s < S; s++)
            memcpy(p->x + s * m, bytes + s * L + o, (size_t)m);
        MB_TRY(mb_cuda_forward_stateful(&p->dm, p->acts, conv_state, ssm_state, p->x, NULL, NULL,
                                        NULL));
        o += m;
    }
    MB_CUDA_TRY(cudaDeviceSynchronize(), "mb_cuda_prefill_run");
    return MB_OK;
}
