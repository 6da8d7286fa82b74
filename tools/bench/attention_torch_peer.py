#!/usr/bin/env python3
"""PyTorch peer for kiln's CUDA training attention (kernels/train_attention.cu): times
torch.nn.functional.scaled_dot_product_attention(is_causal=True) in BF16, forward and
forward+backward, on the shapes cuda_train_attention_test's CudaTrainAttentionBench.PrintsTflops
prints, with the same FLOP convention (forward 4·B·H·T²·D/2 for causal, backward 2.5× forward).
CUDA events, warm-up, median of the timed runs. GQA shapes repeat k/v over the group before SDPA
(what a model without enable_gqa does; the repeat is timed too, as part of the attention), or,
with --enable-gqa (torch >= 2.5), pass enable_gqa=True instead.
Prints one line per shape and backend, then one JSON line with every result.
usage: attention_torch_peer.py [--iters N] [--backend flash|efficient|cudnn|default] [--enable-gqa]"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

SHAPES = [  # (B, H, Hkv, T, D): GPT-2 124M, and a Llama-like GQA layer
    (16, 12, 12, 1024, 64),
    (4, 32, 8, 2048, 128),
]


def backend_context(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    return sdpa_kernel([table[name]])


def attention(q, k, v, group, enable_gqa):
    if enable_gqa and group > 1:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def time_ms(body, iters):
    for _ in range(3):
        body()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        body()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--backend", default="default",
                        choices=["flash", "efficient", "cudnn", "default"])
    parser.add_argument("--enable-gqa", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for B, H, Hkv, T, D in SHAPES:
        q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        d_o = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
        group = H // Hkv

        def forward():
            with torch.no_grad():
                attention(q, k, v, group, args.enable_gqa)

        def forward_backward():
            out = attention(q, k, v, group, args.enable_gqa)
            out.backward(d_o)

        if args.backend == "default":
            fwd_ms = time_ms(forward, args.iters)
            fwd_bwd_ms = time_ms(forward_backward, args.iters)
        else:
            with backend_context(args.backend):
                fwd_ms = time_ms(forward, args.iters)
                fwd_bwd_ms = time_ms(forward_backward, args.iters)
        fwd_flops = 4.0 * B * H * T * T * D / 2
        row = {
            "B": B, "H": H, "Hkv": Hkv, "T": T, "D": D, "backend": args.backend,
            "enable_gqa": args.enable_gqa,
            "fwd_ms": fwd_ms, "fwd_tflops": fwd_flops / (fwd_ms * 1e-3) / 1e12,
            "fwd_bwd_ms": fwd_bwd_ms,
            "fwd_bwd_tflops": 3.5 * fwd_flops / (fwd_bwd_ms * 1e-3) / 1e12,
        }
        results.append(row)
        print(f"[torch sdpa {args.backend}] B={B} H={H} Hkv={Hkv} T={T} D={D}: forward "
              f"{fwd_ms:.3f} ms = {row['fwd_tflops']:.1f} TFLOP/s; forward+backward "
              f"{fwd_bwd_ms:.3f} ms = {row['fwd_bwd_tflops']:.1f} TFLOP/s")
    print(json.dumps({"peer": "torch_sdpa", "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(), "results": results}))


if __name__ == "__main__":
    main()
