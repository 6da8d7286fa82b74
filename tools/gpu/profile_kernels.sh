#!/usr/bin/env bash
# Per-kernel time of kiln's CUDA inference on the Qwen2.5-0.5B shape, by Nsight Compute: one decode
# step (graph nodes profiled one by one) and one 512-token prefill, each kernel's duration and DRAM
# bytes, summed by kernel name, next to the wall-clock step time kiln-bench measures. Answers "where
# does the step go" before optimising (tools/gpu/NOTES.md keeps the conclusions).
# usage (GPU machine): [MODEL=DIR SHAPE=7b PROFILE=decode|prefill] bash tools/gpu/profile_kernels.sh PACK.tar.xz
#   (PACK from pack_cuda_build.sh)
set -uo pipefail
root=$(pwd)
archive=$1
work=/tmp/kiln-prof
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$archive"
pack=$work/cuda-build
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
model=${MODEL:-/tmp/qwen05b}
# SHAPE=7b profiles the Qwen2.5-7B shape instead (make_qwen05b_shape.py --shape); MODEL may also
# name an existing model directory or GGUF file (e.g. a kiln-quantize output).
[ -e "$model" ] ||
  python3 "$root/tools/bench/make_qwen05b_shape.py" "$model" --shape "${SHAPE:-05b}" > /dev/null 2>&1
bench=("$pack/bin/kiln-bench" --backend cuda -m "$model")
"${bench[@]}" -p 512 -n 128 -r 3 2>&1 | grep -E "pp|tg"

profile() {  # profile NAME KILN-BENCH-ARGS... : per-kernel table of the last profiled step
  local name=$1; shift
  timeout 240 ncu --graph-profiling node --csv --page raw \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size \
    "${bench[@]}" "$@" -r 1 > "$work/$name.csv" 2> "$work/$name.err"
  echo "ncu exit $? ($name)"; tail -3 "$work/$name.err"
  python3 - "$work/$name.csv" "$name" <<'PY'
import csv, sys, collections
path, name = sys.argv[1], sys.argv[2]
rows = [r for r in csv.reader(open(path)) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]; data = rows[head + 2:]
k = cols.index("Kernel Name"); t = cols.index("gpu__time_duration.sum")
rd = cols.index("dram__bytes_read.sum"); wr = cols.index("dram__bytes_write.sum")
g = cols.index("launch__grid_size"); b = cols.index("launch__block_size")
def num(x):
    try: return float(x.replace(",", ""))
    except ValueError: return 0.0
# The decode run: the last step is the last (n_layers * per-layer + head) kernels; take the kernels
# after the last embedding gather.
if name == "decode":
    last = max(i for i, r in enumerate(data) if "embedding" in r[k])
    data = data[last:]
agg = collections.OrderedDict()
for r in data:
    key = r[k].split("(")[0][:60]
    a = agg.setdefault(key, [0, 0.0, 0.0, r[g], r[b]])
    a[0] += 1; a[1] += num(r[t]); a[2] += num(r[rd]) + num(r[wr])
total = sum(a[1] for a in agg.values())
print(f"--- {name}: {len(data)} kernels, {total/1e3:.1f} us of kernel time")
for key, (n, ns, by, grid, blk) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    gbps = by / ns if ns else 0
    print(f"{key:60s} n={n:4d} {ns/1e3:9.1f} us {ns/1e3/n:7.2f} us/each  {gbps:7.0f} GB/s  grid {grid} block {blk}")
PY
}
# PROFILE=decode or PROFILE=prefill runs only that one.
[ "${PROFILE:-decode}" != prefill ] && profile decode -p 0 -n 3
[ "${PROFILE:-prefill}" != decode ] && profile prefill -p 512 -n 0
exit 0
