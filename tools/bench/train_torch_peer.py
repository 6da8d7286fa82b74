#!/usr/bin/env python3
"""PyTorch peer for kiln-train's CPU throughput: the same model (a fresh LlamaForCausalLM from a
config.json), the same batch shape, AdamW, float32 on the CPU, the same thread count. Prints one
JSON line: {"peer": "torch", "tokens_per_s": median over the timed steps, ...}.
usage: train_torch_peer.py CONFIG_JSON TOKENS_U16 BATCH SEQ STEPS THREADS"""
import json
import statistics
import sys
import time

import numpy as np
import torch
import transformers

config_path, data_path, B, T, steps, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
torch.set_num_threads(threads)
torch.manual_seed(0)
config = transformers.AutoConfig.from_pretrained(config_path)
model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float()
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.from_numpy(np.fromfile(data_path, dtype=np.uint16).astype(np.int64))
times, losses = [], []
pos = 0
for step in range(steps):
    chunk = ids[pos:pos + B * T + 1]
    pos += B * T
    x, y = chunk[:-1].view(B, T), chunk[1:].view(B, T)
    t0 = time.perf_counter()
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t0)
    losses.append(loss.item())
timed = times[2:]
print(json.dumps({"peer": "torch", "torch": torch.__version__, "threads": threads, "batch": B,
                  "seq": T, "params": sum(p.numel() for p in model.parameters()),
                  "tokens_per_s": B * T / statistics.median(timed), "first_loss": losses[0]}))
