"""Writes a random-weight Qwen2ForCausalLM model directory (config.json + BF16 safetensors) of one
of the shapes the benchmarks use:

  05b   (default) the Qwen2.5-0.5B shape that shared/peers.md measures llama.cpp and HF
        transformers on: hidden 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936, tied, rope
        theta 1e6, torch.manual_seed(0), default HF init (transformers builds the model).
  7b    the Qwen2.5-7B shape of shared/peers.md: hidden 3584, 28 layers, 28/4 heads, head_dim
        128, ffn 18944, vocab 152064, untied (7,615,616,512 parameters, 15.23 GB).
  1b    the Llama-3.2-1B shape (LlamaForCausalLM, no biases): hidden 2048, 16 layers, 32/8
        heads, head_dim 64, ffn 8192, vocab 128256, tied, rope theta 5e5 with llama3 scaling
        (factor 32, low/high frequency factors 1/4, original context 8192); 1,235,814,400
        parameters, 2.47 GB.
  tiny  the same layout at hidden 256, 2 layers, 4/2 heads, ffn 512, vocab 1024, untied: a
        plumbing check for the scripts on a machine without a GPU.

7b, 1b and tiny are not built through transformers (a 7B model initialised on the CPU takes minutes
and 30 GB): each tensor is drawn on the GPU when torch sees one (else on the CPU; without torch,
with Python's own generator, which is only quick enough for tiny) and streamed into one
safetensors file. Matrices and embeddings ~ N(0, std²) (std 0.02, HF's initializer_range, so that
logits stay O(1)), norms 1, biases 0 — the values HF's init gives them.

usage: python3 make_qwen05b_shape.py OUT_DIR [--shape 05b|7b|tiny] [--std 0.02] [--seed 0]
"""
import argparse
import json
import os
import random
import struct
import sys
import time

SHAPES = {
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, head_dim=128, intermediate_size=18944, vocab_size=152064,
               tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
               tie_word_embeddings=True),
    "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, intermediate_size=512, vocab_size=1024,
                 tie_word_embeddings=False),
}


def make_05b(out_dir: str) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                      tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768,
                      rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out_dir}: {n:,} parameters")


def tensor_list(c: dict, bias: bool = True) -> list:
    """(HF name, shape, kind) in the order HF's Qwen2 (bias) or Llama module registers them."""
    h, hd, ffn = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", [c["vocab_size"], h], "normal")]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for proj, rows in (("q", q), ("k", kv), ("v", kv)):
            out.append((p + f"self_attn.{proj}_proj.weight", [rows, h], "normal"))
            if bias:
                out.append((p + f"self_attn.{proj}_proj.bias", [rows], "zero"))
        out += [
            (p + "self_attn.o_proj.weight", [h, q], "normal"),
            (p + "mlp.gate_proj.weight", [ffn, h], "normal"),
            (p + "mlp.up_proj.weight", [ffn, h], "normal"),
            (p + "mlp.down_proj.weight", [h, ffn], "normal"),
            (p + "input_layernorm.weight", [h], "one"),
            (p + "post_attention_layernorm.weight", [h], "one"),
        ]
    out.append(("model.norm.weight", [h], "one"))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", [c["vocab_size"], h], "normal"))
    return out


def numel(shape: list) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class TorchValues:
    """BF16 bytes of each tensor, drawn on the GPU when there is one."""

    def __init__(self, seed: int, std: float):
        import torch
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.std = std

    def write(self, f, shape: list, kind: str) -> None:
        t = self.torch
        if kind == "normal":
            x = t.randn(shape, generator=self.gen, device=self.device, dtype=t.float32)
            x = (x * self.std).to(t.bfloat16)
        else:
            x = t.full(shape, 1.0 if kind == "one" else 0.0, device=self.device,
                       dtype=t.bfloat16)
        f.write(x.view(t.int16).cpu().numpy().data)


class PythonValues:
    """The same without torch (tiny only): float32 → BF16 by rounding to nearest even."""

    def __init__(self, seed: int, std: float):
        self.rng = random.Random(seed)
        self.std = std
        self.device = "python"

    @staticmethod
    def bf16(v: float) -> int:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF

    def write(self, f, shape: list, kind: str) -> None:
        n = numel(shape)
        if kind == "normal":
            vals = [self.bf16(self.rng.gauss(0.0, self.std)) for _ in range(n)]
        else:
            vals = [self.bf16(1.0 if kind == "one" else 0.0)] * n
        f.write(struct.pack(f"<{n}H", *vals))


def make_direct(out_dir: str, shape: str, std: float, seed: int) -> None:
    c = dict(SHAPES[shape])
    if shape == "1b":
        cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                   max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=5e5,
                   rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                     high_freq_factor=4.0,
                                     original_max_position_embeddings=8192),
                   torch_dtype="bfloat16", initializer_range=std, bos_token_id=None,
                   eos_token_id=0, attention_bias=False, mlp_bias=False,
                   attention_dropout=0.0, **c)
    else:
        cfg = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu",
                   max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1e6,
                   torch_dtype="bfloat16", initializer_range=std, bos_token_id=None,
                   eos_token_id=0, use_sliding_window=False, attention_dropout=0.0, **c)
    tensors = tensor_list(c, bias=shape != "1b")
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shp, _ in tensors:
        nbytes = 2 * numel(shp)
        header[name] = {"dtype": "BF16", "shape": shp, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    try:
        values = TorchValues(seed, std)
    except ImportError:
        if shape != "tiny":
            sys.exit("make_qwen05b_shape.py: --shape %s needs torch" % shape)
        values = PythonValues(seed, std)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    path = os.path.join(out_dir, "model.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, shp, kind in tensors:
            values.write(f, shp, kind)
    os.replace(path + ".tmp", path)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    n = sum(numel(s) for _, s, _ in tensors)
    print(f"wrote {out_dir}: {n:,} parameters, {os.path.getsize(path):,} bytes "
          f"({values.device}, {time.time() - t0:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--shape", choices=["05b", "1b", "7b", "tiny"], default="05b")
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.shape == "05b":
        make_05b(a.out_dir)
    else:
        make_direct(a.out_dir, a.shape, a.std, a.seed)


if __name__ == "__main__":
    main()
