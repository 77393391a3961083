# The GPU selective scan's staged forward and v5 backward kernels (src/cuda/scan.cu), both lane
# layouts, compiled as host C++ and run block by block on the CPU by tests/cuda/scan_emu.cpp,
# against the CPU reference scan. CI has no GPU, so this is where the kernels' indexing, lane
# mappings and barriers are exercised there (a missing barrier shows up as a read of data not
# yet written). Needs a C++ compiler (Debian build-essential); skipped with a message without
# one.
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_executable(scan_emu ${CMAKE_SOURCE_DIR}/tests/cuda/scan_emu.cpp)
  target_compile_features(scan_emu PRIVATE cxx_std_17)
  target_include_directories(scan_emu PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(scan_emu PRIVATE mambabyte)
  if(MB_SANITIZE)
    # the kernels' own accesses checked too (a read or write one row past a sequence's end)
    target_compile_options(scan_emu PRIVATE -fsanitize=address,undefined
                                            -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  endif()
  add_test(NAME scan_emu COMMAND scan_emu)
  set_tests_properties(scan_emu PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 900)
else()
  message(STATUS "no C++ compiler: scan_emu (the GPU scan kernel emulated on the CPU) not built")
endif()
