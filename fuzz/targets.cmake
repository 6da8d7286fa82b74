# The libFuzzer targets, one per parser of outside data (fuzz/<name>.cpp, seeds in
# fuzz/corpus/<name>/). Shared by fuzz/CMakeLists.txt (the clang fuzzing build) and
# tests/CMakeLists.txt (the corpus replay tests of the normal build).
set(KILN_FUZZ_TARGETS
  fuzz_gguf
  fuzz_safetensors
  fuzz_config_json
  fuzz_tokenizer_json
  fuzz_tokenizer_encode
  fuzz_chat_template
  fuzz_checkpoint)
# fuzz_tokenizer_encode loads a real tokenizer once; it finds it relative to the source tree.
set(KILN_FUZZ_TOKENIZER_DIR "${PROJECT_SOURCE_DIR}/tests/fixtures/tiny-qwen2")
