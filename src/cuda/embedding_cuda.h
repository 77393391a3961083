/* Embedding lookup and its gradient on the GPU (model.md "Forward": h = embedding[x]).
 * DEVICE pointers; asynchronous on `stream`; 0 / MB_EINVAL / MB_EIO. */
#ifndef MB_CUDA_EMBEDDING_CUDA_H
#define MB_CUDA_EMBEDDING_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out (n, d) = emb[x[i]] rows; x (n) bytes, emb (256, d). */
int mb_embedding_cuda_forward(float *out, const uint8_t *x, const float *emb, int64_t n, int64_t d,
                              void *stream);

/* demb (256, d) += scatter of dout (n, d) rows to the rows x[i] (atomicAdd; order not fixed). */
int mb_embedding_cuda_backward(float *demb, const uint8_t *x, const float *dout, int64_t n,
                               int64_t d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
