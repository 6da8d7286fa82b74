#!/usr/bin/env bash
# Builds kiln's samples here (Release) and packs them with the shared libraries they need into
# build-bench/ (and .gpucarry/cpu-bench.tar.xz), so the GPU machine (which cannot install packages) can run them.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKILN_BUILD_TESTS=OFF -DKILN_CUDA=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target kiln-bench kiln-generate kiln-logits kiln-train
rm -rf build-bench && mkdir -p build-bench/bin build-bench/lib
cp build-release/bin/kiln-* build-bench/bin/
cp -L build-release/libkiln.so.0 build-bench/lib/
for lib in $(ldd build-release/libkiln.so | awk '/=> \// {print $3}' | grep -E "openblas|gfortran|quadmath|pcre2|utf8proc|simdjson|gomp|blas|lapack"); do
  cp -L "$lib" build-bench/lib/
done
# Debian's libopenblas is reached through the alternatives symlink: copy the real files too.
# The GPU machine receives the repo's working tree (64 MiB at most): carry it compressed.
mkdir -p .gpucarry
tar -cJf .gpucarry/cpu-bench.tar.xz build-bench
du -sh build-bench .gpucarry/cpu-bench.tar.xz
