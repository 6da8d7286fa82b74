"""Loads the SWIG-generated native module and checks that it matches the libkiln it found.

Library discovery: the native module links libkiln.so through its rpath (build tree or install
prefix). KILN_PREFIX=/some/prefix makes it use $KILN_PREFIX/lib*/libkiln.so instead: the library is
loaded first by path, and the dynamic loader then reuses it for the module (it matches by soname).
"""

from __future__ import annotations

import ctypes
import glob
import os

_LIBDIRS = ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu")


def _preload_from_prefix() -> None:
    prefix = os.environ.get("KILN_PREFIX")
    if not prefix:
        return
    candidates = [
        path
        for libdir in _LIBDIRS
        for path in sorted(glob.glob(os.path.join(prefix, libdir, "libkiln.so*")))
    ]
    if not candidates:
        raise ImportError(
            f"kiln: KILN_PREFIX={prefix!r} holds no libkiln.so under "
            f"{', '.join(os.path.join(prefix, d) for d in _LIBDIRS)}"
        )
    ctypes.CDLL(candidates[0], mode=ctypes.RTLD_GLOBAL)


_preload_from_prefix()

try:
    from . import kiln_c as c  # noqa: E402  (the SWIG module over capi/kiln.h)
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        f"kiln: cannot load the native module or libkiln.so ({e}). Install kiln (its kiln.pc lists "
        "the library directory), or set KILN_PREFIX to the prefix kiln was installed to."
    ) from e

if c.kiln_abi_version() != c.KILN_ABI_VERSION:
    raise ImportError(
        f"kiln: libkiln.so has ABI version {c.kiln_abi_version()}, but these bindings were built "
        f"for ABI version {c.KILN_ABI_VERSION} (kiln.h); rebuild the bindings against this library"
    )
