#!/usr/bin/env bash
# Regenerates src/bindings.rs from capi/kiln.h with Debian's bindgen CLI. With --check it writes to a
# temporary file and fails when the checked-in bindings.rs differs (run by ctest when bindgen is
# installed), so a kiln.h change cannot land without its Rust declarations.
# Usage: generate-bindings.sh [--check]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
header="$here/../../../capi/kiln.h"
out="$here/src/bindings.rs"
target="$out"
if [ "${1:-}" = "--check" ]; then
  target="$(mktemp)"
  trap 'rm -f "$target"' EXIT
fi
# Enums become integer constants: a status a newer library returns is then a value, never an
# invalid Rust enum. size_t is usize.
bindgen "$header" \
  --allowlist-function 'kiln_.*' --allowlist-type 'kiln_.*' --allowlist-var 'KILN_.*' \
  --default-enum-style consts --no-prepend-enum-name --size_t-is-usize --no-doc-comments \
  -o "$target"
if [ "$target" != "$out" ]; then
  if ! diff -u "$out" "$target"; then
    echo "FAIL: $out is stale: run $0 to regenerate it from kiln.h" >&2
    exit 1
  fi
  echo "bindings.rs matches kiln.h"
fi
