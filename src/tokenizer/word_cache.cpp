#include "tokenizer/word_cache.hpp"

namespace kiln::tok {

bool WordCache::find(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxWordBytes) return false;
  const Shard& shard = shards_[shard_index(word)];
  std::shared_lock lock(shard.mutex);
  const auto it = shard.words.find(word);
  if (it == shard.words.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::insert(std::string_view word, std::span<const int32_t> ids) {
  if (word.size() > kMaxWordBytes) return;
  Shard& shard = shards_[shard_index(word)];
  std::unique_lock lock(shard.mutex);
  if (shard.words.size() >= kCapacity / kShards) return;
  shard.words.try_emplace(std::string(word), ids.begin(), ids.end());
}

}  // namespace kiln::tok
