#!/usr/bin/env bash
# On the GPU machine, build-free: unpacks the CUDA build made by pack_cuda_build.sh, runs the CUDA
# test binaries (kernels, executor, HF parity; compute-sanitizer memcheck on the kernel tests) and
# the benchmark — kiln's CUDA backend (kiln-bench pp512/tg128) next to HF transformers BF16 on the
# same GPU in the same run — on the Qwen2.5-0.5B-shaped model, then prints a table with ratios
# and the memory-bound decode limit. Logs go to $OUT (or ./gpu-out).
#
# usage: [SKIP_SANITIZERS=1] [SKIP_BENCH=1] run_gpu_checks.sh ARCHIVE [BUILD_SOURCE_DIR]
#   (the two switches split the checks over several device calls when time is short)
#   ARCHIVE           cuda-build.tar.xz from pack_cuda_build.sh
#   BUILD_SOURCE_DIR  the source path the binaries were built from (their fixture paths point
#                     there); linked to this checkout when it does not exist here
set -uo pipefail
root=$(pwd)
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
archive=$1
build_src=${2:-/work/wt-cuda}
work=/tmp/kiln-gpu
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$archive"
pack=$work/cuda-build
if [ ! -e "$build_src/tests/fixtures" ]; then
  mkdir -p "$(dirname "$build_src")" && ln -sfn "$root" "$build_src"
fi

torch_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "*", "lib")))))' 2>/dev/null)
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${torch_libs}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
if ldd "$pack"/bin/* | grep "not found"; then echo "missing libraries (above)"; fi

status=0
for t in cuda_kernels_test cuda_attention_prefill_test cuda_model_test cuda_hf_parity_test \
    cuda_quant_test cuda_quant_model_test cuda_gguf_test cuda_sampling_test \
    cuda_device_sampling_test cuda_tensor_parallel_test; do
  echo "=== $t"
  "$pack/bin/$t" --gtest_output="xml:$out/$t.xml" > "$out/$t.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |differ between device|^device sampler|^\[ parity|^\[ (gguf|quant|int8)|^\[  FAILED|^\[prefill attention|^  tokens|worst relative L2" \
    "$out/$t.log" | head -120
done
if [ "${SKIP_SANITIZERS:-0}" != 1 ]; then
echo "=== compute-sanitizer memcheck: cuda_kernels_test"
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$pack/bin/cuda_kernels_test" \
  > "$out/memcheck.log" 2>&1
echo "memcheck exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/memcheck.log") clean summaries)"
tail -2 "$out/memcheck.log"
echo "=== compute-sanitizer memcheck: cuda_attention_prefill_test (correctness tests)"
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 \
  "$pack/bin/cuda_attention_prefill_test" --gtest_filter='-*Timing*' > "$out/memcheck_prefill.log" 2>&1
echo "memcheck exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/memcheck_prefill.log") clean summaries)"
tail -2 "$out/memcheck_prefill.log"
echo "=== compute-sanitizer memcheck + racecheck: cuda_quant_test (integer-path GEMVs)"
# The integer path reads Q8_0 / legacy blocks as aligned words reaching up to 2 bytes before a
# block (never past a matrix's end) and stages x in shared memory: both checked here.
for tool in memcheck racecheck; do
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 "$pack/bin/cuda_quant_test" \
    --gtest_filter='*Int8*' > "$out/${tool}_quant.log" 2>&1
  echo "$tool exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/${tool}_quant.log") clean summaries)"
  tail -2 "$out/${tool}_quant.log"
done
echo "=== compute-sanitizer racecheck: cuda_attention_prefill_test (block sizes / head dims)"
timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 \
  "$pack/bin/cuda_attention_prefill_test" --gtest_filter='*EveryBlockSize*' > "$out/racecheck_prefill.log" 2>&1
echo "racecheck exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/racecheck_prefill.log") clean summaries)"
tail -2 "$out/racecheck_prefill.log"

echo "=== compute-sanitizer memcheck + racecheck: the fused decode attention (staged and generic scans)"
for tool in memcheck racecheck; do
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 "$pack/bin/cuda_kernels_test" \
    --gtest_filter='*FusedDecodeAttention*' > "$out/${tool}_decode_attention.log" 2>&1
  echo "$tool exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/${tool}_decode_attention.log") clean summaries)"
done
echo "=== compute-sanitizer memcheck + racecheck: a short kiln-generate on the GPU (bundled model)"
for tool in memcheck racecheck; do
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 "$pack/bin/kiln-generate" \
    --backend cuda -m "$root/models/kjv-tiny" -n 24 --seed 1 > "$out/${tool}_generate.log" 2>&1
  echo "$tool exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/${tool}_generate.log") clean summaries)"
done

echo "=== compute-sanitizer memcheck + racecheck: cuda_sampling_test (the small cases)"
for tool in memcheck racecheck; do
  timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 "$pack/bin/cuda_sampling_test" \
    --gtest_filter='*GivenDraws*:*AllNaN*' > "$out/${tool}_sampling.log" 2>&1
  echo "$tool exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/${tool}_sampling.log") clean summaries)"
done

fi  # SKIP_SANITIZERS
[ "${SKIP_BENCH:-0}" = 1 ] && exit $status

echo "=== benchmark: Qwen2.5-0.5B shape (bench_shape.sh: kiln-bench and HF transformers in one table)"
bash "$here/bench_shape.sh" "$archive" 05b 2>&1 | tee "$out/bench.log"
# Per-kernel times of a decode step and a prefill: tools/gpu/profile_kernels.sh.
exit $status
