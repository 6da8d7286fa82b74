#!/usr/bin/env bash
# Checkpoint crash-safety (issue 9): kiln-train saves a checkpoint after every step while this
# script SIGKILLs it at random moments, 20 times; after every kill the checkpoint on disk must load
# and verify (kiln-train --resume runs kiln_checkpoint_load, which checks the flatbuffers manifest
# and every tensor's size and offset) and its step must never go backwards.
# usage: check_checkpoint_sigkill.sh KILN_TRAIN_BINARY SOURCE_DIR
set -euo pipefail
bin="$1"
src="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$src/docs/architecture.md"
args=(--data "$data" --batch 2 --seq 32 --eval-every 0 --eval-batches 1 -q -t 1)
# The kill delays scale with how long one start-up + step + save takes on this machine (a loaded
# CI machine can take seconds), so the kills land before, during and after saves everywhere.
t0=$(date +%s%N)
"$bin" --preset tiny "${args[@]}" --steps 1 --total-steps 100000 --save "$work/run"
unit_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$unit_ms" -ge 100 ] || unit_ms=100

kills=0
last_step=1
for i in $(seq 1 20); do
  "$bin" --resume "$work/run" "${args[@]}" --steps 100000 --save "$work/run" --save-every 1 &
  pid=$!
  # between 0.8 and 3.2 start-up+step+save times
  delay_ms=$(( unit_ms * (8 + RANDOM % 25) / 10 ))
  sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
  kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
  wait "$pid" 2>/dev/null || true
  # Must load and verify after every kill; kiln-train's banner says the step it resumes at.
  probe=(--data "$data" --batch 2 --seq 32 --eval-every 0 --eval-batches 1 -t 1 --steps 1)
  if ! "$bin" --resume "$work/run" "${probe[@]}" >/dev/null 2>"$work/err"; then
    echo "checkpoint did not load after kill $i:"
    cat "$work/err"
    exit 1
  fi
  step=$(sed -n 's/.* step \([0-9]*\) -> .*/\1/p' "$work/err")
  if [ -z "$step" ] || [ "$step" -lt "$last_step" ]; then
    echo "after kill $i the checkpoint is at step '${step}', before step $last_step"
    exit 1
  fi
  last_step=$step
done
[ "$last_step" -gt 1 ] || { echo "no run got past its first save"; exit 1; }
leftover=$(find "$work/run" -name 'checkpoint.kiln.tmp.*' | wc -l)
echo "20 runs, $kills killed mid-run; checkpoint loaded after every kill, reaching step $last_step;"
echo "$leftover stale temporary file(s) from saves cut short"
