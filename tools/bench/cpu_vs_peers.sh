#!/usr/bin/env bash
# Runs on the GPU machine's CPU (the GPU is not used): kiln-bench vs HF transformers (float32, same
# threads) on the Qwen2.5-0.5B-shaped model of shared/peers.md, in one run.
# Expects .gpucarry/cpu-bench.tar.xz (kiln's samples + libkiln.so + its dependencies), made by
# tools/bench/pack_build.sh on the build machine and carried to the GPU machine.
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
threads=${THREADS:-16}
[ -d build-bench ] || tar -xJf .gpucarry/cpu-bench.tar.xz
export LD_LIBRARY_PATH=$PWD/build-bench/lib:${LD_LIBRARY_PATH:-}
export CUDA_VISIBLE_DEVICES=""
model=/tmp/qwen05b
python3 tools/bench/make_qwen05b_shape.py "$model"
nproc; lscpu | grep -E "Model name|Flags" | cut -c1-200
echo "== kiln (CPU, $threads threads)"
build-bench/bin/kiln-bench -m "$model" -p 512 -n 64 -r 3 -t "$threads" | tee "$out/kiln_cpu.txt"
echo "== HF transformers (CPU float32, $threads threads)"
python3 tools/bench/hf_cpu_peer.py "$model" 512 64 "$threads" | tee "$out/hf_cpu.txt"
