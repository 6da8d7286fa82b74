#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, KILN_FUZZ=ON) in build-fuzz/ and runs each for
# SECONDS (default 60) on its seed corpus, then prints one line per target from libFuzzer's final
# stats: executions, exec/s, edge coverage, and whether it found a crash.
# Usage: tools/fuzz.sh [SECONDS] [TARGET...]   (default: every target in fuzz/CMakeLists.txt)
# New inputs go to build-fuzz/corpus/<target>/ (the committed seeds in fuzz/corpus/ stay as they
# are); crash/leak/timeout reproducers go to build-fuzz/artifacts/<target>/, logs to
# build-fuzz/logs/<target>.log. Reproduce one: build-fuzz/fuzz/<target> <artifact file>.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_gguf fuzz_safetensors fuzz_config_json fuzz_tokenizer_json fuzz_tokenizer_encode
           fuzz_chat_template fuzz_checkpoint)
fi

cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER=clang -DKILN_FUZZ=ON -DKILN_CUDA=OFF -DKILN_BUILD_BINDINGS=OFF \
  -DKILN_BUILD_TESTS=OFF -DKILN_BUILD_SAMPLES=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
printf '%-24s %12s %10s %8s %8s  %s\n' target execs exec/s cov ft result
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/artifacts/$t" build-fuzz/logs
  log="build-fuzz/logs/$t.log"
  # -timeout: one input taking over 10 s is a finding (a hang); -rss_limit_mb: so is using 2 GB.
  if "build-fuzz/fuzz/$t" "build-fuzz/corpus/$t" "fuzz/corpus/$t" -max_total_time="$seconds" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="build-fuzz/artifacts/$t/" >"$log" 2>&1; then
    result="ok"
  else
    result="FINDING (see $log)"
    status=1
  fi
  # The last coverage line ("#N DONE cov: C ft: F ...") and the final stats.
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  printf '%-24s %12s %10s %8s %8s  %s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$result"
done
exit $status
