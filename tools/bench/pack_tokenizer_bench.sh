#!/usr/bin/env bash
# Packs what tools/bench/tokenizer_vs_hf.py needs on the GPU machine (which cannot install
# packages) into DEST (default: .gpucarry/tokbench of this checkout): kiln-tokenize, libkiln.so.0
# and its non-system shared libraries, the mixed corpus (gzip), the qwen3 and llama3 tokenizer
# fixtures and the benchmark script. Expects a Release build in BUILD (default: build) with
# -DKILN_BUILD_SAMPLES=ON and the kiln-tokenize target built.
# On the GPU machine: cd .gpucarry/tokbench && ./run.sh (speed table, then the trained-tokenizer
# check of tools/bench/check_trained_tokenizer_hf.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
DEST=${1:-.gpucarry/tokbench}
rm -rf "$DEST" && mkdir -p "$DEST/bin" "$DEST/lib" "$DEST/tok"
cp "$BUILD/bin/kiln-tokenize" "$DEST/bin/"
cp -L "$BUILD/libkiln.so.0" "$DEST/lib/"
for lib in $(ldd "$BUILD/libkiln.so.0" | awk '/=> \// {print $3}' |
             grep -E "openblas|gfortran|quadmath|pcre2|utf8proc|simdjson|gomp|blas|lapack"); do
  cp -L "$lib" "$DEST/lib/"
done
for name in qwen3 llama3; do
  mkdir -p "$DEST/tok/$name"
  cp tests/fixtures/tokenizers/$name/tokenizer.json.gz tests/fixtures/tokenizers/$name/tokenizer_config.json "$DEST/tok/$name/"
done
python3 tools/bench/make_tokenizer_corpus.py "$DEST/mixed.txt.gz"
cp tools/bench/tokenizer_vs_hf.py tools/bench/check_trained_tokenizer_hf.py "$DEST/"
cat > "$DEST/run.sh" <<'RUN'
#!/usr/bin/env bash
# Unpacks the tokenizers and runs the comparison; prints the Markdown table.
set -euo pipefail
cd "$(dirname "$0")"
for name in qwen3 llama3; do gzip -dkf tok/$name/tokenizer.json.gz; done
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 tokenizer_vs_hf.py --kiln-tokenize bin/kiln-tokenize --corpus mixed.txt.gz \
  qwen3=tok/qwen3 llama3=tok/llama3
# BPE training: HF tokenizers must load kiln's trained tokenizer.json and give identical ids.
python3 check_trained_tokenizer_hf.py --kiln-tokenize bin/kiln-tokenize --corpus mixed.txt.gz
RUN
chmod +x "$DEST/run.sh"
du -sh "$DEST"
