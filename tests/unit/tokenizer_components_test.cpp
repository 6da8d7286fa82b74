// Tokenizer building blocks checked against their specifications: Unicode's U+FFFD substitution
// rule, GPT-2's byte table, HF's split-delimiter behaviours and added-token options.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer/byte_level_table.hpp"
#include "tokenizer/split_behavior.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln::tok {
namespace {

// Unicode 15.0, section 3.9, table 3-8: "U+FFFD for Non-Shortest Form Sequences" example
// <61 F1 80 80 E1 80 C2 62 80 63 80 BF 64> → a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
TEST(TokenizerUtf8, LossyConversionReplacesMaximalSubparts) {
  const std::string bytes = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string r(kReplacementChar);
  EXPECT_EQ(utf8_lossy(bytes), "a" + r + r + r + "b" + r + "c" + r + r + "d");
  // Table 3-9 (surrogates and out-of-range lead bytes): each byte is its own subpart.
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(utf8_lossy("\xF5\x80"), r + r);
  EXPECT_EQ(utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
  EXPECT_EQ(find_invalid_utf8("ok\xC3\xA9\xE4\xB8"), std::optional<size_t>(4));
  EXPECT_FALSE(find_invalid_utf8("ok\xC3\xA9").has_value());
}

// openai/gpt-2 encoder.py bytes_to_unicode: printable bytes map to themselves, the rest to
// 256, 257, ... in byte order.
TEST(TokenizerByteLevel, TableFollowsGpt2Definition) {
  const ByteLevelTable& table = ByteLevelTable::instance();
  EXPECT_EQ(table.char_for_byte('A'), U'A');
  EXPECT_EQ(table.char_for_byte(0x00), 256u);
  EXPECT_EQ(table.char_for_byte(' '), 256u + 32u);   // "Ġ"
  EXPECT_EQ(table.char_for_byte('\n'), 256u + 10u);  // "Ċ"
  EXPECT_EQ(table.char_for_byte(0x7F), 256u + 33u);
  EXPECT_EQ(table.char_for_byte(0xAD), 256u + 67u);  // the last non-printable byte
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(table.byte_for_char(table.char_for_byte(static_cast<uint8_t>(b))), b);
  }
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(table.decode(table.encode(all)), all);
  EXPECT_FALSE(table.decode("\xE2\x96\x81").has_value());  // "▁" is not in the table
}

std::vector<std::string> cut(const std::string& text, SplitBehavior behavior) {
  std::vector<Span> delimiters;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '-') delimiters.push_back({i, i + 1});
  }
  std::vector<std::string> parts;
  for (const Span& s : split_spans(text.size(), delimiters, behavior, false)) {
    parts.push_back(text.substr(s.begin, s.end - s.begin));
  }
  return parts;
}

// The example of HF's SplitDelimiterBehavior documentation (tokenizers, normalizer.rs).
TEST(TokenizerSplit, BehavioursMatchHfDocumentation) {
  const std::string text = "the-final--countdown";
  using V = std::vector<std::string>;
  EXPECT_EQ(cut(text, SplitBehavior::kRemoved), (V{"the", "final", "countdown"}));
  EXPECT_EQ(cut(text, SplitBehavior::kIsolated), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(cut(text, SplitBehavior::kMergedWithPrevious), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(cut(text, SplitBehavior::kMergedWithNext), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(cut(text, SplitBehavior::kContiguous), (V{"the", "-", "final", "--", "countdown"}));
}

// A character-level vocabulary (no merges) with two added tokens, to observe matching options.
std::unique_ptr<Tokenizer> char_tokenizer(const std::string& added_json) {
  std::string vocab;
  const std::string chars = " abcdefgikmnorstwzAIMSK[]";
  for (size_t i = 0; i < chars.size(); ++i) {
    vocab += (i ? ", \"" : "\"") + std::string(1, chars[i]) + "\": " + std::to_string(i);
  }
  return Tokenizer::from_json(R"({"added_tokens": [)" + added_json + R"(],
      "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {)" +
                                  vocab + R"(}, "merges": []}})",
                              "");
}

// HF AddedToken docs: with single_word=true, "ing" does not match inside "tokenizing".
TEST(TokenizerAddedTokens, SingleWordDoesNotMatchInsideWords) {
  const auto tok = char_tokenizer(
      R"({"id": 100, "content": "ing", "single_word": true, "lstrip": false, "rstrip": false,
          "normalized": false, "special": false})");
  const auto inside = tok->encode("tokenizing", false, true);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 100), 0);
  const auto alone = tok->encode("a ing", false, true);
  EXPECT_EQ(alone.back(), 100);
}

// HF AddedToken docs: with lstrip=true, "[MASK]" in "I saw a [MASK]" matches " [MASK]".
TEST(TokenizerAddedTokens, LstripTakesTheWhitespaceBefore) {
  const auto tok = char_tokenizer(
      R"({"id": 100, "content": "[MASK]", "single_word": false, "lstrip": true, "rstrip": false,
          "normalized": false, "special": true})");
  const auto ids = tok->encode("I saw a [MASK]", false, true);
  const auto without = tok->encode("I saw a", false, true);
  std::vector<int32_t> expected = without;
  expected.push_back(100);
  EXPECT_EQ(ids, expected);
  // In plain-text mode the brackets are ordinary characters.
  EXPECT_EQ(tok->encode("[MASK]", false, false).size(), 6u);
  EXPECT_TRUE(tok->is_special(100));
  EXPECT_EQ(tok->vocab_size(), 101);
  EXPECT_EQ(tok->token_to_id("[MASK]"), 100);
}

}  // namespace
}  // namespace kiln::tok
