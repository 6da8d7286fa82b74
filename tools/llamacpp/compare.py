#!/usr/bin/env python3
"""One kiln-written GGUF file, llama.cpp against kiln (tools/llamacpp/check_kiln_gguf.sh).

usage: compare.py NAME TYPE POSITIONS LLAMA_LOGITS KILN_LOGITS KILN_IDS.jsonl LLAMA_IDS
Logits files: float32 [POSITIONS][vocab]. KILN_IDS.jsonl: kiln-tokenize's {"id", "ids"} lines
with the HF tokenizer.json; LLAMA_IDS: one comma-separated line per text, in the same order.
Exits 1 when a bound is broken. Standard library only (CI has no numpy).
"""
import array
import json
import math
import sys

# Relative L2 bound and whether the top-1 token must agree at every position, per type; the
# measured differences are in check_kiln_gguf.sh's header. Quantised types only report the top-1
# agreement: llama.cpp's 8-bit activations can swap near-ties (kjv-tiny Q8_0: 11 of 12).
BOUNDS = {"f16": (3e-3, True), "q8_0": (3e-2, False), "q4_k_m": (5e-2, False)}


def floats(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def main(name, gguf_type, positions, llama_path, kiln_path, kiln_ids_path, llama_ids_path):
    ok = True
    positions = int(positions)
    llama, kiln = floats(llama_path), floats(kiln_path)
    if len(llama) != len(kiln) or not llama or len(kiln) % positions != 0:
        print(f"{name} {gguf_type}: logits sizes differ: llama.cpp {len(llama)}, kiln {len(kiln)}")
        return 1
    vocab = len(kiln) // positions
    diff = math.sqrt(sum((a - b) ** 2 for a, b in zip(llama, kiln)))
    norm = math.sqrt(sum(b * b for b in kiln))
    rel = diff / norm
    with open(kiln_ids_path) as f:
        kiln_ids = [json.loads(line)["ids"] for line in f if line.strip()]
    top_agree = 0
    for p in range(positions):
        row_l = llama[p * vocab:(p + 1) * vocab]
        row_k = kiln[p * vocab:(p + 1) * vocab]
        top_agree += max(range(vocab), key=row_l.__getitem__) == max(range(vocab), key=row_k.__getitem__)
    bound, need_top = BOUNDS[gguf_type]
    if not rel <= bound:
        ok = False
    if need_top and top_agree != positions:
        ok = False
    with open(llama_ids_path) as f:
        llama_ids = [[int(t) for t in line.strip().split(",") if t] for line in f]
    tok_ok = llama_ids == kiln_ids
    ok = ok and tok_ok
    print(f"{name} {gguf_type}: llama.cpp vs kiln logits rel_l2 {rel:.3e} (bound {bound:g}), "
          f"top-1 {top_agree}/{positions}; tokenization of {len(kiln_ids)} texts "
          f"{'identical' if tok_ok else 'DIFFERS'} -> {'ok' if ok else 'FAIL'}")
    if not tok_ok:
        for i, (a, b) in enumerate(zip(llama_ids, kiln_ids)):
            if a != b:
                print(f"  text {i}: llama.cpp {a}\n          kiln      {b}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:8]))
