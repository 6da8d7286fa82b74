#!/usr/bin/env bash
# Runs the C samples (kiln-generate, kiln-logits, kiln-tokenize, kiln-bench) of a build under
# valgrind memcheck, on their success paths and on error paths (missing model, bad flags, bad
# values, a prompt that does not fit, a damaged model file, ...). Every run must exit with the
# status the case expects, and valgrind must report no memory error and no definitely or
# indirectly lost block (--errors-for-leak-kinds=definite,indirect; "possibly lost" and
# "still reachable" are thread-pool stacks and library caches alive at exit).
# Usage: tools/valgrind-samples.sh [BUILD_DIR]   (default: build; needs BUILD_DIR/bin/kiln-*)
#        VALGRIND=none tools/valgrind-samples.sh   checks only the exit statuses, without valgrind
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin="$build/bin"
model=models/kjv-tiny
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A value no sample exits with, so valgrind's verdict and the sample's own status stay apart.
readonly VG_ERROR=99
vg=(valgrind --quiet --error-exitcode=$VG_ERROR --suppressions="$(cd "$(dirname "$0")" && pwd)/valgrind-ld.supp" --leak-check=full
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
    --track-origins=no --num-callers=30)
[ "${VALGRIND:-}" = none ] && vg=()

runs=0
failures=0
# check EXPECTED_STATUS NAME -- COMMAND...
check() {
  local expected=$1 name=$2
  shift 3
  local log="$work/$runs.log" t0=$SECONDS status
  runs=$((runs + 1))
  "${vg[@]}" "$@" >"$log" 2>&1 </dev/null
  status=$?
  if [ "$status" -eq "$VG_ERROR" ]; then
    printf 'FAIL  %-44s valgrind found errors or leaks\n' "$name"
    failures=$((failures + 1))
    cat "$log"
  elif [ "$status" -ne "$expected" ]; then
    printf 'FAIL  %-44s exit %s, expected %s\n' "$name" "$status" "$expected"
    failures=$((failures + 1))
    cat "$log"
  else
    printf 'ok    %-44s exit %s  %3ds\n' "$name" "$status" "$((SECONDS - t0))"
  fi
}

for s in generate logits tokenize bench; do
  if [ ! -x "$bin/kiln-$s" ]; then
    echo "missing $bin/kiln-$s: build the samples first" >&2
    exit 1
  fi
done

# Inputs for the error paths.
printf '{"id": 0, "text": "In the beginning God created"}\n{"id": 1, "text": "caf\\u00e9 \\ud83d\\ude00"}\n' >"$work/encode.jsonl"
printf '{"id": 0, "ids": [1, 2, 3, 400]}\n' >"$work/decode.jsonl"
printf '{"id": 0, "ids": [1, 99999]}\n' >"$work/decode-bad-id.jsonl"
printf '{"id": 0, "text": \n' >"$work/bad.jsonl"
printf 'In the beginning God created the heaven and the earth.\nAnd the earth was without form.\n' >"$work/text.txt"
mkdir -p "$work/damaged"
cp "$model"/*.json "$work/damaged/"
head -c 100000 "$model/model.safetensors" >"$work/damaged/model.safetensors"
long_prompt=$(printf 'and the earth %.0s' $(seq 1 40))

g="$bin/kiln-generate"
check 0 "generate: greedy, 8 tokens" -- "$g" -m $model -n 8 --temp 0 -t 1
check 0 "generate: sampled, stop string, seed" -- "$g" -m $model -n 8 --seed 3 --stop the -t 1
check 0 "generate: --help" -- "$g" --help
check 1 "generate: missing model" -- "$g" -m "$work/no-such-model" -n 4
check 1 "generate: model path is not a model" -- "$g" -m $model/config.json -n 4
check 1 "generate: damaged safetensors" -- "$g" -m "$work/damaged" -n 4
check 2 "generate: unknown flag" -- "$g" --no-such-flag
check 2 "generate: flag without value" -- "$g" -n
check 2 "generate: bad number" -- "$g" -n abc
check 1 "generate: bad sampling option (--temp -1)" -- "$g" -m $model -n 4 --temp -1 -t 1
check 1 "generate: prompt longer than --ctx" -- "$g" -m $model --ctx 8 -p "$long_prompt" -t 1

l="$bin/kiln-logits"
check 0 "logits: 4 ids" -- "$l" -m $model --ids 1,2,3,4 -o "$work/logits.bin" -t 1
check 2 "logits: no arguments" -- "$l"
check 2 "logits: bad id list" -- "$l" -m $model --ids 1,x -o "$work/x.bin"
check 1 "logits: id out of range" -- "$l" -m $model --ids 1,999999 -o "$work/x.bin" -t 1
check 1 "logits: unwritable output" -- "$l" -m $model --ids 1,2 -o "$work/no/such/dir/x.bin" -t 1

t="$bin/kiln-tokenize"
check 0 "tokenize: encode" -- "$t" encode -t $model --jsonl "$work/encode.jsonl"
check 0 "tokenize: decode" -- "$t" decode -t $model --jsonl "$work/decode.jsonl"
check 0 "tokenize: bench" -- "$t" bench -t $model --text "$work/text.txt" --repeat 2
check 1 "tokenize: missing tokenizer" -- "$t" encode -t "$work/no-such-dir" --jsonl "$work/encode.jsonl"
check 1 "tokenize: malformed JSON line" -- "$t" encode -t $model --jsonl "$work/bad.jsonl"
check 1 "tokenize: id out of range" -- "$t" decode -t $model --jsonl "$work/decode-bad-id.jsonl"
check 2 "tokenize: unknown command" -- "$t" frobnicate -t $model
check 2 "tokenize: bad --repeat" -- "$t" bench -t $model --text "$work/text.txt" --repeat 0

b="$bin/kiln-bench"
check 0 "bench: pp16 tg4, 1 repetition" -- "$b" -m $model -p 16 -n 4 -r 1 -t 1
check 1 "bench: missing model" -- "$b" -m "$work/no-such-model"
check 2 "bench: bad value" -- "$b" -m $model -p -5

echo "valgrind: $runs runs, $failures failed"
[ "$failures" -eq 0 ]
