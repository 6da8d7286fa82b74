#!/usr/bin/env python3
"""Tokenizer speed, kiln vs HF `tokenizers`, in one run on one machine (issue 3).

Both encode the same corpus the same way: split on '\\n' (newline excluded), no BOS/EOS,
special-token text parsed (HF: encode(line, add_special_tokens=False); kiln: kiln-tokenize bench
--special). Single thread: one encode call per line. All threads: every line in one batch call
(HF: encode_batch; kiln: kiln_tokenizer_encode_batch, --threads 0 = all cores). Load time is the
time to build the tokenizer from tokenizer.json (kiln: kiln_tokenizer_load; HF:
Tokenizer.from_file). The ids must be identical everywhere: kiln writes its single-thread ids with
--ids-out (int32 per id, -1 after each line), compared line by line with HF's encode; kiln-tokenize
checks its batch ids against its single-thread ids, and HF's encode_batch ids are checked against
HF's encode.

usage: tokenizer_vs_hf.py --kiln-tokenize BIN --corpus mixed.txt[.gz] NAME=TOKENIZER_DIR ...
Prints a Markdown table and exits 1 when any id differs."""
import argparse
import array
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from tokenizers import Tokenizer
import tokenizers


def read_corpus(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def bench_kiln(binary, tok_dir, corpus_path, ids_path):
    out = subprocess.run([binary, "bench", "-t", tok_dir, "--text", corpus_path, "--special",
                          "--threads", "0", "--ids-out", ids_path], capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        sys.exit(f"kiln-tokenize bench failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_hf(tok_dir, lines, n_bytes):
    start = time.perf_counter()
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    encodings = [tok.encode(line, add_special_tokens=False) for line in lines]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = tok.encode_batch(lines, add_special_tokens=False)
    batch_s = time.perf_counter() - start
    ids = [e.ids for e in encodings]
    return {"load_s": load_s, "mb_per_s": n_bytes / 1e6 / single_s,
            "batch_mb_per_s": n_bytes / 1e6 / batch_s, "ids": ids,
            "batch_ids_identical": [e.ids for e in batch] == ids}


def compare(kiln_ids_path, hf_ids):
    flat = array.array("i")
    with open(kiln_ids_path, "rb") as f:
        flat.frombytes(f.read())
    line, pos = 0, 0
    for line, ids in enumerate(hf_ids):
        n = len(ids)
        if flat[pos:pos + n].tolist() != ids or pos + n >= len(flat) or flat[pos + n] != -1:
            return f"line {line}: kiln {flat[pos:pos + n + 1].tolist()[:20]} vs HF {ids[:20]}"
        pos += n + 1
    if pos != len(flat):
        return f"kiln wrote {len(flat) - pos} extra ids after line {line}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-tokenize", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("tokenizers", nargs="+", metavar="NAME=DIR")
    args = ap.parse_args()

    raw = read_corpus(args.corpus)
    text = raw.decode("utf-8")
    lines = text.split("\n")
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "corpus.txt")
        with open(plain, "wb") as f:
            f.write(raw)
        print(f"corpus: {len(raw) / 1e6:.2f} MB, {len(lines)} lines; HF tokenizers "
              f"{tokenizers.__version__}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}\n")
        print("| tokenizer | kiln load (s) | HF load (s) | kiln MB/s (1 thread) | "
              "HF MB/s (1 thread) | kiln / HF | kiln encode_batch MB/s (all threads) | "
              "HF encode_batch MB/s (all threads) | kiln / HF | ids |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        failed = False
        for spec in args.tokenizers:
            name, tok_dir = spec.split("=", 1)
            ids_path = os.path.join(tmp, name + ".ids")
            k = bench_kiln(args.kiln_tokenize, tok_dir, plain, ids_path)
            h = bench_hf(tok_dir, lines, len(raw))
            mismatch = compare(ids_path, h["ids"])
            if mismatch is None and not k["batch_ids_identical"]:
                mismatch = "kiln encode_batch differs from kiln's single-thread ids"
            if mismatch is None and not h["batch_ids_identical"]:
                mismatch = "HF encode_batch differs from HF's encode"
            failed |= mismatch is not None
            print(f"| {name} | {k['load_s']:.3f} | {h['load_s']:.3f} | {k['mb_per_s']:.2f} | "
                  f"{h['mb_per_s']:.2f} | {k['mb_per_s'] / h['mb_per_s']:.2f}x | "
                  f"{k['batch_mb_per_s']:.2f} | {h['batch_mb_per_s']:.2f} | "
                  f"{k['batch_mb_per_s'] / h['batch_mb_per_s']:.2f}x | "
                  f"{'identical' if mismatch is None else 'DIFFER'} |", flush=True)
            if mismatch:
                print(f"  {name}: first difference at {mismatch}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
