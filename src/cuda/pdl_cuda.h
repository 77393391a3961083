/* Programmatic dependent launch (sm_90), device side, for kernels launched with
 * cudaLaunchAttributeProgrammaticStreamSerialization (src/cuda/step_cuda.cu,
 * src/cuda/gemm_decode_cuda.cu). */
#ifndef MB_CUDA_PDL_CUDA_H
#define MB_CUDA_PDL_CUDA_H

/* Programmatic dependent launch (sm_90): a kernel launched with the programmatic-serialization
 * attribute may start while its predecessor runs; before pdl_wait it reads only weights (never
 * written during a step), pdl_wait waits for the predecessor's completion and memory, and only
 * after it does pdl_launch let the next kernel start (so at most the predecessor is still
 * running during the pre-wait part). Both are no-ops for a kernel launched without it. */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#endif
