#!/usr/bin/env bash
# Regenerate the HF reference fixtures (tests/fixtures/hf/) and/or rerun the PyTorch
# baseline recipe of the bundled model (models/kjv-tiny/train.py, into $OUT/kjv-tiny-pytorch;
# the bundled weights themselves come from kiln-train: tools/gpu/retrain_kjv.sh) on a CUDA machine with python3 + torch +
# transformers 5.x + tokenizers + safetensors + numpy.
#
#   python3 models/kjv-tiny/prepare_corpus.py      # first, where `bible` (bible-kjv-text) is installed
#   OUT=/tmp/kiln_out tools/gpu_make_fixtures.sh [all|fixtures|kjv]
#
# Both jobs run concurrently (the fixtures need the CPU, training the GPU).
# Fixtures are written in place and packed as $OUT/fixtures.tar.gz; the PyTorch model as
# $OUT/kjv-tiny-pytorch.tar.gz (paths relative to the repository root), with logs.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/kiln_out}
WHAT=${1:-all}
CORPUS=${CORPUS:-.devcarry/kjv_chapters.txt.gz}
mkdir -p "$OUT"
[ -f "$CORPUS" ] || { echo "missing $CORPUS: run models/kjv-tiny/prepare_corpus.py first"; exit 2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
python3 -c 'import torch, transformers, tokenizers, safetensors, numpy; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__, "numpy", numpy.__version__, "cuda", torch.cuda.is_available())'

fx_pid=""
if [ "$WHAT" = all ] || [ "$WHAT" = fixtures ]; then
  ( python3 tests/fixtures/make_hf_fixtures.py --corpus "$CORPUS" --out tests/fixtures/hf --threads 4 \
      > "$OUT/fixtures.log" 2>&1; echo "fixtures exit $?" >> "$OUT/fixtures.log" ) &
  fx_pid=$!
fi
if [ "$WHAT" = all ] || [ "$WHAT" = kjv ]; then
  python3 models/kjv-tiny/train.py --corpus "$CORPUS" --out "$OUT/kjv-tiny-pytorch" > "$OUT/train.log" 2>&1
  echo "train exit $?" >> "$OUT/train.log"
fi
[ -n "$fx_pid" ] && wait "$fx_pid"

if [ "$WHAT" = all ] || [ "$WHAT" = fixtures ]; then
  tar czf "$OUT/fixtures.tar.gz" tests/fixtures/hf
fi
if [ "$WHAT" = all ] || [ "$WHAT" = kjv ]; then
  tar czf "$OUT/kjv-tiny-pytorch.tar.gz" -C "$OUT" kjv-tiny-pytorch
fi
ls -la "$OUT"
for f in "$OUT/fixtures.log" "$OUT/train.log"; do
  [ -f "$f" ] && { echo "===== $f (tail)"; grep -v -i "warn" "$f" | tail -c 4500; }
done
exit 0
