"""Prints how many tensors of each ggml type a GGUF file holds, in the form llama.cpp's loader
prints it ("type q4_K: 169 tensors"), read from the file's header per the GGUF spec (docs/gguf.md
in ggml-org/ggml: header, metadata key/values, tensor infos). No dependencies.

usage: python3 gguf_types.py FILE.gguf
"""
import struct
import sys
from collections import Counter

# ggml_type ids → llama.cpp's names (ggml.h enum ggml_type).
TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0",
              10: "q2_K", 11: "q3_K", 12: "q4_K", 13: "q5_K", 14: "q6_K", 30: "bf16"}
# Fixed-size GGUF metadata value types: id → struct format.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.f.read(size))

    def string(self) -> str:
        (n,) = self.take("Q")
        return self.f.read(n).decode("utf-8", "replace")

    def skip_value(self, t: int) -> None:
        if t in SCALARS:
            self.f.seek(struct.calcsize("<" + SCALARS[t]), 1)
        elif t == 8:
            self.string()
        elif t == 9:
            item, n = self.take("IQ")
            if item in SCALARS:
                self.f.seek(n * struct.calcsize("<" + SCALARS[item]), 1)
            else:
                for _ in range(n):
                    self.skip_value(item)
        else:
            raise ValueError(f"unknown GGUF value type {t}")


def type_counts(path: str) -> Counter:
    with open(path, "rb") as f:
        r = Reader(f)
        magic = f.read(4)
        if magic != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        _, n_tensors, n_kv = r.take("IQQ")
        for _ in range(n_kv):
            r.string()
            (t,) = r.take("I")
            r.skip_value(t)
        counts = Counter()
        for _ in range(n_tensors):
            r.string()
            (n_dims,) = r.take("I")
            r.take("Q" * n_dims)
            t, _ = r.take("IQ")
            counts[TYPE_NAMES.get(t, f"type{t}")] += 1
        return counts


if __name__ == "__main__":
    c = type_counts(sys.argv[1])
    print(", ".join(f"type {k}: {v} tensors" for k, v in sorted(c.items())))
