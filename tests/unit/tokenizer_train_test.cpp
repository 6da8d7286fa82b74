// BPE training, checked against references written here from the algorithm's definition:
//  - a naive trainer (recount every pair of every word after each merge; highest count, ties to
//    the smallest (left id, right id)) must learn the identical merge list;
//  - GPT-2's encoder.py bpe() (merge the lowest-ranked pair everywhere, repeat) applied to the
//    words of a text must give the ids kiln's encoder gives with the trained tokenizer.json;
//  - decode(encode(x)) == x for arbitrary UTF-8 (the 256 byte tokens cover every input).
// The words are cut with PCRE2 called directly here, and the byte-level names are decoded with
// GPT-2's bytes_to_unicode table written out here.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <gtest/gtest.h>
#include <pcre2.h>

#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/bpe_trainer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using BytePair = std::pair<std::string, std::string>;

// --- independent helpers -------------------------------------------------------------------

// GPT-2 encoder.py bytes_to_unicode: printable bytes keep their code point, the others map to
// 256, 257, ... in byte order.
std::map<std::string, uint8_t> byte_level_names() {
  std::map<std::string, uint8_t> names;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next++;
    std::string utf8;
    if (cp < 0x80) {
      utf8 = std::string(1, static_cast<char>(cp));
    } else {
      utf8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    names[utf8] = static_cast<uint8_t>(b);
  }
  return names;
}

std::string name_to_bytes(const std::string& name) {
  static const auto table = byte_level_names();
  std::string bytes;
  for (size_t i = 0; i < name.size();) {
    const size_t len = (static_cast<unsigned char>(name[i]) < 0x80) ? 1 : 2;
    bytes.push_back(static_cast<char>(table.at(name.substr(i, len))));
    i += len;
  }
  return bytes;
}

// Regex matches plus the gaps between them, in order (HF Split with behavior Isolated).
std::vector<std::string> split_words(const std::string& text, const std::string& regex) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.c_str()), regex.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  EXPECT_NE(code, nullptr);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  std::vector<std::string> words;
  size_t start = 0, emitted = 0;
  while (start < text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                               0, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {  // empty match: step one character
      start = ov[0] + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
        ++start;
      }
      continue;
    }
    if (ov[0] > emitted) words.push_back(text.substr(emitted, ov[0] - emitted));
    words.push_back(text.substr(ov[0], ov[1] - ov[0]));
    emitted = start = ov[1];
  }
  if (emitted < text.size()) words.push_back(text.substr(emitted));
  pcre2_match_data_free(md);
  pcre2_code_free(code);
  return words;
}

// The naive trainer: bytes are ids 0..255, new byte strings get the next id, a byte string made
// again keeps its id. Returns the merges as byte pairs.
std::vector<BytePair> naive_train(const std::map<std::string, int64_t>& counts, int n_tokens,
                                  int64_t min_frequency) {
  std::vector<std::string> bytes_of;
  std::map<std::string, int> id_of;
  for (int b = 0; b < 256; ++b) {
    bytes_of.emplace_back(1, static_cast<char>(b));
    id_of[bytes_of.back()] = b;
  }
  std::vector<std::pair<std::vector<int>, int64_t>> words;
  for (const auto& [text, n] : counts) {
    std::vector<int> ids;
    for (char c : text) ids.push_back(static_cast<uint8_t>(c));
    words.emplace_back(ids, n);
  }
  std::vector<BytePair> merges;
  while (static_cast<int>(bytes_of.size()) < n_tokens) {
    std::map<std::pair<int, int>, int64_t> pairs;  // ordered: ties resolve to the smallest pair
    for (const auto& [ids, n] : words) {
      for (size_t i = 0; i + 1 < ids.size(); ++i) pairs[{ids[i], ids[i + 1]}] += n;
    }
    std::pair<int, int> best{-1, -1};
    int64_t best_count = 0;
    for (const auto& [pair, n] : pairs) {
      if (n > best_count) best = pair, best_count = n;
    }
    if (best_count < min_frequency || best_count == 0) break;
    const std::string merged = bytes_of[best.first] + bytes_of[best.second];
    if (!id_of.count(merged)) {
      id_of[merged] = static_cast<int>(bytes_of.size());
      bytes_of.push_back(merged);
    }
    const int merged_id = id_of[merged];
    merges.emplace_back(bytes_of[best.first], bytes_of[best.second]);
    for (auto& [ids, n] : words) {
      std::vector<int> out;
      for (size_t i = 0; i < ids.size();) {
        if (i + 1 < ids.size() && ids[i] == best.first && ids[i + 1] == best.second) {
          out.push_back(merged_id);
          i += 2;
        } else {
          out.push_back(ids[i++]);
        }
      }
      ids = out;
    }
  }
  return merges;
}

// GPT-2 encoder.py bpe(): symbols are byte strings; repeatedly merge every occurrence of the
// lowest-ranked adjacent pair.
std::vector<std::string> gpt2_bpe(const std::string& word, const std::map<BytePair, int>& ranks) {
  std::vector<std::string> parts;
  for (char c : word) parts.emplace_back(1, c);
  while (parts.size() > 1) {
    int best_rank = INT32_MAX;
    BytePair best;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const auto it = ranks.find({parts[i], parts[i + 1]});
      if (it != ranks.end() && it->second < best_rank) best_rank = it->second, best = it->first;
    }
    if (best_rank == INT32_MAX) break;
    std::vector<std::string> out;
    for (size_t i = 0; i < parts.size();) {
      if (i + 1 < parts.size() && parts[i] == best.first && parts[i + 1] == best.second) {
        out.push_back(best.first + best.second);
        i += 2;
      } else {
        out.push_back(parts[i++]);
      }
    }
    parts = out;
  }
  return parts;
}

// --- fixtures --------------------------------------------------------------------------------

// The texts of the tokenizer stress corpus (mixed scripts, emoji, code, whitespace runs).
std::string stress_corpus_text() {
  std::ifstream in(test::fixtures_dir() / "tokenizers" / "corpus.jsonl");
  std::string line, text;
  while (std::getline(in, line)) {
    if (!line.empty()) text += json::parse(line)["text"].get<std::string>() + "\n";
  }
  return text;
}

// About `bytes` of pseudo-English built from a fixed seed: enough repeated structure that
// thousands of merges have counts well above 1.
std::string generated_corpus(size_t bytes, uint32_t seed) {
  // Words are 1-3 random syllables (thousands of distinct words) or one of a few fixed pieces
  // of other scripts, numbers, contractions and code.
  static const char* const kSyllables[] = {"the", "an",  "ka", "lo",  "ri", "su",  "mer", "ge",
                                           "to",  "ken", "by", "te",  "vo", "cab", "un",  "ish",
                                           "ü",   "ber", "na", "ïve", "ca", "fé",  "qu",  "ox"};
  static const char* const kPieces[] = {"日本語",  "中文",  "🙂",  "🚀🚀",      "x86_64", "1234",
                                        "3.14159", "can't", "we'll", "THEY'RE", "(a+b)",  "->"};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> syllable(0, std::size(kSyllables) - 1);
  std::uniform_int_distribution<size_t> piece(0, std::size(kPieces) - 1);
  std::uniform_int_distribution<int> length(1, 3), kind(0, 9), sep(0, 19);
  std::string text;
  while (text.size() < bytes) {
    if (kind(rng) == 0) {
      text += kPieces[piece(rng)];
    } else {
      for (int n = length(rng); n > 0; --n) text += kSyllables[syllable(rng)];
    }
    const int s = sep(rng);
    text += s == 0 ? "\n" : s == 1 ? ", " : s == 2 ? ".\n\n" : s == 3 ? "\t" : " ";
  }
  return text;
}

fs::path write_corpus(const std::string& name, const std::string& text) {
  const fs::path path = test::temp_dir("tok-train") / name;
  test::write_file(path, text);
  return path;
}

struct Trained {
  std::string json_text;
  json doc;
  std::unique_ptr<Tokenizer> tokenizer;
};

Trained train(const std::vector<fs::path>& files, tok::BpeTrainOptions options) {
  Trained t;
  t.json_text = tok::train_bpe(files, options);
  t.doc = json::parse(t.json_text);
  t.tokenizer = Tokenizer::from_json(t.json_text, "");
  return t;
}

std::vector<BytePair> merges_of(const json& doc) {
  std::vector<BytePair> merges;
  for (const auto& m : doc["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    merges.emplace_back(name_to_bytes(s.substr(0, space)), name_to_bytes(s.substr(space + 1)));
  }
  return merges;
}

// --- tests -----------------------------------------------------------------------------------

TEST(TokenizerTrain, MergesEqualNaiveReferenceOnStressCorpus) {
  const std::string text = stress_corpus_text();
  ASSERT_GT(text.size(), 5000u);
  tok::BpeTrainOptions options;
  options.vocab_size = 256 + 400;
  options.min_frequency = 2;
  options.n_threads = 2;
  const Trained t = train({write_corpus("stress.txt", text)}, options);

  std::map<std::string, int64_t> counts;
  for (const std::string& w : split_words(text, tok::kDefaultTrainPattern)) ++counts[w];
  const auto expected = naive_train(counts, options.vocab_size, options.min_frequency);
  const auto got = merges_of(t.doc);
  ASSERT_GT(expected.size(), 100u);  // the corpus really supports a few hundred merges
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], expected[i]) << "merge rank " << i;
  }
  // A byte string reached by two merge paths keeps one id, so the vocabulary counts distinct ones.
  std::set<std::string> learned;
  for (const auto& [left, right] : expected) learned.insert(left + right);
  EXPECT_EQ(t.tokenizer->vocab_size(), 256 + static_cast<int32_t>(learned.size()));
}

TEST(TokenizerTrain, MergesEqualNaiveReferenceOnGeneratedCorpusWithMinFrequency1) {
  const std::string text = generated_corpus(30000, 7);
  tok::BpeTrainOptions options;
  options.vocab_size = 256 + 300;
  options.min_frequency = 1;
  const Trained t = train({write_corpus("gen.txt", text)}, options);
  std::map<std::string, int64_t> counts;
  for (const std::string& w : split_words(text, tok::kDefaultTrainPattern)) ++counts[w];
  const auto expected = naive_train(counts, options.vocab_size, 1);
  EXPECT_EQ(merges_of(t.doc), expected);
}

TEST(TokenizerTrain, EncodeFollowsMergeRanksAndRoundTrips) {
  const std::string corpus = generated_corpus(200000, 11) + stress_corpus_text();
  tok::BpeTrainOptions options;
  options.vocab_size = 1200;
  const Trained t = train({write_corpus("enc.txt", corpus)}, options);

  std::map<BytePair, int> ranks;
  const auto merges = merges_of(t.doc);
  for (size_t i = 0; i < merges.size(); ++i) ranks.emplace(merges[i], static_cast<int>(i));
  std::map<std::string, int32_t> id_of_bytes;
  for (const auto& [name, id] : t.doc["model"]["vocab"].items()) {
    id_of_bytes[name_to_bytes(name)] = id.get<int32_t>();
  }

  const std::string sample =
      generated_corpus(20000, 99) + stress_corpus_text() +
      "Ünïcödé 🤖🧪 中文字符 한국어 العربية zebra-quokka\r\n\r\n  end";
  std::vector<int32_t> expected;
  for (const std::string& w : split_words(sample, tok::kDefaultTrainPattern)) {
    for (const std::string& part : gpt2_bpe(w, ranks)) expected.push_back(id_of_bytes.at(part));
  }
  const auto ids = t.tokenizer->encode(sample, false, false);
  EXPECT_EQ(ids, expected);
  EXPECT_LT(ids.size(), sample.size() / 2);  // the merges compress
  EXPECT_EQ(t.tokenizer->decode(ids, false), sample);
}

TEST(TokenizerTrain, RoundTripsArbitraryUtf8) {
  tok::BpeTrainOptions options;
  options.vocab_size = 600;
  const Trained t = train({write_corpus("rt.txt", generated_corpus(50000, 3))}, options);
  std::mt19937 rng(5);
  // Code points from every plane, surrogates excluded.
  std::uniform_int_distribution<uint32_t> plane(0, 16), offset(0, 0xFFFF), ascii(0, 127);
  for (int round = 0; round < 300; ++round) {
    std::string s;
    for (int i = 0; i < 40; ++i) {
      uint32_t cp = (rng() % 2) ? ascii(rng) : plane(rng) * 0x10000 + offset(rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else if (cp < 0x800) {
        s += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      } else if (cp < 0x10000) {
        s += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
              static_cast<char>(0x80 | (cp & 0x3F))};
      } else {
        s += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
              static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
      }
    }
    const auto ids = t.tokenizer->encode(s, false, false);
    ASSERT_EQ(t.tokenizer->decode(ids, false), s) << "round " << round;
  }
}

TEST(TokenizerTrain, ResultDoesNotDependOnThreadCountAcrossBlocks) {
  // Over 1 MiB, so the file is cut into several blocks that the threads share.
  const fs::path a = write_corpus("big-a.txt", generated_corpus(1500000, 21));
  const fs::path b = write_corpus("big-b.txt", generated_corpus(300000, 22));
  tok::BpeTrainOptions options;
  options.vocab_size = 2000;
  options.n_threads = 1;
  const std::string one = tok::train_bpe({a, b}, options);
  options.n_threads = 3;
  EXPECT_EQ(tok::train_bpe({a, b}, options), one);
}

TEST(TokenizerTrain, SpecialTokensFollowTheLearnedIdsAndAreNotLearned) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "<|endoftext|>hello world<|bos|>";
  tok::BpeTrainOptions options;
  options.vocab_size = 300;
  options.special_tokens = {"<|bos|>", "<|endoftext|>"};
  const Trained t = train({write_corpus("special.txt", text)}, options);
  const auto n_model = static_cast<int32_t>(t.doc["model"]["vocab"].size());
  EXPECT_EQ(t.tokenizer->token_to_id("<|bos|>"), n_model);
  EXPECT_EQ(t.tokenizer->token_to_id("<|endoftext|>"), n_model + 1);
  EXPECT_TRUE(t.tokenizer->is_special(n_model));
  // Only "hello" and " world" were counted: no learned token contains '<' or '|'.
  for (const auto& [name, id] : t.doc["model"]["vocab"].items()) {
    const std::string bytes = name_to_bytes(name);
    if (bytes.size() > 1) {
      EXPECT_EQ(bytes.find_first_of("<|>"), std::string::npos) << bytes;
    }
  }
  const auto ids = t.tokenizer->encode("<|bos|>hello", false, true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), n_model);
}

TEST(TokenizerTrain, StopsWhenNoPairIsFrequentEnough) {
  tok::BpeTrainOptions options;
  options.vocab_size = 5000;
  const Trained t = train({write_corpus("tiny.txt", "abab abab abab xy")}, options);
  // "ab" (x6), "Ġab" ... only pairs seen twice or more are merged; then training stops early.
  EXPECT_LT(t.tokenizer->vocab_size(), 270);
  EXPECT_GT(t.tokenizer->vocab_size(), 256);
}

void expect_error(const std::function<void()>& f, kiln_status status, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected " << part;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(TokenizerTrain, BadInputGivesSpecificErrors) {
  const fs::path ok = write_corpus("ok.txt", "some text some text");
  tok::BpeTrainOptions options;
  options.vocab_size = 256;
  expect_error([&] { tok::train_bpe({ok}, options); }, KILN_ERR_INVALID_ARGUMENT, "vocab_size 256");
  options.vocab_size = 300;
  expect_error([&] { tok::train_bpe({}, options); }, KILN_ERR_INVALID_ARGUMENT, "at least one");
  expect_error([&] { tok::train_bpe({ok.string() + ".missing"}, options); }, KILN_ERR_NOT_FOUND,
               ".missing");
  const fs::path bad = write_corpus("bad.txt", std::string("ok \xC3\x28 no"));
  expect_error([&] { tok::train_bpe({bad}, options); }, KILN_ERR_INVALID_ARGUMENT, "byte 3");
  options.pattern = "(unclosed";
  expect_error([&] { tok::train_bpe({ok}, options); }, KILN_ERR_FORMAT, "does not compile");
  options.pattern = tok::kDefaultTrainPattern;
  options.special_tokens = {"<a>", "<a>"};
  expect_error([&] { tok::train_bpe({ok}, options); }, KILN_ERR_INVALID_ARGUMENT, "twice");
  options.special_tokens = {};
  options.min_frequency = 0;
  expect_error([&] { tok::train_bpe({ok}, options); }, KILN_ERR_INVALID_ARGUMENT, "min_frequency");
}

TEST(TokenizerTrain, ProgressIsMonotonicPerStageAndCanCancel) {
  const fs::path path = write_corpus("progress.txt", generated_corpus(100000, 1));
  tok::BpeTrainOptions options;
  options.vocab_size = 400;
  std::map<std::string, float> last;
  options.progress = [&](float fraction, const char* stage) {
    EXPECT_GE(fraction, last[stage]) << stage;
    EXPECT_LE(fraction, 1.0f);
    last[stage] = fraction;
    return true;
  };
  tok::train_bpe({path}, options);
  EXPECT_EQ(last["count"], 1.0f);
  EXPECT_EQ(last["merge"], 1.0f);
  EXPECT_EQ(last["done"], 1.0f);

  int calls = 0;
  options.progress = [&](float, const char* stage) {
    ++calls;
    return std::string(stage) != "merge";
  };
  expect_error([&] { tok::train_bpe({path}, options); }, KILN_ERR_CANCELLED, "cancelled");
  EXPECT_GT(calls, 0);
}

}  // namespace
}  // namespace kiln
