// HF pre-tokenizers (tokenizers/src/pre_tokenizers): cut normalized text into the "words" that the
// model encodes one by one.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

struct TextPiece {
  std::string text;
  // Does this piece begin at offset 0 of the original input? (Metaspace's prepend_scheme "first"
  // depends on it.)
  bool at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces, in order.
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;
  // True when a "line start" (see is_line_start) is always a piece boundary and the pieces on
  // each side do not depend on the text on the other side, so the text may be cut there and the
  // halves pre-tokenized on their own (HfTokenizer::encode_threaded). Conservative: false unless
  // reasoned out for the component.
  virtual bool splits_at_line_starts() const { return false; }
};

// A line start: byte `pos` of `text` is an ASCII letter, byte pos-1 is '\n' and byte pos-2 is
// ASCII and not whitespace (so the '\n' is a whitespace run of its own).
inline bool is_line_start(std::string_view text, size_t pos) {
  if (pos < 2 || pos >= text.size() || text[pos - 1] != '\n') return false;
  const auto c = static_cast<unsigned char>(text[pos]);
  const auto b = static_cast<unsigned char>(text[pos - 2]);
  const bool letter = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  const bool ascii_non_space = b > 0x20 && b < 0x7F;
  return letter && ascii_non_space;
}

// Builds the pre-tokenizer described by tokenizer.json's "pre_tokenizer" (null → nullptr).
// Supported: Split, ByteLevel, Digits, Metaspace, Punctuation, Whitespace, WhitespaceSplit,
// BertPreTokenizer, Sequence.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& spec, const std::string& path);

}  // namespace kiln::tok
