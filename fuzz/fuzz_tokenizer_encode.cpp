// Fuzzes encode/decode of a real byte-level BPE tokenizer (tests/fixtures/tiny-qwen2, loaded
// once) on arbitrary bytes: invalid UTF-8, stray special-token text, long runs. The input is also
// read as little-endian int32 ids for decode, which must reject out-of-range ids with a
// kiln::Error and decode the rest without crashing.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "fuzz_expect_error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

const kiln::Tokenizer& fixture_tokenizer() {
  static const std::unique_ptr<kiln::Tokenizer> tokenizer = kiln::Tokenizer::from_files(
      KILN_FUZZ_TOKENIZER_DIR "/tokenizer.json", KILN_FUZZ_TOKENIZER_DIR "/tokenizer_config.json");
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kiln::Tokenizer& tokenizer = fixture_tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool parse_special = size > 0 && (data[0] & 1) != 0;

  kiln::fuzz::expect_success_or_kiln_error([&] {
    const auto ids = tokenizer.encode(text, true, parse_special);
    for (const int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) __builtin_trap();  // encode made up an id
    }
    (void)tokenizer.decode(ids, !parse_special);
  });

  std::vector<int32_t> ids(size / sizeof(int32_t));
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * sizeof(int32_t));
  kiln::fuzz::expect_success_or_kiln_error([&] { (void)tokenizer.decode(ids, parse_special); });
  return 0;
}
