#!/usr/bin/env bash
# llama.cpp itself reads the GGUF files kiln writes (issue 5): kiln-quantize converts two HF
# models — tests/fixtures/tiny-qwen2 (Qwen2: qkv bias, GPT-2-style BPE) and models/kjv-tiny
# (Llama) — and llama.cpp's own F32 GGUF of tiny-qwen2 to F16, Q8_0 and Q4_K_M; llama.cpp's own loader opens each file, runs a prompt and
# tokenizes texts with the tokenizer.ggml.* keys kiln wrote. Passes when, for every file:
#   - llama.cpp loads it and its logits for every position agree with kiln's logits for the same
#     file (relative L2 within the bound of the type; for F16 also the top-1 at every position);
#   - llama.cpp's tokenization of each text equals kiln's tokenization with the model's HF
#     tokenizer.json (which the tokenizer tests hold to HF's own ids).
# The bounds are the differences between the two engines' arithmetic (llama.cpp's CPU backend
# rounds activations to 8 bits for quantised dot products, kiln's CPU path does not): measured
# 6.1e-4 (F16), 9.8e-3 (Q8_0), 1.4e-2 (Q4_K_M) on tiny-qwen2 — the same as kiln shows against
# llama.cpp on llama.cpp's own Q8_0 / Q4_K_M files of that model (9.8e-3, 1.3e-2).
#
# llama.cpp comes from npm (node-llama-cpp ships llama.cpp's CPU build and, in a git bundle, the
# source of that release, whose llama.h the small reader tools/llamacpp/llama_logits.c is built
# against). Nothing of it is linked into kiln. Set KILN_LLAMACPP_CACHE to reuse a set-up tree.
# usage: tools/llamacpp/check_kiln_gguf.sh BUILD_DIR      (BUILD_DIR holds bin/kiln-quantize,
#        bin/kiln-logits and bin/kiln-tokenize of a CPU or CUDA build; kiln runs on the CPU here)
# Exit status: 0 pass, 1 a check failed, 3 llama.cpp could not be set up (npm unreachable).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(realpath "${1:?usage: check_kiln_gguf.sh BUILD_DIR}")
version=3.22.1  # node-llama-cpp; its llama.cpp release is in llama/llama.cpp.info.json
cache=${KILN_LLAMACPP_CACHE:-$PWD/.llamacpp-cache}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need=()
command -v npm >/dev/null || need+=(npm)
command -v git >/dev/null || need+=(git)
command -v gcc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- llama.cpp: the CPU build and its headers ---------------------------------------------------
bins=$cache/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
if [ ! -f "$cache/include/llama.h" ] || [ ! -d "$bins" ]; then
  rm -rf "$cache" && mkdir -p "$cache"
  ok=0
  for attempt in 1 2 3; do
    if (cd "$cache" && echo '{"private": true}' >package.json &&
        npm install --no-audit --no-fund --ignore-scripts --omit=optional \
          "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >npm.log 2>&1); then
      ok=1
      break
    fi
    echo "npm install failed (attempt $attempt):" && tail -5 "$cache/npm.log"
    sleep 10
  done
  if [ $ok -ne 1 ] || [ ! -d "$bins" ]; then
    echo "llama.cpp could not be set up from npm: the check did not run"
    exit 3
  fi
  # The headers of the exact release: only include/ and ggml/include of its source bundle.
  git clone -q --no-checkout "$cache/node_modules/node-llama-cpp/llama/gitRelease.bundle" \
    "$work/src" 2>/dev/null
  git -C "$work/src" checkout -q HEAD -- include ggml/include
  mkdir -p "$cache/include"
  cp "$work"/src/include/*.h "$work"/src/ggml/include/*.h "$cache/include/"
fi
echo "llama.cpp: $(tr -d '\n ' <"$cache/node_modules/node-llama-cpp/llama/llama.cpp.info.json")"
lib() { find "$bins" -maxdepth 1 -name "$1" | head -1; }
gcc -O2 -Wall -Wextra -Werror -o "$work/llama_logits" tools/llamacpp/llama_logits.c \
  -I"$cache/include" "$(lib 'libllama*.so')" "$(lib 'libggml.v*.so')" "$(lib libggml-base.so)" \
  -Wl,-rpath,"$bins"
export LLAMA_BACKEND_DIR=$bins

# --- the checks ---------------------------------------------------------------------------------
texts=("The quick brown fox jumps over the lazy dog. Hello world! 42 tokens, please."
       "In the beginning God created the heaven and the earth."
       "  leading spaces, tabs	and unicode: café, naïve, 東京 — done.")
failed=0
check_model() {  # NAME SOURCE(HF dir or GGUF) TOKENIZER_DIR IDS(comma-separated)
  local name=$1 dir=$2 tok=$3 ids=$4 jsonl=$work/texts.jsonl
  : >"$jsonl"
  for i in "${!texts[@]}"; do
    python3 -c 'import json,sys; print(json.dumps({"id": int(sys.argv[1]), "text": sys.argv[2]}))' \
      "$i" "${texts[$i]}" >>"$jsonl"
  done
  "$build/bin/kiln-tokenize" -t "$tok" --jsonl "$jsonl" >"$work/$name.kiln_ids.jsonl"
  for type in f16 q8_0 q4_k_m; do
    local gguf=$work/$name-$type.gguf
    "$build/bin/kiln-quantize" "$dir" "$gguf" "$type" >/dev/null 2>&1
    "$work/llama_logits" "$gguf" "$work/$name-$type.llama.bin" ${ids//,/ } >/dev/null
    "$build/bin/kiln-logits" -m "$gguf" --ids "$ids" -o "$work/$name-$type.kiln.bin" \
      --backend cpu >/dev/null 2>&1
    : >"$work/$name-$type.llama_ids"
    for i in "${!texts[@]}"; do
      "$work/llama_logits" "$gguf" --tokenize "${texts[$i]}" >>"$work/$name-$type.llama_ids"
    done
    python3 tools/llamacpp/compare.py "$name" "$type" "$(tr ',' '\n' <<<"$ids" | wc -l)" \
      "$work/$name-$type.llama.bin" \
      "$work/$name-$type.kiln.bin" "$work/$name.kiln_ids.jsonl" "$work/$name-$type.llama_ids" ||
      failed=1
  done
}
fixture=tests/fixtures/gguf/tiny-qwen2
prompt=$(python3 -c 'import json, sys; print(",".join(map(str, json.load(open(sys.argv[1]))["token_ids"])))' \
  "$fixture/manifest.json")
check_model tiny-qwen2 tests/fixtures/tiny-qwen2 tests/fixtures/tiny-qwen2 "$prompt"
# GGUF → GGUF: llama.cpp's own F32 file requantised by kiln (the tokenizer from its GGUF keys).
check_model tiny-qwen2-from-gguf "$fixture/tiny-qwen2-f32.gguf" "$fixture" "$prompt"
check_model kjv-tiny models/kjv-tiny models/kjv-tiny 1,450,3000,77,12,999,5,42,1024,7,2048,300
if [ $failed -ne 0 ]; then
  echo "FAILED: llama.cpp and kiln disagree on a kiln-written GGUF file (above)"
  exit 1
fi
echo "PASSED: llama.cpp loads every kiln-written GGUF file and agrees with kiln"
