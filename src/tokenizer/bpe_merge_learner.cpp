// learn_merges: greedy BPE merge learning with incremental pair counts.
//
// Every word (a distinct pre-token chunk with its count) is a sequence of token ids. The counts of
// all adjacent pairs, weighted by word count, live in one hash map; `where` maps each pair to the
// words that may contain it. A step takes the most frequent pair from a max-heap, rewrites only
// the words listed for it, and applies the resulting count changes. Heap entries are not updated
// in place: an entry whose count no longer matches the map is re-queued with the current count
// when popped. A pair's newest entry always carries its count at the time it last grew, and counts
// only shrink afterwards, so the first entry that matches the map is the true maximum (and, ties
// ordered by pair, the smallest such pair). This is the structure of HF tokenizers' BpeTrainer
// and nanochat's rustbpe; the code here is kiln's own.
#include <algorithm>
#include <queue>

#include "core/error.hpp"
#include "tokenizer/bpe_model.hpp"
#include "tokenizer/bpe_trainer.hpp"

namespace kiln::tok {

namespace {

using PairKey = uint64_t;  // (left << 32) | right: numeric order = lexicographic (left, right)

PairKey pack(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t left_of(PairKey key) { return static_cast<int32_t>(key >> 32); }
int32_t right_of(PairKey key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

struct Word {
  std::vector<int32_t> ids;
  int64_t count;
};

struct HeapEntry {
  int64_t count;
  PairKey pair;
  // std::priority_queue pops the "largest": the highest count, then the smallest pair.
  bool operator<(const HeapEntry& other) const {
    if (count != other.count) return count < other.count;
    return pair > other.pair;
  }
};

class MergeLearner {
 public:
  explicit MergeLearner(const WordCounts& counts) {
    words_.reserve(counts.size());
    for (const auto& [text, count] : counts) {
      Word word{{}, count};
      word.ids.reserve(text.size());
      for (const char c : text) word.ids.push_back(static_cast<uint8_t>(c));
      words_.push_back(std::move(word));
    }
    for (uint32_t w = 0; w < words_.size(); ++w) {
      const Word& word = words_[w];
      for (size_t i = 0; i + 1 < word.ids.size(); ++i) {
        const PairKey key = pack(word.ids[i], word.ids[i + 1]);
        pair_counts_[key] += word.count;
        auto& list = where_[key];
        if (list.empty() || list.back() != w) list.push_back(w);
      }
    }
    for (const auto& [key, count] : pair_counts_) heap_.push({count, key});
  }

  // The next pair to merge, or nullopt when no pair occurs min_frequency times.
  std::optional<PairKey> best_pair(int64_t min_frequency) {
    while (!heap_.empty()) {
      const HeapEntry top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(top.pair);
      const int64_t current = it == pair_counts_.end() ? 0 : it->second;
      if (current != top.count) {
        if (current > 0) heap_.push({current, top.pair});
        continue;
      }
      if (current < std::max<int64_t>(min_frequency, 1)) return std::nullopt;
      return top.pair;
    }
    return std::nullopt;
  }

  // Replaces every occurrence of `pair` (left to right, non-overlapping) by `merged`.
  void apply(PairKey pair, int32_t merged) {
    const int32_t a = left_of(pair), b = right_of(pair);
    std::vector<uint32_t> candidates = std::move(where_[pair]);
    where_.erase(pair);
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());

    std::unordered_map<PairKey, int64_t> delta;
    std::vector<int32_t> rewritten;
    for (const uint32_t w : candidates) {
      Word& word = words_[w];
      const std::vector<int32_t>& ids = word.ids;
      rewritten.clear();
      for (size_t i = 0; i < ids.size();) {
        if (i + 1 < ids.size() && ids[i] == a && ids[i + 1] == b) {
          rewritten.push_back(merged);
          i += 2;
        } else {
          rewritten.push_back(ids[i++]);
        }
      }
      if (rewritten.size() == ids.size()) continue;  // the pair had already left this word
      // Exact accounting: every pair of the old word leaves, every pair of the new one arrives.
      for (size_t i = 0; i + 1 < ids.size(); ++i) delta[pack(ids[i], ids[i + 1])] -= word.count;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        const PairKey key = pack(rewritten[i], rewritten[i + 1]);
        delta[key] += word.count;
        if (rewritten[i] == merged || rewritten[i + 1] == merged) {
          auto& list = where_[key];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
      word.ids.swap(rewritten);
    }
    for (const auto& [key, change] : delta) {
      if (change == 0) continue;
      int64_t& count = pair_counts_[key];
      count += change;
      if (change > 0) heap_.push({count, key});
      if (count <= 0) pair_counts_.erase(key);
    }
  }

 private:
  std::vector<Word> words_;
  std::unordered_map<PairKey, int64_t> pair_counts_;
  std::unordered_map<PairKey, std::vector<uint32_t>> where_;
  std::priority_queue<HeapEntry> heap_;
};

}  // namespace

LearnedBpe learn_merges(const WordCounts& words, int32_t n_tokens, int64_t min_frequency,
                        const TrainProgress& progress) {
  LearnedBpe bpe;
  bpe.token_bytes.reserve(static_cast<size_t>(std::max(n_tokens, 256)));
  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int b = 0; b < 256; ++b) {
    bpe.token_bytes.emplace_back(1, static_cast<char>(b));
    id_of_bytes.emplace(bpe.token_bytes.back(), b);
  }
  if (progress && !progress(0.0f, "merge")) {
    fail(KILN_ERR_CANCELLED, "tokenizer training cancelled by the progress callback");
  }
  MergeLearner learner(words);
  const int32_t wanted = n_tokens - 256;
  int32_t reported_permille = 0;
  while (static_cast<int32_t>(bpe.token_bytes.size()) < n_tokens) {
    const auto pair = learner.best_pair(min_frequency);
    if (!pair) break;
    const int32_t left = left_of(*pair), right = right_of(*pair);
    std::string bytes = bpe.token_bytes[left] + bpe.token_bytes[right];
    // Bytes already reachable through another merge path keep their id (a vocabulary maps each
    // string to one id).
    const auto [it, inserted] =
        id_of_bytes.emplace(bytes, static_cast<int32_t>(bpe.token_bytes.size()));
    if (inserted) bpe.token_bytes.push_back(std::move(bytes));
    bpe.merges.push_back({left, right, it->second});
    learner.apply(*pair, it->second);

    const auto made = static_cast<int32_t>(bpe.token_bytes.size()) - 256;
    const int32_t permille = wanted > 0 ? static_cast<int32_t>(int64_t{made} * 1000 / wanted) : 0;
    if (progress && permille > reported_permille) {
      reported_permille = permille;
      if (!progress(static_cast<float>(permille) / 1000.0f, "merge")) {
        fail(KILN_ERR_CANCELLED, "tokenizer training cancelled by the progress callback");
      }
    }
  }
  return bpe;
}

}  // namespace kiln::tok
