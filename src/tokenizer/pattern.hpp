// The "pattern" of HF Split / Replace components: {"String": "..."} (a literal) or
// {"Regex": "..."} (compiled with PCRE2 in UTF + UCP mode, so \s \w \d and \p{..} are Unicode-aware
// as in the Oniguruma engine HF uses).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_fields.hpp"

namespace kiln::tok {

struct Span {
  size_t begin;
  size_t end;
};

class Pattern {
 public:
  static Pattern literal(std::string text);
  static Pattern regex(const std::string& expression, const std::string& where);
  // Reads {"String": s} or {"Regex": r}.
  static Pattern from_json(const Json& value, const std::string& path);

  Pattern(Pattern&&) noexcept;
  Pattern& operator=(Pattern&&) noexcept;
  ~Pattern();

  // Non-overlapping, non-empty matches, left to right. `text` must be valid UTF-8.
  std::vector<Span> find_all(std::string_view text) const;
  // Is this the regex `expression` (compared as written)?
  bool is_regex(std::string_view expression) const {
    return compiled_ != nullptr && literal_ == expression;
  }
  // Every match replaced by `content` (taken literally).
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  struct Compiled;
  Pattern(std::string literal, std::unique_ptr<Compiled> compiled);
  std::string literal_;
  std::unique_ptr<Compiled> compiled_;  // null for a literal
};

}  // namespace kiln::tok
