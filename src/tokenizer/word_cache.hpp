// A bounded, thread-safe cache of BPE results per pre-tokenized word. Natural text repeats words
// constantly, and the merge loop is the encoder's main cost; HF tokenizers keeps the same kind of
// cache (tokenizers/src/utils/cache.rs: 10,000 words, words of at most 256 bytes, no insertion
// once full). The BPE result of a word never changes, so a cached answer is exactly the computed
// one. Shards with their own shared_mutex keep concurrent encoders of one tokenizer from
// serialising on a single lock.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln::tok {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;
  static constexpr size_t kCapacity = 10000;

  // Appends the cached ids of `word` to out and returns true, or returns false.
  bool find(std::string_view word, std::vector<int32_t>& out) const;
  // Remembers ids for word unless the word is too long or the word's shard is full.
  void insert(std::string_view word, std::span<const int32_t> ids);

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    mutable std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> words;
  };
  static constexpr size_t kShards = 16;
  static size_t shard_index(std::string_view word) { return Hash{}(word) % kShards; }

  std::array<Shard, kShards> shards_;
};

}  // namespace kiln::tok
