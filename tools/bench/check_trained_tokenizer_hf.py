#!/usr/bin/env python3
"""Checks that a tokenizer trained by kiln is read by HF `tokenizers` exactly as kiln reads it
(issue 3, BPE training). Runs where HF `tokenizers` is installed (the GPU machine); the lead runs
it, nothing in CI does.

1. `kiln-tokenize train` trains on CORPUS (vocab --vocab, two special tokens) into a temp dir.
2. HF loads the tokenizer.json (`Tokenizer.from_file`) and encodes every line of the sample (the
   corpus's lines plus multilingual / emoji / code / whitespace lines written here) with
   add_special_tokens=False; kiln encodes the same lines (`kiln-tokenize bench --special
   --ids-out`). Every id must be equal, and HF's decode must give back each line.
3. The special tokens must encode to their ids in both.

usage: check_trained_tokenizer_hf.py --kiln-tokenize BIN --corpus FILE[.gz] [--vocab N]
       [--sample-lines N]
Exits 1 on any difference, printing the first few."""
import argparse
import array
import gzip
import json
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

EXTRA_LINES = [
    "Hello, world! It's a test: we'll see; they're here.",
    "Ünïcödé — naïve café, Straße, ÆØÅ, ĳ",
    "日本語のテキストと中文字符，한국어 문장。",
    "العربية עברית हिन्दी ไทย",
    "emoji 🙂🚀👩‍👩‍👧‍👦 🇫🇷 and flags",
    "    indented code(x, y) -> {return x*y;}  // comment",
    "tabs\tand\t\tmore\t\t\ttabs",
    "numbers 1234567890 3.14159 1e-10 0xDEADBEEF",
    "   ",
    "trailing spaces   ",
    "<|bos|>special tokens in text<|eos|>",
    "mixed\r\nline\rendings",
]


def read_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln-tokenize", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--sample-lines", type=int, default=50000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, "corpus.txt")
        text = read_text(args.corpus)
        with open(corpus_path, "w", encoding="utf-8") as f:
            f.write(text)
        out_dir = os.path.join(tmp, "trained")
        subprocess.run([args.kiln_tokenize, "train", "--vocab", str(args.vocab), "--out", out_dir,
                        "--special-token", "<|bos|>", "--special-token", "<|eos|>", "--quiet",
                        corpus_path], check=True)

        lines = text.split("\n")[: args.sample_lines] + EXTRA_LINES
        sample_path = os.path.join(tmp, "sample.txt")
        with open(sample_path, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines))
        ids_path = os.path.join(tmp, "kiln_ids.bin")
        subprocess.run([args.kiln_tokenize, "bench", "-t", out_dir, "--text", sample_path,
                        "--special", "--ids-out", ids_path], check=True, capture_output=True)
        flat = array.array("i")
        with open(ids_path, "rb") as f:
            flat.frombytes(f.read())
        kiln_lines, current = [], []
        for v in flat:
            if v == -1:
                kiln_lines.append(current)
                current = []
            else:
                current.append(v)

        hf = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
        # split("\n") in the sample file undoes the "\r\n" of the extra line only at '\n'; the
        # lines kiln saw are exactly sample.split("\n").
        seen = open(sample_path, encoding="utf-8", newline="").read().split("\n")
        mismatches = 0
        not_round_trip = 0
        for i, line in enumerate(seen):
            hf_ids = hf.encode(line, add_special_tokens=False).ids
            if i >= len(kiln_lines) or hf_ids != kiln_lines[i]:
                mismatches += 1
                if mismatches <= 5:
                    print(f"line {i}: {line[:80]!r}\n  hf   {hf_ids[:20]}\n  kiln {kiln_lines[i][:20] if i < len(kiln_lines) else None}")
            if "<|" not in line and hf.decode(hf_ids, skip_special_tokens=False) != line:
                not_round_trip += 1
        vocab = json.load(open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8"))
        n_vocab = hf.get_vocab_size(with_added_tokens=True)
        bos = hf.token_to_id("<|bos|>")
        print(json.dumps({
            "lines": len(seen), "mismatched_lines": mismatches, "hf_decode_not_round_trip": not_round_trip,
            "hf_vocab_size": n_vocab, "merges": len(vocab["model"]["merges"]),
            "bos_id": bos, "kiln_lines": len(kiln_lines),
        }))
        ok = mismatches == 0 and not_round_trip == 0 and len(kiln_lines) == len(seen) and bos == n_vocab - 2
        print("OK: HF tokenizers loads kiln's trained tokenizer.json and gives identical ids" if ok
              else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
