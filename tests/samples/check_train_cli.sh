#!/usr/bin/env bash
# kiln-train's contract (docs/training.md): --help; a run cut short at step 3 and resumed in a new
# process to step 6 logs exactly what an uninterrupted 6-step run logs (tokens_per_s, a timing,
# aside) and ends in a byte-identical checkpoint; the JSONL lines carry the documented keys; the
# loss curve is an SVG; bad flags exit 2.
# usage: check_train_cli.sh KILN_TRAIN_BINARY SOURCE_DIR
set -euo pipefail
bin="$1"
src="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$src/docs/architecture.md"
common=(--preset tiny --data "$data" --batch 2 --seq 32 --eval-every 2 --eval-batches 1 -q -t 2)

"$bin" --help | grep -q -- "--resume DIR"

"$bin" "${common[@]}" --steps 6 --save "$work/a" --log-jsonl "$work/a.jsonl"
"$bin" "${common[@]}" --steps 3 --total-steps 6 --save "$work/b" --log-jsonl "$work/b.jsonl"
"$bin" --resume "$work/b" --data "$data" --batch 2 --seq 32 --eval-every 2 --eval-batches 1 -q \
  -t 2 --steps 6 --save "$work/b" --log-jsonl "$work/b.jsonl"

strip() { sed -E 's/, "tokens_per_s": [0-9.e+-]+//' "$1"; }
diff <(strip "$work/a.jsonl") <(strip "$work/b.jsonl")
cmp "$work/a/checkpoint.kiln" "$work/b/checkpoint.kiln"
[ "$(grep -c '"loss"' "$work/a.jsonl")" -eq 6 ]
[ "$(grep -c '"val_loss"' "$work/a.jsonl")" -eq 3 ]
grep -q '^{"step": 1, "loss": [0-9.]*, "lr": [0-9.e-]*, "grad_norm": [0-9.e-]*, "tokens_per_s": [0-9.]*}$' \
  "$work/a.jsonl"
grep -q '<svg' "$work/a/loss.svg"

# The same with random windows and BOS-first rows (models/kjv-tiny's recipe): the data state in the
# checkpoint carries the mode, so --resume continues the same stream; and the rows really differ
# from the sequential ones.
"$bin" "${common[@]}" --windows random --bos-first --steps 6 --save "$work/c" --log-jsonl "$work/c.jsonl"
"$bin" "${common[@]}" --windows random --bos-first --steps 3 --total-steps 6 --save "$work/d" \
  --log-jsonl "$work/d.jsonl"
"$bin" --resume "$work/d" --data "$data" --batch 2 --seq 32 --eval-every 2 --eval-batches 1 -q \
  -t 2 --steps 6 --save "$work/d" --log-jsonl "$work/d.jsonl"
diff <(strip "$work/c.jsonl") <(strip "$work/d.jsonl")
cmp "$work/c/checkpoint.kiln" "$work/d/checkpoint.kiln"
if diff -q <(strip "$work/a.jsonl") <(strip "$work/c.jsonl") >/dev/null; then
  echo "--windows random --bos-first logged what the sequential run did"; exit 1
fi

set +e
"$bin" --preset tiny --steps 3 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "missing --data should exit 2"; exit 1; }
"$bin" --preset nope --data "$data" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "an unknown preset should exit 2"; exit 1; }
"$bin" --preset tiny --data "$data" --batch 3 --accum 2 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "--accum not dividing --batch should exit 2"; exit 1; }
"$bin" --resume "$work/nothing-here" --data "$data" >/dev/null 2>&1
[ $? -eq 1 ] || { echo "resuming from a missing checkpoint should fail"; exit 1; }
"$bin" --preset tiny --data "$data" --windows shuffled >/dev/null 2>&1
[ $? -eq 2 ] || { echo "an unknown --windows mode should exit 2"; exit 1; }
"$bin" --resume "$work/d" --data "$data" --windows random --steps 7 >/dev/null 2>&1
[ $? -eq 1 ] || { echo "--windows on --resume should be refused"; exit 1; }
echo "kiln-train contract holds"
