#!/usr/bin/env bash
# Packs the CUDA build (build-gpu/: every CUDA test binary, the concurrency and data-parallel
# tests, kiln-generate, kiln-bench,
# kiln-quantize, kiln-soak, kiln-train-gpu-bench, quant_gemv_variants, libkiln.so) with the non-CUDA shared libraries
# they need into one archive for the GPU machine, which cannot install packages. cuBLAS (hundreds
# of MB) is not carried: the GPU machine has it under its CUDA install. Binaries a build lacks are
# named and skipped, so older builds still pack. The scripts that use the pack: run_gpu_checks.sh
# (inference), run_quant_gpu.sh (quantised weights), run_train_gpu.sh (training),
# run_reliability_gpu.sh (concurrency, soak).
# usage: tools/gpu/pack_cuda_build.sh DEST_DIR   (writes DEST_DIR/cuda-build.tar.xz)
#   PACK_ONLY="cuda_train_test kiln-bench ..."  packs only these binaries (the device tool carries
#   at most 64 MiB with the tree, and each test binary holds its own copy of the kernels)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=$(realpath "$1")
build=${BUILD:-build-gpu}  # a CUDA build directory (e.g. the CI run's build/)
stage=$(mktemp -d)
mkdir -p "$stage/cuda-build/bin" "$stage/cuda-build/lib" "$dest"
for t in "$build"/tests/cuda_*_test tests/concurrency_test tests/data_parallel_test bin/kiln-generate bin/kiln-bench bin/kiln-quantize bin/kiln-train bin/kiln-tokenize \
         bin/kiln-soak bin/kiln-train-gpu-bench bin/quant_gemv_variants; do
  case $t in /*|"$build"/*) path=$t ;; *) path=$build/$t ;; esac
  if [ -n "${PACK_ONLY:-}" ] && [[ " $PACK_ONLY " != *" $(basename "$t") "* ]]; then continue; fi
  if [ -x "$path" ]; then cp "$path" "$stage/cuda-build/bin/"; else echo "not built: $t"; fi
done
cp -L "$build"/libkiln.so.0 "$stage/cuda-build/lib/"
for bin in "$stage"/cuda-build/bin/* "$build"/libkiln.so.0; do
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -E "openblas|gfortran|quadmath|pcre2|utf8proc|simdjson|gomp|gtest|cudart" |
  while read -r lib; do cp -L "$lib" "$stage/cuda-build/lib/"; done
# xz -9e: the test binaries (each with its own copy of the kernels) pack ~40 % smaller than at -6,
# which is what lets more of them travel in one device call.
XZ_OPT=${XZ_OPT:--9e} tar -C "$stage" -cJf "$dest/cuda-build.tar.xz" cuda-build
rm -rf "$stage"
du -h "$dest/cuda-build.tar.xz"
