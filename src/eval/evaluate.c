/* Windowed and streamed bits-per-byte evaluation. */
#include "eval/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/model.h"
#include "plural.h"

double mb_eval_bpb(const mb_eval_result *r) {
    return r->bytes > 0 ? r->nats / (double)r->bytes / M_LN2 : 0.0;
}

static double sum_losses(const mb_acts *a, int64_t n) {
    const float *l = mb_acts_losses(a);
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += l[i];
    return s;
}

static int64_t total_to_score(const mb_doc *docs, int64_t n_docs, int64_t max_bytes) {
    int64_t t = 0;
    for (int64_t d = 0; d < n_docs; d++)
        if (docs[d].len > 1) t += docs[d].len - 1;
    return max_bytes > 0 && t > max_bytes ? max_bytes : t;
}

/* Inference workspace (one layer's activations at a time) for B windows of L bytes, refused
 * with a message that names the way out where it would not fit in the memory available (the
 * allocation itself would succeed and the kernel's OOM killer end the process later), or where
 * B * L is over the 2^30 positions a workspace holds. stream: the way out is a smaller --ctx
 * alone (--stream is given; --batch does not apply). */
static mb_acts *eval_acts(const mb_config *c, int64_t B, int64_t L, int stream, int *rc) {
    *rc = MB_EINVAL;
    const char *way = stream ? "use a smaller --ctx"
                             : "use --stream (memory independent of the length) or a smaller "
                               "--ctx or --batch";
    /* (the system is asked only for large workspaces: a document's last window comes here) */
    const int64_t need = mb_acts_bytes(c, B, L, 0, 0);
    if (need < 0) { /* (B * L over 2^30, or B over 2^24: mb_acts_bytes says which) */
        char why[256];
        snprintf(why, sizeof why, "%s", mb_last_error());
        mb_fail(MB_EINVAL,
                "eval: %lld window%s of %lld byte%s cannot be scored in one pass (%s); %s",
                (long long)B, mb_plural(B), (long long)L, mb_plural(L), why, way);
        return NULL;
    }
    int64_t avail;
    if (!mb_mem_fits(need, &avail)) {
        *rc = MB_ENOMEM;
        mb_fail(MB_ENOMEM,
                "eval: %lld window%s of %lld byte%s need%s %.1f GiB of activations, more than "
                "the %.1f GiB of memory available; %s",
                (long long)B, mb_plural(B), (long long)L, mb_plural(L), B == 1 ? "s" : "",
                (double)need / 1073741824.0, (double)avail / 1073741824.0, way);
        return NULL;
    }
    *rc = MB_ENOMEM;
    mb_acts *a = mb_acts_create_ex(c, B, L, 0, 0);
    if (!a)
        mb_fail(MB_ENOMEM, "eval: out of memory for %lld window%s of %lld byte%s", (long long)B,
                mb_plural(B), (long long)L, mb_plural(L));
    return a;
}

/* A window's summed loss must be finite: weights that are finite but overflow in the forward
 * pass (or a scorer's defect) would otherwise give a NaN bpb with exit status 0. Names the
 * document (0-based) and the window's first byte (of the first of nwin windows scored together). */
static int check_finite(double nats, int64_t doc, int64_t off, int64_t nwin) {
    if (isfinite(nats)) return MB_OK;
    if (nwin > 1)
        return mb_fail(MB_ENONFINITE,
                       "eval: the model's loss is %s in a batch of %lld windows, the first at "
                       "document %lld byte %lld: the model's outputs are not finite (its weights "
                       "overflow in the forward pass)",
                       isnan(nats) ? "NaN" : "infinite", (long long)nwin, (long long)doc,
                       (long long)off);
    return mb_fail(MB_ENONFINITE,
                   "eval: the model's loss is %s on document %lld at byte %lld: the model's "
                   "outputs are not finite (its weights overflow in the forward pass)",
                   isnan(nats) ? "NaN" : "infinite", (long long)doc, (long long)off);
}

/* Score one partial window of n + 1 bytes at batch 1 (zero state or carried state). */
static int score_single(const mb_model *m, mb_state *st, const uint8_t *w, int64_t n,
                        mb_eval_result *out) {
    int rc;
    mb_acts *a = eval_acts(&m->cfg, 1, n, st != NULL, &rc);
    if (!a) return rc;
    if (st)
        mb_forward_stateful(m, a, st, w, w + 1, NULL);
    else
        mb_forward(m, a, w, w + 1, NULL);
    out->nats += sum_losses(a, n);
    out->bytes += n;
    mb_acts_free(a);
    return MB_OK;
}

/* The CPU model as an mb_eval_scorer: full batches on one workspace, single windows on a
 * workspace of their own length. */
typedef struct {
    const mb_model *m;
    mb_acts *full;
    int64_t B, L;
} cpu_scorer;

int mb_eval_cpu_score(const mb_model *m, mb_acts *full, int64_t full_B, int64_t full_L,
                      const uint8_t *x, const uint8_t *y, int64_t B, int64_t L, double *nats) {
    if (full && B == full_B && L == full_L) {
        mb_forward(m, full, x, y, NULL);
        *nats = sum_losses(full, B * L);
        return MB_OK;
    }
    int rc;
    mb_acts *a = eval_acts(&m->cfg, B, L, 0, &rc);
    if (!a) return rc;
    mb_forward(m, a, x, y, NULL);
    *nats = sum_losses(a, B * L);
    mb_acts_free(a);
    return MB_OK;
}

static int cpu_score(void *user, const uint8_t *x, const uint8_t *y, int64_t B, int64_t L,
                     double *nats) {
    cpu_scorer *c = user;
    return mb_eval_cpu_score(c->m, c->full, c->B, c->L, x, y, B, L, nats);
}

int mb_evaluate_windows(mb_eval_scorer score, void *score_user, const mb_doc *docs, int64_t n_docs,
                        int64_t ctx, int64_t batch, int64_t max_bytes, mb_eval_progress progress,
                        void *user, mb_eval_result *out) {
    memset(out, 0, sizeof *out);
    if (ctx <= 0)
        return mb_fail(MB_EINVAL, "eval: ctx must be positive (got %lld)", (long long)ctx);
    if (batch <= 0)
        return mb_fail(MB_EINVAL, "eval: batch must be positive (got %lld)", (long long)batch);
    int64_t total = total_to_score(docs, n_docs, max_bytes);
    uint8_t *x = malloc((size_t)(batch * ctx)), *y = malloc((size_t)(batch * ctx));
    const uint8_t **pending = malloc((size_t)batch * sizeof *pending);
    int64_t *where = malloc((size_t)batch * 2 * sizeof *where); /* (document, offset) */
    if (!x || !y || !pending || !where) {
        free(x);
        free(y);
        free(pending);
        free(where);
        return mb_fail(MB_ENOMEM, "eval: out of memory for batch %lld x ctx %lld", (long long)batch,
                       (long long)ctx);
    }
    int64_t nb = 0, shown = -1; /* shown: the bytes of the last progress call */
    double s;
    int rc = MB_OK;
    for (int64_t d = 0; d < n_docs && rc == MB_OK; d++) {
        for (int64_t off = 0; off + 1 < docs[d].len; off += ctx) {
            if (max_bytes > 0 && out->bytes + nb * ctx >= max_bytes) break;
            int64_t n = docs[d].len - 1 - off;
            const uint8_t *w = docs[d].bytes + off;
            if (off == 0) out->docs++; /* (a queued window is scored below at the latest) */
            if (n < ctx) {             /* the document's last, shorter window */
                if ((rc = score(score_user, w, w + 1, 1, n, &s))) break;
                if ((rc = check_finite(s, d, off, 1))) break;
                out->nats += s;
                out->bytes += n;
            } else {
                memcpy(x + nb * ctx, w, (size_t)ctx);
                memcpy(y + nb * ctx, w + 1, (size_t)ctx);
                pending[nb] = w;
                where[2 * nb] = d, where[2 * nb + 1] = off;
                if (++nb == batch) {
                    if ((rc = score(score_user, x, y, batch, ctx, &s))) break;
                    if ((rc = check_finite(s, where[0], where[1], batch))) break;
                    out->nats += s;
                    out->bytes += batch * ctx;
                    nb = 0;
                }
            }
            if (progress && out->bytes != shown && out->bytes < total)
                progress(shown = out->bytes, total, user);
        }
        if (max_bytes > 0 && out->bytes + nb * ctx >= max_bytes) break;
    }
    for (int64_t i = 0; i < nb && rc == MB_OK; i++) { /* leftover full windows */
        if ((rc = score(score_user, pending[i], pending[i] + 1, 1, ctx, &s))) break;
        if ((rc = check_finite(s, where[2 * i], where[2 * i + 1], 1))) break;
        out->nats += s;
        out->bytes += ctx;
    }
    free(x);
    free(y);
    free(pending);
    free(where);
    if (progress && rc == MB_OK)
        progress(out->bytes, total, user); /* (the one with done >= total) */
    return rc;
}

static int eval_windowed(const mb_model *m, const mb_doc *docs, int64_t n_docs, int64_t ctx,
                         int64_t batch, int64_t max_bytes, mb_eval_progress progress, void *user,
                         mb_eval_result *out) {
    /* no larger a batch than there are full windows (the last, shorter window of a document is
     * scored on its own) */
    int64_t full = 0;
    for (int64_t d = 0; d < n_docs && full < batch; d++)
        if (docs[d].len > 1) full += (docs[d].len - 1) / ctx;
    if (full < batch) batch = full > 0 ? full : 1;
    int rc;
    cpu_scorer c = {.m = m, .full = eval_acts(&m->cfg, batch, ctx, 0, &rc), .B = batch, .L = ctx};
    if (!c.full) return rc;
    rc = mb_evaluate_windows(cpu_score, &c, docs, n_docs, ctx, batch, max_bytes, progress, user,
                             out);
    mb_acts_free(c.full);
    return rc;
}

int mb_evaluate_stream(mb_stream_scorer score, void *score_user, const mb_doc *docs, int64_t n_docs,
                       int64_t ctx, int64_t max_bytes, mb_eval_progress progress, void *user,
                       mb_eval_result *out) {
    memset(out, 0, sizeof *out);
    if (ctx <= 0)
        return mb_fail(MB_EINVAL, "eval: ctx must be positive (got %lld)", (long long)ctx);
    int64_t total = total_to_score(docs, n_docs, max_bytes);
    int rc = MB_OK;
    for (int64_t d = 0; d < n_docs && rc == MB_OK; d++) {
        int reset = 1;
        for (int64_t off = 0; off + 1 < docs[d].len; off += ctx) {
            if (max_bytes > 0 && out->bytes >= max_bytes) break;
            int64_t n = docs[d].len - 1 - off;
            if (n > ctx) n = ctx;
            const uint8_t *w = docs[d].bytes + off;
            double s = 0.0;
            if ((rc = score(score_user, w, w + 1, n, reset, &s))) break;
            if ((rc = check_finite(s, d, off, 1))) break;
            if (reset) out->docs++;
            reset = 0;
            out->nats += s;
            out->bytes += n;
            if (progress && out->bytes < total) progress(out->bytes, total, user);
        }
    }
    if (progress && rc == MB_OK) progress(out->bytes, total, user);
    return rc;
}

/* The CPU model as an mb_stream_scorer: one state, a (1, ctx) workspace for full windows. */
typedef struct {
    const mb_model *m;
    mb_state st;
    mb_acts *a;
    int64_t ctx;
} cpu_streamer;

static int cpu_stream_score(void *user, const uint8_t *x, const uint8_t *y, int64_t L, int reset,
                            double *nats) {
    cpu_streamer *c = user;
    if (reset) mb_state_reset(&c->st);
    if (L < c->ctx) {
        mb_eval_result r = {0};
        int rc = score_single(c->m, &c->st, x, L, &r);
        *nats = r.nats;
        return rc;
    }
    mb_forward_stateful(c->m, c->a, &c->st, x, y, NULL);
    *nats = sum_losses(c->a, L);
    return MB_OK;
}

static int eval_streamed(const mb_model *m, const mb_doc *docs, int64_t n_docs, int64_t ctx,
                         int64_t max_bytes, mb_eval_progress progress, void *user,
                         mb_eval_result *out) {
    cpu_streamer c = {.m = m, .ctx = ctx};
    int rc = mb_state_create(&c.st, &m->cfg, 1);
    if (rc) return rc;
    c.a = eval_acts(&m->cfg, 1, ctx, 1, &rc);
    if (!c.a) {
        mb_state_free(&c.st);
        return rc;
    }
    rc =
        mb_evaluate_stream(cpu_stream_score, &c, docs, n_docs, ctx, max_bytes, progress, user, out);
    mb_acts_free(c.a);
    mb_state_free(&c.st);
    return rc;
}

int mb_evaluate(const mb_model *m, const mb_doc *docs, int64_t n_docs, int64_t ctx, int64_t batch,
                int stream, int64_t max_bytes, mb_eval_progress progress, void *user,
                mb_eval_result *out) {
    memset(out, 0, sizeof *out);
    if (ctx <= 0)
        return mb_fail(MB_EINVAL, "eval: ctx must be positive (got %lld)", (long long)ctx);
    if (batch <= 0)
        return mb_fail(MB_EINVAL, "eval: batch must be positive (got %lld)", (long long)batch);
    if (stream) return eval_streamed(m, docs, n_docs, ctx, max_bytes, progress, user, out);
    return eval_windowed(m, docs, n_docs, ctx, batch, max_bytes, progress, user, out);
}
