"""HF transformers on the GPU, BF16, batch 1, on the model kiln-bench runs, timed like
shared/peers.md: pp = one forward of N prompt tokens (median of 5, CUDA-synchronised);
tg = (n - 1) / (t(n) - t(1)) with greedy generate, min_new_tokens = max_new_tokens, medians of
timed runs after warm-ups. Also measures the device-to-device copy bandwidth (bytes read +
written) for the memory-bound limit.

usage: python3 hf_gpu_peer.py MODEL_DIR N_PROMPT N_GEN [--static] [--bw-only]
Prints 'key value' lines: copy_bw_Bps, hf_eager_pp, hf_eager_tg, hf_static_tg.
"""
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def timed(fn, reps):
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def copy_bandwidth():
    n = 1 << 30  # 1 GiB each way
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_(0, 255)
    for _ in range(3):
        b.copy_(a)
    t = timed(lambda: b.copy_(a), 10)
    return 2 * n / t


def main(model_dir, n_prompt, n_gen, static, bw_only):
    print(f"copy_bw_Bps {copy_bandwidth():.4e}", flush=True)
    if bw_only:  # kiln alone against the bandwidth limit (a quick check; no peer figures)
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").cuda().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, n_prompt), generator=g).cuda()
    with torch.inference_mode():
        for _ in range(2):
            model(ids, use_cache=False)
        pp = timed(lambda: model(ids, use_cache=False), 5)
        print(f"hf_eager_pp {n_prompt / pp:.2f}", flush=True)

        def gen(n, **kw):
            return lambda: model.generate(ids[:, :32], max_new_tokens=n, min_new_tokens=n,
                                          do_sample=False, **kw)

        for _ in range(2):
            gen(n_gen)()
        t1 = timed(gen(1), 5)
        tn = timed(gen(n_gen), 5)
        print(f"hf_eager_tg {(n_gen - 1) / (tn - t1):.2f}", flush=True)
        if static:
            kw = dict(cache_implementation="static")
            for _ in range(2):
                gen(n_gen, **kw)()
            t1 = timed(gen(1, **kw), 5)
            tn = timed(gen(n_gen, **kw), 5)
            print(f"hf_static_tg {(n_gen - 1) / (tn - t1):.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "--static" in sys.argv[4:], "--bw-only" in sys.argv[4:])
