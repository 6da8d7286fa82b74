// BPE merge ranks: (left id, right id) → (rank, merged id), in a flat open-addressing hash table.
// Vocabularies carry 150k–450k merges, and the encoder looks pairs up once per candidate merge, so
// a probe into one contiguous array beats std::unordered_map's node chasing.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

namespace kiln::tok {

struct MergeResult {
  int32_t rank;
  int32_t merged_id;
};

class MergeTable {
 public:
  explicit MergeTable(size_t expected_entries = 0);
  // Ids are non-negative (vocabulary ids; (-1, -1) is the empty-slot key). A later insert of the
  // same pair replaces the earlier one (HF builds a HashMap from the list).
  void insert(int32_t left, int32_t right, MergeResult result);
  std::optional<MergeResult> find(int32_t left, int32_t right) const {
    if (slots_.empty()) return std::nullopt;
    const uint64_t key = pack(left, right);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return slot.value;
      if (slot.key == kEmpty) return std::nullopt;
    }
  }
  size_t size() const { return size_; }
  // Starts loading the pair's home slot into the cache (a hint for a following insert or find).
  void prefetch(int32_t left, int32_t right) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[hash(pack(left, right)) & mask_]);
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    MergeResult value{};
  };
  static uint64_t pack(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  static size_t hash(uint64_t key) {
    key ^= key >> 33;  // murmur3 finalizer
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ULL;
    key ^= key >> 33;
    return static_cast<size_t>(key);
  }
  // Slots for n entries at a load factor of at most 3/4: probes stay short with this hash, and
  // the table is half the size of one kept at 1/2 (Llama 3's 280k merges: 8 MB, not 16), so a
  // first load faults in half the pages and encode's lookups miss the cache less.
  static size_t capacity_for(size_t n) {
    return std::bit_ceil(std::max<size_t>(16, n + n / 3 + 1));
  }
  void grow();

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace kiln::tok
