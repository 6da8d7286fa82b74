// encode_threaded must give exactly encode()'s ids. Texts of about 1.5 MB are built from the stress
// corpus (every script, emoji, code, whitespace runs, special-token markup) joined by separators
// chosen to put every kind of character before and after a newline, so the cuts at line starts
// land in all the contexts the pre-tokenizer regexes distinguish. The reference is the
// single-threaded encode of the same text, which the conformance tests tie to HF's ids.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "test_support.hpp"
#include "tokenizer/bpe_trainer.hpp"
#include "tokenizer/hf_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

const Tokenizer& real(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    const fs::path root = test::fixtures_dir() / "tokenizers" / name;
    slot = Tokenizer::from_files(test::gunzip_fixture(root / "tokenizer.json.gz"),
                                 root / "tokenizer_config.json");
  }
  return *slot;
}

std::string mixed_text(size_t bytes, uint32_t seed) {
  std::ifstream in(test::fixtures_dir() / "tokenizers" / "corpus.jsonl");
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  static const char* const kSeparators[] = {
      "\n",   "\n\n",           " \n",   "!\n", "'\n",   "x\n",
      "\r\n", "\t\n",           "\n \n", "7\n", ".\n\n", "\u3000\n",
      "é\n",  "<|im_start|>\n", ":\n"};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick_text(0, texts.size() - 1);
  std::uniform_int_distribution<size_t> pick_sep(0, std::size(kSeparators) - 1);
  std::string text;
  while (text.size() < bytes) {
    text += texts[pick_text(rng)];
    text += kSeparators[pick_sep(rng)];
    text += (rng() % 2) ? "Word" : "s";  // an ASCII letter right after the newline
  }
  return text;
}

void expect_same_ids(const Tokenizer& tok, const std::string& text, const std::string& what) {
  for (const bool parse_special : {false, true}) {
    for (const bool add_special : {false, true}) {
      const auto expected = tok.encode(text, add_special, parse_special);
      for (const int threads : {2, 3, 5}) {
        const auto got = tok.encode_threaded(text, add_special, parse_special, threads);
        ASSERT_EQ(got.size(), expected.size())
            << what << " threads " << threads << " parse_special " << parse_special;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i], expected[i]) << what << " threads " << threads << " at " << i;
        }
      }
    }
  }
}

class ThreadedEncode : public ::testing::TestWithParam<std::string> {};

TEST_P(ThreadedEncode, EqualsSingleThreadedOnLargeMixedText) {
  const Tokenizer& tok = real(GetParam());
  expect_same_ids(tok, mixed_text(1500000, 1), GetParam());
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, ThreadedEncode,
                         ::testing::Values("qwen3", "llama3", "mistral", "gptoss"));

TEST(ThreadedEncodeCuts, ByteLevelRegexPipelinesCutAtLineStartsOthersDoNot) {
  // The three byte-level tokenizers' regexes are the analysed ones; Mistral's Prepend/Replace
  // normalizer (a "▁" before every segment) is not local, so it only cuts at added tokens.
  for (const char* name : {"qwen3", "llama3", "gptoss"}) {
    EXPECT_TRUE(dynamic_cast<const tok::HfTokenizer&>(real(name)).cuts_at_line_starts()) << name;
  }
  EXPECT_FALSE(dynamic_cast<const tok::HfTokenizer&>(real("mistral")).cuts_at_line_starts());
}

TEST(ThreadedEncodeCuts, GptTwoByteLevelRegexAndTrainedTokenizer) {
  // A trained tokenizer (Split with the default regex + ByteLevel) and the same vocabulary with
  // a GPT-2 ByteLevel(use_regex) pre-tokenizer instead.
  const fs::path corpus = test::temp_dir("threaded") / "corpus.txt";
  test::write_file(corpus, mixed_text(300000, 9));
  tok::BpeTrainOptions options;
  options.vocab_size = 2000;
  options.special_tokens = {"<|im_start|>"};
  const std::string trained = tok::train_bpe({corpus}, options);
  const auto trained_tok = Tokenizer::from_json(trained, "");
  EXPECT_TRUE(dynamic_cast<const tok::HfTokenizer&>(*trained_tok).cuts_at_line_starts());
  expect_same_ids(*trained_tok, mixed_text(1200000, 2), "trained");

  nlohmann::json doc = nlohmann::json::parse(trained);
  doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const auto gpt2_tok = Tokenizer::from_json(doc.dump(), "");
  EXPECT_TRUE(dynamic_cast<const tok::HfTokenizer&>(*gpt2_tok).cuts_at_line_starts());
  expect_same_ids(*gpt2_tok, mixed_text(1200000, 3), "gpt2-regex");

  doc["pre_tokenizer"]["add_prefix_space"] = true;  // a space before every piece: no cuts
  EXPECT_FALSE(dynamic_cast<const tok::HfTokenizer&>(*Tokenizer::from_json(doc.dump(), ""))
                   .cuts_at_line_starts());
}

}  // namespace
}  // namespace kiln
