# libFuzzer targets for the safetensors reader, the config.json parser and the checkpoint
# loader's cross-checks (tests/fuzz/).
# Included from the top-level CMakeLists.txt after the `mambabyte` library is defined.
# Enable with -DMB_FUZZ=ON and clang as the C compiler, e.g.
#   CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DMB_FUZZ=ON -DMB_CUDA=OFF
#   cmake --build build-fuzz --target fuzz_safetensors fuzz_config
#   build-fuzz/fuzz_safetensors -max_total_time=600 -dict=tests/fuzz/safetensors.dict \
#       build-fuzz/corpus_st tests/fuzz/corpus/safetensors
#   (fuzz_config likewise with tests/fuzz/config.dict and tests/fuzz/corpus/config)
# The library sources are compiled a second time with coverage instrumentation
# (-fsanitize=fuzzer-no-link) plus ASan and UBSan into mb_fuzz_lib, so the regular build is
# untouched. A short smoke run over the seed corpus is registered as the ctest `fuzz_smoke`.
option(MB_FUZZ "Build the libFuzzer targets (clang only)" OFF)
if(MB_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MB_FUZZ=ON needs clang as the C compiler (CC=clang); found "
                        "${CMAKE_C_COMPILER_ID}")
  endif()
  set(MB_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer -g -O1)
  add_library(mb_fuzz_lib STATIC ${MB_LIB_SOURCES})
  target_include_directories(mb_fuzz_lib PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src
                             PRIVATE ${CBLAS_INCLUDE_DIR})
  # Warnings stay on; -Werror is dropped so a clang-only warning elsewhere cannot stop fuzzing.
  target_compile_options(mb_fuzz_lib PRIVATE ${MB_FUZZ_FLAGS} -Wno-error)
  target_link_libraries(mb_fuzz_lib PUBLIC OpenMP::OpenMP_C PkgConfig::CJSON ${OPENBLAS_LIB} m)
  foreach(t fuzz_safetensors fuzz_config fuzz_checkpoint)
    add_executable(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    target_compile_options(${t} PRIVATE ${MB_FUZZ_FLAGS} -Wno-error)
    target_link_options(${t} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${t} PRIVATE mb_fuzz_lib)
  endforeach()
  if(MB_BUILD_TESTS)
    # Every seed must run clean (no crash, no leak); -runs=0 executes the corpus only.
    add_test(NAME fuzz_smoke_safetensors
             COMMAND fuzz_safetensors -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/safetensors)
    add_test(NAME fuzz_smoke_config
             COMMAND fuzz_config -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/config)
    add_test(NAME fuzz_smoke_checkpoint
             COMMAND fuzz_checkpoint -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/safetensors)
  endif()
endif()
