// Conformance of kiln's tokenizer against HF on real tokenizer files: the expected ids and decoded
// text in tests/fixtures/tokenizers/<name>/expected_lenml.jsonl were produced by
// @lenml/tokenizers 3.7.2 and checked identical to HF tokenizers 0.23.2 (see README.upstream.md).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/utf8.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct CorpusLine {
  int id;
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

fs::path fixture_root() { return test::fixtures_dir() / "tokenizers"; }

std::vector<json> read_jsonl(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::vector<json> rows;
  std::string line;
  while (std::getline(in, line)) {  // split on '\n' only, as the README asks
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

std::vector<CorpusLine> load_corpus(const std::string& name) {
  const auto texts = read_jsonl(fixture_root() / "corpus.jsonl");
  const auto expected = read_jsonl(fixture_root() / name / "expected_lenml.jsonl");
  EXPECT_EQ(texts.size(), expected.size());
  std::vector<CorpusLine> lines;
  for (size_t i = 0; i < texts.size() && i < expected.size(); ++i) {
    EXPECT_EQ(texts[i]["id"], expected[i]["id"]);
    lines.push_back({texts[i]["id"].get<int>(), texts[i]["text"].get<std::string>(),
                     expected[i]["ids"].get<std::vector<int32_t>>(),
                     expected[i]["decoded"].get<std::string>()});
  }
  return lines;
}

struct Loaded {
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<CorpusLine> corpus;
  double load_seconds;
};

// Loading a 10 MB tokenizer takes a few hundred ms: do it once per tokenizer per process.
const Loaded& loaded(const std::string& name) {
  static std::map<std::string, Loaded> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    const fs::path json_path = test::gunzip_fixture(fixture_root() / name / "tokenizer.json.gz");
    const auto start = std::chrono::steady_clock::now();
    auto tokenizer =
        Tokenizer::from_files(json_path, fixture_root() / name / "tokenizer_config.json");
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    it = cache.emplace(name, Loaded{std::move(tokenizer), load_corpus(name), seconds}).first;
  }
  return it->second;
}

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? "," : "") << ids[i];
  out << ']';
  return out.str();
}

// Corpus ids whose text contains added-token text (README.upstream.md, "Special-token text").
const std::map<std::string, std::set<int>>& lines_with_added_tokens() {
  static const std::map<std::string, std::set<int>> table = {
      {"qwen3", {146, 147, 152, 153, 157, 159, 162}},
      {"llama3", {150, 155}},
      {"mistral", {148, 149, 151, 154, 161, 163}},
      {"gptoss", {147, 153, 156, 159, 162}},
  };
  return table;
}

// The ids of each file's added tokens (README.upstream.md, "The four tokenizers").
const std::map<std::string, std::pair<int32_t, int32_t>>& added_token_ids() {
  static const std::map<std::string, std::pair<int32_t, int32_t>> table = {
      {"qwen3", {151643, 151668}},
      {"llama3", {128000, 128255}},
      {"mistral", {0, 2}},
      {"gptoss", {199998, 200018}},
  };
  return table;
}

class TokenizerConformance : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerConformance, EncodeMatchesHfOnEveryCorpusLine) {
  const Loaded& t = loaded(GetParam());
  ASSERT_EQ(t.corpus.size(), 173u);
  int passed = 0;
  for (const CorpusLine& line : t.corpus) {
    const auto ids = t.tokenizer->encode(line.text, /*add_special=*/false, /*parse_special=*/true);
    if (ids == line.ids) {
      ++passed;
    } else {
      ADD_FAILURE() << GetParam() << " corpus line " << line.id << ": got " << show(ids)
                    << " expected " << show(line.ids);
    }
  }
  std::cout << "[ conformance ] " << GetParam() << " encode: " << passed << "/" << t.corpus.size()
            << " lines match HF\n";
  EXPECT_EQ(passed, static_cast<int>(t.corpus.size()));
}

TEST_P(TokenizerConformance, DecodeMatchesHfOnEveryCorpusLine) {
  const Loaded& t = loaded(GetParam());
  int passed = 0;
  for (const CorpusLine& line : t.corpus) {
    const std::string text = t.tokenizer->decode(line.ids, /*skip_special=*/false);
    if (text == line.decoded) {
      ++passed;
    } else {
      ADD_FAILURE() << GetParam() << " corpus line " << line.id << ": decoded \"" << text
                    << "\" expected \"" << line.decoded << "\"";
    }
  }
  std::cout << "[ conformance ] " << GetParam() << " decode: " << passed << "/" << t.corpus.size()
            << " lines match HF\n";
  EXPECT_EQ(passed, static_cast<int>(t.corpus.size()));
}

TEST_P(TokenizerConformance, PlainTextModeNeverProducesAddedTokens) {
  const Loaded& t = loaded(GetParam());
  const std::set<int>& with_added = lines_with_added_tokens().at(GetParam());
  const auto [first_added, last_added] = added_token_ids().at(GetParam());
  int checked = 0;
  for (const CorpusLine& line : t.corpus) {
    const auto plain = t.tokenizer->encode(line.text, false, /*parse_special=*/false);
    if (!with_added.count(line.id)) {
      // Without added-token text both modes agree.
      EXPECT_EQ(plain, line.ids) << GetParam() << " line " << line.id;
      continue;
    }
    ++checked;
    EXPECT_NE(plain, line.ids) << GetParam() << " line " << line.id;
    for (const int32_t id : plain) {
      EXPECT_FALSE(id >= first_added && id <= last_added)
          << GetParam() << " line " << line.id << ": added token " << id << " in plain mode";
    }
    EXPECT_EQ(t.tokenizer->decode(plain, false), line.text) << GetParam() << " line " << line.id;
  }
  EXPECT_EQ(checked, static_cast<int>(with_added.size()));
}

TEST_P(TokenizerConformance, StreamDecoderConcatenationEqualsDecode) {
  const Loaded& t = loaded(GetParam());
  int passed = 0;
  for (const bool skip_special : {false, true}) {
    for (const CorpusLine& line : t.corpus) {
      StreamDecoder stream(*t.tokenizer, skip_special);
      std::string joined;
      bool pieces_valid = true;
      for (const int32_t id : line.ids) {
        const std::string piece = stream.push(id);
        pieces_valid = pieces_valid && !tok::find_invalid_utf8(piece);
        joined += piece;
      }
      const std::string tail = stream.flush();
      pieces_valid = pieces_valid && !tok::find_invalid_utf8(tail);
      joined += tail;
      const std::string expected =
          skip_special ? t.tokenizer->decode(line.ids, true) : line.decoded;
      EXPECT_TRUE(pieces_valid) << GetParam() << " line " << line.id;
      EXPECT_EQ(joined, expected) << GetParam() << " line " << line.id << " skip " << skip_special;
      if (pieces_valid && joined == expected && !skip_special) ++passed;
    }
  }
  std::cout << "[ conformance ] " << GetParam() << " stream: " << passed << "/" << t.corpus.size()
            << " lines equal HF decode\n";
}

// One long generation (the whole corpus's ids back to back) and random id sequences, which split
// characters and byte-fallback runs at arbitrary points, must stream to exactly decode().
TEST_P(TokenizerConformance, StreamDecoderHandlesLongAndRandomSequences) {
  const Loaded& t = loaded(GetParam());
  std::vector<int32_t> all;
  for (const CorpusLine& line : t.corpus) all.insert(all.end(), line.ids.begin(), line.ids.end());
  std::mt19937 rng(1234);
  std::vector<std::vector<int32_t>> sequences{all};
  std::uniform_int_distribution<int32_t> any_id(0, t.tokenizer->vocab_size() - 1);
  std::uniform_int_distribution<int32_t> low_id(0, 600);  // byte tokens and short fragments
  for (int s = 0; s < 40; ++s) {
    std::vector<int32_t> seq;
    for (int k = 0; k < 200; ++k) seq.push_back(k % 3 == 0 ? any_id(rng) : low_id(rng));
    sequences.push_back(seq);
  }
  // Special tokens before and between text (skipped or not) must not disturb the first-token rule.
  const int32_t eos = t.tokenizer->eos_id().value();
  std::vector<int32_t> with_specials(20, eos);
  for (size_t i = 100; i < 110; ++i) {
    with_specials.insert(with_specials.end(), t.corpus[i].ids.begin(), t.corpus[i].ids.end());
    with_specials.insert(with_specials.end(), 3, eos);
  }
  sequences.push_back(with_specials);
  for (const bool skip_special : {false, true}) {
    for (size_t s = 0; s < sequences.size(); ++s) {
      StreamDecoder stream(*t.tokenizer, skip_special);
      std::string joined;
      for (const int32_t id : sequences[s]) {
        const std::string piece = stream.push(id);
        ASSERT_FALSE(tok::find_invalid_utf8(piece)) << GetParam() << " sequence " << s;
        joined += piece;
      }
      joined += stream.flush();
      ASSERT_EQ(joined, t.tokenizer->decode(sequences[s], skip_special))
          << GetParam() << " sequence " << s << " skip " << skip_special;
    }
  }
}

// For byte-level tokenizers the decoded text is the concatenation of each token's bytes; for
// "▁" tokenizers it is too, after the decoder's single leading-space strip.
TEST_P(TokenizerConformance, TokenBytesConcatenateToDecodedText) {
  const Loaded& t = loaded(GetParam());
  for (const CorpusLine& line : t.corpus) {
    if (line.decoded.find(tok::kReplacementChar) != std::string::npos) continue;
    std::string joined;
    for (const int32_t id : line.ids) joined += t.tokenizer->token_bytes(id);
    if (GetParam() == "mistral" && joined.starts_with(" ")) joined.erase(0, 1);
    EXPECT_EQ(joined, line.decoded) << GetParam() << " line " << line.id;
  }
}

TEST_P(TokenizerConformance, SpecialTokenSettingsFollowTheConfig) {
  const Loaded& t = loaded(GetParam());
  const std::string& name = GetParam();
  const std::string text = "Hello world";
  const auto plain = t.tokenizer->encode(text, false, true);
  const auto with_special = t.tokenizer->encode(text, true, true);
  if (name == "mistral") {
    // TemplateProcessing "<s> $A": BOS = <s> = 1 is prepended, nothing appended.
    ASSERT_EQ(with_special.size(), plain.size() + 1);
    EXPECT_EQ(with_special[0], 1);
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), with_special.begin() + 1));
    EXPECT_TRUE(t.tokenizer->adds_bos());
  } else {
    // llama3/gptoss: ByteLevel post-processor only; qwen3: add_bos_token false.
    EXPECT_EQ(with_special, plain);
    EXPECT_FALSE(t.tokenizer->adds_bos());
  }
  // bos/eos as named in tokenizer_config.json (README.upstream.md lists them).
  const std::map<std::string, std::pair<std::string, std::string>> names = {
      {"qwen3", {"", "<|im_end|>"}},
      {"llama3", {"<|begin_of_text|>", "<|end_of_text|>"}},
      {"mistral", {"<s>", "</s>"}},
      {"gptoss", {"<|startoftext|>", "<|return|>"}},
  };
  const auto& [bos, eos] = names.at(name);
  if (bos.empty()) {
    EXPECT_FALSE(t.tokenizer->bos_id().has_value());
  } else {
    EXPECT_EQ(t.tokenizer->bos_id(), t.tokenizer->token_to_id(bos));
    ASSERT_TRUE(t.tokenizer->bos_id().has_value());
    EXPECT_TRUE(t.tokenizer->is_special(*t.tokenizer->bos_id()));
  }
  ASSERT_TRUE(t.tokenizer->eos_id().has_value());
  EXPECT_EQ(t.tokenizer->eos_id(), t.tokenizer->token_to_id(eos));
  EXPECT_EQ(t.tokenizer->decode(std::vector<int32_t>{*t.tokenizer->eos_id()}, false), eos);
  EXPECT_EQ(t.tokenizer->decode(std::vector<int32_t>{*t.tokenizer->eos_id()}, true), "");
  EXPECT_EQ(t.tokenizer->encode(eos, false, true), std::vector<int32_t>{*t.tokenizer->eos_id()});
}

TEST_P(TokenizerConformance, VocabSizeCoversAddedTokens) {
  const Loaded& t = loaded(GetParam());
  const std::map<std::string, int32_t> sizes = {
      {"qwen3", 151669}, {"llama3", 128256}, {"mistral", 32000}, {"gptoss", 200019}};
  EXPECT_EQ(t.tokenizer->vocab_size(), sizes.at(GetParam()));
  const int32_t n = t.tokenizer->vocab_size();
  try {
    t.tokenizer->decode(std::vector<int32_t>{1, n}, false);
    ADD_FAILURE() << "decode accepted id " << n;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_RANGE);
  }
  try {
    t.tokenizer->token_bytes(-1);
    ADD_FAILURE() << "token_bytes accepted id -1";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_RANGE);
  }
}

INSTANTIATE_TEST_SUITE_P(RealFiles, TokenizerConformance,
                         ::testing::Values("qwen3", "llama3", "mistral", "gptoss"),
                         [](const auto& info) { return info.param; });

// Measured, not asserted: the load time and single-thread encode throughput, for the record.
TEST(TokenizerPerformance, Qwen3LoadAndEncodeThroughput) {
  const Loaded& t = loaded("qwen3");
  std::string text;
  while (text.size() < (1u << 20)) {
    for (const CorpusLine& line : t.corpus) text += line.text + "\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const auto ids = t.tokenizer->encode(text, false, false);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ids.size(), text.size() / 8);
  std::cout << "[ perf ] qwen3 load " << t.load_seconds * 1000.0 << " ms; encode "
            << text.size() / 1e6 << " MB in " << seconds * 1000.0
            << " ms = " << (text.size() / 1e6) / seconds << " MB/s (" << ids.size() << " ids)\n";
  for (const std::string name : {"llama3", "mistral", "gptoss"}) {
    std::cout << "[ perf ] " << name << " load " << loaded(name).load_seconds * 1000.0 << " ms\n";
  }
  RecordProperty("qwen3_load_ms", static_cast<int>(t.load_seconds * 1000.0));
  RecordProperty("qwen3_encode_kb_per_s", static_cast<int>(text.size() / 1e3 / seconds));
}

}  // namespace
}  // namespace kiln
