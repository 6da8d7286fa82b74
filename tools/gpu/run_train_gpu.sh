#!/usr/bin/env bash
# On the GPU machine, build-free: unpacks the CUDA build made by pack_cuda_build.sh and runs the
# CUDA training checks — the training kernels' tests, Muon's (cuda_train_muon_test), the attention
# kernels' tests, the trainer's tests (PyTorch curves and gradients, resume, masks, OOM, MTP,
# Muon vs the CPU trainer), the kernels' bandwidth report at GPT-2 shapes, the time Muon adds to
# a GPT-2 step — then the attention peer
# (torch SDPA at the same shapes, when tools/bench/attention_torch_peer.py exists) and the GPT-2
# 124M training benchmark against PyTorch eager and torch.compile. Logs go to $OUT (or ./gpu-out);
# a summary is printed at the end.
#
# usage: run_train_gpu.sh ARCHIVE [BUILD_SOURCE_DIR]
#   ARCHIVE           cuda-build.tar.xz from pack_cuda_build.sh
#   BUILD_SOURCE_DIR  the source path the binaries were built from (their fixture paths point
#                     there); linked to this checkout when it does not exist here
set -uo pipefail
root=$(pwd)
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
archive=$1
build_src=${2:-/work/wt-ctrain}
work=/tmp/kiln-gpu-train
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
for t in cuda_train_kernels_test cuda_train_muon_test cuda_train_attention_test cuda_train_test; do
  echo "=== $t"
  if [ ! -x "$pack/bin/$t" ]; then echo "$t is not in the pack"; status=1; continue; fi
  timeout 300 "$pack/bin/$t" --gtest_output="xml:$out/$t.xml" > "$out/$t.log" 2>&1 || status=1
  # Failures first (with their messages), then the diagnostics lines the tests print.
  grep -E "^\[  FAILED|Failure|error|Expected|Which is|relative|vs PyTorch|vs CPU|GPU " "$out/$t.log" | head -60
  grep -E "^\[ (parity|grads|oom|attention bench|newton-schulz|muon)|^\[  PASSED|^\[  SKIPPED" "$out/$t.log" | head -40
  tail -3 "$out/$t.log"
done

if [ -f "$root/tools/bench/attention_torch_peer.py" ]; then
  echo "=== attention peer (torch SDPA)"
  PYTHONUNBUFFERED=1 timeout 120 python3 "$root/tools/bench/attention_torch_peer.py" 2>&1 |
    grep -v Warning | tee "$out/attention_peer.log"
fi

echo "=== training kernels at GPT-2 124M shapes (bandwidth report)"
timeout 120 "$pack/bin/cuda_train_kernels_test" --gtest_also_run_disabled_tests \
  --gtest_filter='*Gpt2Shapes*' 2>&1 | grep -E "^  |training kernels" | tee "$out/train_kernels_bw.log"

echo "=== Muon's cost on a GPT-2 124M step (kiln-train-gpu-bench --muon, 5 + 10 steps each)"
timeout 200 "$pack/bin/kiln-train-gpu-bench" --muon 16 1024 5 10 2>&1 | tee "$out/train_bench_muon.log"

echo "=== training benchmark: GPT-2 124M, kiln vs PyTorch"
OUT="$out" "$root/tools/bench/train_gpu_vs_torch.sh" "$pack/bin" 2>&1 | tee "$out/train_bench.log"

echo "=== summary"
for t in cuda_train_kernels_test cuda_train_muon_test cuda_train_attention_test cuda_train_test; do
  printf '%-28s %s\n' "$t" "$(grep -E '^\[  (PASSED|FAILED) ' "$out/$t.log" 2>/dev/null | tr '\n' ' ')"
done
exit $status
