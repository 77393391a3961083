/* CPU forward/backward of the whole model: internal extras beside the public mb_acts API
 * (include/mambabyte.h). */
#ifndef MB_CPU_MODEL_H
#define MB_CPU_MODEL_H

#include "mambabyte.h"

/* mb_acts_create with a mode: for_training = 1 keeps every layer's activations and the
 * backward workspace (what mb_acts_create does); 0 keeps one layer's worth, reused layer
 * after layer, for mb_forward / mb_forward_stateful only (evaluation, prefill): memory
 * independent of n_layer, and mb_backward refuses it. chunk: positions per scan chunk
 * (0 = mb_scan_default_chunk(L)); tests use small chunks to cross chunk boundaries.
 * NULL (error set) on bad sizes or out of memory. */
mb_acts *mb_acts_create_ex(const mb_config *c, int64_t B, int64_t L, int for_training,
                           int64_t chunk);

/* Bytes held by an mb_acts of this shape and mode (what mb_acts_create_ex allocates, plus
 * the struct itself). -1 on bad arguments. */
int64_t mb_acts_bytes(const mb_config *c, int64_t B, int64_t L, int for_training, int64_t chunk);

/* 0 when a workspace of `need` bytes would take more than 90% of the memory the system can
 * still give (MemAvailable of /proc/meminfo; *avail set to it, for the caller's message), else
 * 1 (also when unknown; the system is asked only above 256 MiB). For refusing, with a message,
 * what the allocator would grant and the kernel's OOM killer end later. */
int mb_mem_fits(int64_t need, int64_t *avail);

/* Batch shape of an mb_acts. */
int64_t mb_acts_batch(const mb_acts *a);
int64_t mb_acts_seq_len(const mb_acts *a);

#endif
