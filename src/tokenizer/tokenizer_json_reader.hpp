// TokenizerJsonReader: parses tokenizer.json with simdjson and hands the pipeline its usual
// nlohmann::json view of everything except model.vocab and model.merges, which are read straight
// into BpeTables. Those two tables are nearly the whole file (Llama 3: 9 MB of 9.1), and building
// nlohmann's DOM of them (a std::map node per token, a heap string per merge) took as long as the
// rest of the load; simdjson parses the file in a few milliseconds and its strings are viewed,
// not copied.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "tokenizer/bpe_model.hpp"
#include "tokenizer/json_fields.hpp"
#include "tokenizer/load_timer.hpp"

namespace kiln::tok {

class TokenizerJsonReader {
 public:
  // Readable bytes a caller may promise after the text (`padded`), so that the parser reads it in
  // place instead of copying it into a padded buffer first.
  static constexpr size_t kPadding = 64;

  // `what` names the file in messages ("tokenizer.json"). Throws KILN_ERR_FORMAT for text that
  // is not JSON (with nlohmann's description of where) or not a JSON object. `padded`: kPadding
  // bytes after the text are readable (their values do not matter).
  TokenizerJsonReader(std::string_view text, const std::string& what, bool padded = false,
                      LoadTimer* timer = nullptr);
  ~TokenizerJsonReader();
  TokenizerJsonReader(const TokenizerJsonReader&) = delete;
  TokenizerJsonReader& operator=(const TokenizerJsonReader&) = delete;

  // The document. When tables() is set, its "model" lacks "vocab" and "merges".
  const Json& document() const { return document_; }
  // model.vocab and model.merges when both were well-formed (views valid while the reader
  // lives); nullptr otherwise, and then they are in document() for BpeModel to read and report.
  const BpeTables* tables() const { return tables_ ? &*tables_ : nullptr; }

 private:
  struct Parser;
  std::unique_ptr<Parser> parser_;  // owns the strings tables_ views
  Json document_;
  std::optional<BpeTables> tables_;
};

}  // namespace kiln::tok
