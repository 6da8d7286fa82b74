// Fuzzes HF config.json + generation_config.json parsing. The input is split at the first NUL
// byte: before it config.json, after it generation_config.json (empty when there is none), so
// both files and their interplay are explored.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_expect_error.hpp"
#include "model/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string config = input.substr(0, split);
  const std::string generation = split == std::string::npos ? "" : input.substr(split + 1);
  kiln::fuzz::expect_success_or_kiln_error(
      [&] { (void)kiln::parse_model_config(config, generation, "fuzz/config.json"); });
  return 0;
}
