"""Writes the Qwen2.5-0.5B-shaped random-weight model that shared/peers.md measures llama.cpp and
HF transformers on: Qwen2ForCausalLM, hidden 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936,
tied, rope theta 1e6, torch.manual_seed(0), default HF init, BF16 safetensors.

usage: python3 make_qwen05b_shape.py OUT_DIR
"""
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main(out_dir: str) -> None:
    cfg = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                      tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768,
                      rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out_dir}: {n:,} parameters")


if __name__ == "__main__":
    main(sys.argv[1])
