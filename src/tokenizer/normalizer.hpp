// HF normalizers (tokenizers/src/normalizers): rewrite each piece of input text before
// pre-tokenization. Only the resulting text matters to kiln (no offset alignments are kept).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8; so is the result.
  virtual std::string normalize(std::string_view text) const = 0;
};

// Builds the normalizer described by tokenizer.json's "normalizer" (null → nullptr).
// Supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence.
std::unique_ptr<Normalizer> make_normalizer(const Json& spec, const std::string& path);

}  // namespace kiln::tok
