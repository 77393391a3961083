#!/usr/bin/env bash
# Release build of the library and the mambabyte program into build/ (CPU; CUDA when nvcc is
# found). Usage: scripts/build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMB_SANITIZE=OFF -DMB_BUILD_TESTS=OFF "$@" >/dev/null
cmake --build build -j"$(nproc)" --target mambabyte_cli
