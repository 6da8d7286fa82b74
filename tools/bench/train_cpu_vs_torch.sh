#!/usr/bin/env bash
# kiln-train vs PyTorch training throughput on the CPU, same model, shape, optimizer and threads,
# in one run (on the GPU machine's 16 cores, where torch is installed). Expects the packed build
# of tools/bench/pack_build.sh unpacked at $1 (bin/kiln-train, lib/).
# usage: tools/bench/train_cpu_vs_torch.sh BUILD_DIR [THREADS]
set -euo pipefail
build="$1"
threads="${2:-16}"
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="$build/lib:${LD_LIBRARY_PATH:-}"
work="$(mktemp -d)"
python3 -c "import numpy as np; np.random.default_rng(0).integers(0, 4096, 4_000_000, dtype=np.uint16).tofile('$work/data.u16')"
for shape in "8 128" "4 512"; do
  set -- $shape
  B=$1 T=$2
  "$build/bin/kiln-train" --preset kjv-tiny --dropout 0 --data "$work/data.u16" --steps 8 --batch "$B" --seq "$T" \
    --eval-every 0 --eval-batches 1 -t "$threads" -q --log-jsonl "$work/kiln.jsonl"
  python3 - "$work/kiln.jsonl" "$B" "$T" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(json.dumps({"peer": "kiln", "threads": int(sys.argv[4]), "batch": int(sys.argv[2]),
                  "seq": int(sys.argv[3]),
                  "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows[2:]),
                  "first_loss": rows[0]["loss"]}))
PY
  python3 tools/bench/train_torch_peer.py models/kjv-tiny/config.json "$work/data.u16" "$B" "$T" 8 "$threads"
done
rm -rf "$work"
