#!/usr/bin/env python3
"""Builds the mixed tokenizer benchmark corpus (issue 3): the whole KJV Bible (English prose,
`bible -f Gen1:1-Rev22:21` from Debian's bible-kjv) followed by the libstdc++ 12 headers
(/usr/include/c++/12, code), in sorted path order, stopping once the corpus reaches --min-mb.
Files that are not valid UTF-8 are skipped. Writes OUT (gzip when OUT ends in .gz)."""
import argparse
import gzip
import os
import subprocess


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--headers", default="/usr/include/c++/12")
    ap.add_argument("--min-mb", type=float, default=12.0)
    args = ap.parse_args()

    kjv = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True).stdout
    kjv.decode("utf-8")  # fail loudly if it is not UTF-8
    parts = [kjv]
    size = len(kjv)
    paths = []
    for root, _, files in os.walk(args.headers):
        paths += [os.path.join(root, f) for f in files]
    for path in sorted(paths):
        if size >= args.min_mb * 1e6:
            break
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        data = open(path, "rb").read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        parts.append(data)
        size += len(data)
    blob = b"".join(parts)
    opener = gzip.open if args.out.endswith(".gz") else open
    with opener(args.out, "wb") as f:
        f.write(blob)
    print(f"{args.out}: {len(blob)} bytes ({len(kjv)} KJV, {len(blob) - len(kjv)} C++ headers)")


if __name__ == "__main__":
    main()
