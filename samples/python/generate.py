#!/usr/bin/env python3
"""Load a model and stream a completion of "In the beginning" to stdout (kiln's Python binding).

The same task as samples/generate.c and the Go, Rust, C# and F# samples: a fixed seed, 40 tokens,
the text on stdout and the speed on stderr.
"""
import argparse
import os
import sys

import kiln

PROMPT = "In the beginning"
MAX_TOKENS = 40
SEED = 0xC0FFEE  # the C sample's default seed: the same seed and options give the same text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=f'Stream a {MAX_TOKENS}-token completion of "{PROMPT}" from a model.',
        epilog="The text goes to stdout, the speed (tok/s) to stderr.")
    parser.add_argument("model", nargs="?", default=os.environ.get("KILN_MODEL") or "models/kjv-tiny",
                        help="model directory or GGUF file (default: $KILN_MODEL, else "
                             "models/kjv-tiny relative to the current directory)")
    args = parser.parse_args()

    with kiln.Runtime(kiln.Backend.CPU) as rt, rt.load_model(args.model) as model:
        with model.session(seed=SEED) as session:
            for piece in session.generate(PROMPT, max_tokens=MAX_TOKENS):
                print(piece, end="", flush=True)
            print()
            result = session.last_result
    print(f"{result.n_generated} tokens, {result.decode_tokens_per_second:.1f} tok/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except kiln.Error as e:
        print(f"generate.py: {e}", file=sys.stderr)
        sys.exit(1)
