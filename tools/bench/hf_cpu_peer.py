"""HF transformers on the CPU, float32, on the same model kiln-bench runs: pp (one forward of N
prompt tokens) and tg (greedy decode), timed like shared/peers.md (tg = (n-1) / (t(n) - t(1))).

usage: python3 hf_cpu_peer.py MODEL_DIR N_PROMPT N_GEN THREADS
"""
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main(model_dir: str, n_prompt: int, n_gen: int, threads: int) -> None:
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, n_prompt), generator=g)
    with torch.inference_mode():
        model(ids[:, :8])  # warm-up
        pp = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(ids, use_cache=False)
            pp.append(time.perf_counter() - t0)

        def gen(n: int) -> float:
            t0 = time.perf_counter()
            model.generate(ids[:, :1], max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return time.perf_counter() - t0

        gen(2)
        t1 = statistics.median(gen(1) for _ in range(3))
        tn = statistics.median(gen(n_gen) for _ in range(3))
    print(f"hf pp{n_prompt} {n_prompt / statistics.median(pp):.2f} tok/s")
    print(f"hf tg{n_gen} {(n_gen - 1) / (tn - t1):.2f} tok/s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
