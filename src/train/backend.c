/* The CPU backend (the src/cpu model on host buffers) and --device resolution. */
#include "train/backend.h"
#include "cpu/model.h"
#include "eval/evaluate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mb_backend base;
    mb_model *m;
    mb_adamw *opt;
    mb_acts *acts; /* (B, L) workspace of training and full evaluation batches */
    float *grads;  /* (n_params), training only */
    int64_t B, L;
} cpu_backend;

static int cpu_probe(char *desc, size_t n) {
    if (desc && n) snprintf(desc, n, "cpu");
    return MB_OK;
}

static void cpu_close(mb_backend *b) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c) return;
    mb_acts_free(c->acts);
    free(c->grads);
    free(c);
}

int mb_precision_parse(const char *s) {
    if (!s || !strcmp(s, "auto")) return MB_PRECISION_AUTO;
    if (!strcmp(s, "fp32")) return MB_PRECISION_FP32;
    if (!strcmp(s, "bf16")) return MB_PRECISION_BF16;
    return -1;
}

static int cpu_open(mb_backend **out, mb_model *m, mb_adamw *opt, int64_t B, int64_t L, int train,
                    const mb_backend_flags *flags) {
    *out = NULL;
    if (!m || (train && !opt))
        return mb_fail(MB_EINVAL, "cpu backend: training needs a model and an optimizer");
    if (flags && flags->precision == MB_PRECISION_BF16)
        return mb_fail(MB_EINVAL, "--precision bf16 needs --device cuda (the CPU path computes "
                                  "in fp32)");
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return mb_fail(MB_ENOMEM, "train: out of memory");
    c->base.ops = &mb_backend_cpu;
    c->m = m;
    c->opt = opt;
    c->B = B;
    c->L = L;
    snprintf(c->base.numerics, sizeof c->base.numerics, "fp32");
    { /* refused with a message where it would not fit (the allocation would succeed and the
       * kernel's OOM killer end the run later) */
        const int64_t acts = mb_acts_bytes(&m->cfg, B, L, 1, 0);
        if (acts < 0) { /* (B * L over the 2^30 positions one workspace holds) */
            free(c);
            return mb_fail(MB_EINVAL,
                           "train: batch %lld x ctx %lld is more than the 2^30 bytes one step "
                           "can hold; give a smaller --ctx or --batch (--accum N keeps the "
                           "batch's bytes per step)",
                           (long long)B, (long long)L);
        }
        const int64_t need = acts + (train ? m->n_params * (int64_t)sizeof(float) : 0);
        int64_t avail;
        if (!mb_mem_fits(need, &avail)) {
            free(c);
            return mb_fail(MB_ENOMEM,
                           "train: batch %lld x ctx %lld needs %.1f GiB of activations and "
                           "gradients, more than the %.1f GiB of memory available; give a "
                           "smaller --ctx or --batch (--accum N keeps the batch's bytes per step)",
                           (long long)B, (long long)L, (double)need / 1073741824.0,
                           (double)avail / 1073741824.0);
        }
    }
    c->acts = mb_acts_create(&m->cfg, B, L);
    if (train)
        c->grads = aligned_alloc(64, ((size_t)m->n_params * sizeof(float) + 63) & ~(size_t)63);
    if (!c->acts || (train && !c->grads)) {
        cpu_close(&c->base);
        return mb_fail(MB_ENOMEM, "train: out of memory for batch %lld x ctx %lld", (long long)B,
                       (long long)L);
    }
    *out = &c->base;
    return MB_OK;
}

static int cpu_zero_grads(mb_backend *b) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c->grads) return mb_fail(MB_EINVAL, "cpu backend: session opened without training");
    memset(c->grads, 0, (size_t)c->m->n_params * sizeof(float));
    return MB_OK;
}

static int cpu_forward(mb_backend *b, const uint8_t *x, const uint8_t *y, float *loss) {
    cpu_backend *c = (cpu_backend *)b;
    *loss = mb_forward(c->m, c->acts, x, y, NULL);
    return MB_OK;
}

static int cpu_backward(mb_backend *b, float dloss) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c->grads) return mb_fail(MB_EINVAL, "cpu backend: session opened without training");
    mb_backward(c->m, c->acts, dloss, c->grads);
    return MB_OK;
}

static int cpu_clip(mb_backend *b, double max_norm, double *norm) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c->grads) return mb_fail(MB_EINVAL, "cpu backend: session opened without training");
    *norm = mb_grad_clip(c->grads, c->m->n_params, max_norm);
    return MB_OK;
}

static int cpu_update(mb_backend *b, float lr) {
    cpu_backend *c = (cpu_backend *)b;
    if (!c->grads) return mb_fail(MB_EINVAL, "cpu backend: session opened without training");
    mb_adamw_update(c->opt, c->m->params, c->grads, lr);
    return MB_OK;
}

static int cpu_sync(mb_backend *b) {
    (void)b; /* parameters and moments live in the host model and optimizer */
    return MB_OK;
}

static int cpu_score(void *b, const uint8_t *x, const uint8_t *y, int64_t B, int64_t L,
                     double *nats) {
    cpu_backend *c = b;
    return mb_eval_cpu_score(c->m, c->acts, c->B, c->L, x, y, B, L, nats);
}

const mb_backend_ops mb_backend_cpu = {
    .name = "cpu",
    .probe = cpu_probe,
    .open = cpu_open,
    .close = cpu_close,
    .zero_grads = cpu_zero_grads,
    .forward = cpu_forward,
    .backward = cpu_backward,
    .clip = cpu_clip,
    .update = cpu_update,
    .sync = cpu_sync,
    .score = cpu_score,
};

int mb_backend_resolve(const char *device, const mb_backend_ops *cuda_ops,
                       const mb_backend_ops **out, char *desc, size_t n) {
    *out = &mb_backend_cpu;
    if (desc && n) desc[0] = '\0';
    if (!device || !strcmp(device, "auto")) {
        char d[256];
        if (cuda_ops && cuda_ops->probe(d, sizeof d) == MB_OK) {
            *out = cuda_ops;
            if (desc && n) snprintf(desc, n, "%s", d);
        } else {
            if (cuda_ops) mb_fail(MB_OK, "%s", ""); /* a missing GPU is no error here */
            cpu_probe(desc, n);
        }
        return MB_OK;
    }
    if (!strcmp(device, "cpu")) return cpu_probe(desc, n);
    if (!strcmp(device, "cuda")) {
        if (!cuda_ops)
            return mb_fail(MB_EINVAL, "--device cuda: this mambabyte was built without CUDA "
                                      "support (no nvcc at configure time); use --device cpu");
        char d[256];
        if (cuda_ops->probe(d, sizeof d) != MB_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", mb_last_error());
            return mb_fail(MB_EINVAL, "--device cuda: %s; use --device cpu", why);
        }
        *out = cuda_ops;
        if (desc && n) snprintf(desc, n, "%s", d);
        return MB_OK;
    }
    return mb_fail(MB_EINVAL, "--device: unknown device '%s' (cuda | cpu | auto)", device);
}
