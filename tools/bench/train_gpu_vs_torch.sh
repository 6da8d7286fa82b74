#!/usr/bin/env bash
# kiln's CUDA trainer vs PyTorch (eager and torch.compile) on GPT-2 124M, nanoGPT recipe, one GPU,
# in one run: micro-batch 16 × 1024, vocab 50304, BF16 compute, AdamW, clip 1.0, 10 warm-up and
# 20 timed steps each. Prints each peer's JSON line, then a table: tokens/s, kiln ÷ peer, MFU
# (6N + 12·L·C·T FLOPs per token over 775.5 TFLOP/s) and peak device memory (kiln: cudaMemGetInfo
# used after − before; torch: max_memory_allocated).
# With KILN_BENCH_MUON=1 kiln also trains with Muon (kiln-train-gpu-bench --muon): one more row
# and the time Muon adds per step.
# usage: tools/bench/train_gpu_vs_torch.sh BIN_DIR [BATCH SEQ WARMUP TIMED]
#   BIN_DIR  holds kiln-train-gpu-bench (libkiln.so found through LD_LIBRARY_PATH or its rpath)
set -uo pipefail
bin=$1
B=${2:-16} T=${3:-1024} W=${4:-10} N=${5:-20}
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-.}
mkdir -p "$out"
echo "=== kiln (CUDA trainer)"
muon=() limit=150
if [ "${KILN_BENCH_MUON:-0}" = 1 ]; then muon=(--muon) limit=300; fi
timeout "$limit" "$bin/kiln-train-gpu-bench" "${muon[@]}" "$B" "$T" "$W" "$N" 2>&1 |
  tee "$out/train_bench_kiln.log"
echo "=== PyTorch (eager, torch.compile)"
PYTHONUNBUFFERED=1 timeout 240 python3 "$here/train_gpu_torch_peer.py" "$B" "$T" "$W" "$N" 2>&1 |
  grep -v Warning | tee "$out/train_bench_torch.log"
python3 - "$out/train_bench_kiln.log" "$out/train_bench_torch.log" <<'PY'
import json, sys
rows = []
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "peer" in row:  # not the muon_extra summary line
                if row.get("optimizer") == "muon":
                    row["peer"] += " (muon)"
                rows.append(row)
kiln = next((r for r in rows if r["peer"] == "kiln"), None)
print(f"{'peer':<16}{'tok/s':>12}{'kiln ÷ peer':>13}{'MFU':>8}{'peak GiB':>10}{'loss 0 → last':>18}")
for r in rows:
    ratio = f"{kiln['tokens_per_s'] / r['tokens_per_s']:.2f}" if kiln else "-"
    print(f"{r['peer']:<16}{r['tokens_per_s']:>12,.0f}{ratio:>13}{100 * r['mfu']:>7.1f}%"
          f"{r['device_mem_gib']:>10.2f}{r['first_loss']:>9.3f} → {r['last_loss']:.3f}")
if kiln is None:
    print("kiln did not report (see train_bench_kiln.log above)")
PY
