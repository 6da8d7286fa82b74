#!/usr/bin/env bash
# Sanitizer builds of kiln: CPU only, no bindings or samples, each in its own build directory.
#   tools/sanitize.sh asan [ctest args]  AddressSanitizer + UndefinedBehaviorSanitizer in
#                                        build-asan/; runs the unit and ABI tests (labels unit|abi)
#   tools/sanitize.sh tsan               ThreadSanitizer in build-tsan/; runs the concurrency tests
#                                        (tests/abi/concurrency_test.cpp)
# Any sanitizer report fails the run (non-zero exit). Prints the time of each step.
# -O1 -g: the tests run several times faster than at -O0, and reports keep file and line.
# -Wno-maybe-uninitialized: GCC 12 gives false positives in libstdc++'s <regex> when it
# optimises sanitized code; the main build keeps the warning.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-asan}
shift || true

step() {  # step NAME COMMAND...: runs and times one step
  local name=$1 t0=$SECONDS
  shift
  echo "-- $kind: $name"
  "$@"
  echo "-- $kind: $name took $((SECONDS - t0)) s"
}

configure() {  # configure BUILD_DIR SANITIZERS
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" \
    "-DCMAKE_C_FLAGS_DEBUG=-g -O1" -DCMAKE_CXX_FLAGS=-Wno-maybe-uninitialized -DKILN_CUDA=OFF \
    -DKILN_BUILD_BINDINGS=OFF -DKILN_BUILD_SAMPLES=OFF -DKILN_SANITIZE="$2" >/dev/null
}

case "$kind" in
  asan)
    step configure configure build-asan address,undefined
    step build cmake --build build-asan -j"$(nproc)"
    # detect_leaks: LSan reports anything still allocated at exit of each test process.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:check_initialization_order=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    step test ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -L 'unit|abi' "$@"
    ;;
  tsan)
    step configure configure build-tsan thread
    step build cmake --build build-tsan -j"$(nproc)" --target concurrency_test
    # One gtest process: the threads under test are the callers' (the test runs each kiln call
    # single-threaded under TSan, since libgomp's barriers are invisible to it).
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    step test build-tsan/tests/concurrency_test "$@"
    ;;
  *)
    echo "usage: tools/sanitize.sh asan|tsan [args]" >&2
    exit 2
    ;;
esac
