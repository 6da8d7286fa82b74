"""Builds kiln.kiln_c: runs SWIG on ../kiln.i and compiles the wrapper against libkiln.

libkiln is found through KILN_PREFIX (include/ and lib*/ under it), else pkg-config (kiln.pc); the
library directory becomes the extension's rpath. The build fails with a message naming both when
neither finds kiln.
"""

import os
import pathlib
import shlex
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
INTERFACE = HERE.parent / "kiln.i"


def find_kiln():
    prefix = os.environ.get("KILN_PREFIX")
    if prefix:
        for libdir in ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"):
            if (pathlib.Path(prefix) / libdir / "libkiln.so").exists():
                return [os.path.join(prefix, "include")], [os.path.join(prefix, libdir)]
        raise SystemExit(f"kiln: KILN_PREFIX={prefix} holds no lib*/libkiln.so")
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags-only-I", "kiln"], text=True)
        libdir = subprocess.check_output(["pkg-config", "--variable=libdir", "kiln"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("kiln: libkiln not found: install kiln (kiln.pc on PKG_CONFIG_PATH) or set KILN_PREFIX")
    return [flag[2:] for flag in shlex.split(cflags)], [libdir]


class SwigBuildExt(build_ext):
    """Generates the wrapper and the kiln_c.py proxy with SWIG, then compiles as usual."""

    def run(self):
        include_dirs, library_dirs = find_kiln()
        gen = pathlib.Path(self.build_temp) / "swig"
        gen.mkdir(parents=True, exist_ok=True)
        package_dir = pathlib.Path(self.build_lib) / "kiln"
        package_dir.mkdir(parents=True, exist_ok=True)
        wrapper = gen / "kiln_wrap.c"
        swig = ["swig", "-python", "-threads", *(f"-I{d}" for d in include_dirs),
                "-outdir", str(package_dir), "-o", str(wrapper), str(INTERFACE)]
        subprocess.check_call(swig)
        for ext in self.extensions:
            ext.sources = [str(wrapper)]
            ext.include_dirs += include_dirs
            ext.library_dirs += library_dirs
            ext.runtime_library_dirs += library_dirs
        super().run()


setup(
    ext_modules=[Extension("kiln._kiln_c", sources=[], libraries=["kiln"])],
    cmdclass={"build_ext": SwigBuildExt},
)
