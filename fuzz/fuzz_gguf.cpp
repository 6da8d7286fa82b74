// Fuzzes the GGUF reader (header, metadata KV, tensor infos, alignment and bounds checks) on
// arbitrary bytes through GgufFile::parse, the same code GgufFile::open runs on a mapped file.
// A file that parses then goes through what a GGUF model load derives from it: the HF config,
// the tokenizer built from tokenizer.ggml.*, and the dequantised weights.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "formats/gguf.hpp"
#include "formats/gguf_model.hpp"
#include "formats/gguf_tokenizer.hpp"
#include "fuzz_expect_error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<kiln::GgufFile> file;
  kiln::fuzz::expect_success_or_kiln_error(
      [&] { file = kiln::GgufFile::parse(data, size, "fuzz.gguf"); });
  if (!file) return 0;
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const kiln::ModelConfig config = kiln::gguf_model_config(*file);
    (void)kiln::gguf_weights(*file, config, [](float, const char*) { return true; });
  });
  kiln::fuzz::expect_success_or_kiln_error([&] { (void)kiln::gguf_tokenizer(*file); });
  return 0;
}
