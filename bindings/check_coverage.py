#!/usr/bin/env python3
"""Fails when a KILN_API function of capi/kiln.h is not reachable from a language binding.

Two levels are checked per language:
  raw      the binding's low-level layer declares/wraps the function (for Python, the built SWIG
           module is imported and must have the attribute; for the others, the generated or
           hand-written FFI declarations are parsed);
  wrapper  the idiomatic layer calls it (a function no idiomatic API reaches is unreachable for
           ordinary users of that language).
Usage: check_coverage.py --header capi/kiln.h LANGUAGE [--python-path DIR]
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
        files = [f for f in sorted((BINDINGS / "go").glob("*.go")) if not f.name.endswith("_test.go")]
        # cgo calls the C declarations of kiln.h directly (from Go, or from the C trampoline file):
        # such a call is both layers at once.
        calls = names_in(files, r"\bC\.(kiln_\w+)\s*\(")
        calls |= names_in(sorted((BINDINGS / "go").glob("*.c")), r"\b(kiln_\w+)\s*\(")
        return calls, calls
    if language == "csharp":
        files = sorted((BINDINGS / "csharp" / "src").glob("*.cs"))
        raw = names_in(files, r"\bstatic extern\b[^;]*?\b(kiln_\w+)\s*\(")
        wrapper = names_in(files, r"\bNative\.(kiln_\w+)\s*\(")
        return raw, wrapper
    raise SystemExit(f"unknown language {language!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", required=True, type=pathlib.Path)
    parser.add_argument("language", choices=["python", "rust", "go", "csharp"])
    parser.add_argument("--python-path", default=str(BINDINGS / "python"))
    args = parser.parse_args()

    wanted = header_functions(args.header)
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
    return 1 if missing_raw or missing_wrapper else 0


if __name__ == "__main__":
    sys.exit(main())
