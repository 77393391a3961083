# Interoperability helpers and the Python-driven tests (issue 3). Included from the top-level
# CMakeLists.txt after the `mambabyte` library and the CLI are defined.
#   mb_dump_logits  ref/dump_logits.c: our logits for a checkpoint, for ref/hf_roundtrip.py
#   convert_pickle  ref/test_convert_pickle.py: tools/convert_pickle.py on a synthetic pickle of
#                   the released MambaByte layout, then `mambabyte info` and `eval` on it.
#                   Needs a python3 that imports torch (Debian python3-torch); exits 77 (skipped)
#                   where none does, as in CI.
add_executable(mb_dump_logits ${CMAKE_SOURCE_DIR}/ref/dump_logits.c)
target_include_directories(mb_dump_logits PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(mb_dump_logits PRIVATE mambabyte)

if(MB_BUILD_TESTS)
  # Debian's interpreter first: that is where python3-torch lives.
  find_program(MB_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT MB_PYTHON3)
    find_program(MB_PYTHON3 NAMES python3)
  endif()
  if(MB_PYTHON3)
    add_test(NAME convert_pickle
             COMMAND ${MB_PYTHON3} ${CMAKE_SOURCE_DIR}/ref/test_convert_pickle.py)
    set_tests_properties(convert_pickle PROPERTIES
      SKIP_RETURN_CODE 77 TIMEOUT 600
      ENVIRONMENT "MB_CLI=$<TARGET_FILE:mambabyte_cli>;MB_SOURCE_DIR=${CMAKE_SOURCE_DIR};OMP_NUM_THREADS=2")
  endif()
endif()
