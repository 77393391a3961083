# Optional CUDA backend (included by the root CMakeLists.txt when MB_CUDA is ON).
#
# Built only when a CUDA compiler is found; otherwise nothing here is defined and the CPU build
# is untouched. Produces:
#   mambabyte_cuda        static library from src/cuda/*.cu (extern "C" API, C-style CUDA)
#   test_scan_cuda        GPU scan vs the CPU reference (ctest label "gpu"; exits 77 = skipped
#                         when no CUDA device is present, so `ctest` stays green on CPU-only CI)
#   test_model_cuda       GPU model forward/backward/AdamW vs the CPU model (label "gpu", 77)
#   test_kernels_cuda     every model kernel (norm, conv1d, softplus, embedding, classifier,
#                         GEMMs, AdamW, norms) vs its CPU reference (label "gpu", 77)
#   bench_scan_cuda       selective-scan benchmark (not a test)
#   bench_kernels_cuda    norm and conv kernels against the copy rate (not a test)
#   test_step_cuda        GPU recurrent generation (step, graph, sampler) vs mb_step (label "gpu", 77)
#   bench_generate_cuda   generation throughput (bench/bench_generate_cuda.sh prints the table)
#   test_train_cuda       tests/cuda/test_train_cuda.sh: 200 training steps GPU vs CPU, checkpoints
#                         resumed across devices (label "gpu", 77 without a GPU)
#   test_plan_cuda        the training workspace's sizes and the activation planner (host
#                         arithmetic: runs without a GPU)
#   decode_emu            the persistent generation kernel emulated on the CPU vs mb_step (runs
#                         without a GPU)
# and links the mambabyte program with mambabyte_cuda (compile definition MB_HAVE_CUDA: the
# --device cuda backend of train/eval, src/train/backend.h).
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "mambabyte: no CUDA compiler found, CUDA backend disabled")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # sm_90 machine code for H100/H200 plus compute_90 PTX for newer GPUs.
  set(CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual")
endif()
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
message(STATUS "mambabyte: CUDA backend enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
               "architectures ${CMAKE_CUDA_ARCHITECTURES})")

# Host code warnings as errors (the C flags of the root file are restricted to C sources);
# device code: warnings as errors too.
set(MB_CUDA_FLAGS
    -Xcompiler=-Wall,-Wextra,-Werror
    -Werror=all-warnings
    --expt-relaxed-constexpr)

file(GLOB MB_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.cu)
add_library(mambabyte_cuda STATIC ${MB_CUDA_SOURCES})
target_include_directories(mambabyte_cuda PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
target_compile_options(mambabyte_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
target_link_libraries(mambabyte_cuda PUBLIC mambabyte CUDA::cudart CUDA::cublas CUDA::cublasLt)
set_target_properties(mambabyte_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                                                POSITION_INDEPENDENT_CODE ON)

# The program: train / eval --device cuda. Linked by the C compiler like the tests below.
if(TARGET mambabyte_cli)
  target_compile_definitions(mambabyte_cli PRIVATE MB_HAVE_CUDA=1)
  target_link_libraries(mambabyte_cli PRIVATE mambabyte_cuda)
  set_target_properties(mambabyte_cli PROPERTIES LINKER_LANGUAGE C)
endif()

if(MB_BUILD_TESTS)
  add_executable(test_scan_cuda ${CMAKE_SOURCE_DIR}/tests/cuda/test_scan_cuda.cu)
  target_compile_options(test_scan_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
  target_link_libraries(test_scan_cuda PRIVATE mambabyte_cuda)
  # Linked by the C compiler: the device code is already embedded (whole-program compilation),
  # and the root file's -fsanitize link flags then reach gcc, never nvcc.
  set_target_properties(test_scan_cuda PROPERTIES LINKER_LANGUAGE C)
  add_test(NAME test_scan_cuda COMMAND test_scan_cuda)
  set_tests_properties(test_scan_cuda PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77
                       ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 1200)

  foreach(t test_model_cuda test_kernels_cuda test_step_cuda)
    add_executable(${t} ${CMAKE_SOURCE_DIR}/tests/cuda/${t}.cu)
    target_compile_options(${t} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
    target_link_libraries(${t} PRIVATE mambabyte_cuda)
    set_target_properties(${t} PROPERTIES LINKER_LANGUAGE C)
    add_test(NAME ${t} COMMAND ${t})
    set_tests_properties(${t} PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77
                         ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 1200)
  endforeach()

  # The workspace sizes and the activation planner: host arithmetic in the CUDA library, run
  # without a GPU (so on CI too).
  add_executable(test_plan_cuda ${CMAKE_SOURCE_DIR}/tests/cuda/test_plan_cuda.c)
  target_link_libraries(test_plan_cuda PRIVATE mambabyte_cuda)
  set_target_properties(test_plan_cuda PROPERTIES LINKER_LANGUAGE C)
  add_test(NAME test_plan_cuda COMMAND test_plan_cuda)
  set_tests_properties(test_plan_cuda PROPERTIES
    ENVIRONMENT "ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0")

  # The CUDA runtime's allocations are reported by LeakSanitizer and its device mappings need the
  # ASan shadow gap unprotected, hence the ASAN_OPTIONS (no effect without -DMB_SANITIZE=ON).
  add_test(NAME test_train_cuda COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cuda/test_train_cuda.sh)
  set_tests_properties(test_train_cuda PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 1200
    ENVIRONMENT "MB_CLI=$<TARGET_FILE:mambabyte_cli>;OMP_NUM_THREADS=2;ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0")

  # The persistent generation kernel (src/cuda/decode_persist.cu) compiled as host C++ and run
  # on the CPU with every thread a fiber (tests/cuda/decode_emu.cpp), against mb_step: runs on
  # CI, which has the CUDA headers but no GPU. Needs the C++ compiler tests/cuda/emu.cmake
  # enables.
  if(TARGET scan_emu)
    add_executable(decode_emu ${CMAKE_SOURCE_DIR}/tests/cuda/decode_emu.cpp)
    target_compile_features(decode_emu PRIVATE cxx_std_17)
    target_include_directories(decode_emu PRIVATE ${CMAKE_SOURCE_DIR}/include
                               ${CMAKE_SOURCE_DIR}/src ${CUDAToolkit_INCLUDE_DIRS})
    target_link_libraries(decode_emu PRIVATE mambabyte)
    add_test(NAME decode_emu COMMAND decode_emu)
    # 1800 s: it took 559 s alone on a CI-like machine (2 cores) and 731 s beside the README's
    # main job, too close to the 900 s it had. Compiled with -O2 it took 527 s (149 s of them
    # system time: every fiber switch is a swapcontext), so optimizing it is not the remedy.
    set_tests_properties(decode_emu PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 1800)
  endif()
endif()

add_executable(bench_scan_cuda ${CMAKE_SOURCE_DIR}/bench/bench_scan_cuda.cu)
target_compile_options(bench_scan_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
target_link_libraries(bench_scan_cuda PRIVATE mambabyte_cuda)
set_target_properties(bench_scan_cuda PROPERTIES LINKER_LANGUAGE C)

add_executable(bench_kernels_cuda ${CMAKE_SOURCE_DIR}/bench/bench_kernels_cuda.cu)
target_compile_options(bench_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
target_link_libraries(bench_kernels_cuda PRIVATE mambabyte_cuda)
set_target_properties(bench_kernels_cuda PROPERTIES LINKER_LANGUAGE C)

add_executable(bench_generate_cuda ${CMAKE_SOURCE_DIR}/bench/bench_generate_cuda.cu)
target_compile_options(bench_generate_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${MB_CUDA_FLAGS}>)
target_link_libraries(bench_generate_cuda PRIVATE mambabyte_cuda)
set_target_properties(bench_generate_cuda PROPERTIES LINKER_LANGUAGE C)
