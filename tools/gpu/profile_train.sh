#!/usr/bin/env bash
# Where a GPT-2 124M training step goes on the GPU, by Nsight Compute (issue 6): every kernel of one
# step of kiln-train-gpu-bench (micro-batch 16 × 1024) timed alone, summed by kernel name, next to
# the wall-clock step time; then the attention kernels of cuda_train_attention_test's bench shape
# (B16 H12 T1024 D64) with the sections that say why they run as they do (throughput against the
# tensor and memory limits, occupancy, warp stall reasons).
# usage (GPU machine): bash tools/gpu/profile_train.sh PACK.tar.xz   (PACK from pack_cuda_build.sh
#   holding kiln-train-gpu-bench and cuda_train_attention_test)
#   STEP=0 skips the step profile, ATTENTION=0 the attention sections.
set -uo pipefail
archive=$1
work=/tmp/kiln-prof-train
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$archive"
pack=$work/cuda-build
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

if [ "${STEP:-1}" != 0 ]; then
  "$pack/bin/kiln-train-gpu-bench" 16 1024 3 5 2>&1 | grep -E '^\{' | tail -1
  # Two steps, no timing: the second one (after the plans and buffers exist) is summarised.
  timeout 300 ncu --csv --page raw --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    "$pack/bin/kiln-train-gpu-bench" 16 1024 1 1 > "$work/step.csv" 2> "$work/step.err"
  echo "ncu exit $? (step)"; tail -2 "$work/step.err"
  python3 - "$work/step.csv" <<'PY'
import collections, csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]; data = rows[head + 2:]
k = cols.index("Kernel Name"); t = cols.index("gpu__time_duration.sum")
rd = cols.index("dram__bytes_read.sum"); wr = cols.index("dram__bytes_write.sum")
num = lambda x: float(x.replace(",", "") or 0)
# The bench runs a warm-up step then a timed one: keep the last step, from its embedding forward
# (the first kernel of a step) to the end.
starts = [i for i, r in enumerate(data) if "embedding_forward_kernel" in r[k]]
if starts:
    data = data[starts[-1]:]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
for r in data:
    a = agg[r[k].split("(")[0][:70]]
    a[0] += 1; a[1] += num(r[t]); a[2] += num(r[rd]) + num(r[wr])
total = sum(a[1] for a in agg.values())
print(f"--- one step: {len(data)} kernels, {total / 1e6:.2f} ms of kernel time (each kernel alone, base clocks)")
for name, (n, ns, by) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:40]:
    print(f"{name:70s} n={n:4d} {ns / 1e3:9.1f} us {100 * ns / total:5.1f} %  {by / ns if ns else 0:6.0f} GB/s")
PY
fi

if [ "${ATTENTION:-1}" != 0 ]; then
  : >"$work/attn.txt"
  for kernel in ${KERNELS:-attention_forward_kernel attention_dkdv_kernel attention_dq_kernel}; do
    timeout 200 ncu --kernel-name "$kernel" --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio \
      "$pack/bin/cuda_train_attention_test" --gtest_filter='CudaTrainAttentionBench.*' \
      >> "$work/attn.txt" 2>&1
    echo "ncu exit $? ($kernel)"
  done
  grep -E "attention_|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|Shared Memory Configuration Size|Dynamic Shared|L1/TEX Hit|L2 Hit|One or More Eligible|No Eligible|sm__pipe|sm__inst|smsp__average" "$work/attn.txt" |
    grep -v "^ *----" | head -150
fi
