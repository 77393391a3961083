/* Kernel time by category and phase for the GPU model (a lab instrument, off by default):
 * with MB_CUDA_PROFILE=1 in the environment, model_cuda.cu brackets each kernel / cuBLAS call
 * with CUDA events; after each synchronisation the elapsed times are added up per (category,
 * phase), and a table (ms per step, share of the total) is printed to stderr at exit. Off, it
 * costs one branch per call. Not thread-safe (one model per process). */
#ifndef MB_CUDA_PROFILE_CUDA_H
#define MB_CUDA_PROFILE_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    MB_PROF_GEMM,
    MB_PROF_SCAN_FWD,
    MB_PROF_SCAN_BWD,
    MB_PROF_CONV,
    MB_PROF_NORM,
    MB_PROF_SOFTPLUS,
    MB_PROF_CVT,
    MB_PROF_LOSS,
    MB_PROF_EMBED,
    MB_PROF_OPT,
    MB_PROF_COPY,
    MB_PROF_N
};
enum { MB_PHASE_FWD, MB_PHASE_RECOMPUTE, MB_PHASE_BWD, MB_PHASE_OPT, MB_PHASE_N };

int mb_prof_on(void);
void mb_prof_phase(int phase);
/* Event slot for a call about to be launched on stream (-1 when off or full). */
int mb_prof_begin(int category, void *stream);
void mb_prof_end(int slot, void *stream);
/* After the stream has been synchronised: add the recorded times to the step in progress;
 * count_step = 1 ends a training step (after the optimizer) and commits it, skipping the first
 * MB_CUDA_PROFILE_SKIP steps; times never committed (evaluation) are dropped. */
void mb_prof_collect(int count_step);

#ifdef __cplusplus
}
#endif
#endif
