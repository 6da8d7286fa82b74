"""Where a decode step's time goes, measured in place: reads Nsight Systems' cuda_gpu_trace CSV
(nsys stats --report cuda_gpu_trace of a kiln-bench decode run with CUDA graph nodes traced),
splits the kernel stream into steps at the host-side pauses between them, and prints for the
median step the wall-clock span, the sum of kernel durations, the time between kernels, and the
per-kernel-name times. The gap column is what launch overlap (programmatic dependent launch) can
at most recover; the kernel column is what faster kernels must recover.

usage: python3 nsys_decode_gaps.py TRACE.csv [--step-gap-us 30]
"""
import csv
import statistics
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    step_gap = float(sys.argv[sys.argv.index("--step-gap-us") + 1]) if "--step-gap-us" in sys.argv else 30.0
    rows = list(csv.DictReader(open(path)))
    if not rows:
        sys.exit("no rows in " + path)
    start_key = next(k for k in rows[0] if k.startswith("Start"))
    dur_key = next(k for k in rows[0] if k.startswith("Duration"))
    kernels = [(int(r[start_key]), int(r[dur_key]), r["Name"]) for r in rows
               if r.get("Name") and not r["Name"].startswith("[CUDA")]
    kernels.sort()
    steps, current = [], []
    for k in kernels:
        if current and (k[0] - (current[-1][0] + current[-1][1])) / 1e3 > step_gap:
            steps.append(current)
            current = []
        current.append(k)
    if current:
        steps.append(current)
    # Decode steps are the groups with the most common kernel count (prefill/warm-up differ).
    counts = defaultdict(int)
    for s in steps:
        counts[len(s)] += 1
    n_common = max(counts, key=lambda c: (counts[c], c))
    decode = [s for s in steps if len(s) == n_common]
    if not decode:
        sys.exit("no decode steps found")
    walls = [(s[-1][0] + s[-1][1] - s[0][0]) / 1e3 for s in decode]
    median = decode[sorted(range(len(decode)), key=lambda i: walls[i])[len(decode) // 2]]
    wall = (median[-1][0] + median[-1][1] - median[0][0]) / 1e3
    busy = sum(k[1] for k in median) / 1e3
    print(f"{len(decode)} decode steps of {n_common} kernels (of {len(steps)} groups); median step:")
    print(f"  wall {wall:.1f} us, kernels {busy:.1f} us, between kernels {wall - busy:.1f} us "
          f"({(wall - busy) / max(len(median) - 1, 1):.2f} us per boundary)")
    per = defaultdict(list)
    for k in median:
        per[k[2][:90]].append(k[1] / 1e3)
    print("  | kernel | count | total us | mean us |")
    for name, ds in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        print(f"  | {name} | {len(ds)} | {sum(ds):.1f} | {statistics.mean(ds):.2f} |")


if __name__ == "__main__":
    main()
