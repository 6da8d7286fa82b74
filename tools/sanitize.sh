#!/usr/bin/env bash
# Builds kiln with AddressSanitizer + UndefinedBehaviorSanitizer (Debug, CPU only, no bindings)
# in build-asan/ and runs the C++ test suite under it. Usage: tools/sanitize.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_CUDA=OFF -DKILN_BUILD_BINDINGS=OFF \
  -DKILN_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -E install "$@"
