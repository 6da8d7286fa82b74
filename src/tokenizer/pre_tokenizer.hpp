// HF pre-tokenizers (tokenizers/src/pre_tokenizers): cut normalized text into the "words" that the
// model encodes one by one.
#pragma once

#include <memory>
#include <string>
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
};

// Builds the pre-tokenizer described by tokenizer.json's "pre_tokenizer" (null → nullptr).
// Supported: Split, ByteLevel, Digits, Metaspace, Punctuation, Whitespace, WhitespaceSplit,
// BertPreTokenizer, Sequence.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& spec, const std::string& path);

}  // namespace kiln::tok
