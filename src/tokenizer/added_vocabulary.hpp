// HF added tokens (tokenizers/src/tokenizer/added_vocabulary.rs): strings such as "<|im_start|>"
// or "<think>" that are found in the input before the model sees it and become one id each.
// Tokens with normalized=false are matched in the raw input; normalized=true ones in the
// normalizer's output. Matching is leftmost-longest; lstrip/rstrip widen a match over adjacent
// whitespace and single_word rejects a match inside a word.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A stretch of input: plain text, or one added token.
struct Segment {
  std::string text;       // empty for an added token
  int32_t token_id = -1;  // >= 0 for an added token
  bool at_input_start = false;
  // Does it directly follow plain text of the same input that was encoded before it
  // (Tokenizer::encode_continuation)? Then a Prepend normalizer leaves it alone.
  bool continues_text = false;
};

class AddedVocabulary {
 public:
  // Reads tokenizer.json's "added_tokens" array.
  static AddedVocabulary from_json(const Json& list, const std::string& path);

  // Splits plain-text segments at the added tokens of one kind (normalized or not).
  std::vector<Segment> split(std::vector<Segment> segments, bool normalized) const;
  bool has_normalized_tokens() const { return !matchers_[1].empty(); }

  const AddedToken* find_by_id(int32_t id) const;
  std::optional<int32_t> find_by_content(std::string_view content) const;
  std::optional<int32_t> max_id() const;

 private:
  // Indices into tokens_, bucketed by first byte, longest content first within a bucket.
  using Matcher = std::array<std::vector<size_t>, 256>;
  struct MatcherSet {
    Matcher by_first_byte;
    bool empty() const;
  };
  struct Match {
    size_t begin, end;
    int32_t id;
  };
  std::optional<Match> match_at(std::string_view text, size_t pos, const Matcher& matcher) const;
  void build_matchers();

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> index_by_id_;
  std::unordered_map<std::string, int32_t> id_by_content_;
  std::array<MatcherSet, 2> matchers_;  // [0]: normalized=false, [1]: normalized=true
};

}  // namespace kiln::tok
