// UTF-8 helpers shared by the tokenizer stages (RFC 3629).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::tok {

// Decodes the code point starting at text[pos]. Returns nullopt (and leaves `length` unset) when
// the bytes there are not a complete, valid UTF-8 sequence.
std::optional<char32_t> decode_utf8_at(std::string_view text, size_t pos, size_t& length);

void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first invalid sequence, or nullopt if `text` is entirely valid UTF-8.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Rust's String::from_utf8_lossy, which HF tokenizers applies to decoded bytes: each maximal
// invalid subpart (Unicode 15, section 3.9 "U+FFFD Substitution of Maximal Subparts") becomes one
// U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Calls fn(code_point, byte_offset, byte_length) for each character of valid UTF-8 `text`.
template <typename Fn>
void for_each_code_point(std::string_view text, Fn&& fn) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 1;
    char32_t cp = decode_utf8_at(text, pos, len).value_or(0xFFFD);
    fn(cp, pos, len);
    pos += len;
  }
}

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace kiln::tok
