#!/usr/bin/env bash
# On the GPU machine, build-free, in one device call (about 5–7 minutes, hard stop before 9): the
# Qwen2.5-7B shape of shared/peers.md in BF16, Q8_0 and Q4_K_M (issue 5).
#   1. device-to-device copy bandwidth, measured with torch (2 GiB, bytes read + written);
#   2. the random-weight BF16 model (tools/bench/make_qwen05b_shape.py --shape 7b: drawn on the
#      GPU, streamed into one 15.2 GB safetensors file);
#   3. kiln-quantize BF16 → Q8_0 and → Q4_K_M, timed, all cores; the per-type tensor counts of
#      each file (tools/bench/gguf_types.py; llama.cpp's Q4_K_M of this shape has q4_K 169, q6_K
#      29, f32 141);
#   4. kiln-bench --backend cuda -p 512 -n 128 -r 3 on the BF16 directory and both GGUFs:
#      pp512, tg128, load and first-token times;
#   5. a table beside llama.cpp's figures from shared/peers.md with ratios, and the memory-bound
#      decode limit (weight bytes / measured copy bandwidth).
# --with-05b also reruns the Qwen2.5-0.5B quantised bench (run_quant_gpu.sh's model and table).
# --ab-float also runs tg128 of both GGUFs with KILN_CUDA_QUANT_DOT=float (the exact dequantise-
# and-dot decode kernels) beside the default int8 ones, in the same call.
# --ab-qgemv also runs tg128 of both GGUFs (and the 0.5B ones with --with-05b) with
# KILN_CUDA_QGEMV=old (v12's per-block quantisation of x) beside the default v13 kernels.
# --variants first runs quant_gemv_variants from the archive (the GEMV layouts alone, ~1 minute).
# --ab "K=V ...[|K=V ...]" runs tg128 of every model (BF16 and both GGUFs; the 0.5B ones, BF16
# included, with --with-05b) twice with each environment and twice without, alternating, in the
# same call: an A/B of a switch whose effect is near the run-to-run spread.
# Disk: at most ~28 GB at once (BF16 15.2 + Q8_0 8.1 + Q4_K_M 4.7); all removed at the end.
#
# usage: run_quant_7b.sh ARCHIVE [--with-05b]
#            ARCHIVE: the pack of tools/gpu/pack_cuda_build.sh; only kiln-quantize and kiln-bench
#            are used (and quant_gemv_variants with --variants):
#            PACK_ONLY="kiln-quantize kiln-bench quant_gemv_variants" BUILD=build-cuda \
#            tools/gpu/pack_cuda_build.sh DIR keeps it small enough to carry
#        run_quant_7b.sh --bin DIR [--shape tiny] [--backend cpu]
#            a dry run of the plumbing on a machine without a GPU: DIR holds kiln-quantize and
#            kiln-bench (e.g. build-cpu/bin); --shape tiny makes a 1.7M-parameter model instead.
# Logs go to $OUT (or ./gpu-out); a failed step prints the log tail that explains it and the
# script goes on with the next one; the exit status is 1 if any step failed.
set -euo pipefail
start=$SECONDS
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(pwd)/gpu-out}
mkdir -p "$out"

archive="" bin="" shape=7b backend=cuda with_05b=0 ab_float=0 ab_qgemv=0 variants=0 ab_env=""
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$(realpath "$2"); shift ;;
    --shape) shape=$2; shift ;;
    --backend) backend=$2; shift ;;
    --with-05b) with_05b=1 ;;
    --ab-float) ab_float=1 ;;
    --ab-qgemv) ab_qgemv=1 ;;
    --variants) variants=1 ;;
    --ab) ab_env=$2; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) archive=$1 ;;
  esac
  shift
done
work=${WORK:-/tmp/kiln-quant-7b}
rm -rf "$work" && mkdir -p "$work"
if [ -n "$archive" ]; then
  tar -C "$work" -xJf "$archive"
  bin=$work/cuda-build/bin
  torch_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(os.path.dirname(nvidia.__path__[0]), "nvidia", "*", "lib")))))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="$work/cuda-build/lib:/usr/local/cuda/lib64:${torch_libs}:${LD_LIBRARY_PATH:-}"
  if ldd "$bin"/kiln-bench "$bin"/kiln-quantize | grep "not found"; then echo "missing libraries (above)"; fi
fi
[ -x "$bin/kiln-quantize" ] && [ -x "$bin/kiln-bench" ] ||
  { echo "usage: run_quant_7b.sh ARCHIVE | --bin DIR (see --help)"; exit 2; }
threads=$(nproc)
budget=${BUDGET:-530}  # seconds: the device call's limit is 600; the table and cleanup need the rest
status=0
left() { echo $((budget - (SECONDS - start))); }
# step LIMIT LOG CMD...: runs CMD under min(LIMIT, time left), its output in $out/LOG; on failure
# prints the tail and marks the run failed, without stopping the script.
step() {
  local limit=$1 log=$2
  shift 2
  local t
  t=$(left)
  [ "$t" -lt "$limit" ] && limit=$t
  if [ "$limit" -le 5 ]; then
    echo "SKIPPED (time budget spent): $*"; status=1; return 1
  fi
  if ! timeout "$limit" "$@" > "$out/$log" 2>&1; then
    echo "FAILED (or over ${limit} s): $*"; tail -15 "$out/$log"; status=1; return 1
  fi
}

# ab_tg LABEL MODEL: tg128 without and with each variant of $ab_env ("K=V ...", several separated
# by '|'), twice each, alternating (--ab).
ab_tg() {
  local label=$1 path=$2 round v log variants
  IFS='|' read -r -a variants <<< "$ab_env"
  for round in 1 2; do
    log="ab_${label}_base_${round}.log"
    step 60 "$log" "$bin/kiln-bench" --backend "$backend" -m "$path" -p 0 -n 128 -r 3 || true
    echo "$label base round $round: $(grep -E "^tg" "$out/$log" || echo none)"
    for v in "${!variants[@]}"; do
      log="ab_${label}_v${v}_${round}.log"
      step 60 "$log" env ${variants[$v]} "$bin/kiln-bench" --backend "$backend" -m "$path" -p 0 \
        -n 128 -r 3 || true
      echo "$label ${variants[$v]} round $round: $(grep -E "^tg" "$out/$log" || echo none)"
    done
  done
}

if [ "$variants" = 1 ]; then
  echo "=== quant_gemv_variants (the quantised decode GEMV layouts alone)"
  if [ -x "$bin/quant_gemv_variants" ]; then
    step 120 quant_gemv_variants.log "$bin/quant_gemv_variants" || true
    grep -E "summary|alone|agrees|FAIL|^device" "$out/quant_gemv_variants.log" || true
  else
    echo "not in the archive: quant_gemv_variants"; status=1
  fi
fi

echo "=== device-to-device copy bandwidth (torch, 2 GiB, bytes read + written)"
python3 - > "$out/bandwidth.txt" 2> "$out/bandwidth.log" <<'PY' || true
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device")
n = 2 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(10):
    start.record(); b.copy_(a); stop.record(); stop.synchronize()
    times.append(start.elapsed_time(stop) / 1e3)
times.sort()
print(2 * n / times[len(times) // 2])
PY
bw=$(cat "$out/bandwidth.txt" 2>/dev/null || true) bw_src=measured
if [ -z "$bw" ]; then
  bw=2.957e12 bw_src="shared/peers.md's, not measured here"
  echo "not measured ($(tail -1 "$out/bandwidth.log" 2>/dev/null)); using shared/peers.md's 2.957e12 B/s"
else
  echo "$bw B/s (shared/peers.md: 2.957e12)"
fi

model=$work/qwen-$shape
echo "=== Qwen2.5-$shape shape, random BF16 weights"
t0=$SECONDS
step 240 make_model.log python3 "$root/tools/bench/make_qwen05b_shape.py" "$model" --shape "$shape" &&
  { cat "$out/make_model.log"; echo "($((SECONDS - t0)) s)"; }
df -h "$work" | tail -1

for type in q8_0 q4_k_m; do
  [ -f "$model/model.safetensors" ] || break
  gguf=$work/qwen-$shape-$type.gguf
  echo "=== kiln-quantize $type ($threads threads)"
  t0=$SECONDS
  if step 200 "quantize_$type.log" "$bin/kiln-quantize" "$model" "$gguf" "$type" -t "$threads"; then
    echo "$type: $(stat -c %s "$gguf") bytes, quantised in $((SECONDS - t0)) s"
    python3 "$root/tools/bench/gguf_types.py" "$gguf" | tee "$out/types_$type.txt"
  fi
done

for name in bf16 q8_0 q4_k_m; do
  path=$model
  [ "$name" = bf16 ] || path=$work/qwen-$shape-$name.gguf
  [ -e "$path" ] || { echo "=== kiln-bench $name: no model (an earlier step failed)"; continue; }
  echo "=== kiln-bench --backend $backend $name"
  step 150 "bench_$name.log" "$bin/kiln-bench" --backend "$backend" -m "$path" -p 512 -n 128 -r 3 || true
  grep -E "^(load|pp|tg)" "$out/bench_$name.log" || true
done

if [ "$ab_qgemv" = 1 ]; then
  for name in q8_0 q4_k_m; do
    path=$work/qwen-$shape-$name.gguf
    [ -e "$path" ] || continue
    echo "=== kiln-bench --backend $backend $name, KILN_CUDA_QGEMV=old (tg only)"
    step 90 "bench_${name}_qgemv_old.log" env KILN_CUDA_QGEMV=old "$bin/kiln-bench" \
      --backend "$backend" -m "$path" -p 0 -n 128 -r 3 || true
    grep -E "^tg" "$out/bench_${name}_qgemv_old.log" || true
  done
fi

if [ -n "$ab_env" ]; then
  echo "=== A/B: $ab_env (tg128, alternating)"
  [ -n "${AB_SKIP_BF16:-}" ] || ab_tg bf16 "$model"  # AB_SKIP_BF16=1: a switch of the GGUF path only
  for name in q8_0 q4_k_m; do
    [ -e "$work/qwen-$shape-$name.gguf" ] && ab_tg "$name" "$work/qwen-$shape-$name.gguf"
  done
fi

if [ "$ab_float" = 1 ]; then
  for name in q8_0 q4_k_m; do
    path=$work/qwen-$shape-$name.gguf
    [ -e "$path" ] || continue
    echo "=== kiln-bench --backend $backend $name, KILN_CUDA_QUANT_DOT=float (tg only)"
    step 90 "bench_${name}_float.log" env KILN_CUDA_QUANT_DOT=float "$bin/kiln-bench" \
      --backend "$backend" -m "$path" -p 0 -n 128 -r 3 || true
    grep -E "^tg" "$out/bench_${name}_float.log" || true
  done
fi

# Sizes for the memory-bound limits, before the files go.
for name in bf16 q8_0 q4_k_m; do
  path=$work/qwen-$shape-$name.gguf
  [ "$name" = bf16 ] && path=$model/model.safetensors
  [ -f "$path" ] && stat -c %s "$path" > "$out/bytes_$name.txt"
done
rm -rf "$model" "$work"/qwen-"$shape"-*.gguf

python3 - "$out" "$bw" "$shape" "$bw_src" <<'PY'
import os, re, sys
out, bw, shape, bw_src = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
# shared/peers.md, Qwen2.5-7B shape, llama.cpp flash attn: (name, pp512, tg128); F16 beside BF16.
peers = {"bf16": ("F16", 19700.0, 166.3), "q8_0": ("Q8_0", 10700.0, 234.3),
         "q4_k_m": ("Q4_K_M", 9500.0, 261.2)}
def read(path):
    try:
        return open(os.path.join(out, path)).read()
    except OSError:
        return ""
def grab(text, pat):
    m = re.search(pat, text)
    return float(m.group(1)) if m else None
def f(x, d=0): return "n/a" if x is None else f"{x:,.{d}f}"
def r(a, b): return "n/a" if a is None or b is None else f"{a / b:.2f}x"
if shape != "7b":
    print(f"\n(shape {shape}: a plumbing check; the llama.cpp columns are the 7B shape's)")
print(f"\nmemory-bound limit = weight bytes / {bw:.4g} B/s (copy bandwidth, {bw_src})")
print("\n| model | bytes | kiln pp512 | llama.cpp pp512 | ratio | kiln tg128 | llama.cpp tg128 | ratio | "
      "tg limit | kiln % of limit | load s | first token s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, (lname, lp, lt) in peers.items():
    log = read(f"bench_{t}.log")
    size = grab(read(f"bytes_{t}.txt"), r"(\d+)")
    kp, kt = grab(log, r"pp512\s+([\d.]+)"), grab(log, r"tg128\s+([\d.]+)")
    load, first = grab(log, r"load\s+([\d.]+) s"), grab(log, r"first token\s+([\d.]+) s")
    lim = bw / size if size else None
    pct = "n/a" if lim is None or kt is None else f"{100 * kt / lim:.1f} %"
    label = f"{t.upper()} (llama.cpp {lname})"
    print(f"| {label} | {f(size)} | {f(kp)} | {f(lp)} | {r(kp, lp)} | {f(kt, 1)} | {f(lt, 1)} | "
          f"{r(kt, lt)} | {f(lim)} | {pct} | {f(load, 2)} | {f(first, 2)} |")
print("\ntargets: tg128 >= 1.3x llama.cpp, pp512 >= 1.0x (issue 5)")
PY

if [ "$with_05b" = 1 ]; then
  echo "=== Qwen2.5-0.5B shape (--with-05b), as run_quant_gpu.sh"
  m05=$work/qwen05b
  if step 120 make_05b.log python3 "$root/tools/bench/make_qwen05b_shape.py" "$m05"; then
    if [ -n "$ab_env" ]; then
      echo "=== 0.5B BF16 A/B: $ab_env"
      ab_tg 05b_bf16 "$m05"
    fi
    for type in q8_0 q4_k_m; do
      gguf=$work/qwen05b-$type.gguf
      step 60 "quantize05b_$type.log" "$bin/kiln-quantize" "$m05" "$gguf" "$type" -t "$threads" || continue
      echo "$type: $(stat -c %s "$gguf") bytes; $(python3 "$root/tools/bench/gguf_types.py" "$gguf")"
      step 60 "bench05b_$type.log" "$bin/kiln-bench" --backend "$backend" -m "$gguf" -p 512 -n 128 -r 3 || true
      grep -E "^(load|pp|tg)" "$out/bench05b_$type.log" || true
      if [ "$ab_qgemv" = 1 ]; then
        step 40 "bench05b_${type}_qgemv_old.log" env KILN_CUDA_QGEMV=old "$bin/kiln-bench" \
          --backend "$backend" -m "$gguf" -p 0 -n 128 -r 3 || true
        echo "KILN_CUDA_QGEMV=old: $(grep -E "^tg" "$out/bench05b_${type}_qgemv_old.log" || true)"
      fi
      [ -n "$ab_env" ] && ab_tg "05b_$type" "$gguf"
      if [ "$ab_float" = 1 ]; then
        step 40 "bench05b_${type}_float.log" env KILN_CUDA_QUANT_DOT=float "$bin/kiln-bench" \
          --backend "$backend" -m "$gguf" -p 0 -n 128 -r 3 || true
        echo "KILN_CUDA_QUANT_DOT=float: $(grep -E "^tg" "$out/bench05b_${type}_float.log" || true)"
      fi
      echo "(llama.cpp 0.5B $type: pp512 $([ $type = q8_0 ] && echo '~53,000, tg128 ~793' || echo '~40,600, tg128 ~795'))"
    done
  fi
  rm -rf "$m05" "$work"/qwen05b-*.gguf
fi
rm -rf "$work"
echo "run_quant_7b.sh: $((SECONDS - start)) s, status $status"
exit $status
