// WordCache: the BPE per-word result cache. It must hand back exactly what was stored, never grow
// past its bound, skip over-long words, and give the same ids as the uncached encoder when a
// tokenizer encodes the same text again (the second pass is served from the cache).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/word_cache.hpp"

namespace kiln::tok {
namespace {

TEST(WordCache, ReturnsWhatWasStoredAppendingToOut) {
  WordCache cache;
  std::vector<int32_t> out{7};
  EXPECT_FALSE(cache.find("hello", out));
  const std::vector<int32_t> ids{1, 2, 3};
  cache.insert("hello", ids);
  ASSERT_TRUE(cache.find("hello", out));
  EXPECT_EQ(out, (std::vector<int32_t>{7, 1, 2, 3}));
  EXPECT_FALSE(cache.find("hell", out));
}

TEST(WordCache, SkipsLongWordsAndStopsGrowingWhenFull) {
  WordCache cache;
  const std::string long_word(WordCache::kMaxWordBytes + 1, 'x');
  cache.insert(long_word, std::vector<int32_t>{1});
  std::vector<int32_t> out;
  EXPECT_FALSE(cache.find(long_word, out));
  size_t stored = 0;
  for (int i = 0; i < 3 * static_cast<int>(WordCache::kCapacity); ++i) {
    const std::string word = "w" + std::to_string(i);
    cache.insert(word, std::vector<int32_t>{i});
  }
  for (int i = 0; i < 3 * static_cast<int>(WordCache::kCapacity); ++i) {
    out.clear();
    if (cache.find("w" + std::to_string(i), out)) {
      ++stored;
      ASSERT_EQ(out, std::vector<int32_t>{i});
    }
  }
  EXPECT_LE(stored, WordCache::kCapacity);
  EXPECT_GT(stored, WordCache::kCapacity / 2);
}

TEST(WordCache, CachedEncodesEqualFirstEncodesAcrossThreads) {
  const auto root = test::fixtures_dir() / "tokenizers" / "llama3";
  auto tok = Tokenizer::from_files(test::gunzip_fixture(root / "tokenizer.json.gz"),
                                   root / "tokenizer_config.json");
  const std::string text = test::read_file(test::fixtures_dir() / "tokenizers" / "corpus.jsonl");
  const std::vector<int32_t> first = tok->encode(text, false, false);
  std::vector<std::vector<int32_t>> again(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < again.size(); ++t) {
    threads.emplace_back([&, t] { again[t] = tok->encode(text, false, false); });
  }
  for (auto& th : threads) th.join();
  for (const auto& ids : again) EXPECT_EQ(ids, first);
  EXPECT_EQ(tok->decode(first, false), text);  // and the ids are right: byte-level round trip
}

}  // namespace
}  // namespace kiln::tok
