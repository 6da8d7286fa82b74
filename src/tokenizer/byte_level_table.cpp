#include "tokenizer/byte_level_table.hpp"

#include "tokenizer/utf8.hpp"

namespace kiln::tok {

const ByteLevelTable& ByteLevelTable::instance() {
  static const ByteLevelTable table;
  return table;
}

ByteLevelTable::ByteLevelTable() {
  char_to_byte_.fill(-1);
  const auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t ch = printable(b) ? static_cast<char32_t>(b) : next_extra++;
    byte_to_char_[b] = ch;
    char_to_byte_[ch] = static_cast<int16_t>(b);
    append_utf8(byte_to_utf8_[b], ch);
  }
}

std::optional<uint8_t> ByteLevelTable::byte_for_char(char32_t ch) const {
  if (ch >= char_to_byte_.size() || char_to_byte_[ch] < 0) return std::nullopt;
  return static_cast<uint8_t>(char_to_byte_[ch]);
}

std::string ByteLevelTable::encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_utf8_[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> ByteLevelTable::decode(std::string_view token) const {
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    size_t len = 1;
    const auto cp = decode_utf8_at(token, pos, len);
    if (!cp) return std::nullopt;
    const auto byte = byte_for_char(*cp);
    if (!byte) return std::nullopt;
    out.push_back(static_cast<char>(*byte));
    pos += len;
  }
  return out;
}

}  // namespace kiln::tok
