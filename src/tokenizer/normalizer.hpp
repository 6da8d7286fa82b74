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
  // normalize() of text that directly follows plain text of the same input, normalized before
  // it: HF normalizes each stretch between added tokens as one string, so a Prepend applies once,
  // at the stretch's start, and not again where kiln cut the stretch.
  virtual std::string normalize_continuation(std::string_view text) const {
    return normalize(text);
  }
  // True when normalize(a + b) == normalize(a) + normalize(b) whenever b starts with an ASCII
  // letter (see HfTokenizer::encode_threaded). Conservative: false unless shown.
  virtual bool splits_before_ascii_letter() const { return false; }
};

// Builds the normalizer described by tokenizer.json's "normalizer" (null → nullptr).
// Supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence.
std::unique_ptr<Normalizer> make_normalizer(const Json& spec, const std::string& path);

}  // namespace kiln::tok
