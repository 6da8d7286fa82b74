// TokenIndex (the vocabulary's flat string → id table) against std::map on random keys: inserts
// (one by one and insert_many's batches) with repeated keys (the last id wins), find and
// find_many on present and absent keys, id → string.
#include "tokenizer/token_index.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

namespace kiln::tok {
namespace {

std::string random_key(std::mt19937& rng) {
  std::uniform_int_distribution<int> length(0, 12), byte(0, 255), small(0, 3);
  std::string key;
  // Mostly short keys over a small alphabet, so that prefixes and near-duplicates are common.
  const int n = length(rng);
  for (int i = 0; i < n; ++i)
    key += small(rng) ? static_cast<char>('a' + small(rng)) : static_cast<char>(byte(rng));
  return key;
}

TEST(TokenIndex, AgreesWithStdMap) {
  std::mt19937 rng(42);
  TokenIndex index;
  std::map<std::string, int32_t> reference;
  for (int32_t i = 0; i < 20000; ++i) {  // no reserve: the table grows through several sizes
    const std::string key = random_key(rng);
    index.insert(key, i);
    reference[key] = i;
  }
  index.index_ids();
  EXPECT_EQ(index.size(), reference.size());
  std::vector<std::string> probes;
  for (const auto& [key, id] : reference) probes.push_back(key);
  for (int i = 0; i < 5000; ++i) probes.push_back(random_key(rng) + "#absent");
  std::vector<std::string_view> views(probes.begin(), probes.end());
  std::vector<int32_t> many(views.size());
  index.find_many(views.data(), views.size(), many.data());
  for (size_t i = 0; i < probes.size(); ++i) {
    const auto it = reference.find(probes[i]);
    const int32_t expected = it == reference.end() ? -1 : it->second;
    ASSERT_EQ(index.find(probes[i]).value_or(-1), expected) << i;
    ASSERT_EQ(many[i], expected) << i;
  }
  int32_t max_id = -1;
  for (const auto& [key, id] : reference) {
    ASSERT_EQ(index.token(id), std::optional<std::string_view>(key));
    max_id = std::max(max_id, id);
  }
  EXPECT_EQ(index.max_id(), max_id);
  EXPECT_EQ(index.token(-1), std::nullopt);
  EXPECT_EQ(index.token(max_id + 1), std::nullopt);
}

// insert_many, into an index reserved for the entries and into an empty one that must grow
// between batches, gives the same table as std::map built in the same order.
TEST(TokenIndex, InsertManyAgreesWithStdMap) {
  for (const bool reserved : {true, false}) {
    std::mt19937 rng(reserved ? 7 : 8);
    std::vector<std::string> keys;
    for (int i = 0; i < 30000; ++i) keys.push_back(random_key(rng));  // many repeats
    std::vector<std::pair<std::string_view, int32_t>> entries;
    std::map<std::string, int32_t> reference;
    for (size_t i = 0; i < keys.size(); ++i) {
      entries.emplace_back(keys[i], static_cast<int32_t>(i));
      reference[keys[i]] = static_cast<int32_t>(i);
    }
    TokenIndex index;
    if (reserved) index.reserve(entries.size(), 12 * entries.size());
    index.insert_many(entries.data(), 1000);  // two calls: the second continues the first
    index.insert_many(entries.data() + 1000, entries.size() - 1000);
    index.index_ids();
    ASSERT_EQ(index.size(), reference.size()) << reserved;
    for (const auto& [key, id] : reference) {
      ASSERT_EQ(index.find(key).value_or(-1), id) << reserved;
      ASSERT_EQ(index.token(id), std::optional<std::string_view>(key)) << reserved;
    }
    for (int i = 0; i < 2000; ++i) {
      ASSERT_FALSE(index.find(random_key(rng) + "#absent").has_value()) << reserved;
    }
  }
}

}  // namespace
}  // namespace kiln::tok
