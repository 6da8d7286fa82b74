#!/usr/bin/env bash
# Installs the Debian packages kiln builds with, when any is missing. Idempotent; no downloads
# besides apt. Usage: tools/install-deps.sh
set -euo pipefail
pkgs=(cmake make g++ pkg-config gzip binutils
      libgtest-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev libutf8proc-dev libsimdjson-dev
      flatbuffers-compiler libflatbuffers-dev
      # language bindings (bindings/README.md): Python, Go and C# through SWIG (C# on mono), Rust
      swig python3-dev python3-pip python3-setuptools python3-wheel
      cargo rustc bindgen golang-go mono-mcs mono-runtime
      # .ci/run's valgrind job (tools/valgrind-samples.sh)
      valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
