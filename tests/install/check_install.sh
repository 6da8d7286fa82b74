#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds two consumers against the installed
# files only: a C program through pkg-config (kiln.pc) and a CMake project through
# find_package(kiln). Both run and must load the bundled model.
# usage: check_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/kiln.h"
libdir=$(ls -d "$work"/prefix/lib*/ | head -n1)
test -f "$libdir/libkiln.so"
test -f "$libdir/libkiln.a"
test -f "$libdir/pkgconfig/kiln.pc"
test -f "$libdir/cmake/kiln/kilnConfig.cmake"

# 1. pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c99 -Wall -Wextra -Werror -o "$work/pc_consumer" "$src/tests/install/consumer/main.c" \
  $(pkg-config --cflags --libs kiln) -Wl,-rpath,"$libdir"
"$work/pc_consumer" "$src/models/kjv-tiny"

# 2. find_package(kiln)
cmake -S "$src/tests/install/consumer" -B "$work/cm" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cm" >/dev/null
"$work/cm/kiln_consumer" "$src/models/kjv-tiny"
echo "install check passed"
