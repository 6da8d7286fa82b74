// HF BPE model (tokenizers/src/models/bpe): vocabulary, merge ranks, and the per-word merge loop.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_fields.hpp"
#include "tokenizer/load_timer.hpp"
#include "tokenizer/merge_table.hpp"
#include "tokenizer/token_index.hpp"

namespace kiln::tok {

// std::string keys looked up by std::string_view without building a temporary string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// model.vocab and model.merges, already read and checked by a JSON reader (views into its
// buffers, valid during BpeModel::from_json). Entries are in file order.
struct BpeTables {
  std::vector<std::pair<std::string_view, int32_t>> vocab;
  std::vector<std::pair<std::string_view, std::string_view>> merges;
  size_t vocab_bytes = 0;  // sum of the token lengths
};

class BpeModel {
 public:
  // Reads tokenizer.json's "model" object. Throws KILN_ERR_UNSUPPORTED for a non-BPE type and
  // KILN_ERR_FORMAT for malformed vocab or merges (naming the entry). With `tables`, vocab and
  // merges come from there and model's own "vocab"/"merges" members are not read.
  // `timer` records the stages when given.
  static BpeModel from_json(const Json& model, const std::string& path,
                            const BpeTables* tables = nullptr, LoadTimer* timer = nullptr);

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullopt for ids the vocabulary lacks; valid while the model lives.
  std::optional<std::string_view> id_to_token(int32_t id) const { return vocab_.token(id); }
  int32_t max_id() const { return vocab_.max_id(); }

 private:
  BpeModel() = default;
  static BpeTables tables_from_json(const Json& model, const std::string& path);
  void load_vocab(const BpeTables& tables);
  void load_merges(const BpeTables& tables, const std::string& path, LoadTimer* timer);
  void add_initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;

  TokenIndex vocab_;
  MergeTable merges_;
  // Ids of the vocabulary's single-character tokens, the starting symbols of every word.
  std::unordered_map<char32_t, int32_t> char_ids_;
  std::array<int32_t, 256> byte_fallback_ids_{};  // "<0xAB>" tokens, -1 where absent
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
};

}  // namespace kiln::tok
