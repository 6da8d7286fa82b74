#!/usr/bin/env bash
# On the GPU machine, build-free: the CUDA quantised path (issue #5). Unpacks the CUDA build made
# by pack_cuda_build.sh, runs the quantised kernel and GGUF parity tests, makes the
# Qwen2.5-0.5B-shaped BF16 model (tools/bench/make_qwen05b_shape.py), converts it with
# kiln-quantize to Q8_0 and Q4_K_M GGUFs, and runs kiln-bench --backend cuda pp512/tg128 on each,
# printing the ratio to llama.cpp's figures from shared/peers.md (same H100 model) and the
# memory-bound decode limit (file bytes / 2.957 TB/s, peers.md's measured copy bandwidth).
# Every step has a time limit; the whole script stays under 4 minutes. Logs go to $OUT (or
# ./gpu-out); every failure prints the log tail that explains it.
#
# usage: run_quant_gpu.sh ARCHIVE [BUILD_SOURCE_DIR]   (arguments as run_gpu_checks.sh)
set -uo pipefail
start=$SECONDS
root=$(pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
archive=$1
build_src=${2:-/work/wt-quant}
work=/tmp/kiln-gpu-quant
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$archive"
pack=$work/cuda-build
if [ ! -e "$build_src/tests/fixtures" ]; then
  mkdir -p "$(dirname "$build_src")" && ln -sfn "$root" "$build_src"
fi
torch_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "*", "lib")))))' 2>/dev/null)
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${torch_libs}:${LD_LIBRARY_PATH:-}"
if ldd "$pack"/bin/* | grep "not found"; then echo "missing libraries (above)"; fi

status=0
for t in cuda_quant_test cuda_quant_model_test cuda_gguf_test; do
  echo "=== $t"
  if ! timeout 60 "$pack/bin/$t" --gtest_output="xml:$out/$t.xml" > "$out/$t.log" 2>&1; then
    status=1
    echo "$t FAILED; failures:"
    grep -E -B2 -A8 "Failure|error" "$out/$t.log" | head -60
  fi
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[ (gguf|quant)|^\[  FAILED" "$out/$t.log" | head -40
done

echo "=== compute-sanitizer memcheck: cuda_quant_test (out-of-bounds block reads would show here)"
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$pack/bin/cuda_quant_test" \
  > "$out/memcheck_quant.log" 2>&1
mc=$?
echo "memcheck exit $mc ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/memcheck_quant.log") clean summaries)"
[ $mc -eq 0 ] || { status=1; grep -m 20 -E "Invalid|ERROR|at 0x" "$out/memcheck_quant.log"; }

echo "=== Qwen2.5-0.5B shape: BF16 model, then kiln-quantize to Q8_0 and Q4_K_M"
model=/tmp/qwen05b
if [ ! -f "$model/config.json" ]; then
  timeout 120 python3 "$root/tools/bench/make_qwen05b_shape.py" "$model" > "$out/make_model.log" 2>&1 ||
    { echo "make_qwen05b_shape.py failed:"; tail -20 "$out/make_model.log"; exit 1; }
fi
for type in q8_0 q4_k_m; do
  gguf=/tmp/qwen05b-$type.gguf
  t0=$SECONDS
  if ! timeout 60 "$pack/bin/kiln-quantize" "$model" "$gguf" "$type" > "$out/quantize_$type.log" 2>&1; then
    status=1
    echo "kiln-quantize $type failed:"; tail -20 "$out/quantize_$type.log"
    continue
  fi
  echo "$type: $(stat -c %s "$gguf") bytes, quantised in $((SECONDS - t0)) s"
  echo "=== kiln-bench --backend cuda $type"
  timeout 60 "$pack/bin/kiln-bench" --backend cuda -m "$gguf" -p 512 -n 128 -r 3 \
    > "$out/bench_$type.log" 2>&1 || { status=1; echo "kiln-bench $type failed:"; }
  tail -8 "$out/bench_$type.log"
done

python3 - "$out" <<'PY'
import os, re, sys
out = sys.argv[1]
peers = {"q8_0": (53000.0, 793.0), "q4_k_m": (40600.0, 795.0)}  # shared/peers.md, llama.cpp FA on
bw = 2.957e12  # shared/peers.md: device-to-device copy, bytes read + written
def grab(path, pat):
    try:
        m = re.search(pat, open(os.path.join(out, path)).read())
        return float(m.group(1)) if m else None
    except OSError:
        return None
def f(x, d=0): return "n/a" if x is None else f"{x:,.{d}f}"
def r(a, b): return "n/a" if a is None or b is None else f"{a / b:.2f}x"
print("\nkiln-quantize's Q4_K_M is llama.cpp's mix: rows of 896 are not whole 256-element "
      "super-blocks, so most matrices fall back to q5_0 (Q6_K ones to q8_0), as in llama.cpp's file.")
print("\n| GGUF | file bytes | kiln pp512 | llama.cpp pp512 | ratio | kiln tg128 | llama.cpp tg128 | ratio | memory-bound tg limit | kiln % of limit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, (lp, lt) in peers.items():
    path = f"/tmp/qwen05b-{t}.gguf"
    size = os.path.getsize(path) if os.path.exists(path) else None
    kp = grab(f"bench_{t}.log", r"pp512\s+([\d.]+)")
    kt = grab(f"bench_{t}.log", r"tg128\s+([\d.]+)")
    lim = bw / size if size else None
    pct = "n/a" if lim is None or kt is None else f"{100 * kt / lim:.1f} %"
    print(f"| {t} | {f(size)} | {f(kp)} | {f(lp)} | {r(kp, lp)} | {f(kt, 1)} | {f(lt)} | {r(kt, lt)} | {f(lim)} | {pct} |")
PY
echo "run_quant_gpu.sh: $((SECONDS - start)) s, status $status"
exit $status
