#!/usr/bin/env bash
# Packs the CUDA build (build-gpu/: the CUDA test binaries and kiln-bench for run_gpu_checks.sh,
# concurrency_test and kiln-soak for run_reliability_gpu.sh, libkiln.so) with the non-CUDA shared
# libraries they need into one archive for the GPU machine, which cannot install packages. cuBLAS
# (hundreds of MB) is not carried: the GPU machine has it under its CUDA install.
# usage: tools/gpu/pack_cuda_build.sh DEST_DIR   (writes DEST_DIR/cuda-build.tar.xz)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=$(realpath "$1")
build=${BUILD:-build-gpu}  # a CUDA build directory (e.g. the CI run's build/)
stage=$(mktemp -d)
mkdir -p "$stage/cuda-build/bin" "$stage/cuda-build/lib" "$dest"
cp "$build"/tests/cuda_kernels_test "$build"/tests/cuda_model_test \
   "$build"/tests/cuda_hf_parity_test "$build"/bin/kiln-bench "$build"/tests/concurrency_test \
   "$build"/bin/kiln-soak "$stage/cuda-build/bin/"
cp -L "$build"/libkiln.so.0 "$stage/cuda-build/lib/"
for bin in "$stage"/cuda-build/bin/* "$build"/libkiln.so.0; do
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -E "openblas|gfortran|quadmath|pcre2|utf8proc|simdjson|gomp|gtest|cudart" |
  while read -r lib; do cp -L "$lib" "$stage/cuda-build/lib/"; done
tar -C "$stage" -cJf "$dest/cuda-build.tar.xz" cuda-build
rm -rf "$stage"
du -h "$dest/cuda-build.tar.xz"
