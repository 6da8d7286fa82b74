#!/usr/bin/env bash
# Retrains the bundled default model (models/kjv-tiny) with kiln-train on the GPU machine, with
# models/kjv-tiny/train.py's recipe (same split and token streams, random 256-token windows that
# start with BOS, batch 64, 2000 steps, AdamW lr 1e-3 betas 0.9/0.95, warmup 100 then cosine to
# 10 %, weight decay 0.1, clip 1.0, residual dropout 0.2, seed 1234), then measures the kiln model
# and the PyTorch-trained one with the same independent evaluator (tools/gpu/eval_kjv.py: HF
# transformers, train.py's validation windows). Like train.py, which keeps the checkpoint of its
# best validation, kiln-train exports both the final weights ($OUT/kjv-tiny-kiln[-TAG]) and those
# of its best validation (--export-best: $OUT/kjv-tiny-kiln[-TAG]-best); both are evaluated.
# usage (GPU machine, repository root): retrain_kjv.sh ARCHIVE   (a pack holding kiln-train)
#   SEED=N      another seed than the recipe's 1234 (to measure seed-to-seed spread)
#   TAG=NAME    suffix of the output names (default: the seed when SEED is set)
#   EXTRA="..." more kiln-train options, after the recipe's (later ones win: e.g. --dropout 0.25)
#   CORPUS=...  the chapters file models/kjv-tiny/prepare_corpus.py writes
#               (default .devcarry/kjv_chapters.txt.gz, carried to the GPU machine)
set -uo pipefail
root=$(pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
work=/tmp/kiln-kjv
tag=${TAG:-${SEED:-}}
name=kjv-tiny-kiln${tag:+-$tag}
rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xJf "$1"
pack=$work/cuda-build
export LD_LIBRARY_PATH="$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
corpus=${CORPUS:-$root/.devcarry/kjv_chapters.txt.gz}

python3 "$root/tools/gpu/eval_kjv.py" split --corpus "$corpus" --tokenizer "$root/models/kjv-tiny" \
  --out "$work" || exit 1
t0=$SECONDS
"$pack/bin/kiln-train" --preset kjv-tiny --tokenizer "$root/models/kjv-tiny" --backend cuda \
  --data "$work/train.u16" --val "$work/val.u16" --windows random --bos-first \
  --steps 2000 --batch 64 --seq 256 --lr 1e-3 --warmup 100 --schedule cosine --wd 0.1 --clip 1.0 \
  --dropout 0.2 --seed "${SEED:-1234}" --eval-every 100 --eval-batches 2 ${EXTRA:-} \
  --export "$out/$name" --export-best "$out/$name-best" \
  --log-jsonl "$out/$name.jsonl" --plot "$out/$name-loss.svg" -q
status=$?
echo "kiln-train exit $status, $((SECONDS - t0)) s"
grep val_loss "$out/$name.jsonl" | tail -5
[ $status -eq 0 ] || exit 1
python3 "$root/tools/gpu/eval_kjv.py" eval --val "$work/val.u16" --bf16-weights \
  "$root/models/kjv-tiny" "$out/$name" "$out/$name-best"
