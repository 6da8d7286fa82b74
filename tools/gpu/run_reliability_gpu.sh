#!/usr/bin/env bash
# On the GPU machine, build-free: the GPU side of issue 9's concurrency and soak checks, in one call
# (every step has a time limit; the sanitizer run gets what is left of 285 s, so the whole call
# stays within 5 minutes on an H100).
#   1. tests/abi/concurrency_test on the CUDA backend (and the CPU one beside it): many threads x
#      sessions on one model checked against single-threaded runs, KILN_ERR_BUSY, cancel, model
#      freed under running sessions. The CUDA instances must run, not skip.
#   2. kiln-soak --backend cuda: 1,000 load/generate/free cycles on models/kjv-tiny with the KV cache
#      on and off; RSS and device memory at the start, after cycles 1 and 100 and at the end.
#   3. compute-sanitizer memcheck on a short CUDA concurrency run (the many-threads test and the
#      busy/cancel tests on the CUDA backend only).
# Then prints the figures for docs/reliability.md. Logs go to $OUT (or ./gpu-out).
#
# usage: run_reliability_gpu.sh ARCHIVE [BUILD_SOURCE_DIR]
#   ARCHIVE           cuda-build.tar.xz from pack_cuda_build.sh (it carries concurrency_test and
#                     kiln-soak)
#   BUILD_SOURCE_DIR  the source path the binaries were built from (their model paths point
#                     there); linked to this checkout when it does not exist here
set -uo pipefail
root=$(pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
archive=$1
build_src=${2:-/work/wt-cuda}
work=/tmp/kiln-gpu-rel
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$archive"
pack=$work/cuda-build
if [ ! -e "$build_src/models/kjv-tiny" ]; then
  mkdir -p "$(dirname "$build_src")" && ln -sfn "$root" "$build_src"
fi
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/gpu.txt"
for b in concurrency_test kiln-soak; do
  [ -x "$pack/bin/$b" ] || { echo "the pack has no $b: re-pack with tools/gpu/pack_cuda_build.sh"; exit 1; }
done
if ldd "$pack"/bin/* | grep "not found"; then echo "missing libraries (above)"; fi

status=0
t_all=$SECONDS

echo "=== 1. concurrency_test (CPU and CUDA backends)"
t0=$SECONDS
timeout 75 "$pack/bin/concurrency_test" --gtest_output="xml:$out/concurrency.xml" \
  > "$out/concurrency.log" 2>&1 || status=1
grep -E "^\[ +(OK|FAILED) |^\[concurrency\]|^\[  (PASSED|SKIPPED|FAILED)  \] [0-9]" \
  "$out/concurrency.log"
grep -m1 -A1 ": Skipped$" "$out/concurrency.log"  # the reason of the first skip, if any
cuda_ok=$(grep -cE '^\[       OK \] Backends/Concurrency\..*/cuda' "$out/concurrency.log")
echo "CUDA instances passed: $cuda_ok of 5 ($((SECONDS - t0)) s)"
if [ "$cuda_ok" -ne 5 ]; then
  echo "FAIL: the CUDA concurrency tests did not all run and pass (see $out/concurrency.log)"
  status=1
fi

echo "=== 2. kiln-soak --backend cuda, 1,000 cycles, models/kjv-tiny"
t0=$SECONDS
timeout 120 "$pack/bin/kiln-soak" --backend cuda --cycles 1000 -m "$root/models/kjv-tiny" \
  > "$out/soak_cuda.log" 2>&1 || status=1
grep -E "cycle +(1|100|1000) |at start|before cycle|near-ties|device memory:|PASS|FAIL|ERR" "$out/soak_cuda.log"
echo "($((SECONDS - t0)) s)"

echo "=== 3. compute-sanitizer memcheck: short CUDA concurrency run"
t0=$SECONDS
left=$((285 - (SECONDS - t_all)))
[ "$left" -gt 20 ] || left=20
timeout "$left" compute-sanitizer --tool memcheck --error-exitcode 9 "$pack/bin/concurrency_test" \
  --gtest_filter='Backends/Concurrency.ManySessions*/cuda:Backends/Concurrency.ASession*/cuda:Backends/Concurrency.CancelFromAnotherThreadStopsDecode*/cuda' \
  > "$out/memcheck_concurrency.log" 2>&1
mc=$?
echo "memcheck exit $mc ($((SECONDS - t0)) s; 124 = ran past its $left s limit)"
grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED)|^\[ +OK" "$out/memcheck_concurrency.log" | tail -6
[ "$mc" -eq 0 ] || status=1

echo "=== figures for docs/reliability.md ($((SECONDS - t_all)) s in all)"
grep -E "^kiln-soak: (RSS at start|device memory before|near-ties)" "$out/soak_cuda.log"
echo "exit status $status"
exit $status
