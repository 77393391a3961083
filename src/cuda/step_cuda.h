/* Recurrent generation on a CUDA GPU (model.md "Recurrent step"; mamba_ssm `Mamba.step`,
 * `selective_state_update` and `MambaLMHeadModel.generate` with a CUDA graph): the device twin
 * of src/infer/step.c (mb_step) plus an on-device sampler (src/infer/sampler.c semantics).
 *
 * A generator holds the model's weights on the device (fp32; with bf16 = 1 also bf16 copies of
 * in_proj, out_proj and lm_head, read by the matrix-vector kernels), the recurrent state of
 * n_seq sequences (per layer and sequence the conv window (K-1, Di) and the SSM state (Di, N),
 * fp32, layouts of mb_state) and the step's workspace. One step for all layers is 4 kernels
 * per layer (norm + in_proj; conv window shift + conv + SiLU + x_proj; dt_proj + softplus +
 * selective-state update + D skip + SiLU(z) gate; out_proj) plus norm_f + lm_head; for
 * n_seq <= MB_CUDA_GEN_GEMV_MAX_SEQ the products are our own bandwidth-bound matrix-vector
 * kernels. For n_seq <= 4 (MBP_MAX_SEQ) the whole step is by default ONE persistent kernel
 * (src/cuda/decode_persist.h: one block per multiprocessor, 2 grid barriers per layer, weights
 * streamed into shared memory ahead of the barriers); env MB_CUDA_GEN_PERSIST=0 (read by
 * mb_cuda_gen_create) selects the 4-kernels-per-layer path described above instead, which also
 * serves shapes the persistent kernel does not cover (odd d_model, too little shared memory).
 * Above it (the batched path) a layer is a norm (+ residual) kernel, the in_proj GEMM,
 * a conv + SiLU + x_proj kernel, a partial-sum + dt_proj + state-update + gate kernel and the
 * out_proj GEMM, the GEMMs through cuBLAS (bf16 = 1: bf16 weights and bf16 GEMM inputs with fp32
 * accumulation, as mamba_ssm in bf16; else fp32 SGEMM), the small kernels serving several
 * sequences per block. The step, with the sampler appended, is captured
 * once in a CUDA graph and replayed per byte: the sampled byte is written into the device
 * buffer that is the next step's input and into a pinned, mapped host ring buffer.
 *
 * Sampling: temperature 0 = argmax (lowest index among equal maxima, NaN never wins unless
 * every logit is NaN); else softmax(logits / T) restricted by top-k then top-p and an
 * inverse-CDF draw as mb_sample, with a counter-based generator: the uniform of sequence s at
 * its i-th sample is a splitmix64 hash of (seed, i, s), so the same seed gives the same bytes.
 * (It is not the CPU's xoshiro stream: at T > 0 the bytes differ from the CPU's.)
 *
 * Errors: 0 or a negative MB_E* code with mb_fail() (MB_EIO: no device / CUDA failure with its
 * message; MB_ENOMEM: device or pinned memory exhausted, naming the size; MB_EINVAL: bad
 * arguments). Nothing aborts.
 */
#ifndef MB_CUDA_STEP_CUDA_H
#define MB_CUDA_STEP_CUDA_H

#include <stdint.h>

#include "mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest batch served by the matrix-vector kernels; larger batches take the batched path. */
#define MB_CUDA_GEN_GEMV_MAX_SEQ 4
/* Largest n_seq of a generator. */
#define MB_CUDA_GEN_MAX_SEQ 256

typedef struct mb_cuda_gen mb_cuda_gen;

/* Create a generator for n_seq (1..MB_CUDA_GEN_MAX_SEQ) sequences. m: host model whose
 * weights are uploaded, or NULL to fill the device weights with random values of the init's
 * scale (benchmarks; cfg must then be given). cfg: used only when m is NULL. bf16: 1 = the
 * products read bf16 copies of in_proj / out_proj / lm_head (fp32 accumulate; above
 * MB_CUDA_GEN_GEMV_MAX_SEQ their inputs are rounded to bf16 too).
 * The state starts at zero, the sampler at argmax. */
int mb_cuda_gen_create(mb_cuda_gen **out, const mb_model *m, const mb_config *cfg, int64_t n_seq,
                       int bf16);
void mb_cuda_gen_free(mb_cuda_gen *g);

/* Zero the recurrent state of every sequence. */
int mb_cuda_gen_reset(mb_cuda_gen *g);
/* use_graph = 1 (default): steps replay the captured CUDA graphs; 0: plain launches. */
int mb_cuda_gen_use_graph(mb_cuda_gen *g, int use_graph);

/* One step for every sequence: bytes (n_seq) host; logits (n_seq, 256) host or NULL (then the
 * call does not wait for the GPU). Equals mb_step. */
int mb_cuda_gen_step(mb_cuda_gen *g, const uint8_t *bytes, float *logits);

/* Run a prompt: bytes (n_seq, L) host, L >= 1, continuing from the current state. Prompts of
 * more than 16 bytes go through the parallel forward (src/cuda/prefill_cuda.h: ~100x faster
 * than stepping at 353m; it keeps a second, fp32 copy of the weights and an activation
 * workspace on the device from the first long prompt on) for all but their last byte; that
 * byte, and every byte of shorter prompts (or all with MB_CUDA_GEN_PREFILL=step, or when the
 * prefill's memory cannot be allocated), through the recurrent step. Leaves the state after
 * the last prompt byte and its logits on the device for mb_cuda_gen_generate. On a failure
 * the state may be part-way through the prompt (mb_cuda_gen_reset starts over). */
int mb_cuda_gen_prefill(mb_cuda_gen *g, const uint8_t *bytes, int64_t L);

/* Sampler settings (checked as mb_sampler_check) and seed; resets the sample counters. */
int mb_cuda_gen_sampler(mb_cuda_gen *g, float temperature, int top_k, float top_p, uint64_t seed);

/* Generate n bytes per sequence from the logits of the last step / prefill: sample, then
 * replay the (step + sample) graph n - 1 times (after an earlier mb_cuda_gen_generate, the
 * stream continues: its last byte is stepped first, then n replays). out (n, n_seq) host or NULL.
 * emit (may be NULL) is called in order for each step i with the n_seq bytes of that step, as soon
 * as the GPU has produced them (the host runs up to 32 steps ahead of the printing).
 * MB_ENONFINITE, before the bytes of the first step whose logits held a NaN or inf in any
 * sequence are emitted (weights that overflow in the forward pass; those bytes would be noise). */
int mb_cuda_gen_generate(mb_cuda_gen *g, int64_t n, uint8_t *out,
                         int (*emit)(void *user, const uint8_t *bytes, int64_t i), void *user);

/* Blocks of the persistent step kernel this generator uses, or 0 when it uses the per-layer
 * kernels (batch > 4, MB_CUDA_GEN_PERSIST=0, or a shape the kernel does not cover). */
int mb_cuda_gen_persistent(const mb_cuda_gen *g);

/* How the persistent step kernel runs (for tests and benchmarks): bit 0 set when its blocks
 * pass y and hidden as LL words (else plain floats and grid barriers), bit 1 when every copy
 * segment is a bulk copy (the compute threads skip their walk), bit 2 when each block keeps
 * its conv windows in shared memory, bit 3 when the weight rows stream through its ring of
 * slots (decode_persist.h, a.ring), bit 4 when its producer warp paces the copies (a.pace_cyc),
 * bit 5 when the norms are folded into in_proj (a.fold). 0 without the kernel. */
int mb_cuda_gen_persist_mode(const mb_cuda_gen *g);

/* Phase profile of the persistent kernel, when env MB_CUDA_GEN_PERSIST_PROF=1 was set at
 * create: copies up to n of its MBP_PROF (src/cuda/decode_persist.h) cycle sums into out
 * (may be NULL), zeroes them when reset; with =2 every block's (blocks x MBP_PROF, block-major).
 * Returns the number of slots copied, 0 without a profile, or a negative MB_E* code. */
int mb_cuda_gen_profile(mb_cuda_gen *g, unsigned long long *out, int n, int reset);

/* Bytes of weights one step reads (every tensor of every layer once, one embedding row per
 * sequence, lm_head), as the kernels this generator uses store them. */
int64_t mb_cuda_gen_weight_bytes(const mb_cuda_gen *g);

#ifdef __cplusplus
}
#endif
#endif
