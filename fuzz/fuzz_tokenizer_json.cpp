// Fuzzes tokenizer.json + tokenizer_config.json parsing (Tokenizer::from_json). As in
// fuzz_config_json, the first NUL byte splits the input into the two files. A tokenizer that
// parses is also exercised on a short fixed text, since construction defers some checks to use.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_expect_error.hpp"
#include "tokenizer/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string tokenizer_json = input.substr(0, split);
  const std::string config_json = split == std::string::npos ? "" : input.substr(split + 1);
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const auto tokenizer = kiln::Tokenizer::from_json(tokenizer_json, config_json);
    const auto ids = tokenizer->encode("Hello, world! <|im_start|> 123", true, true);
    (void)tokenizer->decode(ids, false);
  });
  return 0;
}
