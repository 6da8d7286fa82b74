// GPT-2's reversible byte ↔ printable-character table (openai/gpt-2 encoder.py bytes_to_unicode,
// also used by HF tokenizers' ByteLevel pre-tokenizer and decoder). Printable Latin-1 bytes map to
// themselves; the other 68 bytes map to U+0100.. in byte order (so space 0x20 → U+0120 "Ġ").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::tok {

class ByteLevelTable {
 public:
  static const ByteLevelTable& instance();  // immutable, built once

  char32_t char_for_byte(uint8_t byte) const { return byte_to_char_[byte]; }
  std::optional<uint8_t> byte_for_char(char32_t ch) const;

  // Maps every byte of `bytes` to its character (UTF-8 encoded).
  std::string encode(std::string_view bytes) const;
  // Inverse mapping of one token; nullopt if any character is outside the table (HF then keeps
  // the token's own bytes).
  std::optional<std::string> decode(std::string_view token) const;

 private:
  ByteLevelTable();
  std::array<char32_t, 256> byte_to_char_{};
  std::array<int16_t, 324> char_to_byte_{};  // indexed by code point; -1 = not in the table
  std::array<std::string, 256> byte_to_utf8_{};
};

}  // namespace kiln::tok
