#!/usr/bin/env python3
"""Fails when a KILN_API function of capi/kiln.h is not reachable from a language binding.

Two levels are checked per language:
  raw      the binding's low-level layer declares/wraps the function (for Python, the built SWIG
           module is imported and must have the attribute; for Go and C#, the SWIG-generated
           sources are parsed; for Rust, the bindgen output);
  wrapper  the idiomatic layer calls it (a function no idiomatic API reaches is unreachable for
           ordinary users of that language).
Usage: check_coverage.py --header capi/kiln.h LANGUAGE [--python-path DIR] [--go-raw DIR]
                         [--csharp-raw DIR]
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import sys

BINDINGS = pathlib.Path(__file__).resolve().parent


def header_functions(header: pathlib.Path) -> set[str]:
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    return set(re.findall(r"\bKILN_API\b[^;(]*?\b(kiln_\w+)\s*\(", text))


def names_in(files: list[pathlib.Path], pattern: str) -> set[str]:
    found: set[str] = set()
    for f in files:
        found |= set(re.findall(pattern, f.read_text()))
    return found


def exported(name: str) -> str:
    """kiln_x from SWIG's exported spelling Kiln_x (Go)."""
    return name[0].lower() + name[1:]


def python_raw(args: argparse.Namespace) -> set[str]:
    sys.path.insert(0, args.python_path)
    module = importlib.import_module("kiln.kiln_c")
    return {name for name in dir(module) if name.startswith("kiln_")}


def layers(language: str, args: argparse.Namespace) -> tuple[set[str], set[str]]:
    if language == "python":
        wrapper = sorted((BINDINGS / "python" / "kiln").glob("*.py"))
        return python_raw(args), names_in(wrapper, r"\bc\.(kiln_\w+)\s*\(")
    if language == "rust":
        raw = [BINDINGS / "rust" / "kiln-sys" / "src" / "bindings.rs"]
        wrapper = sorted((BINDINGS / "rust" / "kiln" / "src").glob("*.rs"))
        return names_in(raw, r"\bpub fn (kiln_\w+)\s*\("), names_in(wrapper, r"\bsys::(kiln_\w+)\s*\(")
    if language == "go":
        # The raw layer is the cgo file SWIG generates from kiln.i (package kiln.dev/kiln/raw):
        # one exported Go function per C function, kiln_x becoming Kiln_x.
        generated = pathlib.Path(args.go_raw) / "kiln_c.go"
        if not generated.is_file():
            raise SystemExit(f"FAIL: {generated} does not exist (run SWIG: bindings/go/generate-raw.sh)")
        raw = {exported(n) for n in names_in([generated], r"(?m)^func (Kiln_\w+)\s*\(")}
        files = [f for f in sorted((BINDINGS / "go").glob("*.go")) if not f.name.endswith("_test.go")]
        wrapper = {exported(n) for n in names_in(files, r"\braw\.(Kiln_\w+)\s*\(")}
        return raw, wrapper
    if language == "csharp":
        # The raw layer is the module class SWIG generates from kiln.i (Kiln.Raw.kiln_c): one
        # static method per C function, each P/Invoking its wrapper in libkiln_csharp.so.
        generated = pathlib.Path(args.csharp_raw) / "kiln_c.cs"
        if not generated.is_file():
            raise SystemExit(f"FAIL: {generated} does not exist (run SWIG: see bindings/csharp/CMakeLists.txt)")
        raw = names_in([generated], r"(?m)^\s*public static [\w.]+(?:\[\])? (kiln_\w+)\s*\(")
        files = sorted((BINDINGS / "csharp" / "src").glob("*.cs"))
        wrapper = names_in(files, r"\bkiln_c\.(kiln_\w+)\s*\(")
        return raw, wrapper
    raise SystemExit(f"unknown language {language!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", required=True, type=pathlib.Path)
    parser.add_argument("language", choices=["python", "rust", "go", "csharp"])
    parser.add_argument("--python-path", default=str(BINDINGS / "python"))
    parser.add_argument("--go-raw", default=str(BINDINGS / "go" / "raw"),
                        help="directory of the SWIG-generated Go package kiln.dev/kiln/raw")
    parser.add_argument("--csharp-raw", default=str(BINDINGS / "csharp" / "raw"),
                        help="directory of the SWIG-generated C# sources (namespace Kiln.Raw)")
    parser.add_argument("--expect-missing", metavar="NAME",
                        help="self-test: pretend kiln.h also declares NAME; pass only when exactly "
                             "NAME is reported missing from both layers (proves the check can fail)")
    args = parser.parse_args()

    wanted = header_functions(args.header)
    if args.expect_missing:
        wanted.add(args.expect_missing)
    if len(wanted) < 10:
        print(f"FAIL: found only {len(wanted)} KILN_API functions in {args.header}; parser broken?")
        return 1
    raw, wrapper = layers(args.language, args)
    missing_raw = sorted(wanted - raw)
    missing_wrapper = sorted(wanted - wrapper)
    print(f"{args.language}: {len(wanted)} KILN_API functions in {args.header.name}; "
          f"raw layer reaches {len(wanted & raw)}, idiomatic layer calls {len(wanted & wrapper)}")
    for name in missing_raw:
        print(f"FAIL: {name} is not in the {args.language} raw binding")
    for name in missing_wrapper:
        print(f"FAIL: {name} is not called by the {args.language} idiomatic layer")
    if args.expect_missing:
        caught = missing_raw == [args.expect_missing] and missing_wrapper == [args.expect_missing]
        print(f"self-test: the check {'reports' if caught else 'does NOT report exactly'} "
              f"{args.expect_missing} as missing")
        return 0 if caught else 1
    return 1 if missing_raw or missing_wrapper else 0


if __name__ == "__main__":
    sys.exit(main())
