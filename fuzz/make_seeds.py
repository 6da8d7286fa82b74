#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the repo's fixtures and small
hand-built files (GGUF per docs/gguf.md "File Structure", safetensors per the safetensors README).
Re-run after changing it; the outputs are committed so a fresh checkout can fuzz at once."""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# ---- GGUF: header | KV pairs | tensor infos | pad to alignment | data ----
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, alignment=32, version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, payload in kvs:
        out += gstr(key) + struct.pack("<I", vtype) + payload
    data = b""
    for name, dims, ttype, blob in tensors:
        pad = (-len(data)) % alignment
        data += b"\0" * pad
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, len(data))
        data += blob
    out += b"\0" * ((-len(out)) % alignment)
    return out + data


def garr(etype, items):
    return struct.pack("<IQ", etype, len(items)) + b"".join(items)


kvs = [
    ("general.architecture", 8, gstr("qwen2")),
    ("general.alignment", 4, struct.pack("<I", 32)),
    ("qwen2.block_count", 4, struct.pack("<I", 1)),
    ("qwen2.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    ("tokenizer.ggml.add_bos_token", 7, b"\1"),
    ("tokenizer.ggml.tokens", 9, garr(8, [gstr(t) for t in ["a", "b", "ab", "<s>"]])),
    ("tokenizer.ggml.scores", 9, garr(6, [struct.pack("<f", -i) for i in range(4)])),
    ("some.i64", 11, struct.pack("<q", -5)),
]
f32 = struct.pack("<8f", *range(8))
f16 = struct.pack("<8e", *range(8))
q4_0 = struct.pack("<e", 0.5) + bytes(range(16))  # one block of 32
q8_0 = struct.pack("<e", 0.25) + bytes(range(32))  # one block of 32
put("fuzz_gguf", "f32_f16.gguf", gguf(kvs, [("w.f32", [4, 2], 0, f32), ("w.f16", [8], 1, f16)]))
put("fuzz_gguf", "q4_0_q8_0.gguf", gguf(kvs[:3], [("q4", [32], 2, q4_0), ("q8", [32, 1], 8, q8_0)]))
put("fuzz_gguf", "v2_no_tensors.gguf", gguf(kvs, [], version=2))
put("fuzz_gguf", "empty.gguf", gguf([], []))

# The real tiny-qwen2 GGUF's metadata (architecture keys, tokenizer.ggml.*) with its tensors
# dropped, so the config and tokenizer derivation run from the first seed.
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(b, pos, vtype):
    if vtype in SCALAR:
        return pos + SCALAR[vtype]
    if vtype == 8:
        return pos + 8 + struct.unpack_from("<Q", b, pos)[0]
    etype, n = struct.unpack_from("<IQ", b, pos)
    pos += 12
    for _ in range(n):
        pos = skip_value(b, pos, etype)
    return pos


raw = (FIX / "gguf" / "tiny-qwen2" / "tiny-qwen2-q8_0.gguf").read_bytes()
_, _, n_kv = struct.unpack_from("<IQQ", raw, 4)
pos, meta = 24, []
for _ in range(n_kv):
    start = pos
    pos += 8 + struct.unpack_from("<Q", raw, pos)[0]
    vtype = struct.unpack_from("<I", raw, pos)[0]
    pos = skip_value(raw, pos + 4, vtype)
    meta.append(raw[start:pos])
put("fuzz_gguf", "tiny-qwen2-metadata.gguf",
    b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + b"".join(meta))


# ---- safetensors: u64 header length | JSON header | buffer ----
def safetensors(tensors, metadata=None):
    header, buf = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + len(blob)]}
        buf += blob
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + buf


put("fuzz_safetensors", "f32_f16_bf16.safetensors", safetensors(
    [("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), ("b", "F16", [3], struct.pack("<3e", 1, 2, 3)),
     ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40")], {"format": "pt"}))
put("fuzz_safetensors", "i64_scalar_empty.safetensors", safetensors(
    [("ids", "I64", [2], struct.pack("<2q", 7, 8)), ("s", "F32", [], struct.pack("<f", 1)),
     ("e", "F32", [0, 3], b"")]))
put("fuzz_safetensors", "header_only.safetensors", safetensors([]))

# ---- config.json \0 generation_config.json ----
for model in ["llama2", "llama3", "mistral", "phi3", "qwen2", "qwen3"]:
    d = FIX / "hf" / model
    put("fuzz_config_json", model, (d / "config.json").read_bytes() + b"\0" +
        (d / "generation_config.json").read_bytes())
put("fuzz_config_json", "tiny-qwen2", (FIX / "tiny-qwen2" / "config.json").read_bytes())

# ---- tokenizer.json \0 tokenizer_config.json (small ones only: the folder stays under 1 MB) ----
for name, d in [("tiny-qwen2", FIX / "tiny-qwen2"), ("llama2", FIX / "hf" / "llama2")]:
    put("fuzz_tokenizer_json", name, (d / "tokenizer.json").read_bytes() + b"\0" +
        (d / "tokenizer_config.json").read_bytes())

# ---- encode/decode input: texts of the tokenizer corpus ----
for line in (FIX / "tokenizers" / "corpus.jsonl").read_text().splitlines()[:60]:
    case = json.loads(line)
    put("fuzz_tokenizer_encode", f"text{case['id']:03d}", case["text"].encode("utf-8", "surrogatepass"))
put("fuzz_tokenizer_encode", "special", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>")

# ---- chat templates ----
for t in sorted((FIX / "chat" / "templates").glob("*.jinja")):
    put("fuzz_chat_template", t.name, t.read_bytes())
