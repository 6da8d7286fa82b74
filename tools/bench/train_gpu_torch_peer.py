#!/usr/bin/env python3
"""PyTorch peer for kiln's GPU training benchmark (../shared/peers.md, "Training model"): nanoGPT's
GPT-2 124M — 12 layers, 12 heads, 768 wide, vocab 50304, sequence 1024, pre-LayerNorm, tanh-GELU,
biases, tied embeddings, F.scaled_dot_product_attention(is_causal=True) — on random tokens with
BF16 autocast, FP32 loss, fused AdamW (lr 6e-4, betas 0.9/0.95, wd 0.1 on 2-D tensors), grad clip
1.0; WARMUP steps, then TIMED steps timed with CUDA events. Eager, then torch.compile. Prints one
JSON line per mode: tokens/s, MFU against 775.5 TFLOP/s (6N + 12·L·C·T FLOPs per token, N without
the position table), peak memory (torch.cuda.max_memory_allocated).
usage: train_gpu_torch_peer.py [BATCH [SEQ [WARMUP [TIMED [MODES]]]]]  (16 1024 10 20 eager,compile)"""
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

B, T, WARMUP, TIMED = (int(a) for a in (sys.argv[1:5] + ["16", "1024", "10", "20"][len(sys.argv[1:5]):]))
MODES = (sys.argv[5] if len(sys.argv) > 5 else "eager,compile").split(",")
V, L, H, C = 50304, 12, 12, 768


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(1024, C)
        self.h = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


def run(mode):
    torch.manual_seed(0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = GPT().cuda()
    n_params = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), fused=True)
    step_model = torch.compile(model) if mode == "compile" else model
    gen = torch.Generator(device="cuda").manual_seed(0)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    losses = []
    for step in range(WARMUP + TIMED):
        data = torch.randint(0, 50257, (B, T + 1), device="cuda", generator=gen)
        x, y = data[:, :-1], data[:, 1:].contiguous()
        if step == WARMUP:
            start.record()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 0 or step == WARMUP + TIMED - 1:
            losses.append(loss.item())
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3
    tok_s = B * T * TIMED / seconds
    flops = 6 * n_params + 12 * L * C * T
    print(json.dumps({"peer": f"torch-{mode}", "torch": torch.__version__, "batch": B, "seq": T,
                      "params": n_params, "tokens_per_s": round(tok_s), "step_ms": 1e3 * seconds / TIMED,
                      "mfu": tok_s * flops / 775.5e12, "flops_per_token": flops,
                      "device_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "first_loss": losses[0], "last_loss": losses[-1]}), flush=True)
    del model, opt, step_model


torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
for m in MODES:
    run(m)
