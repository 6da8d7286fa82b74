// MergeTable (the BPE merges' flat (left id, right id) → (rank, merged id) table) against std::map
// on random pairs: repeated pairs (the later insert wins, as in HF's HashMap), growth from an
// undersized table and from one sized for the entries, present and absent lookups, prefetch.
#include "tokenizer/merge_table.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <utility>

namespace kiln::tok {
namespace {

void expect_agrees_with_std_map(size_t expected_entries, int n_inserts, int32_t id_range) {
  std::mt19937 rng(1234 + static_cast<unsigned>(expected_entries));
  // A small id range makes repeated pairs common; ids are non-negative as in a vocabulary.
  std::uniform_int_distribution<int32_t> id(0, id_range - 1);
  MergeTable table(expected_entries);
  std::map<std::pair<int32_t, int32_t>, MergeResult> reference;
  for (int32_t rank = 0; rank < n_inserts; ++rank) {
    const int32_t left = id(rng), right = id(rng), merged = id(rng);
    table.prefetch(left, right);
    table.insert(left, right, {rank, merged});
    reference[{left, right}] = {rank, merged};
  }
  EXPECT_EQ(table.size(), reference.size());
  for (const auto& [pair, result] : reference) {
    const auto found = table.find(pair.first, pair.second);
    ASSERT_TRUE(found.has_value()) << pair.first << ", " << pair.second;
    ASSERT_EQ(found->rank, result.rank);
    ASSERT_EQ(found->merged_id, result.merged_id);
  }
  // Absent pairs: random ones not in the reference, and swapped pairs of present ones.
  int absent = 0;
  for (int i = 0; i < 20000; ++i) {
    const int32_t left = id(rng), right = id(rng);
    if (reference.count({left, right})) continue;
    ++absent;
    ASSERT_FALSE(table.find(left, right).has_value()) << left << ", " << right;
  }
  EXPECT_GT(absent, 1000);
  EXPECT_FALSE(table.find(id_range, 0).has_value());
}

TEST(MergeTable, AgreesWithStdMapWhenSizedForTheEntries) {
  expect_agrees_with_std_map(50000, 50000, 400);  // ~27% of the pairs repeat
}

TEST(MergeTable, AgreesWithStdMapWhileGrowing) {
  expect_agrees_with_std_map(0, 60000, 100000);  // grows from 16 slots through 13 doublings
}

TEST(MergeTable, EmptyTableFindsNothing) {
  const MergeTable table;
  EXPECT_EQ(table.size(), 0u);
  EXPECT_FALSE(table.find(0, 0).has_value());
}

}  // namespace
}  // namespace kiln::tok
