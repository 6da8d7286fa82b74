#include "tokenizer/merge_table.hpp"

#include <algorithm>
#include <bit>

namespace kiln::tok {

MergeTable::MergeTable(size_t expected_entries) {
  const size_t capacity = capacity_for(expected_entries);
  slots_.resize(capacity);
  mask_ = capacity - 1;
}

void MergeTable::insert(int32_t left, int32_t right, MergeResult result) {
  if (capacity_for(size_ + 1) > slots_.size()) grow();
  const uint64_t key = pack(left, right);
  for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
    Slot& slot = slots_[i];
    if (slot.key == key) {
      slot.value = result;
      return;
    }
    if (slot.key == kEmpty) {
      slot.key = key;
      slot.value = result;
      ++size_;
      return;
    }
  }
}

void MergeTable::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(std::max<size_t>(16, old.size() * 2), Slot{});
  mask_ = slots_.size() - 1;
  size_ = 0;
  for (const Slot& slot : old) {
    if (slot.key != kEmpty) {
      insert(static_cast<int32_t>(slot.key >> 32), static_cast<int32_t>(slot.key & 0xFFFFFFFFu),
             slot.value);
    }
  }
}

}  // namespace kiln::tok
