#!/usr/bin/env bash
# On the GPU machine: one model shape, kiln's CUDA backend next to HF transformers in the same
# call. Makes the random-weight model (tools/bench/make_qwen05b_shape.py --shape SHAPE), runs
# kiln-bench pp512/tg128 (-r 5) and hf_gpu_peer.py (eager and static cache + compile), and prints
# one table row per test with the ratios, llama.cpp's figure where shared/peers.md has one for the
# shape, and the memory-bound decode limit (weights + mean-context KV bytes over the measured
# copy bandwidth).
# usage: bench_shape.sh PACK.tar.xz SHAPE   (SHAPE: 05b | 1b | 7b; a pack holding kiln-bench)
#   KILN_ONLY=1   skips the HF peer (copy bandwidth still measured): a quick kiln-vs-limit check
#   BENCH_ENV="K=V ..."   environment for a second kiln-bench run in the same call (an A/B switch)
set -uo pipefail
root=$(pwd)
here=$(cd "$(dirname "$0")" && pwd)
shape=${2:?usage: bench_shape.sh PACK.tar.xz SHAPE}
work=/tmp/kiln-bench-$shape
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$1"
pack=$work/cuda-build
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
model=/tmp/model-$shape
[ -f "$model/config.json" ] ||
  python3 "$root/tools/bench/make_qwen05b_shape.py" "$model" --shape "$shape" | tail -1
"$pack/bin/kiln-bench" --backend cuda -m "$model" -p 512 -n 128 -r 5 2>&1 | tee "$work/kiln.log"
if [ -n "${BENCH_ENV:-}" ]; then
  echo "=== kiln-bench with $BENCH_ENV"
  env $BENCH_ENV "$pack/bin/kiln-bench" --backend cuda -m "$model" -p 512 -n 128 -r 5 2>&1
fi
PYTHONUNBUFFERED=1 timeout 400 python3 "$here/hf_gpu_peer.py" "$model" 512 128 --static \
  ${KILN_ONLY:+--bw-only} 2>&1 |
  grep -v Warning | tee "$work/hf.log"
python3 - "$work" "$model" "$shape" <<'PY'
import json, os, re, sys
work, model, shape = sys.argv[1:4]
def grab(name, pat):
    m = re.search(pat, open(os.path.join(work, name)).read())
    return float(m.group(1)) if m else None
kp, kt = grab("kiln.log", r"pp512\s+([\d.]+)"), grab("kiln.log", r"tg128\s+([\d.]+)")
hp, ht = grab("hf.log", r"hf_eager_pp ([\d.]+)"), grab("hf.log", r"hf_eager_tg ([\d.]+)")
hs, bw = grab("hf.log", r"hf_static_tg ([\d.]+)"), grab("hf.log", r"copy_bw_Bps ([\d.e+]+)")
cfg = json.load(open(os.path.join(model, "config.json")))
weights = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model)
              if f.endswith(".safetensors"))
head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
kv = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 2 * 64  # BF16 K+V, mean tg128 context
limit = bw / (weights + kv) if bw else None
llama = {"05b": (67000.0, 737.0), "7b": (19700.0, 166.3)}.get(shape, (None, None))
f = lambda x, d=1: "n/a" if x is None else f"{x:,.{d}f}"
r = lambda a, b: "n/a" if a is None or b is None else f"{a / b:.2f}x"
print(f"\nshape {shape}: weights {weights:,} bytes, copy bandwidth {f(bw and bw / 1e12, 3)} TB/s")
print("| test | kiln | HF eager | HF static+compile | llama.cpp F16 (peers.md) | kiln/HF eager | "
      "kiln/HF static | kiln/llama.cpp | limit | % of limit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, k, h, s, l, lim in (("pp512", kp, hp, None, llama[0], None),
                              ("tg128", kt, ht, hs, llama[1], limit)):
    pct = "n/a" if lim is None or k is None else f"{100 * k / lim:.1f} %"
    print(f"| {name} | {f(k)} | {f(h)} | {f(s)} | {f(l, 0)} | {r(k, h)} | {r(k, s)} | {r(k, l)} | "
          f"{f(lim, 0)} | {pct} |")
PY
