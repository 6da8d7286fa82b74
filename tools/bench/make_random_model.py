"""Writes a random-weight Qwen2-architecture model directory (BF16 safetensors, config.json) of any
shape without PyTorch or numpy, for local timing runs where transformers is unavailable. Values
are one random 1 MiB block of moderate BF16 numbers repeated, so the file is quick to write; the
numbers are meaningless, only the shapes and byte counts matter.

usage: python3 make_random_model.py OUT_DIR [hidden layers heads kv_heads ffn vocab]
(defaults: the Qwen2.5-0.5B shape of shared/peers.md)
"""
import json
import os
import random
import struct
import sys


def main() -> None:
    out = sys.argv[1]
    hidden, layers, heads, kv, ffn, vocab = (int(v) for v in (sys.argv[2:8] or
                                             (896, 24, 14, 2, 4864, 151936)))
    head_dim = hidden // heads
    rng = random.Random(0)
    # BF16 with sign random, exponent 120..126 (|x| in [2^-7, 1)), mantissa random.
    block = bytearray()
    for _ in range(1 << 19):
        block += struct.pack("<H", (rng.getrandbits(1) << 15) | (rng.randint(120, 126) << 7) |
                             rng.getrandbits(7))
    tensors = [("model.embed_tokens.weight", [vocab, hidden]), ("model.norm.weight", [hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [(p + "input_layernorm.weight", [hidden]),
                    (p + "post_attention_layernorm.weight", [hidden]),
                    (p + "self_attn.q_proj.weight", [heads * head_dim, hidden]),
                    (p + "self_attn.q_proj.bias", [heads * head_dim]),
                    (p + "self_attn.k_proj.weight", [kv * head_dim, hidden]),
                    (p + "self_attn.k_proj.bias", [kv * head_dim]),
                    (p + "self_attn.v_proj.weight", [kv * head_dim, hidden]),
                    (p + "self_attn.v_proj.bias", [kv * head_dim]),
                    (p + "self_attn.o_proj.weight", [hidden, heads * head_dim]),
                    (p + "mlp.gate_proj.weight", [ffn, hidden]),
                    (p + "mlp.up_proj.weight", [ffn, hidden]),
                    (p + "mlp.down_proj.weight", [hidden, ffn])]
    header, offset = {}, 0
    for name, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = offset
        while left > 0:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "intermediate_size": ffn, "vocab_size": vocab,
              "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 32768, "eos_token_id": 0}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"wrote {out}: {offset // 2:,} parameters")


if __name__ == "__main__":
    main()
