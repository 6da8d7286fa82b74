#!/bin/sh
# Generates the Go module kiln.dev/kiln/raw (SWIG's cgo package over kiln.h) into $1 (default
# ./raw). Used by `go generate` and by the CMake build (bindings/go/CMakeLists.txt).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/raw}
swig=${SWIG:-swig}
mkdir -p "$out"
"$swig" -go -cgo -intgosize 64 -package raw -I"$here/../../capi" -outdir "$out" \
  -o "$out/kiln_wrap.c" "$here/../kiln.i"
# The wrapper is compiled against the header it was generated from (cgo puts the package's own
# directory on the include path), so no CGO_CFLAGS is needed for kiln.h.
cp "$here/../../capi/kiln.h" "$out/kiln.h"
printf 'module kiln.dev/kiln/raw\n\ngo 1.19\n' > "$out/go.mod"
