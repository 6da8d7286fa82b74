#!/usr/bin/env python3
"""Build the KJV training corpus used by kiln's bundled model and test fixtures.

Source: the King James Version (public domain) as shipped by the Debian
package `bible-kjv-text`; `bible -f Gen1:1-Rev22:21` prints one verse a line,
e.g. `Ge1:1 In the beginning God created the heaven and the earth.`

Output format (UTF-8, gzip'd, deterministic bytes):
  * the verse reference prefix (`Ge1:1 `) is stripped;
  * the verses of one chapter are joined with a single space into one line;
  * chapters are separated by a blank line ("\n\n"), in canonical book order
    (Genesis .. Revelation); the file ends with "\n".
So `text.strip("\n").split("\n\n")` yields the 1189 chapters.

Usage:  python3 models/kjv-tiny/prepare_corpus.py [--out .devcarry/kjv_chapters.txt.gz]
        (or --input FILE to read a saved `bible -f ...` dump instead of running `bible`)
"""
import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys

VERSE_RE = re.compile(r"^([0-9]?[A-Za-z]+)([0-9]+):([0-9]+) (.*)$")


def read_verses(input_path):
    if input_path:
        with open(input_path, encoding="utf-8") as f:
            raw = f.read()
    else:
        raw = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True,
                             capture_output=True, text=True).stdout
    verses = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        line = line.rstrip()
        if not line:
            continue
        m = VERSE_RE.match(line)
        if not m:
            sys.exit(f"line {lineno}: unexpected format: {line[:80]!r}")
        verses.append((m.group(1), int(m.group(2)), int(m.group(3)), m.group(4).strip()))
    return verses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".devcarry/kjv_chapters.txt.gz")
    ap.add_argument("--input", default=None, help="saved output of `bible -f Gen1:1-Rev22:21`")
    args = ap.parse_args()

    verses = read_verses(args.input)
    chapters = []
    key = None
    for book, chap, _verse, text in verses:
        if (book, chap) != key:
            chapters.append([])
            key = (book, chap)
        chapters[-1].append(text)
    body = "\n\n".join(" ".join(c) for c in chapters) + "\n"

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    buf = io.BytesIO()
    # mtime=0 and no file name: identical input gives identical bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(body.encode("utf-8"))
    with open(args.out, "wb") as f:
        f.write(buf.getvalue())
    print(f"{len(verses)} verses, {len(chapters)} chapters, {len(body)} chars, "
          f"sha256(text)={hashlib.sha256(body.encode('utf-8')).hexdigest()} -> {args.out}")


if __name__ == "__main__":
    main()
