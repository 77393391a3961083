/* Bits-per-byte evaluation over documents (model.md "Metrics"): bpb = mean cross-entropy in
 * nats per predicted byte / ln 2. The first byte of each document is context only. */
#ifndef MB_EVAL_EVALUATE_H
#define MB_EVAL_EVALUATE_H

#include <stdint.h>

#include "mambabyte.h"

typedef struct {
    const uint8_t *bytes;
    int64_t len;
} mb_doc;

typedef struct {
    double nats;   /* sum of cross-entropy over scored bytes, in nats */
    int64_t bytes; /* number of predicted (scored) bytes */
    int64_t docs;  /* documents with at least one scored byte (fewer than given where max_bytes
                    * stopped early or a document is shorter than 2 bytes) */
} mb_eval_result;

/* Called after windows with the bytes scored so far and the total to score: with done < total
 * while scoring, then once at the end of a pass that succeeded with the final count, which is
 * >= total (above it where max_bytes stops after whole windows), so 100% is reported once. */
typedef void (*mb_eval_progress)(int64_t done, int64_t total, void *user);

/* Score documents.
 * windowed (stream = 0): each document is cut into windows of ctx + 1 bytes overlapping by one
 *   byte; each window starts from a zero state, so every byte after a document's first is
 *   predicted exactly once with at most ctx bytes of context. Full windows run `batch` at a time.
 * streamed (stream = 1): the recurrent state (conv window + SSM state) is carried from window to
 *   window through a document, so memory is constant and the context is the whole document so
 *   far (beyond the training context); reset at each document.
 * max_bytes > 0 stops after about that many scored bytes (whole windows). Returns MB_OK or an
 * error (out of memory, bad argument). */
int mb_evaluate(const mb_model *m, const mb_doc *docs, int64_t n_docs, int64_t ctx, int64_t batch,
                int stream, int64_t max_bytes, mb_eval_progress progress, void *user,
                mb_eval_result *out);

/* Scores B windows x, y (B, L) host bytes, every window from a zero state: *nats = the sum of the
 * B*L per-position cross-entropies (nats). Called with (B, L) = (batch, ctx) for full batches
 * and with B = 1, 1 <= L <= ctx for single windows. Returns MB_OK or an error. */
typedef int (*mb_eval_scorer)(void *user, const uint8_t *x, const uint8_t *y, int64_t B, int64_t L,
                              double *nats);

/* Score B windows of L bytes on the CPU: sum of cross-entropy (nats) of y given x, both (B, L).
 * Uses `full` (activations for full_B x full_L, may be NULL) when the shape matches, else a
 * temporary one. MB_ENOMEM if that cannot be allocated. */
int mb_eval_cpu_score(const mb_model *m, mb_acts *full, int64_t full_B, int64_t full_L,
                      const uint8_t *x, const uint8_t *y, int64_t B, int64_t L, double *nats);

/* Windowed scoring (mb_evaluate with stream = 0) through a scorer, e.g. a GPU backend
 * (train/backend.h). The windows, their order and the bytes scored are those of mb_evaluate;
 * mb_evaluate's windowed mode is this function with the CPU model as scorer. */
int mb_evaluate_windows(mb_eval_scorer score, void *score_user, const mb_doc *docs, int64_t n_docs,
                        int64_t ctx, int64_t batch, int64_t max_bytes, mb_eval_progress progress,
                        void *user, mb_eval_result *out);

/* Scores one window of a document continuing the carried recurrent state: x, y (L) host bytes,
 * 1 <= L <= ctx; reset = 1 for a document's first window (zero state first). *nats = the sum
 * of the L per-position cross-entropies. The state after the window must be carried to the
 * next call unless L < ctx (a document's last window). Returns MB_OK or an error. */
typedef int (*mb_stream_scorer)(void *user, const uint8_t *x, const uint8_t *y, int64_t L,
                                int reset, double *nats);

/* Streamed scoring (mb_evaluate with stream = 1) through a stream scorer, e.g. a GPU backend:
 * each document in windows of ctx (the last one shorter), state carried within a document and
 * reset between documents. mb_evaluate's streamed mode is this function with the CPU model. */
int mb_evaluate_stream(mb_stream_scorer score, void *score_user, const mb_doc *docs, int64_t n_docs,
                       int64_t ctx, int64_t max_bytes, mb_eval_progress progress, void *user,
                       mb_eval_result *out);

/* bpb of a result: nats / bytes / ln 2 (0 bytes gives 0). */
double mb_eval_bpb(const mb_eval_result *r);

#endif
