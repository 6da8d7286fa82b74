// train_bpe: checks the options, runs the two training stages and writes the tokenizer.json.
#include "tokenizer/bpe_trainer.hpp"

#include <set>

#include "core/error.hpp"
#include "tokenizer/byte_level_table.hpp"
#include "tokenizer/json_fields.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {

namespace {

void check_options(const std::vector<std::filesystem::path>& files,
                   const BpeTrainOptions& options) {
  if (files.empty()) fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer training needs at least one file");
  const auto n_special = static_cast<int64_t>(options.special_tokens.size());
  if (options.vocab_size <= 256 + n_special) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "tokenizer training vocab_size " + std::to_string(options.vocab_size) +
             " leaves no room for merges: it must exceed 256 byte tokens + " +
             std::to_string(n_special) + " special tokens");
  }
  if (options.n_threads < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer training n_threads is " +
                                        std::to_string(options.n_threads) +
                                        "; expected 0 (all cores) or more");
  }
  if (options.min_frequency < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT, "tokenizer training min_frequency is " +
                                        std::to_string(options.min_frequency) +
                                        "; expected 1 or more");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < options.special_tokens.size(); ++i) {
    const std::string& token = options.special_tokens[i];
    const std::string where = "tokenizer training special token " + std::to_string(i);
    if (token.empty()) fail(KILN_ERR_INVALID_ARGUMENT, where + " is empty");
    if (find_invalid_utf8(token)) fail(KILN_ERR_INVALID_ARGUMENT, where + " is not valid UTF-8");
    if (!seen.insert(token).second) {
      fail(KILN_ERR_INVALID_ARGUMENT, where + " \"" + token + "\" is listed twice");
    }
  }
}

// nlohmann's ordered_json keeps insertion order, so the file lists the vocabulary by id and the
// top-level fields in the order HF writes them.
using OrderedJson = nlohmann::ordered_json;

OrderedJson byte_level_component(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

}  // namespace

std::string trained_tokenizer_json(const LearnedBpe& bpe, const std::string& pattern,
                                   const std::vector<std::string>& special_tokens) {
  const ByteLevelTable& table = ByteLevelTable::instance();
  std::vector<std::string> names;
  names.reserve(bpe.token_bytes.size());
  for (const std::string& bytes : bpe.token_bytes) names.push_back(table.encode(bytes));

  OrderedJson vocab = OrderedJson::object();
  for (size_t id = 0; id < names.size(); ++id) vocab[names[id]] = id;
  // "left right" strings: byte-level names never contain a space (0x20 is written as U+0120).
  OrderedJson merges = OrderedJson::array();
  for (const LearnedMerge& m : bpe.merges) merges.push_back(names[m.left] + " " + names[m.right]);

  OrderedJson added = OrderedJson::array();
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    added.push_back({{"id", names.size() + i},
                     {"content", special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }

  OrderedJson doc;
  doc["version"] = "1.0";
  doc["truncation"] = nullptr;
  doc["padding"] = nullptr;
  doc["added_tokens"] = std::move(added);
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"},
                             {"pattern", {{"Regex", pattern}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            byte_level_component(false, true, false)}}};
  doc["post_processor"] = nullptr;
  doc["decoder"] = byte_level_component(true, true, true);
  doc["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", std::move(vocab)},
                  {"merges", std::move(merges)}};
  return doc.dump(2, ' ', /*ensure_ascii=*/false) + "\n";
}

std::string train_bpe(const std::vector<std::filesystem::path>& files,
                      const BpeTrainOptions& options) {
  check_options(files, options);
  // Compile once here so that a bad regex fails before any file is read.
  (void)Pattern::regex(options.pattern, "training pattern");
  const WordCounts words = count_words(files, options);
  const auto n_learned = options.vocab_size - static_cast<int32_t>(options.special_tokens.size());
  const LearnedBpe bpe = learn_merges(words, n_learned, options.min_frequency, options.progress);
  if (options.progress && !options.progress(1.0f, "done")) {
    fail(KILN_ERR_CANCELLED, "tokenizer training cancelled by the progress callback");
  }
  return trained_tokenizer_json(bpe, options.pattern, options.special_tokens);
}

}  // namespace kiln::tok
